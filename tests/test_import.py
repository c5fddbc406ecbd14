"""`reconcile import`: adopting registries that exist on the target, run as a user would,
against the local target (its SQLite database edited by hand, as the UI would)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

TWO = "---\n".join([registry_doc("HelmRegistry", "charts", "endpoint: https://charts.example.com"),
                    registry_doc("HelmRegistry", "other", "endpoint: https://other.example.com")])


def applied(root: Path) -> Path:
    """A repository whose two Helm registries are applied to the local target."""
    init_repo(root)
    write_defs(root, {"a.yaml": TWO})
    commit_all(root)
    res = run(root)
    assert res.returncode == 0, res.stdout + res.stderr
    return root / ".reconciler/local.db"


def on_target(db: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)


def test_an_endpoint_password_on_the_target_is_never_recorded(tmp_path: Path):
    """Adversarial pass 3, item 4: the record of an import held the spec the target reports,
    and with it a password typed into the endpoint URL, in state.json (or the state branch)."""
    db = applied(tmp_path)
    pw = "hunter2-import-5ecret"
    on_target(db, "UPDATE registries SET spec = json_set(spec, '$.endpoint', ?) WHERE name = 'charts'",
              f"https://alice:{pw}@charts.example.com")
    (tmp_path / ".reconciler/state.json").unlink()
    res = run(tmp_path, "import", "charts")
    assert res.returncode == 0 and "imported" in res.stdout, res.stdout + res.stderr
    state = (tmp_path / ".reconciler/state.json").read_text()
    assert pw not in state and "alice" not in state
    rec = json.loads(state)["registries"][0]
    assert rec["spec"]["endpoint"] == "https://charts.example.com"
    assert pw not in res.stdout + res.stderr


def test_an_endpoint_password_on_the_target_never_reaches_a_plan(tmp_path: Path):
    """Found fixing item 4: the plan that follows an export or an import shows the target's
    endpoint as the old value of a drift, password and all, in a PR comment."""
    db = applied(tmp_path)
    pw = "hunter2-plan-5ecret"
    on_target(db, "UPDATE registries SET spec = json_set(spec, '$.endpoint', ?) WHERE name = 'charts'",
              f"https://alice:{pw}@charts.example.com")
    for fmt in ("text", "json", "markdown"):
        res = run(tmp_path, "--dry-run", "--format", fmt)
        assert res.returncode == 0, res.stdout + res.stderr
        assert pw not in res.stdout + res.stderr and "alice" not in res.stdout
        assert "https://(credentials)@charts.example.com" in res.stdout, res.stdout
