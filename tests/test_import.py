"""`reconcile import`: adopting registries that exist on the target, run as a user would,
against the local target (its SQLite database edited by hand, as the UI would)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

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


def test_a_token_in_the_endpoints_query_on_the_target_is_never_recorded_nor_shown(tmp_path: Path):
    """Adversarial pass 4, item 8: only ``user:pw@`` counted as a credential in an endpoint;
    ``?access_token=...`` (or a SAS ``sig``) typed in the UI was recorded and shown in plans."""
    db = applied(tmp_path)
    tok = "ghp_query5ecret0123456789"
    on_target(db, "UPDATE registries SET spec = json_set(spec, '$.endpoint', ?) WHERE name = 'charts'",
              f"https://charts.example.com/r?access_token={tok}&page=2")
    for fmt in ("text", "json", "markdown"):
        res = run(tmp_path, "--dry-run", "--format", fmt)
        assert res.returncode == 0, res.stdout + res.stderr
        assert tok not in res.stdout + res.stderr
        assert "access_token=(sensitive)&page=2" in res.stdout, res.stdout
    (tmp_path / ".reconciler/state.json").unlink()
    res = run(tmp_path, "import", "charts")
    assert res.returncode == 0 and "imported" in res.stdout, res.stdout + res.stderr
    state = (tmp_path / ".reconciler/state.json").read_text()
    assert tok not in state + res.stdout + res.stderr
    assert json.loads(state)["registries"][0]["spec"]["endpoint"] == "https://charts.example.com/r?page=2"


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


EVIL = "evil\x1b]0;owned\x07\x1b[2J\rname"


def test_target_names_are_escaped_in_every_import_line(tmp_path: Path):
    """Adversarial pass 3, item 11: `import --all` printed a name the target gave (ESC, OSC,
    CR) raw, where `reconcile status` escapes it; its skip message said an unmanaged registry
    would be deleted by the next apply, which never deletes one."""
    db = applied(tmp_path)
    on_target(db, "UPDATE registries SET name = ? WHERE name = 'other'", EVIL)
    (tmp_path / ".reconciler/state.json").unlink()
    res = run(tmp_path, "import", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "\x1b" not in res.stdout + res.stderr and "\r" not in res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if "skipped" in x)
    assert line == ("= HelmRegistry/evil\\x1b]0;owned\\x07\\x1b[2J\\x0dname: skipped: not declared in registries.d/; "
                    "declare it first (a record without a definition is deleted by the next apply; unmanaged, it is "
                    "never touched)")
    named = run(tmp_path, "import", "x\x1b[2Jy")  # a name from the command line, not found
    assert named.returncode == 1 and "\x1b" not in named.stderr and "x\\x1b[2Jy" in named.stderr, named.stderr


@pytest.mark.parametrize("endpoint,shown", [
    ("https://c.example.com/r?x=1;token={t};y=2", "https://c.example.com/r?x=1;token=(sensitive);y=2"),
    ("https://c.example.com/r?%74oken={t}&a=b", "https://c.example.com/r?%74oken=(sensitive)&a=b"),
    ("https://c.example.com/r?private_token={t}", "https://c.example.com/r?private_token=(sensitive)"),
])
def test_every_spelling_of_a_query_credential_on_the_target_is_masked_in_a_plan(tmp_path: Path, endpoint, shown):
    """Adversarial pass 5: a percent-encoded name or a ';' separator showed the value in a plan
    (and export wrote it): names are matched as a server reads them."""
    db = applied(tmp_path)
    tok = "ghp_query5ecret0123456789"
    on_target(db, "UPDATE registries SET spec = json_set(spec, '$.endpoint', ?) WHERE name = 'charts'",
              endpoint.format(t=tok))
    res = run(tmp_path, "--dry-run", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert tok not in res.stdout + res.stderr and shown in res.stdout, res.stdout
