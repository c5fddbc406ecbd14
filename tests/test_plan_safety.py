"""Plan and apply safety (data loss first): renames, corrupt state, records the target no
longer lists, protect, immutable fields, impact of deletes, state writes, dry-runs that write
nothing. Each test here failed before its fix (see the commit messages)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import StateError
from reconciler.model import Registry
from reconciler.plan import PlanOptions, make_plan
from reconciler.state.base import State
from reconciler.state.file import FileStateStore
from reconciler.targets.local import LocalTarget
from tests.support.gitops_repo import commit_all, init_repo, managed_on_local, registry_doc, run, write_defs
from tests.test_plan import actions, observed, recorded, reg


def local(root: Path) -> LocalTarget:
    return LocalTarget(root / ".reconciler/local.db", base_dir=root)


managed = managed_on_local


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
    data = json.loads(run(repo, "--dry-run", "--format", "json").stdout)
    assert [(c["action"], c["name"], c["renamed_from"], c["uid"]) for c in data["changes"]] == [
        ("update", "new", "old", uid)]
    res = run(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert managed(repo) == {"new": uid, "keep": managed(repo)["keep"]}
    assert state_of(repo)["new"] == uid and "old" not in state_of(repo)
    again = run(repo, "--dry-run", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout


def test_rename_on_target_over_a_deleted_registry_then_in_file_keeps_the_registry(repo: Path):
    """Adversarial pass 5, item 8: records old -> X and keep -> Y; on the target Y is deleted and
    X renamed to "keep"; the file now declares "keep" only. Both changes were blocked ("resolve
    by hand", "declare it as 'keep'") and no command led out, though the file already says what
    the target has. Now it is the rename case: the record follows X, keep's stale record (Y,
    gone) is replaced, nothing is deleted."""
    stale = state_of(repo)["keep"]
    t = local(repo)
    try:
        t.delete("HelmRegistry", stale)
    finally:
        t.close()
    uid = rename_on_target(repo, "old", "keep")
    write_defs(repo, {"helm.yaml": registry_doc("HelmRegistry", "keep", "endpoint: https://old.example.com")})
    commit_all(repo, "keep only")
    dry = run(repo, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "~ HelmRegistry/keep" in dry.stdout and "renamed on the target from 'old'" in dry.stdout, dry.stdout
    assert f"the recorded uid {stale} of this name is gone" in dry.stdout, dry.stdout
    assert "blocked" not in dry.stdout and "0 to delete" in dry.stdout, dry.stdout
    res = run(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert managed(repo) == {"keep": uid}
    assert state_of(repo) == {"keep": uid}
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
    assert res.returncode == 1 and "blocked (the ! lines): the target still differs" in res.stderr
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
    assert res.returncode == 1 and "blocked (the ! lines): the target still differs" in res.stderr, res.stderr
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
    assert res.returncode == 1 and "blocked (the ! lines): the target still differs" in res.stderr, res.stderr
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


# ---- #10.3 immutable fields are replaces, and a replace says the uid changes


@pytest.mark.parametrize("before,after,why", [
    ("true", "false", "sync cannot be turned off in place"),
    ("false", "true", "sync cannot be turned on in place"),
])
def test_oci_sync_toggle_is_a_visible_replace_both_ways(tmp_path: Path, before, after, why):
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", OCI_SYNC.format(sync=before))})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    uid = managed(root)["o"]
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", OCI_SYNC.format(sync=after))})
    text = run(root, "--dry-run")
    assert f"-/+ OciRegistry/o  ({why})" in text.stdout, text.stdout
    assert f"new uid: deleted and created again; uid {uid} goes away" in text.stdout
    data = json.loads(run(root, "--dry-run", "--format", "json").stdout)
    (c,) = data["changes"]
    assert (c["action"], c["new_uid"], c["uid"]) == ("replace", True, uid) and why in c["reason"]
    assert run(root).returncode == 0
    assert managed(root)["o"] != uid
    assert run(root, "--dry-run", "--detailed-exitcode").returncode == 0


def test_oci_auth_family_change_is_a_replace_basic_to_noauth_is_not(tmp_path: Path):
    root = tmp_path / "repo"
    init_repo(root)
    spec = OCI_SYNC.format(sync="true") + "    auth: {type: basic, username: u, password: {fromEnv: PW}}\n"
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", spec)})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", OCI_SYNC.format(sync="true"))})
    data = json.loads(run(root, "--dry-run", "--format", "json").stdout)
    assert [(c["action"], c["new_uid"]) for c in data["changes"]] == [("update", False)]
    ecr = """
        endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com
        provider: helm
        baseContentPath: charts
        sync: true
        auth: {type: ecr, credentials: {credentialType: sts, arn: "arn:aws:iam::123456789012:role/p", externalId: x}}
    """
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", ecr)})
    data = json.loads(run(root, "--dry-run", "--format", "json").stdout)
    assert [(c["action"], c["new_uid"]) for c in data["changes"]] == [("replace", True)], data
    assert "auth type basic -> ecr" in data["changes"][0]["reason"]


# ---- #10.2 impact analysis: deletes and replaces of registries cluster profiles use


class _ProfiledTarget(LocalTarget):
    """The local target plus cluster profiles: ``used`` maps registry name -> references."""

    used: dict = {}
    calls: list = []

    def references(self, uids):
        type(self).calls.append(sorted(uids))
        names = {o.uid: o.name for o in self.list()}
        return {u: list(self.used.get(names.get(u), [])) for u in uids}


def _run_in_process(root: Path, monkeypatch, *, dry_run=False, fmt="text", **opts):
    import io

    from reconciler import runner

    def build(o, profile, progress=None, *, read_only=False):
        return _ProfiledTarget(root / ".reconciler/local.db", profile=profile, base_dir=root, read_only=read_only)

    monkeypatch.setattr(runner, "build_target", build)
    out, err = io.StringIO(), io.StringIO()
    from reconciler.commands import plan as plan_command

    code = plan_command.run_reconcile(runner.Options(root=root, fmt=fmt, environ={}, **opts), out, err,
                                      dry_run=dry_run)
    return code, out.getvalue(), err.getvalue()


def test_delete_of_a_registry_in_use_is_blocked_naming_the_profiles(repo: Path, monkeypatch):
    from reconciler.targets.base import ProfileRef

    _ProfiledTarget.used = {"old": [ProfileRef("p1", "edge-base", "prod", 3), ProfileRef("p2", "shared", None, 1)]}
    _ProfiledTarget.calls = []
    code, out, _ = _run_in_process(repo, monkeypatch, dry_run=True)
    assert code == 0 and _ProfiledTarget.calls == [], "no delete or replace: no look-up"
    write_defs(repo, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "old", "endpoint: https://old.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
        registry_doc("HelmRegistry", "spare", "endpoint: https://spare.example.com"),
    ])})
    assert run(repo).returncode == 0
    uids = managed(repo)
    write_defs(repo, {"helm.yaml": registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com")})
    code, out, err = _run_in_process(repo, monkeypatch)
    assert code == 1, out + err
    assert _ProfiledTarget.calls == [sorted([uids["old"], uids["spare"]])]
    assert ("! HelmRegistry/old: delete blocked: used by cluster profiles shared (tenant, 1 cluster), "
            "edge-base (project prod, 3 clusters); deleting breaks them; pass --allow-in-use once reviewed") in out, out
    assert "- HelmRegistry/spare" in out  # not referenced: deleted as usual
    assert managed(repo) == {"old": uids["old"], "keep": uids["keep"]}
    code, out, err = _run_in_process(repo, monkeypatch, dry_run=True, fmt="json")
    data = json.loads(out)
    (c,) = [c for c in data["changes"] if c["name"] == "old"]
    assert "edge-base (project prod, 3 clusters)" in c["blocked"] and data["cluster_profiles_known"] is True
    code, out, err = _run_in_process(repo, monkeypatch, allow_in_use=True)
    assert code == 0, out + err
    assert "- HelmRegistry/old  (used by cluster profiles shared (tenant" in out and "let through by --allow-in-use" in out
    assert "note: --allow-in-use" in out
    assert set(managed(repo)) == {"keep"}


def test_replace_of_a_registry_in_use_is_blocked(tmp_path: Path, monkeypatch):
    from reconciler.targets.base import ProfileRef

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", OCI_SYNC.format(sync="true"))})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    uid = managed(root)["o"]
    _ProfiledTarget.used = {"o": [ProfileRef("p1", "edge-base", "prod", 2)]}
    write_defs(root, {"oci.yaml": registry_doc("OciRegistry", "o", OCI_SYNC.format(sync="false"))})
    code, out, err = _run_in_process(root, monkeypatch)
    assert "OciRegistry/o: replace blocked: used by cluster profile edge-base (project prod, 2 clusters)" in out, out
    assert managed(root)["o"] == uid
    code, out, err = _run_in_process(root, monkeypatch, allow_in_use=True)
    assert code == 0 and managed(root)["o"] != uid, out + err


def test_local_target_says_no_profiles_are_known(repo: Path):
    write_defs(repo, {"helm.yaml": registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com")})
    text = run(repo, "--dry-run")
    assert "note: no cluster profiles known on this target" in text.stdout, text.stdout
    data = json.loads(run(repo, "--dry-run", "--format", "json").stdout)
    assert data["cluster_profiles_known"] is False
    assert any("no cluster profiles known on this target" in n for n in data["notes"])
    write_defs(repo, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "old", "endpoint: https://old.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
    ])})
    data = json.loads(run(repo, "--dry-run", "--format", "json").stdout)
    assert data["cluster_profiles_known"] is None and data["notes"] == []


# ---- #9.20 a state that cannot be written


class _FailingStore(FileStateStore):
    """Records ``ok_writes`` changes, then every state write (journal line or document) raises as
    a full or immutable disk does."""

    def __init__(self, path: Path, ok_writes: int) -> None:
        super().__init__(path)
        self.ok_writes = ok_writes
        self.broken = False

    def record(self, state, entry, message):
        if self.ok_writes <= 0:
            self.broken = True
            raise StateError(f"{self.journal_path}: cannot write the state journal: Operation not permitted")
        self.ok_writes -= 1
        super().record(state, entry, message)

    def write(self, state, message=""):
        if self.broken:
            raise PermissionError(1, "Operation not permitted", str(self.path))
        super().write(state, message)


def _apply_with_store(root: Path, make_store) -> tuple[int, io.StringIO, io.StringIO]:
    """``reconcile`` (an apply) through the command, its state store built by ``make_store``
    (the command's own binding of build_store: it imports it from runner): (exit code, out, err)."""
    from reconciler import runner
    from reconciler.commands import plan as plan_command

    orig = plan_command.build_store
    try:
        plan_command.build_store = lambda o: make_store()
        out, err = io.StringIO(), io.StringIO()
        code = plan_command.run_reconcile(runner.Options(root=root, environ={}), out, err, dry_run=False)
    finally:
        plan_command.build_store = orig
    return code, out, err


def test_state_write_failing_mid_apply_stops_and_says_what_is_unrecorded(tmp_path: Path):

    from reconciler.apply import apply_plan

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b", "c"))})
    store = _FailingStore(root / ".reconciler/state.json", ok_writes=1)
    target = local(root)
    try:
        from reconciler.validation import load_and_validate

        desired = load_and_validate(root).desired
        state = store.read()
        plan = make_plan(desired.registries, state, target.list())
        res = apply_plan(plan, target, store, state, {})
        assert [(r.change.name, r.ok, r.unrecorded, r.skipped) for r in res.results] == [
            ("a", True, False, False), ("b", False, True, False), ("c", False, False, True)]
        assert "reached the target but is NOT recorded in the state" in res.results[1].error
        assert {o.name for o in target.list() if not o.builtin} == {"a", "b"}  # c never sent
    finally:
        target.close()
    assert set(state_of(root)) == {"a"}
    # the next run converges: b is adopted by name, c created
    res = run(root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "= HelmRegistry/b" in res.stdout and "+ HelmRegistry/c" in res.stdout
    assert set(state_of(root)) == {"a", "b", "c"}
    # through the runner: the report names what reached the target unrecorded, exit 1
    write_defs(root, {"helm.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}2.example.com") for n in ("a", "b", "c"))})

    code, out, err = _apply_with_store(root, lambda: _FailingStore(root / ".reconciler/state.json", ok_writes=0))
    assert code == 1
    assert "Reached the target but not recorded: update HelmRegistry/a." in err.getvalue(), err.getvalue()
    assert "update HelmRegistry/b: FAILED: not attempted" in out.getvalue()


class _JournalFailsOnce(FileStateStore):
    """A file store whose journal line for one change cannot be written (a transient error):
    the document written at the end of the apply works."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path)
        self.appends, self.fail_at = 0, fail_at

    def _append(self, data: bytes) -> None:
        self.appends += 1
        if self.appends == self.fail_at:
            raise StateError(f"{self.journal_path}: cannot write the state journal: Input/output error")
        super()._append(data)


@pytest.mark.parametrize("store_kind, failing", [("file", "a"), ("file", "b"), ("git", "b")])
def test_a_change_whose_own_state_write_failed_but_the_final_write_stored_is_reported_recorded(
        tmp_path: Path, store_kind: str, failing: str, monkeypatch):
    """Left alone last round: a state write that fails mid-apply stops the apply and reports the
    change "reached the target but is NOT recorded"; when the write at the end of the apply then
    works, it stores that change (the state held it), yet the report still said NOT recorded, and
    a user repairing by hand would have recorded it twice. It reads done now, with a note; what
    was not attempted still says so."""

    from reconciler.apply import apply_plan
    from reconciler.state.git import GitBranchStateStore
    from reconciler.validation import load_and_validate

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b", "c"))})
    if store_kind == "file":
        store = _JournalFailsOnce(root / ".reconciler/state.json", fail_at=" ab".index(failing) + 1)  # after the header
        read_back = lambda: set(state_of(root))  # noqa: E731
    else:
        origin = tmp_path / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", str(origin)], check=True)
        monkeypatch.setenv("RECONCILER_STATE_COMMIT_SECONDS", "0")  # a commit per change
        hook = origin / "hooks" / "pre-receive"  # refuses, once, the commit that records b
        hook.write_text(f"#!/bin/sh\nread old new ref\n[ -e {tmp_path}/refused ] && exit 0\n"
                        f"git log -1 --format=%s $new | grep -q 'HelmRegistry/b' || exit 0\n"
                        f"touch {tmp_path}/refused\nexit 1\n")
        hook.chmod(0o755)
        store = GitBranchStateStore(root, branch="reconciler-state")
        read_back = lambda: {r.name for r in GitBranchStateStore(root, branch="reconciler-state").read().records.values()}  # noqa: E731,E501
    target = local(root)
    try:
        desired = load_and_validate(root).desired
        with store.lock():
            state = store.read()
            plan = make_plan(desired.registries, state, target.list())
            res = apply_plan(plan, target, store, state, {})
        reached = "abc"[:"abc".index(failing) + 1]
        assert [(r.change.name, r.ok, r.unrecorded, r.skipped) for r in res.results] == [
            (n, n in reached, False, n not in reached) for n in "abc"], res.results
        [late] = [r for r in res.results if r.note]
        assert late.change.name == failing and late.note.startswith("recorded by the state write at the end of the "
                                                                    "apply (the one after the change failed: ")
        assert {o.name for o in target.list() if not o.builtin} == set(reached)  # what came after never sent
    finally:
        target.close()
    assert read_back() == set(reached)  # recorded, as said: the whole document was written at the end
    if (store_kind, failing) != ("file", "b"):
        return
    # through the command: the correction is said, and the summary no longer says "not recorded"
    (root / ".reconciler/state.json").unlink()
    (root / ".reconciler/local.db").unlink()
    code, out, err = _apply_with_store(root, lambda: _JournalFailsOnce(root / ".reconciler/state.json", fail_at=3))
    assert code == 1  # c was not attempted
    assert "create HelmRegistry/b: done, recorded by the state write at the end of the apply" in err.getvalue()
    assert "not recorded:" not in err.getvalue() and "recorded every change that reached the target" in err.getvalue()


def test_state_that_cannot_be_written_is_found_before_any_change(repo: Path):
    import subprocess

    path = repo / ".reconciler/state.json"
    before = managed(repo)
    write_defs(repo, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "old", "endpoint: https://old2.example.com"),
        registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com"),
        registry_doc("HelmRegistry", "more", "endpoint: https://more.example.com"),
    ])})
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (needs root on ext4/xfs/btrfs)")
    try:
        res = run(repo)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "state cannot be written (Operation not permitted); nothing was changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert managed(repo) == before
    t = local(repo)
    try:
        assert t.get("HelmRegistry", before["old"]).spec["endpoint"] == "https://old.example.com"
    finally:
        t.close()


# ---- #9.40 --dry-run and status write nothing


def _snapshot(d: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args", [
    ("--dry-run",), ("--dry-run", "--profile", "airgap"), ("status", "--format", "json"),
    ("status",), ("status", "--profile", "airgap"), ("--dry-run", "--format", "json"),
])
def test_dry_run_and_status_write_nothing(repo: Path, args):
    write_defs(repo, {"helm.yaml": registry_doc("HelmRegistry", "keep", "endpoint: https://keep2.example.com")})
    before = _snapshot(repo / ".reconciler")
    assert "local.db" in before
    res = run(repo, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _snapshot(repo / ".reconciler") == before
    if args[0] == "--dry-run" and "json" not in args:
        assert "~ HelmRegistry/keep" in res.stdout and "- HelmRegistry/old" in res.stdout


def test_dry_run_on_a_fresh_checkout_creates_nothing(tmp_path: Path):
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com")})
    res = run(root, "--dry-run")
    assert res.returncode == 0 and "+ HelmRegistry/a" in res.stdout, res.stdout + res.stderr
    assert not (root / ".reconciler").exists()
    status = run(root, "status")
    assert status.returncode == 0 and "Bitnami" in status.stdout, status.stdout  # the profile's built-ins
    assert not (root / ".reconciler").exists()


def test_airgap_dry_run_leaves_the_builtins_of_the_applied_profile(repo: Path):
    import sqlite3

    def builtins():  # read the file itself: opening a LocalTarget would seed them again
        conn = sqlite3.connect(f"{(repo / '.reconciler/local.db').as_uri()}?mode=ro", uri=True)
        try:
            return sorted(r[0] for r in conn.execute("SELECT name FROM registries WHERE builtin = 1"))
        finally:
            conn.close()

    before = builtins()
    assert before
    res = run(repo, "--dry-run", "--profile", "airgap")
    assert res.returncode == 0, res.stderr
    assert builtins() == before


# ---- #10.5 protect outliving its file, and Settings.spec.maxDeletions, end to end


def test_protect_outlives_its_file_through_apply_and_later_plans(tmp_path: Path):
    root = tmp_path / "repo"
    init_repo(root)
    files = {"p.yaml": registry_doc("HelmRegistry", "precious", "endpoint: https://p.example.com", "protect: true"),
             "o.yaml": registry_doc("HelmRegistry", "other", "endpoint: https://o.example.com")}
    write_defs(root, files)
    commit_all(root, "v1")
    assert run(root).returncode == 0
    uid = managed(root)["precious"]
    write_defs(root, {"o.yaml": files["o.yaml"]})  # the file is gone
    commit_all(root, "drop precious")
    res = run(root)
    assert res.returncode == 1 and "blocked (the ! lines): the target still differs" in res.stderr, res.stdout + res.stderr
    assert "! HelmRegistry/precious: delete blocked: protect: true is recorded" in res.stdout, res.stdout
    assert managed(root)["precious"] == uid
    later = run(root, "--dry-run", "--detailed-exitcode")
    # adversarial pass: exit 0 and "No changes." said the repository and the target agreed
    assert later.returncode == 2 and "delete blocked: protect: true is recorded" in later.stdout, later.stdout
    assert "No changes" not in later.stdout and "Nothing to apply, 1 blocked: " in later.stdout, later.stdout
    doc = json.loads(run(root, "--dry-run", "--format", "json").stdout)
    assert doc["has_changes"] is False and doc["has_blocked"] is True and doc["summary"]["blocked"] == 1
    assert FileStateStore(root / ".reconciler/state.json").read().records[("tenant", "HelmRegistry", "precious")].protect
    # only an applied protect: false lets it go
    write_defs(root, {**files, "p.yaml": files["p.yaml"].replace("protect: true", "protect: false")})
    assert run(root).returncode == 0
    write_defs(root, {"o.yaml": files["o.yaml"]})
    res = run(root)
    assert res.returncode == 0 and "- HelmRegistry/precious" in res.stdout, res.stdout
    assert set(managed(root)) == {"other"}


SETTINGS = "apiVersion: reconciler/v1\nkind: Settings\nspec: {{maxDeletions: {n}}}\n"


def test_settings_max_deletions_end_to_end(tmp_path: Path):
    root = tmp_path / "repo"
    init_repo(root)
    regs = {f"r{i}.yaml": registry_doc("HelmRegistry", f"r{i}", f"endpoint: https://r{i}.example.com") for i in range(4)}
    write_defs(root, {**regs, "settings.yaml": SETTINGS.format(n=2)})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    write_defs(root, {"r0.yaml": regs["r0.yaml"], "settings.yaml": SETTINGS.format(n=2)})
    res = run(root)
    assert res.returncode == 1 and "refusing 3 deletions: more than --max-deletions 2" in res.stderr, res.stderr
    assert len(managed(root)) == 4
    assert run(root, "--max-deletions", "3").returncode == 0  # the option overrides Settings
    assert set(managed(root)) == {"r0"}
    # and a Settings value above the default (5) lets more through
    many = {f"m{i}.yaml": registry_doc("HelmRegistry", f"m{i}", f"endpoint: https://m{i}.example.com") for i in range(7)}
    write_defs(root, {**many, "r0.yaml": regs["r0.yaml"], "settings.yaml": SETTINGS.format(n=7)})
    assert run(root).returncode == 0
    write_defs(root, {"r0.yaml": regs["r0.yaml"], "settings.yaml": SETTINGS.format(n=7)})
    res = run(root)
    assert res.returncode == 0, res.stderr
    assert set(managed(root)) == {"r0"}


def test_dry_run_reads_through_the_wal_of_a_writer_still_open(repo: Path):
    t = local(repo)  # a writer that has not checkpointed (still open, or killed)
    try:
        t.create(Registry(kind="HelmRegistry", name="fresh", scope="tenant",
                          spec={"endpoint": "https://fresh.example.com"}), {})
        assert (repo / ".reconciler/local.db-wal").exists()
        write_defs(repo, {"helm.yaml": "---\n".join([
            registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("old", "keep", "fresh")])})
        db = repo / ".reconciler/local.db"
        before = (db.stat().st_mtime_ns, db.read_bytes())
        res = run(repo, "--dry-run")
        assert res.returncode == 0, res.stderr
        assert "= HelmRegistry/fresh" in res.stdout, res.stdout  # seen, not planned as a create
        assert (db.stat().st_mtime_ns, db.read_bytes()) == before
    finally:
        t.close()


def test_when_the_write_at_the_end_fails_too_the_summary_never_says_recorded(tmp_path: Path):
    """Adversarial pass 10 (left there): a state-only change (protect) whose write failed stops
    the apply; the later change is not attempted; the whole-document write at the end fails as
    well. The summary said "the write at its end recorded every change that reached the target",
    and the end write's error was shown nowhere. It says that write failed, and why."""


    root = tmp_path / "repo"
    init_repo(root)
    docs = {n: registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b")}
    write_defs(root, {"helm.yaml": "---\n".join(docs.values())})
    assert run(root).returncode == 0
    write_defs(root, {"helm.yaml": "---\n".join([
        registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com", extra_meta="protect: true"),
        registry_doc("HelmRegistry", "b", "endpoint: https://b2.example.com")])})
    code, out, err = _apply_with_store(root, lambda: _FailingStore(root / ".reconciler/state.json", ok_writes=0))
    assert code == 1
    said = err.getvalue()
    assert "recorded every change that reached the target" not in said, said
    assert "nor at its end (" in said and "Operation not permitted" in said, said
    assert "update HelmRegistry/b: FAILED: not attempted" in out.getvalue()
