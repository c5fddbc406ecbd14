"""Run a plan through a target, recording each success in the state at once.

A change that fails is reported and the others go on; every success is recorded (a fsynced
journal line with the file store) before the next change starts, a create as soon as the
target answers with its uid, before any other request; so a crash or kill at any point
loses nothing, and a rerun converges (``plan`` adopts a registry found by name that the
state does not know: one whose create was in flight when the run died, while it is still
declared). With ``git:BRANCH`` the state is committed at most every ~10 s and at the end: a
kill loses at most that window, which the rerun recovers by adoption.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reconciler.errors import NotFound, ReconcilerError, StateError, TargetError, redact
from reconciler.model import Key, Registry, fingerprint, target_spec
from reconciler.plan import ADOPT, APPLY_ORDER, CREATE, DELETE, NOOP, REPLACE, UPDATE, Change, Plan, secret_hashes
from reconciler.secrets import known_values, present
from reconciler.state.base import Record, State, StateStore, UidConflict, entry_drop, entry_put
from reconciler.targets.base import Target
from reconciler.testhooks import checkpoint


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    ok: bool
    uid: str | None = None
    error: str = ""
    unrecorded: bool = False  # reached the target, but the state write failed
    skipped: bool = False  # not attempted: an earlier state write failed
    note: str = ""  # done, and worth saying how (recorded late, by the write at the end of the apply)
    halfway: bool = False  # stopped between its steps by a failed state write: not done, whatever is recorded
    # why its own state write failed (reached the target or not), redacted: the write at the end may store it
    write_error: str = ""


@dataclass
class ApplyResult:
    results: list[ChangeResult]
    # the write at the end failed too, after one during the apply had (the results already say
    # which changes are not recorded): why, for the summary, which must not say "recorded"
    end_write_error: str = ""

    @property
    def failed(self) -> list[ChangeResult]:
        return [r for r in self.results if not r.ok]

    @property
    def succeeded(self) -> list[ChangeResult]:
        return [r for r in self.results if r.ok]

    @property
    def unrecorded(self) -> list[ChangeResult]:
        return [r for r in self.results if r.unrecorded]


def _checked_before_create(reg: Registry) -> bool:
    spec = reg.spec
    return reg.kind == "OciRegistry" and bool(spec.get("sync")) and spec.get("provider", "helm") in ("helm", "pack",
                                                                                                  "zarf")


def _reworded(exc: TargetError, message: str) -> TargetError:
    """``exc`` (its class, status and code kept) saying ``message``."""
    new = copy.copy(exc)
    new.args = (message,)
    return new


class _Unrecorded(Exception):
    """A change reached the target and the state write that records it failed; ``halfway``:
    the write of a step with more to come (a replace's delete, a rename's old record), so the
    change stopped there, not done."""

    def __init__(self, message: str, *, halfway: bool = False) -> None:
        super().__init__(message)
        self.halfway = halfway


class EndWriteFailed(StateError):
    """The state write at the end of an apply failed, after changes reached the target:
    ``results`` says which (``unrecorded``: those the state does not hold), for a report that
    must not read as if nothing was done (``--format json``)."""

    def __init__(self, message: str, results: list[ChangeResult]) -> None:
        super().__init__(message)
        self.results = results


class _UidTaken(Exception):
    """The target gave a uid the state records under another key: the store refused to
    record it (``UidConflict``: the reader refuses one uid under two keys, #9.3)."""

    def __init__(self, conflict: UidConflict) -> None:
        record, other = conflict.record, conflict.other
        super().__init__(f"the target gave uid {record.uid!r}, which the state records for {other[1]}/{other[2]} "
                         f"(scope {other[0]}): not recorded for {record.kind}/{record.name} (scope {record.scope}), "
                         "as one uid under two names would make the state unreadable; see what the target holds "
                         "(reconcile export) before the next apply")


class _Recorder:
    """Serialises state mutations; records each change in O(1) through the store (a journal
    line for the file store, a commit at most every few seconds for the git store) and
    writes the whole document once, in ``finish`` (issue #11.1)."""

    def __init__(self, store: StateStore, state: State, target_name: str, prefix: str, suffix: str) -> None:
        self.store = store
        self.state = state
        self.lock = threading.Lock()
        self.prefix, self.suffix = prefix, suffix  # of each state revision's message
        # a state without records belongs to no target yet (one emptied on another keeps its name,
        # and the records this apply adds would be refused as that target's by every later run)
        self.state.target = target_name if not state.records else (state.target or target_name)
        self.begun = False
        self.count = 0
        self.entries = 0  # what the store took (a change may give it two: a replace's drop and put)

    def begin(self) -> None:
        """Before the first change: the state can be written (nothing changed otherwise)."""
        with self.lock:
            if not self.begun:
                self.store.begin(self.state, f"{self.prefix}: start ({self.suffix})")
                self.begun = True

    def put(self, record: Record, message: str, *, change: bool = True) -> None:
        """``change``: False for a second line of the same change (what a later read added)."""
        with self.lock:
            before, unverified = self.state.records.get(record.key), record.key in self.state.unverified
            self.state.records[record.key] = record
            self.state.unverified.discard(record.key)  # written now, from a reviewed definition
            try:
                self._record(entry_put(record), message, change)
            except UidConflict as exc:  # nothing was written: the state goes back to what it held
                if before is None:
                    del self.state.records[record.key]
                else:
                    self.state.records[record.key] = before
                if unverified:
                    self.state.unverified.add(record.key)
                raise _UidTaken(exc) from exc

    def drop(self, key: Key, message: str, *, also: Key | None = None) -> None:
        """``also``: a key whose drop is recorded next, out of the state now (a write at the end
        of the apply after this one failed must not keep it)."""
        with self.lock:
            self.state.records.pop(key, None)
            if also is not None:
                self.state.records.pop(also, None)
            self._record(entry_drop(key), message)

    def _record(self, entry: dict[str, Any], message: str, change: bool = True) -> None:
        count = self.count + change
        self.store.record(self.state, entry, f"{self.prefix}: {count} change(s) so far, last {message} "
                                             f"({self.suffix})")
        self.count = count
        self.entries += 1

    def finish(self, *, whole: bool = False) -> None:
        """``whole``: a state write failed during the apply: write the whole document (``state``
        holds every change that reached the target, the one whose write failed too), not only
        what the store has not stored yet, which it cannot tell apart from what it failed to."""
        with self.lock:
            if not self.begun:
                return
            message = f"{self.prefix}: {self.count} change(s) recorded ({self.suffix})"
            if whole:
                self.state.serial += 1
                self.store.write(self.state, message)
            else:
                self.store.finish(self.state, message)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def apply_plan(
    plan: Plan,
    target: Target,
    store: StateStore,
    state: State,
    secrets: Mapping[Key, Mapping[str, str | None]],
    *,
    commit: str | None = None,
    on_result: Callable[[ChangeResult], None] | None = None,
    state_key: str | None = None,
) -> ApplyResult:
    # e.g. "apply 3f2a1bc9d0e1: create HelmRegistry/x (plan: 2 to create, ...)"
    rec = _Recorder(store, state, target.identity, f"apply {(commit or 'uncommitted')[:12]}"
                    f"{'-dirty' if commit and commit.endswith('-dirty') else ''}", f"plan: {plan.summary()}")
    known = known_values(secrets)
    results: list[ChangeResult] = []
    results_lock = threading.Lock()
    stop = threading.Event()  # set once a state write failed: nothing more reaches the target
    if any(c.action != NOOP for c in plan.actionable):
        store.check_writable()  # #9.20: before the first change reaches the target

    def put(record: Record, message: str, *, change: bool = True) -> None:
        try:
            rec.put(record, message, change=change)
        except (OSError, StateError) as exc:
            raise _Unrecorded(str(exc)) from exc

    def drop(key: Key, message: str, *, halfway: bool = False, also: Key | None = None) -> None:
        try:
            rec.drop(key, message, also=also)
        except (OSError, StateError) as exc:
            raise _Unrecorded(str(exc), halfway=halfway) from exc

    def record_for(reg: Registry, uid: str, origin: str, old: Record | None, *, stamp: bool = True) -> Record:
        """``stamp``: read the target's modification stamp first (a request; else none yet)."""
        return Record(
            uid=uid,
            kind=reg.kind,
            name=reg.name,
            scope=reg.scope,
            fingerprint=fingerprint(reg.spec),
            secret_hashes=secret_hashes(state.salt, reg, secrets.get(reg.key, {}), state_key),
            protect=reg.protect,
            origin=origin,
            applied_commit=commit,
            applied_at=_now(),
            last_sync=old.last_sync if old else None,
            spec=target_spec(reg.spec),
            version=target.version(reg.kind, uid) if stamp else None,
            ca_digest=plan.ca.get(reg.key),
        )

    def run(change: Change) -> ChangeResult:
        key = change.key
        old = state.records.get(change.renamed_from or key)
        values = present(secrets.get(key, {}))
        what = f"{change.action} {change.title}"
        if change.action == DELETE:
            if not change.gone:
                checkpoint("delete:before-target")
                try:
                    target.delete(change.kind, str(change.uid))
                except NotFound:
                    pass
                checkpoint("delete:after-target")
            drop(key, what)
            checkpoint("delete:after-state")
            return ChangeResult(change, True, change.uid)
        reg = change.registry
        assert reg is not None
        old_gone = False  # a replace whose old registry someone else deleted: this apply deleted nothing
        if change.action == REPLACE:
            # the old registry goes first (a name is unique): ask the target whether it would
            # take the new one before deleting anything, where Spectro's provider asks it
            # before a create (validateRegistryCred, resource_registry_oci_ecr.go: an OCI
            # registry with sync on; with sync off Palette need not reach it at all)
            try:
                if _checked_before_create(reg):
                    target.validate(reg, values)
            except TargetError as exc:
                raise _reworded(exc, f"the target refused the new definition ({exc}); the old registry "
                                     f"(uid {change.uid}) was not deleted") from exc
            checkpoint("replace:before-delete")
            try:
                target.delete(change.kind, str(change.uid))
            except NotFound:
                old_gone = True
            checkpoint("replace:after-delete")
            # the old name's record (the deleted uid) leaves the state with the first drop: a write
            # at the end of the apply after that drop's write failed must not record it still
            drop(key, f"replace {change.title}: deleted old", halfway=True, also=change.renamed_from)
            if change.renamed_from:
                drop(change.renamed_from, f"replace {change.title}: deleted old", halfway=True)
        if change.action in (CREATE, REPLACE):
            checkpoint("create:before-target")
            try:
                uid = target.create(reg, values)
            except TargetError as exc:
                if change.action != REPLACE:
                    raise
                old_fate = "was already gone from the target" if old_gone else "WAS DELETED"
                raise _reworded(exc, f"the old registry (uid {change.uid}) {old_fate} and the new one could not "
                                     f"be created ({exc}); the next apply creates it") from exc
            checkpoint("create:after-target")
            # recorded before any other request: a kill in the stamp's GET (rate-limited, retried)
            # left a registry the state never knew, never deleted once its definition went
            created = record_for(reg, uid, "created", old, stamp=False)
            put(created, what)
            checkpoint("create:after-state")
            version = target.version(reg.kind, uid)
            if version is not None:  # spares the next plan a GET of it; a kill before this costs only that
                put(dataclasses.replace(created, version=version), f"{what}: its modification stamp", change=False)
            return ChangeResult(change, True, uid)
        uid = str(change.uid)
        if change.action == ADOPT:
            checkpoint("adopt:before-target")
            target.update(uid, reg, values)
            checkpoint("adopt:after-target")
            put(record_for(reg, uid, "adopted", old), what)
            return ChangeResult(change, True, uid)
        if change.action == UPDATE:
            if not change.state_only:
                checkpoint("update:before-target")
                target.update(uid, reg, values)
                checkpoint("update:after-target")
            if change.renamed_from:
                # the old name's record goes first: a crash in between leaves no record, which
                # the next plan repairs by adoption; two records of one uid would be corrupt
                drop(change.renamed_from, f"{what}: renamed from {change.renamed_from[2]}", halfway=True)
            put(record_for(reg, uid, old.origin if old else "created", old), what)
            checkpoint("update:after-state")
            return ChangeResult(change, True, uid)
        raise AssertionError(f"unexpected action {change.action}")

    def guarded(change: Change) -> ChangeResult:
        if stop.is_set():
            result = ChangeResult(change, False, change.uid, "not attempted: the state cannot be written",
                                  skipped=True)
        else:
            try:
                result = run(change)
            except TargetError as exc:
                result = ChangeResult(change, False, change.uid, redact(str(exc), known))
            except _UidTaken as exc:  # this change fails, the state stays readable and the others go on
                result = ChangeResult(change, False, change.uid, redact(str(exc), known))
            except _Unrecorded as exc:
                stop.set()
                touched = not (change.state_only or (change.action == DELETE and change.gone))
                what = ("reached the target but is NOT recorded in the state" if touched
                        else "not recorded in the state (nothing was sent to the target)")
                if exc.halfway and change.action == REPLACE:
                    what = (f"the old registry (uid {change.uid}) WAS DELETED and the new one was not created: the "
                            "state write after the delete failed and the apply stopped; the next apply creates it")
                elif exc.halfway and touched:
                    what = "renamed on the target but NOT recorded under either name: the apply stopped"
                result = ChangeResult(change, False, change.uid, redact(f"{what}: {exc}", known), unrecorded=touched,
                                      halfway=exc.halfway, write_error=redact(str(exc), known))
        with results_lock:
            results.append(result)
        if on_result:
            on_result(result)
        return result

    todo = sorted((c for c in plan.actionable if c.action != NOOP), key=lambda c: (APPLY_ORDER[c.action], c.key))
    phases: list[list[Change]] = []
    for change in todo:
        phase = 0 if change.action in (DELETE, REPLACE) else 1
        while len(phases) <= phase:
            phases.append([])
        phases[phase].append(change)
    workers = max(1, int(getattr(target, "max_concurrency", 1)))
    if todo:
        rec.begin()
    done = False
    end_write_error = ""
    try:
        for phase_changes in phases:
            if workers == 1 or len(phase_changes) <= 1:
                for change in phase_changes:
                    guarded(change)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(guarded, phase_changes))
        done = True
    finally:
        try:
            rec.finish(whole=stop.is_set())
        except (OSError, ReconcilerError) as exc:
            end_write_error = redact(str(exc), known)
            # what the store took and never stored (the git store's changes since its last commit)
            # reached the target unrecorded: the results say so, and so does the error
            lost = _mark_unsaved(results, store.unsaved())
            # an interrupt or a bug in flight, or a state write that already failed (the results
            # say which changes are unrecorded): that is what the user must see, not this
            if done and not stop.is_set():
                if not lost:
                    raise EndWriteFailed(f"{store.description}: the state could not be written at the end of the "
                                         f"apply ({exc}); the changes already recorded are kept and the next run "
                                         "reads them", results) from exc
                kept = ("the changes it recorded before are kept" if rec.entries > len(store.unsaved())
                        else "nothing this apply did is recorded")
                raise EndWriteFailed(f"{store.description}: the state could not be written at the end of the apply "
                                     f"({exc}); {kept}. Reached the target but NOT recorded: "
                                     f"{', '.join(f'{c.action} {c.title}' for c in lost)}. The next plan finds them "
                                     "again (a created registry is adopted by name)", results) from exc
        else:
            if stop.is_set():  # a write failed mid-apply; the whole document written at the end holds it all
                _mark_recorded(results)
    return ApplyResult(results, end_write_error)


def _mark_recorded(results: list[ChangeResult]) -> None:
    """The changes reported "NOT recorded" when their own state write failed, that the whole
    document written at the end of the apply stored after all: done and recorded, said so
    (``note``), not left reading as unrecorded (what a user would then repair by hand)."""
    for i, r in enumerate(results):
        if r.halfway:  # not done: the delete of a replace is recorded now, its create never ran
            if r.change.action == REPLACE:
                results[i] = dataclasses.replace(r, unrecorded=False)
        elif r.write_error:  # a state-only change too (protect, a gone registry's record): stored now, done
            results[i] = dataclasses.replace(r, ok=True, unrecorded=False, error="", note=(
                f"recorded by the state write at the end of the apply (the one after the change failed: "
                f"{r.write_error})"))


def _mark_unsaved(results: list[ChangeResult], keys: list[Key]) -> list[Change]:
    """Mark unrecorded the results whose changes put or dropped one of ``keys`` (the record of a
    rename's old name too); their changes, in the order they ran."""
    if not keys:
        return []
    unsaved = set(keys)
    lost = []
    for i, r in enumerate(results):
        if r.change.key in unsaved or r.change.renamed_from in unsaved:
            lost.append(r.change)
            if not r.unrecorded:
                results[i] = dataclasses.replace(r, unrecorded=True)
    return lost
