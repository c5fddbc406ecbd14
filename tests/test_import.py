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


def test_import_of_a_registry_renamed_on_the_target_is_refused(tmp_path: Path):
    """Adversarial pass 3, item 5: `charts` renamed to `charts2` on the target and in the file;
    `import charts2` wrote a second record of the uid, and every later run refused the state.
    The import is refused, nothing is written, and the apply records the rename."""
    db = applied(tmp_path)
    on_target(db, "UPDATE registries SET name = 'charts2' WHERE name = 'charts'")
    write_defs(tmp_path, {"a.yaml": TWO.replace("name: charts\n", "name: charts2\n")})
    commit_all(tmp_path, "rename")
    state = tmp_path / ".reconciler/state.json"
    before = state.read_bytes()
    uid = json.loads(before)["registries"][0]["uid"]
    res = run(tmp_path, "import", "charts2")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"import: HelmRegistry/charts2: refused: uid {uid} is already managed as HelmRegistry/charts" \
        in res.stderr, res.stderr
    assert "apply the rename instead" in res.stderr
    assert state.read_bytes() == before
    every = run(tmp_path, "import", "--all")  # skipped there, like any registry --all cannot import
    assert every.returncode == 0 and "= HelmRegistry/charts2: skipped: uid" in every.stdout, every.stdout + every.stderr
    assert state.read_bytes() == before
    plan = run(tmp_path, "--dry-run")
    assert plan.returncode == 0 and "renamed on the target from 'charts'" in plan.stdout, plan.stdout + plan.stderr
    assert run(tmp_path).returncode == 0
    assert [r["name"] for r in json.loads(state.read_text())["registries"]] == ["charts2", "other"]
