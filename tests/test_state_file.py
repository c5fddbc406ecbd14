"""The JSON file state store runs the shared StateStore contract, plus its own details."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import StateLocked
from reconciler.state.base import State, StateStore, entry_put
from reconciler.state.file import FileStateStore
from tests.support.state_contract import StateStoreContract, make_record, with_record


class TestFileStore(StateStoreContract):
    def make_store(self, tmp_path: Path) -> StateStore:
        return FileStateStore(tmp_path / "sub" / "state.json")

    def reopen(self, store: StateStore) -> StateStore:
        assert isinstance(store, FileStateStore)
        return FileStateStore(store.path)

    def plant(self, store: StateStore, text: str) -> None:
        assert isinstance(store, FileStateStore)
        store.path.parent.mkdir(parents=True, exist_ok=True)
        store.path.write_text(text)

    def raw(self, store: StateStore) -> str | None:
        assert isinstance(store, FileStateStore)
        return store.path.read_text() if store.path.exists() else None

    def open_code(self, store: StateStore) -> str:
        assert isinstance(store, FileStateStore)
        return f"from reconciler.state.file import FileStateStore\nstore = FileStateStore({str(store.path)!r})"


def test_write_leaves_no_temp_files_and_is_valid_json(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    state = State()
    for i in range(20):
        with_record(state, make_record(f"r{i}"))
        state.serial += 1
        store.write(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["serial"] == 20


def test_lock_held_by_another_process_names_it(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    code = (
        "import sys, time; from pathlib import Path; from reconciler.state.file import FileStateStore\n"
        "s = FileStateStore(Path(sys.argv[1]))\n"
        "with s.lock():\n    print('locked', flush=True); sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateLocked) as info:
            with store.lock(timeout=0.2):
                pass
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.communicate("\n", timeout=10)
    with store.lock():
        pass


def test_the_holder_a_lock_file_names_is_escaped_and_bounded(tmp_path: Path):
    """Anyone who can write the lock file while a run holds it could put terminal controls or
    a forged line in the StateLocked error, as in a git lease's holder (adversarial pass 3)."""
    import fcntl

    store = FileStateStore(tmp_path / "state.json")
    store.lock_path.write_text("evil\x1b]0;pwned\x07\rNo changes.\n" + "x" * 5000)
    with open(store.lock_path) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file description: it blocks store.lock
        with pytest.raises(StateLocked) as info:
            with store.lock(timeout=0):
                pass
    message = str(info.value)
    assert "locked by evil\\x1b]0;pwned\\x07\\x0dNo changes.\\x0axxx" in message
    assert not any(c in message for c in "\x1b\x07\r\n") and len(message) < 600


def test_state_file_is_private(tmp_path: Path):
    store = FileStateStore(tmp_path / "state.json")
    store.write(State())
    assert os.stat(store.path).st_mode & 0o077 == 0


# -- the journal (issue #11.1) ---------------------------------------------------------------

from reconciler.errors import StateError  # noqa: E402
from reconciler.state import file as file_store  # noqa: E402
from reconciler.state.base import entry_drop, entry_put  # noqa: E402


def started(tmp_path: Path, *names: str) -> tuple[FileStateStore, State]:
    """An apply that recorded ``names`` and was then killed (no finish)."""
    store = FileStateStore(tmp_path / "state.json")
    state = store.read()
    store.begin(state, "start")
    for n in names:
        rec = make_record(n)
        with_record(state, rec)
        store.record(state, entry_put(rec), f"create {n}")
    return store, state


def test_each_change_is_one_journal_line_and_the_document_is_written_once(tmp_path: Path, monkeypatch) -> None:
    writes = []
    real = FileStateStore.write
    monkeypatch.setattr(FileStateStore, "write", lambda self, s, m="": (writes.append(m), real(self, s, m)))
    store, state = started(tmp_path, *[f"r{i}" for i in range(50)])
    journal = (tmp_path / "state.json.journal").read_bytes()
    assert journal.count(b"\n") == 51  # header + one line per change
    assert writes == ["start"]  # the document only at begin so far
    # A kill now loses nothing: a new reader replays the journal.
    assert len(FileStateStore(store.path).read().records) == 50
    store.finish(state, "done")
    assert writes == ["start", "done"]
    assert not (tmp_path / "state.json.journal").exists()
    assert len(json.loads(store.path.read_text())["registries"]) == 50


def test_document_is_rewritten_every_few_seconds_during_a_long_apply(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(file_store, "COMPACT_INTERVAL", 0.0)
    store, state = started(tmp_path, "a", "b")
    assert len(json.loads(store.path.read_text())["registries"]) == 2  # folded after each record here
    assert FileStateStore(store.path).read().to_json() == state.to_json()


def test_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    store, _ = started(tmp_path, "a", "b")
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(b'{"op": "put", "record": {"uid": "x", "ki')  # killed mid-write
    assert sorted(k[2] for k in FileStateStore(store.path).read().records) == ["a", "b"]


def test_corrupt_journal_line_in_the_middle_is_refused(tmp_path: Path) -> None:
    store, _ = started(tmp_path, "a")
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(b"{not json\n" + json.dumps(entry_drop(("tenant", "OciRegistry", "a"))).encode() + b"\n")
    with pytest.raises(StateError, match=r"state.json.journal:3: journal is corrupt"):
        FileStateStore(store.path).read()


def test_a_journal_that_records_one_uid_twice_is_refused(tmp_path: Path) -> None:
    """#9.3 holds for the journal as for the document: a line putting another record with a
    uid already recorded (a hand edit) made the plan delete the other registry."""
    store, state = started(tmp_path, "a", "b")
    twin = dict(entry_put(make_record("c")))
    twin["record"] = {**twin["record"], "uid": state.records[("tenant", "OciRegistry", "a")].uid}
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(json.dumps(twin).encode() + b"\n")
    with pytest.raises(StateError, match=r"state.json.journal: journal is corrupt \(uid .* is recorded for "
                                         r"OciRegistry/a and OciRegistry/c\)"):
        FileStateStore(store.path).read()


def test_a_bad_journal_record_is_said_of_its_line(tmp_path: Path) -> None:
    store, _ = started(tmp_path, "a")
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(json.dumps({"op": "put", "record": {"uid": "u"}}).encode() + b"\n")
    with pytest.raises(StateError) as err:
        FileStateStore(store.path).read()
    assert "state.json.journal:3: journal is corrupt (missing field" in str(err.value)
    assert "registries[" not in str(err.value)  # the document's words, not the journal's


@pytest.mark.parametrize("what", ["fifo", "dev-zero"])
def test_a_journal_that_is_not_a_regular_file_is_refused_not_read_for_ever(tmp_path: Path, what: str) -> None:
    store, _ = started(tmp_path, "a")
    store.finish(store.read(), "done")
    journal = tmp_path / "state.json.journal"
    if what == "fifo":
        os.mkfifo(journal)  # a read of a FIFO with no writer waited for ever
    else:
        journal.symlink_to("/dev/zero")
    import signal

    def hung(signum, frame):  # a regression waits on the FIFO for ever: fail instead
        raise TimeoutError("the journal read did not return")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(StateError, match=r"state.json.journal: cannot read the state journal: .*not a regular"):
            FileStateStore(store.path).read()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("where", ["document", "journal"])
def test_json_nested_too_deep_is_refused_in_words(tmp_path: Path, where: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000  # RecursionError in json.loads: it was an internal error
    store, _ = started(tmp_path, "a")
    if where == "document":
        (tmp_path / "state.json.journal").unlink()
        store.path.write_bytes(deep)
        match = "state is not valid JSON"
    else:
        with open(tmp_path / "state.json.journal", "ab") as fh:
            fh.write(deep + b"\n")
        match = r"state.json.journal:3: journal is corrupt \(not JSON"
    with pytest.raises(StateError, match=match):
        FileStateStore(store.path).read()


def test_an_integer_of_5000_digits_in_the_journal_is_refused_in_words(tmp_path: Path) -> None:
    """Adversarial pass 3: json.loads raises a plain ValueError (not a JSONDecodeError) for an
    integer of more than 4,300 digits; the journal reader let it through, an internal error."""
    store, _ = started(tmp_path, "a")
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(b'{"op": "fold", "serial": ' + b"7" * 5000 + b"}\n")
    with pytest.raises(StateError, match=r"state.json.journal:3: journal is corrupt \(not JSON: an integer of more "
                                         r"than 4,300 digits\); refusing"):
        FileStateStore(store.path).read()


def test_journal_of_another_lineage_or_serial_is_refused(tmp_path: Path) -> None:
    store, state = started(tmp_path, "a")
    journal = (tmp_path / "state.json.journal").read_bytes()
    other = State(serial=state.serial)
    store.path.write_text(json.dumps(other.to_json()))
    with pytest.raises(StateError, match="journal of another state"):
        FileStateStore(store.path).read()
    older = json.loads(json.dumps(state.to_json()))
    older["serial"] = state.serial + 3
    store.path.write_text(json.dumps(older))
    with pytest.raises(StateError, match="does not belong to this state"):
        FileStateStore(store.path).read()
    assert (tmp_path / "state.json.journal").read_bytes() == journal  # never overwritten
    store.path.unlink()
    with pytest.raises(StateError, match="journal without its state"):
        FileStateStore(store.path).read()


def test_kill_between_document_rename_and_journal_removal(tmp_path: Path) -> None:
    """write() marks the journal as folded before the rename: the journal it leaves behind
    reads as already in the document, not as one of another serial."""
    store, state = started(tmp_path, "a", "b")
    journal = tmp_path / "state.json.journal"
    kept = tmp_path / "kept"
    real_unlink = os.unlink

    def keep(path, *a, **k):
        if Path(path) == journal:
            kept.write_bytes(journal.read_bytes())
        return real_unlink(path, *a, **k)

    import unittest.mock

    with unittest.mock.patch("os.unlink", keep):
        state.serial += 1
        store.write(state, "done")
    kept.rename(journal)  # as if the kill came before the unlink
    again = FileStateStore(store.path).read()
    assert again.to_json() == state.to_json()


def test_reader_without_the_lock_rereads_when_an_apply_folds_meanwhile(tmp_path: Path, monkeypatch) -> None:
    """A dry-run beside an apply: it read the document, then the apply rewrote it and started
    a new journal before the reader got to the journal. The reader reads again."""
    store, state = started(tmp_path, "a")
    reader = FileStateStore(store.path)
    import reconciler.state.file as file_store

    real = file_store.read_bounded
    calls = {"n": 0}

    def racing(path, limit):
        data = real(path, limit)
        if Path(path) == store.path and calls["n"] == 0:
            calls["n"] += 1
            store.begin(state, "fold")  # the apply folds between our two reads
            rec = make_record("b")
            with_record(state, rec)
            store.record(state, entry_put(rec), "create b")
        return data

    monkeypatch.setattr(file_store, "read_bounded", racing)
    got = reader.read()
    assert sorted(k[2] for k in got.records) == ["a", "b"]


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_a_full_disk_while_writing_is_a_state_error_and_the_old_state_stays(tmp_path: Path, monkeypatch, where) -> None:
    """ENOSPC at the rename or the fsync: a StateError the CLI reports (exit 1), not a bug (exit 3)."""
    import errno

    store = FileStateStore(tmp_path / "state.json")
    state = with_record(State(), make_record("a"))
    store.write(state)
    before = store.path.read_bytes()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, where, full)
    with pytest.raises(StateError, match="cannot write state: No space left on device"):
        store.write(with_record(state, make_record("b")))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


# -- RECONCILER_STATE_KEY signs the file state and its journal (adversarial pass 3) ----------

KEY = "a-long-random-state-key-0123456789abcdef"


def keyed(path: Path, notes: list[str] | None = None) -> FileStateStore:
    return FileStateStore(path, key=KEY, notify=(notes.append if notes is not None else lambda _m: None))


def plant_line(tmp_path: Path, obj: dict, after_header: bool = False) -> None:
    journal = tmp_path / "state.json.journal"
    lines = journal.read_bytes().split(b"\n")
    at = 1 if after_header else len(lines) - 1
    lines.insert(at, json.dumps(obj).encode())
    journal.write_bytes(b"\n".join(lines))


def test_with_the_key_the_document_and_each_journal_line_are_signed_and_verify(tmp_path: Path) -> None:
    notes: list[str] = []
    store = keyed(tmp_path / "state.json", notes)
    state = store.read()
    store.begin(state, "start")
    for n in ("a", "b"):
        rec = make_record(n)
        with_record(state, rec)
        store.record(state, entry_put(rec), f"create {n}")
    assert json.loads(store.path.read_text())["mac"].startswith("hmac-sha256:")
    lines = [json.loads(x) for x in (tmp_path / "state.json.journal").read_text().splitlines()]
    assert all(x["mac"].startswith("hmac-sha256:") for x in lines) and len({x["mac"] for x in lines}) == 3
    again = keyed(store.path, notes).read()
    assert len(again.records) == 2 and again.unverified == set() and notes == []
    store.finish(state, "done")
    assert keyed(store.path, notes).read().unverified == set() and notes == []


@pytest.mark.parametrize("how", ["unsigned-line", "line-signed-with-another-key", "edited-line", "inserted-first"])
def test_a_journal_line_planted_without_the_key_vouches_for_nothing(tmp_path: Path, how: str) -> None:
    """Adversarial pass 3: a put line with the state's readable lineage and serial added a
    record for a registry reconcile never managed, and the next apply deleted it, key or not.
    With the key, a line that does not verify (and any after it) puts an unverified record."""
    from reconciler.state import journal

    store = keyed(started(tmp_path, "a")[0].path)
    state = store.read()
    store.begin(state, "start, signed")
    rec = make_record("a")
    with_record(state, rec)
    store.record(state, entry_put(rec), "update a")
    planted = entry_put(make_record("made-by-hand"))
    if how == "unsigned-line":
        plant_line(tmp_path, planted)
    elif how == "line-signed-with-another-key":
        plant_line(tmp_path, dict(planted, mac=journal.entry_mac("guess", "", planted)))
    elif how == "edited-line":
        path = tmp_path / "state.json.journal"
        text = path.read_text()
        path.write_text(text.replace('"name":"a"', '"name":"made-by-hand"').replace('"uid":"uid-a"', '"uid":"u2"'))
    else:
        plant_line(tmp_path, planted, after_header=True)
    notes: list[str] = []
    read = keyed(store.path, notes).read()
    key = ("tenant", "OciRegistry", "made-by-hand")
    assert key in read.records and key in read.unverified
    if how == "inserted-first":  # the chain is broken: the honest line after it vouches for nothing either
        assert ("tenant", "OciRegistry", "a") in read.unverified
    assert len(notes) == 1 and "change(s) are not signed with RECONCILER_STATE_KEY" in notes[0]
    assert KEY not in notes[0]
    # without the key nothing is checked, as before (and nothing is said)
    quiet: list[str] = []
    assert key not in FileStateStore(store.path, notify=quiet.append).read().unverified and quiet == []


@pytest.mark.parametrize("how", ["unsigned", "edited"])
def test_an_unsigned_or_edited_file_state_is_readable_and_unverified_with_the_key(tmp_path: Path, how: str) -> None:
    store, state = started(tmp_path, "a", "b")
    store.finish(state, "done, without the key")
    if how == "edited":
        keyed(store.path).write(keyed(store.path).read(), "signed")
        doc = json.loads(store.path.read_text())
        doc["registries"][0]["protect"] = not doc["registries"][0]["protect"]
        store.path.write_text(json.dumps(doc))
    notes: list[str] = []
    read = keyed(store.path, notes).read()
    assert len(read.records) == 2 and read.unverified == set(read.records)
    why = "is not signed" if how == "unsigned" else "has a signature that does not match"
    assert len(notes) == 1 and f"state.json {why} with RECONCILER_STATE_KEY" in notes[0]
    assert "the file was changed outside reconcile" in notes[0] and KEY not in notes[0]


def test_a_journal_line_planted_beside_a_signed_file_state_deletes_nothing(tmp_path: Path) -> None:
    """The reproduction of adversarial pass 3, item 13, through the CLI: the key set, the
    default file state, a put line planted in its journal for a registry made by hand."""
    from reconciler.model import Registry
    from reconciler.targets.local import LocalTarget
    from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

    env = {"RECONCILER_STATE_KEY": KEY}
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"a.yaml": registry_doc("HelmRegistry", "charts", "endpoint: https://c.example.com")})
    commit_all(root)
    assert run(root, env=env).returncode == 0
    tenant = LocalTarget(root / ".reconciler" / "local.db", base_dir=root)
    uid = tenant.create(Registry("HelmRegistry", "made-by-hand", "tenant",
                                 {"endpoint": "https://hand.example.com", "auth": {"type": "noAuth"}}), {})
    tenant.close()
    state_path = root / ".reconciler" / "state.json"
    doc = json.loads(state_path.read_text())
    assert doc["mac"].startswith("hmac-sha256:")
    planted = dict(doc["registries"][0], uid=uid, name="made-by-hand", protect=False, origin="adopted")
    (root / ".reconciler" / "state.json.journal").write_text(
        json.dumps({"journal": 1, "lineage": doc["lineage"], "serial": doc["serial"]}) + "\n"
        + json.dumps({"op": "put", "record": planted}) + "\n")
    plan = run(root, "--dry-run", env=env)
    assert "! HelmRegistry/made-by-hand: delete blocked: recorded only by a state that is not signed" in plan.stdout, \
        plan.stdout + plan.stderr
    applied = run(root, env=env)
    assert applied.returncode == 1 and "1 change blocked" in applied.stderr, applied.stdout + applied.stderr
    assert "delete HelmRegistry/made-by-hand" not in applied.stdout
    tenant = LocalTarget(root / ".reconciler" / "local.db", base_dir=root)
    assert {o.name for o in tenant.list() if not o.builtin} == {"charts", "made-by-hand"}  # nothing deleted
    tenant.close()
    for text in (plan.stdout, plan.stderr, applied.stdout, applied.stderr, state_path.read_text()):
        assert KEY not in text


def test_a_state_path_that_is_a_symlink_is_written_through_and_locked_at_its_target(tmp_path: Path) -> None:
    """Adversarial pass 8: a state file that is a symbolic link (``.reconciler/state.json`` ->
    a persistent volume) was replaced by a regular file at the first write (``os.replace`` onto
    the link itself), so the file it named kept the old records for ever: the next job's link
    read a state without the last run's records (protect: true among them). Its lock and journal
    sat beside the link, so two spellings of one state did not exclude each other either."""
    real = tmp_path / "volume" / "state.json"
    real.parent.mkdir()
    link = tmp_path / "work" / ".reconciler" / "state.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)  # dangling until the first write, as on a fresh volume
    store = FileStateStore(link)
    with store.lock():
        state = store.read()
        store.begin(state, "start")
        rec = make_record("a")
        with_record(state, rec)
        store.record(state, entry_put(rec), "a")
        store.finish(state, "done")
    assert link.is_symlink(), "the link was replaced by a regular file"
    assert set(FileStateStore(real).read().records) == {rec.key}
    assert sorted(p.name for p in link.parent.iterdir()) == ["state.json"]  # no lock or journal beside the link
    with FileStateStore(real).lock(), pytest.raises(StateLocked):
        with FileStateStore(link).lock():
            pass


# -- a journal left torn, then a run killed folding it (review, this round) ---------------------


class _Killed(BaseException):
    pass


def _kill_before_rename(label: str) -> None:
    if label == "state-write:before-rename":
        raise _Killed()


def test_a_torn_journal_line_then_a_kill_in_the_next_runs_fold_keeps_the_state_readable(tmp_path, monkeypatch):
    """The fold line was appended to whatever the journal ended with: after a torn last line
    (ignored on read) it joined it into a corrupt middle line, and a kill before the rename
    left a state every later run refused."""
    store, _ = started(tmp_path, "a", "b")
    with open(tmp_path / "state.json.journal", "ab") as fh:
        fh.write(b'{"op": "put", "record": {"uid": "x", "ki')
    run2 = FileStateStore(store.path)
    state = run2.read()
    assert sorted(k[2] for k in state.records) == ["a", "b"]
    monkeypatch.setattr(file_store, "checkpoint", _kill_before_rename)
    with pytest.raises(_Killed):
        run2.begin(state, "start")
    monkeypatch.undo()
    assert sorted(k[2] for k in FileStateStore(store.path).read().records) == ["a", "b"]


@pytest.mark.parametrize("left", [b"", b'{"journal":1,"line'], ids=["empty-journal", "torn-header"])
def test_a_journal_left_empty_or_with_a_torn_header_then_a_killed_fold_keeps_the_state_readable(
        tmp_path, monkeypatch, left):
    """``begin`` truncates the journal, then writes its header: a kill between them leaves an
    empty journal (or a torn header), and the next fold line became its first line."""
    store = FileStateStore(tmp_path / "state.json")
    state = with_record(store.read(), make_record("a"))
    state.serial += 1
    store.write(state, "one")
    (tmp_path / "state.json.journal").write_bytes(left)
    run2 = FileStateStore(store.path)
    state = run2.read()
    assert sorted(k[2] for k in state.records) == ["a"]
    monkeypatch.setattr(file_store, "checkpoint", _kill_before_rename)
    with pytest.raises(_Killed):
        run2.begin(state, "start")
    monkeypatch.undo()
    assert sorted(k[2] for k in FileStateStore(store.path).read().records) == ["a"]


def test_a_journal_line_written_short_is_not_taken_as_recorded(tmp_path, monkeypatch):
    """``os.write`` may take fewer bytes than asked (a full disk, a signal): the rest of the
    line was dropped and the next one appended to the half, a corrupt middle line."""
    store, state = started(tmp_path, "a")
    real_write = os.write
    journal_fd = store._jfd
    short = {"left": 1}

    def write(fd, data):
        if fd == journal_fd and short["left"]:
            short["left"] -= 1
            return real_write(fd, data[: len(data) // 2])
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    for name in ("b", "c"):
        rec = make_record(name)
        with_record(state, rec)
        store.record(state, entry_put(rec), f"create {name}")
    monkeypatch.undo()
    assert sorted(k[2] for k in FileStateStore(store.path).read().records) == ["a", "b", "c"]


def test_cli_a_run_killed_folding_a_journal_with_a_torn_last_line_leaves_a_state_the_next_run_reads(tmp_path):
    import signal

    from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"a.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("one", "two"))})
    commit_all(root, "v1")
    first = run(root, env={"RECONCILER_CRASH_AT": "4"})
    assert first.returncode == -signal.SIGKILL, first.stderr
    journal = root / ".reconciler/state.json.journal"
    assert journal.exists()
    with open(journal, "ab") as fh:
        fh.write(b'{"op":"put","record":{"uid":"5f1')
    assert run(root, "--dry-run").returncode == 0  # the torn line is ignored: the state reads
    second = run(root, env={"RECONCILER_CRASH_AT": "1"})  # killed in the fold of that journal
    assert second.returncode == -signal.SIGKILL, second.stderr
    third = run(root)
    assert third.returncode == 0, third.stderr
