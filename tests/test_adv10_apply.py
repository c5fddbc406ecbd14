"""Adversarial pass 10: what an apply reports after its state writes failed."""

from __future__ import annotations

import io
from pathlib import Path

from reconciler.errors import StateError
from reconciler.state.base import entry_key
from reconciler.state.file import FileStateStore
from tests.support.gitops_repo import commit_all, init_repo, managed_on_local, registry_doc, write_defs


class _WindowLost(FileStateStore):
    """What the git store does when its remote goes away mid-apply: ``record`` stores nothing
    until a commit (``unsaved``), the commit at the second change fails, and so does every
    later write (the whole document at the end of the apply too)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pending: list = []

    def begin(self, state, message):
        pass

    def record(self, state, entry, message):
        self._refuse_unreadable(state, entry)
        self.pending.append(entry_key(entry))
        if len(self.pending) >= 2:
            raise StateError("git:reconciler-state: cannot push to origin: connection refused")

    def unsaved(self):
        return list(self.pending)

    def write(self, state, message=""):
        raise StateError("git:reconciler-state: cannot push to origin: connection refused")

    def finish(self, state, message):
        self.write(state, message)


def _three(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b", "c"))})
    commit_all(root, "v1")
    return root


def _apply(root: Path, fmt: str, store: FileStateStore) -> tuple[int | None, str, str, Exception | None]:
    from reconciler import runner
    from reconciler.commands import plan as plan_command

    orig = plan_command.build_store
    out, err = io.StringIO(), io.StringIO()
    code, raised = None, None
    try:
        plan_command.build_store = lambda o: store
        try:
            code = plan_command.run_reconcile(runner.Options(root=root, environ={}, fmt=fmt), out, err,
                                              dry_run=False)
        except StateError as exc:
            raised = exc
    finally:
        plan_command.build_store = orig
    return code, out.getvalue(), err.getvalue(), raised


def test_markdown_never_says_recorded_of_a_change_the_state_does_not_hold(tmp_path: Path):
    """The state write of the second change failed, and so did the write at the end: the first
    change reached the target and is recorded nowhere (ok, unrecorded). The text and JSON said
    so; the markdown apply report (the job summary, the PR comment) counted it applied and said
    'the rest were applied and recorded'."""
    root = _three(tmp_path)
    code, out, err, raised = _apply(root, "markdown", _WindowLost(root / ".reconciler/state.json"))
    assert raised is None and code == 1, (code, raised, err)
    assert set(managed_on_local(root)) == {"a", "b"}
    assert "Reached the target but not recorded: create HelmRegistry/a, create HelmRegistry/b" in err, err
    assert "applied and recorded" not in out, out
    assert "1 change(s) applied but NOT recorded in the state" in out, out
    assert "> - `+` create `HelmRegistry/a`\n" in out, out


class _EndWriteFails(FileStateStore):
    """The document written at the end of the apply cannot be written; the journal works."""

    def finish(self, state, message):
        raise PermissionError(1, "Operation not permitted", str(self.path))


def test_markdown_says_what_reached_the_target_when_the_last_state_write_fails(tmp_path: Path):
    """The write at the end of the apply failed after the changes reached the target: JSON got
    the plan's document with 'applied' and 'error' (6a65c25), markdown got nothing at all, so
    the job summary and the PR comment of a run that created registries were empty."""
    root = _three(tmp_path)
    code, out, err, raised = _apply(root, "markdown", _EndWriteFails(root / ".reconciler/state.json"))
    assert raised is not None and "could not be written at the end of the apply" in str(raised)
    assert set(managed_on_local(root)) == {"a", "b", "c"}
    assert out.startswith("<!-- reconcile"), out
    assert "**Apply: 3 change(s) applied, 0 failed**" in out, out
    assert "could not be written at the end of the apply" in out, out


def test_a_replace_of_a_renamed_registry_stopped_by_its_first_write_leaves_no_record_of_the_deleted_one(
        tmp_path: Path):
    """A registry renamed on the target (z -> z2) whose new definition turns sync off: a replace
    that moves the record. Its first state write (the drop of the new name) failed: the apply
    stopped after the delete, the write at the end stored the state, and the replace read 'its
    delete is recorded' (not unrecorded), while that state still held the old name's record of
    the registry just deleted."""
    from reconciler.apply import apply_plan
    from reconciler.model import Registry
    from reconciler.plan import make_plan
    from reconciler.targets.local import LocalTarget
    from reconciler.validation import load_and_validate
    from tests.support.gitops_repo import run
    from tests.test_adv9_apply import _oci
    from tests.test_plan_safety import _JournalFailsOnce

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"oci.yaml": _oci("true")})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    t = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        o = t.find("tenant", "OciRegistry", "z")
        assert o is not None
        t.update(o.uid, Registry(kind=o.kind, name="z2", scope=o.scope, spec=dict(o.spec)), {})
    finally:
        t.close()
    write_defs(root, {"oci.yaml": _oci("false").replace("name: z\n", "name: z2\n")})
    store = _JournalFailsOnce(root / ".reconciler/state.json", fail_at=2)  # the first line after the header
    target = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        state = store.read()
        plan = make_plan(load_and_validate(root).desired.registries, state, target.list())
        [change] = plan.actionable
        assert change.action == "replace" and change.renamed_from is not None, change
        res = apply_plan(plan, target, store, state, {})
    finally:
        target.close()
    assert managed_on_local(root) == {}  # deleted, not created again
    [r] = res.results
    assert not r.ok and "WAS DELETED" in r.error, r
    assert FileStateStore(root / ".reconciler/state.json").read().records == {}  # no record of the deleted one
    res2 = run(root)
    assert res2.returncode == 0, res2.stdout + res2.stderr
    assert set(managed_on_local(root)) == {"z2"}
