"""The ``StateStore`` contract: one suite every store runs (kopf's storage tests).

Subclass ``StateStoreContract`` in a test module (the name must start with ``Test``) and
implement the three hooks::

    class TestFileStore(StateStoreContract):
        def make_store(self, tmp_path):           # a fresh, empty store
            return FileStateStore(tmp_path / "state.json")
        def reopen(self, store):                  # a second handle on the same state
            return FileStateStore(store.path)
        def plant(self, store, text):             # put a raw document in place, bypassing write
            store.path.write_text(text)
        def raw(self, store):                     # the raw document as stored, or None
            return store.path.read_text() if store.path.exists() else None

    and, for the lock tests, ``other_runner`` (a store as a second machine would open it: a
    second clone) and ``open_code`` (Python source that opens the same store in another
    process as ``store``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.errors import StateError, StateLocked
from reconciler.model import HASH_SCRYPT, secret_hash
from reconciler.state.base import STATE_VERSION, Record, State, StateStore

SECRET_VALUE = "hunter2-do-not-store-me"


def make_record(name: str, *, salt: str = "salt", uid: str = "", secret: str | None = None) -> Record:
    hashes = {}
    if secret is not None:
        hashes["auth.password"] = secret_hash(salt, "auth.password", secret)
    return Record(
        uid=uid or f"uid-{name}",
        kind="OciRegistry",
        name=name,
        scope="tenant",
        fingerprint=f"sha256:{name}",
        secret_hashes=hashes,
        origin="created",
        applied_commit="3f2a1bc",
        spec={"endpoint": f"{name}.example.com", "auth": {"type": "basic", "password": {"fromEnv": "PW"}}},
    )


def with_record(state: State, record: Record) -> State:
    state.records[record.key] = record
    return state


class StateStoreContract:
    # -- hooks ----------------------------------------------------------------------------

    def make_store(self, tmp_path: Path) -> StateStore:
        raise NotImplementedError

    def reopen(self, store: StateStore) -> StateStore:
        raise NotImplementedError

    def plant(self, store: StateStore, text: str) -> None:
        raise NotImplementedError

    def raw(self, store: StateStore) -> str | None:
        raise NotImplementedError

    def other_runner(self, store: StateStore) -> StateStore:
        return self.reopen(store)

    def open_code(self, store: StateStore) -> str:
        raise NotImplementedError

    # -- fixtures -------------------------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path: Path) -> StateStore:
        return self.make_store(tmp_path)

    # -- the contract ---------------------------------------------------------------------

    def test_description_is_text(self, store: StateStore) -> None:
        assert isinstance(store.description, str) and store.description

    def test_read_empty(self, store: StateStore) -> None:
        state = store.read()
        assert state.records == {}
        assert state.serial == 0
        assert state.lineage
        assert self.raw(store) is None

    def test_round_trip(self, store: StateStore) -> None:
        state = store.read()
        state.serial += 1
        state.target = "local"
        with_record(state, make_record("alpha", salt=state.salt, secret=SECRET_VALUE))
        with_record(state, make_record("beta", salt=state.salt))
        store.write(state, "apply 3f2a1bc: 2 created")
        again = self.reopen(store).read()
        assert again.to_json() == state.to_json()
        assert again.records[("tenant", "OciRegistry", "alpha")].secret_hashes == (
            state.records[("tenant", "OciRegistry", "alpha")].secret_hashes
        )

    def test_serial_increments(self, store: StateStore) -> None:
        seen = []
        state = store.read()
        for i in range(3):
            state.serial += 1
            with_record(state, make_record(f"r{i}"))
            store.write(state, f"apply: {i}")
            state = self.reopen(store).read()
            seen.append(state.serial)
        assert seen == [1, 2, 3]
        assert len(state.records) == 3

    def test_lineage_kept(self, store: StateStore) -> None:
        state = store.read()
        lineage = state.lineage
        state.serial += 1
        store.write(state, "first")
        again = self.reopen(store).read()
        assert again.lineage == lineage
        # A second reader of an existing state gets the same lineage, not a new one.
        assert self.reopen(store).read().lineage == lineage

    @pytest.mark.parametrize(
        "text",
        ["{not json", "[]", '"a string"', '{"version": 1}', '{"lineage": "x"}', "\xff\xfe", "[" * 5000 + "]" * 5000,
         '{"version": 1, "serial": ' + "1" * 5000 + "}"],
        ids=["syntax", "array", "string", "missing-fields", "no-version", "binary", "nested-too-deep",
             "integer-of-5000-digits"],  # a plain ValueError in json.loads, not a JSONDecodeError
    )
    def test_corrupt_document_is_an_error_and_kept(self, store: StateStore, text: str) -> None:
        self.plant(store, text)
        before = self.raw(store)
        with pytest.raises(StateError, match="refusing"):
            store.read()
        with pytest.raises(StateError):
            self.reopen(store).read()
        assert self.raw(store) == before

    def test_newer_version_is_an_error(self, store: StateStore) -> None:
        doc = State().to_json()
        doc["version"] = STATE_VERSION + 1
        doc["tool_version"] = "99.0.0"
        self.plant(store, json.dumps(doc))
        with pytest.raises(StateError, match="newer"):
            store.read()
        assert json.loads(self.raw(store) or "null")["version"] == STATE_VERSION + 1

    @pytest.mark.parametrize("twin", ["uid", "key"])
    def test_a_state_it_would_refuse_to_read_is_never_written(self, store: StateStore, twin: str) -> None:
        """Adversarial pass 3, item 5: an import wrote a second record of one uid, and every
        later run refused the state as corrupt. A store refuses to write such a state."""
        state = store.read()
        state.serial += 1
        with_record(state, make_record("alpha"))
        store.write(state, "first")
        before = self.raw(store)
        state = self.reopen(store).read()
        state.serial += 1
        if twin == "uid":
            with_record(state, make_record("beta", uid="uid-alpha"))
        else:  # a record under another key than its own
            state.records[("tenant", "OciRegistry", "beta")] = make_record("alpha", uid="uid-beta")
        with pytest.raises(StateError, match="refusing to write a state that could not be read back"):
            store.write(state, "second")
        assert self.raw(store) == before
        assert len(self.reopen(store).read().records) == 1

    def test_secret_values_never_stored(self, store: StateStore) -> None:
        state = store.read()
        state.serial += 1
        rec = make_record("gamma", salt=state.salt, secret=SECRET_VALUE)
        with_record(state, rec)
        store.write(state, "apply: secret")
        text = self.raw(store) or ""
        assert SECRET_VALUE not in text
        assert rec.secret_hashes["auth.password"] in text
        # no key given: scrypt (each offline guess costs tens of ms), never the bare salted HMAC of old
        assert rec.secret_hashes["auth.password"].startswith(HASH_SCRYPT)

    def test_lock_is_exclusive(self, store: StateStore) -> None:
        other = self.reopen(store)
        with store.lock():
            with pytest.raises(StateLocked) as info:
                with other.lock(timeout=0.2):
                    pytest.fail("second lock acquired while the first is held")
            assert str(os.getpid()) in str(info.value)  # names the holder
        with other.lock(timeout=0.2):
            pass

    def test_lock_released_after_error(self, store: StateStore) -> None:
        with pytest.raises(RuntimeError):
            with store.lock():
                raise RuntimeError("boom")
        with self.reopen(store).lock(timeout=0.2):
            pass

    def test_lock_is_exclusive_between_runners(self, store: StateStore) -> None:
        other = self.other_runner(store)
        with store.lock():
            t0 = time.monotonic()
            with pytest.raises(StateLocked) as info:
                with other.lock(timeout=0):
                    pytest.fail("a second runner took the lock while the first holds it")
            assert time.monotonic() - t0 < 5  # fails at once
            assert f"pid {os.getpid()}" in str(info.value)  # names the holder
        with other.lock(timeout=0):
            pass

    def test_lock_waits_for_the_holder_then_holds(self, store: StateStore) -> None:
        other = self.other_runner(store)
        held = threading.Event()
        release = threading.Event()

        def holder() -> None:
            with store.lock():
                held.set()
                release.wait(30)

        t = threading.Thread(target=holder)
        t.start()
        try:
            assert held.wait(30)
            threading.Timer(1.0, release.set).start()
            t0 = time.monotonic()
            with other.lock(timeout=30):
                waited = time.monotonic() - t0
                assert not t.is_alive() or release.is_set()
        finally:
            release.set()
            t.join(30)
        assert 0.8 <= waited < 30

    def test_lock_of_a_killed_holder_is_recovered(self, store: StateStore, tmp_path: Path) -> None:
        """SIGKILL: the file store's flock dies with the process; the git store's lease
        expires (RECONCILER_LEASE_SECONDS=2) and is taken over."""
        code = f"{self.open_code(store)}\nwith store.lock():\n    print('locked', flush=True)\n    time.sleep(600)\n"
        env = dict(os.environ, RECONCILER_LEASE_SECONDS="2")
        proc = subprocess.Popen([sys.executable, "-c", "import time\n" + code], stdout=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            other = self.other_runner(store)
            with pytest.raises(StateLocked):
                with other.lock(timeout=0):
                    pass
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            t0 = time.monotonic()
            with other.lock(timeout=30):
                assert time.monotonic() - t0 < 30
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

    def test_a_rollback_under_the_lock_is_refused(self, store: StateStore) -> None:
        state = store.read()
        state.serial = 5
        with_record(state, make_record("alpha"))
        store.write(state, "serial 5")
        with store.lock():
            assert store.read().serial == 5
            older = State.from_json(json.loads(self.raw(store) or "{}"), "x")
            older.serial = 3
            older.records.clear()
            self.plant(store, json.dumps(older.to_json()))
            with pytest.raises(StateError, match="older than the 5 this run read under its lock"):
                store.read()
            foreign = State(serial=9)
            self.plant(store, json.dumps(foreign.to_json()))
            with pytest.raises(StateError, match="not the .* this run read under its lock"):
                store.read()

    # -- recording an apply: begin / record / finish ------------------------------------------

    def test_recorded_changes_are_in_the_state_after_finish(self, store: StateStore) -> None:
        from reconciler.state.base import entry_drop, entry_put

        state = store.read()
        with_record(state, make_record("old"))
        state.serial += 1
        store.write(state, "seed")
        with store.lock():
            state = store.read()
            store.begin(state, "apply: start")
            for i in range(5):
                rec = make_record(f"r{i}")
                with_record(state, rec)
                store.record(state, entry_put(rec), f"apply: create r{i}")
            state.records.pop(("tenant", "OciRegistry", "old"))
            store.record(state, entry_drop(("tenant", "OciRegistry", "old")), "apply: delete old")
            store.finish(state, "apply: 6 changes")
        again = self.reopen(store).read()
        assert sorted(k[2] for k in again.records) == [f"r{i}" for i in range(5)]
        assert again.serial == state.serial and again.lineage == state.lineage

    def test_a_change_it_would_refuse_to_read_is_never_recorded(self, store: StateStore) -> None:
        """Adversarial pass 4, item 5: the journal took a record of a uid another name held, and
        every later read refused the state. ``record`` refuses it, and writes nothing; a uid a
        drop or a new uid freed can be recorded again."""
        from reconciler.state.base import entry_drop, entry_put

        state = store.read()
        for name in ("alpha", "beta"):
            with_record(state, make_record(name))
        state.serial += 1
        store.write(state, "seed")
        with store.lock():
            state = store.read()
            store.begin(state, "apply: start")
            twin = make_record("gamma", uid="uid-alpha")
            with_record(state, twin)
            with pytest.raises(StateError, match="refusing to record OciRegistry/gamma .* 'uid-alpha', which is "
                                                 r"recorded for OciRegistry/alpha \(scope tenant\)"):
                store.record(state, entry_put(twin), "apply: create gamma")
            assert sorted(k[2] for k in self.reopen(store).read().records) == ["alpha", "beta"]  # as a kill here
            state.records.pop(twin.key)  # as the apply would have kept it: never recorded
            state.records.pop(("tenant", "OciRegistry", "alpha"))
            store.record(state, entry_drop(("tenant", "OciRegistry", "alpha")), "apply: delete alpha")
            for rec in (make_record("gamma", uid="uid-alpha"), make_record("beta", uid="uid-beta-2"),
                        make_record("delta", uid="uid-beta")):
                with_record(state, rec)
                store.record(state, entry_put(rec), f"apply: put {rec.name}")
            store.finish(state, "apply: 4 changes")
        again = self.reopen(store).read()
        assert {k[2]: r.uid for k, r in again.records.items()} == {
            "beta": "uid-beta-2", "gamma": "uid-alpha", "delta": "uid-beta"}
