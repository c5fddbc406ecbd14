"""Adversarial pass 9: apply results after a state write failed mid-apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.plan import make_plan
from reconciler.state.file import FileStateStore
from reconciler.targets.local import LocalTarget
from tests.support.gitops_repo import commit_all, init_repo, managed_on_local, registry_doc, run, write_defs
from tests.test_plan_safety import _JournalFailsOnce


def _oci(sync: str) -> str:
    return registry_doc("OciRegistry", "z", f"""
        endpoint: registry.example.com
        provider: helm
        baseContentPath: charts
        sync: {sync}
        auth: {{type: noAuth}}
    """)


def test_a_replace_stopped_by_its_delete_write_is_not_reported_done(tmp_path: Path):
    """A replace deletes the old registry, records that (drop), then creates the new one. When
    that first state write fails, the apply stops before the create: the registry is gone and no
    new one exists. The write at the end of the apply stores the drop, but the replace was
    reported done ("recorded by the state write at the end"), exit 0: a production registry
    deleted and the report saying it was replaced."""
    from reconciler.apply import apply_plan
    from reconciler.validation import load_and_validate

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"oci.yaml": _oci("true")})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    write_defs(root, {"oci.yaml": _oci("false")})
    store = _JournalFailsOnce(root / ".reconciler/state.json", fail_at=2)  # the drop's line, after the header
    target = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        desired = load_and_validate(root).desired
        state = store.read()
        plan = make_plan(desired.registries, state, target.list())
        assert [c.action for c in plan.actionable] == ["replace"]
        res = apply_plan(plan, target, store, state, {})
    finally:
        target.close()
    assert managed_on_local(root) == {}  # deleted, never created again
    [r] = res.results
    assert not r.ok and res.failed == [r], r
    assert not r.unrecorded  # the write at the end recorded the delete
    assert "not created" in r.error, r.error
    assert FileStateStore(root / ".reconciler/state.json").read().records == {}
    # the next run creates it
    res2 = run(root)
    assert res2.returncode == 0, res2.stdout + res2.stderr
    assert "+ OciRegistry/z" in res2.stdout and set(managed_on_local(root)) == {"z"}


def test_a_rename_stopped_by_its_old_record_write_is_not_reported_recorded(tmp_path: Path):
    """A registry renamed on the target, then updated: the old name's record is dropped, then
    the new one put. When the drop's write fails the apply stops before the put, and the write
    at the end stores a state with neither record; the update was reported done and recorded."""
    from reconciler.apply import apply_plan
    from reconciler.validation import load_and_validate
    from tests.test_plan_safety import rename_on_target

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": registry_doc("HelmRegistry", "old", "endpoint: https://old.example.com")})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    rename_on_target(root, "old", "new")
    write_defs(root, {"helm.yaml": registry_doc("HelmRegistry", "new", "endpoint: https://new.example.com")})
    store = _JournalFailsOnce(root / ".reconciler/state.json", fail_at=2)
    target = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        desired = load_and_validate(root).desired
        state = store.read()
        plan = make_plan(desired.registries, state, target.list())
        [change] = plan.actionable
        assert change.action == "update" and change.renamed_from is not None and not change.state_only
        res = apply_plan(plan, target, store, state, {})
    finally:
        target.close()
    [r] = res.results
    assert not r.ok and r.unrecorded and not r.note, r
    assert FileStateStore(root / ".reconciler/state.json").read().records == {}  # under neither name
    res2 = run(root)  # adopted by name
    assert res2.returncode == 0, res2.stdout + res2.stderr
    assert "= HelmRegistry/new" in res2.stdout, res2.stdout


class _EndWriteFails(FileStateStore):
    """The document written at the end of the apply cannot be written; ``keep``: the journal
    works (what the store took is stored), else it stores nothing either (what the git store
    holds between its commits)."""

    def __init__(self, path: Path, keep: bool) -> None:
        super().__init__(path)
        self.keep, self.pending = keep, []

    def record(self, state, entry, message):
        if self.keep:
            super().record(state, entry, message)
        else:
            from reconciler.state.base import entry_key

            self.pending.append(entry_key(entry))

    def unsaved(self):
        return list(self.pending)

    def finish(self, state, message):
        raise PermissionError(1, "Operation not permitted", str(self.path))


@pytest.mark.parametrize("keep", [True, False])
def test_an_apply_whose_last_state_write_fails_gives_json_what_reached_the_target(tmp_path: Path, keep: bool):
    """--format json, the state write at the end of the apply failing: the one document said
    "has_changes": false with no "applied" (one_json_document's fallback), while the registry
    had been created: a CI step reading it believed nothing was done. It is the plan's document
    now, with what was applied and the error."""
    import io
    import json

    from reconciler import runner
    from reconciler.commands import plan as plan_command
    from reconciler.errors import StateError

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"helm.yaml": registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com")})
    commit_all(root, "v1")
    orig = plan_command.build_store
    out, err = io.StringIO(), io.StringIO()
    try:
        plan_command.build_store = lambda o: _EndWriteFails(root / ".reconciler/state.json", keep)
        try:
            plan_command.run_reconcile(runner.Options(root=root, environ={}, fmt="json"), out, err, dry_run=False)
        except StateError as exc:
            assert "could not be written at the end of the apply" in str(exc)
        else:
            raise AssertionError("the apply did not fail")
    finally:
        plan_command.build_store = orig
    assert set(managed_on_local(root)) == {"a"}
    doc = json.loads(out.getvalue())  # one document
    assert doc["has_changes"] is True and "could not be written at the end of the apply" in doc["error"]
    [applied] = doc["applied"]
    assert applied["name"] == "a" and applied["ok"] is True and applied["uid"] == managed_on_local(root)["a"]
    assert (applied["error"] is None) == keep, applied


def test_a_state_only_change_whose_write_failed_but_the_final_write_stored_is_reported_done(tmp_path: Path):
    """The pass 8 fix marked done only the changes that reached the target: a state-only one
    (protect: true now recorded) whose own write failed stayed 'FAILED: not recorded in the
    state', exit 1, while the write at the end of the apply had stored protect: true."""
    from reconciler.apply import apply_plan
    from reconciler.validation import load_and_validate

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com")})
    commit_all(root, "v1")
    assert run(root).returncode == 0
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com",
                                             "protect: true")})
    store = _JournalFailsOnce(root / ".reconciler/state.json", fail_at=2)
    target = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        state = store.read()
        plan = make_plan(load_and_validate(root).desired.registries, state, target.list())
        [change] = plan.actionable
        assert change.state_only
        res = apply_plan(plan, target, store, state, {})
    finally:
        target.close()
    [r] = res.results
    assert r.ok and not r.unrecorded and r.note.startswith("recorded by the state write at the end"), r
    [rec] = FileStateStore(root / ".reconciler/state.json").read().records.values()
    assert rec.protect is True
