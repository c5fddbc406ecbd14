"""Plan and apply safety (data loss first): renames, corrupt state, records the target no
longer lists, protect, immutable fields, impact of deletes, state writes, dry-runs that write
nothing. Each test here failed before its fix (see the commit messages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.model import Registry
from reconciler.plan import PlanOptions, make_plan
from reconciler.state.base import State
from reconciler.state.file import FileStateStore
from reconciler.targets.local import LocalTarget
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.test_plan import HELM, actions, observed, recorded, reg


def local(root: Path) -> LocalTarget:
    return LocalTarget(root / ".reconciler/local.db", base_dir=root)


def managed(root: Path) -> dict[str, str]:
    t = local(root)
    try:
        return {o.name: o.uid for o in t.list() if not o.builtin}
    finally:
        t.close()


def state_of(root: Path) -> dict[str, str]:
    return {k[2]: r.uid for k, r in FileStateStore(root / ".reconciler/state.json").read().records.items()}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "old", "endpoint: https://old.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
    ])})
    commit_all(root, "v1")
    res = run(root)
    assert res.returncode == 0, res.stderr
    return root


def rename_on_target(root: Path, old: str, new: str) -> str:
    t = local(root)
    try:
        o = t.find("tenant", "HelmRegistry", old)
        assert o is not None
        t.update(o.uid, Registry(kind=o.kind, name=new, scope=o.scope, spec=dict(o.spec)), {})
        return o.uid
    finally:
        t.close()


# ---- #9.1 a rename never deletes


def test_rename_on_target_then_in_file_keeps_the_registry(repo: Path):
    uid = rename_on_target(repo, "old", "new")
    write_defs(repo, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "new", "endpoint: https://old.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
    ])})
    commit_all(repo, "rename")
    dry = run(repo, "--dry-run")
    assert "~ HelmRegistry/new" in dry.stdout and "renamed on the target from 'old'" in dry.stdout, dry.stdout
    assert "metadata.name: old -> new" in dry.stdout
    assert "- HelmRegistry/old" not in dry.stdout and "to delete" in dry.stdout and "0 to delete" in dry.stdout
    res = run(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert managed(repo) == {"new": uid, "keep": managed(repo)["keep"]}
    assert state_of(repo)["new"] == uid and "old" not in state_of(repo)
    again = run(repo, "--dry-run", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout


def test_rename_with_a_spec_change_is_one_in_place_update(repo: Path):
    uid = rename_on_target(repo, "old", "new")
    write_defs(repo, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "new", "endpoint: https://moved.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
    ])})
    res = run(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert managed(repo)["new"] == uid and state_of(repo)["new"] == uid
    t = local(repo)
    try:
        assert t.get("HelmRegistry", uid).spec["endpoint"] == "https://moved.example.com"
    finally:
        t.close()
    assert run(repo, "--dry-run", "--detailed-exitcode").returncode == 0


def test_rename_on_target_only_is_refused_not_renamed_back(repo: Path):
    uid = rename_on_target(repo, "old", "new")
    dry = run(repo, "--dry-run")
    assert "HelmRegistry/old: update blocked: renamed on the target to 'new'" in dry.stdout, dry.stdout
    res = run(repo)
    assert res.returncode == 0
    assert managed(repo)["new"] == uid and state_of(repo)["old"] == uid


def test_plan_never_deletes_a_uid_it_also_keeps():
    old, new = reg("old"), reg("new")
    state = recorded(old, uid="u1")
    plan = make_plan([new], state, [observed(new, uid="u1")], options=PlanOptions(allow_empty=True))
    assert actions(plan) == [("update", "new", False)]
    (c,) = plan.changes
    assert c.renamed_from == old.key and c.state_only
    # both names still declared: the second claim on the uid is blocked, nothing is deleted
    plan = make_plan([old, new], state, [observed(new, uid="u1")])
    assert ("delete", "old", False) not in actions(plan)
    assert ("adopt", "new", True) in actions(plan)


# ---- #9.3, #9.41, #9.18 the state loader refuses what it cannot trust


def _state_doc(*records: dict) -> dict:
    base = {"uid": "u1", "kind": "HelmRegistry", "name": "a", "scope": "tenant", "fingerprint": "sha256:x"}
    return {"version": 1, "lineage": "l", "serial": 3, "salt": "s", "target": "local",
            "registries": [{**base, **r} for r in records]}


@pytest.mark.parametrize("records,message", [
    (({"name": "a"}, {"name": "b"}), "uid 'u1' of HelmRegistry/b is also recorded for HelmRegistry/a"),
    (({"kind": "Bogus"},), "'kind' must be one of OciRegistry, HelmRegistry, PackRegistry, not 'Bogus'"),
    (({"scope": "galaxy"},), "'scope' must be one of tenant, system, not 'galaxy'"),
    (({"spec": {"endpoint": "https://x", "auth": "basic"}},), "'spec.auth' must be an object, not str"),
    (({"uid": ""},), "'uid' and 'name' must not be empty"),
])
def test_corrupt_records_are_refused_and_nothing_written(repo: Path, records, message):
    path = repo / ".reconciler/state.json"
    path.write_text(json.dumps(_state_doc(*records)))
    before = path.read_bytes()
    write_defs(repo, {"helm.yaml": registry_doc("HelmRegistry", "a", "endpoint: https://changed.example.com")})
    for args in ((), ("--dry-run",)):
        res = run(repo, *args)
        assert res.returncode == 1, res.stdout + res.stderr
        assert message in res.stderr and "state is corrupt" in res.stderr and "Traceback" not in res.stderr
    assert path.read_bytes() == before


def test_record_whose_uid_is_gone_is_repaired_by_adoption():
    r = reg("a")
    state = recorded(r, uid="stale")
    plan = make_plan([r], state, [observed(r, uid="live")])
    (c,) = plan.changes
    assert (c.action, c.uid) == ("adopt", "live") and "recorded uid stale is gone" in c.reason
    assert make_plan([r], state, []).changes[0].action == "create"  # nothing of that name: recreated
    # not declared any more and gone: the record is dropped (counted as a deletion)
    plan = make_plan([reg("b")], state, [], options=PlanOptions(allow_empty=True))
    assert [(c.action, c.gone) for c in plan.changes if c.name == "a"] == [("delete", True)]


def test_record_whose_uid_is_gone_is_repaired_through_apply(repo: Path):
    path = repo / ".reconciler/state.json"
    data = json.loads(path.read_text())
    for r in data["registries"]:
        if r["name"] == "keep":
            r["uid"] = "0000stale0000"
    path.write_text(json.dumps(data))
    res = run(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert state_of(repo)["keep"] == managed(repo)["keep"] != "0000stale0000"
    assert run(repo, "--dry-run", "--detailed-exitcode").returncode == 0


# ---- #9.2 records the target no longer lists: guarded like any deletion


def test_records_gone_from_the_target_count_as_deletions():
    regs = [reg(f"r{i}") for i in range(7)]
    state = State()
    for i, r in enumerate(regs):
        recorded(r, uid=f"u{i}", state=state)
    # the target answers with nothing at all (a redirect page, an empty tenant, the wrong tenant)
    plan = make_plan([], state, [])
    assert any("every managed registry (7)" in r for r in plan.refusals), plan.refusals
    assert any("more than --max-deletions 5" in r for r in plan.refusals), plan.refusals
    plan = make_plan(regs[:1], state, [observed(regs[0], uid="u0")], options=PlanOptions(max_deletions=5))
    assert any("6 deletions" in r for r in plan.refusals), plan.refusals


def test_protected_record_gone_from_the_target_is_kept_and_blocked():
    p = reg("precious", protect=True)
    state = recorded(p, uid="u1")
    recorded(reg("other"), uid="u2", state=state)
    plan = make_plan([reg("other")], state, [observed(reg("other"), uid="u2")])
    (c,) = [c for c in plan.changes if c.name == "precious"]
    assert c.action == "delete" and c.gone and "protect: true is recorded" in c.blocked
    assert "no longer lists it" in c.blocked
    assert plan.counts()["delete"] == 0


def test_empty_target_drops_no_record_through_apply(repo: Path):
    path = repo / ".reconciler/state.json"
    data = json.loads(path.read_text())
    for r in data["registries"]:
        if r["name"] == "keep":
            r["protect"] = True
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    t = local(repo)
    try:
        for o in t.list():
            if not o.builtin:
                t.delete(o.kind, o.uid)
    finally:
        t.close()
    write_defs(repo, {})  # nothing declared, nothing listed
    res = run(repo)
    assert res.returncode == 1 and "refusing to delete every managed registry (1)" in res.stderr, res.stderr
    assert "HelmRegistry/keep: delete blocked: the target no longer lists it" in res.stderr
    assert path.read_bytes() == before
    res = run(repo, "--allow-empty")
    assert res.returncode == 0, res.stderr
    assert set(state_of(repo)) == {"keep"}  # the protected record outlives both


# ---- #9.5 lifting protect takes effect only once applied, for a replace as for a delete

OCI_SYNC = """
    endpoint: oci.example.com
    provider: helm
    baseContentPath: charts
    sync: {sync}
"""


def test_protected_replace_with_protect_false_in_the_same_commit_is_blocked(tmp_path: Path):
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "p", OCI_SYNC.format(sync="true"), "protect: true")})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    uid = managed(root)["p"]
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "p", OCI_SYNC.format(sync="false"), "protect: false")})
    res = run(root)
    assert res.returncode == 0, res.stderr
    assert "OciRegistry/p: replace blocked: protected" in res.stdout, res.stdout
    assert managed(root)["p"] == uid
    assert FileStateStore(root / ".reconciler/state.json").read().records[("tenant", "OciRegistry", "p")].protect
    # lift protection on its own first, then the replace goes through
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "p", OCI_SYNC.format(sync="true"), "protect: false")})
    assert run(root).returncode == 0
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "p", OCI_SYNC.format(sync="false"), "protect: false")})
    res = run(root)
    assert res.returncode == 0 and "-/+ OciRegistry/p" in res.stdout, res.stdout
    assert managed(root)["p"] != uid
