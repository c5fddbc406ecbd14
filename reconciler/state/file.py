"""JSON file state store: atomic writes (temp, fsync, rename) under an exclusive flock.

An apply records each change by appending one line to ``<state>.journal`` and fsyncing it
(O(1) per change, see ``journal.py``); the document is rewritten at the start of the apply,
at most every ``COMPACT_INTERVAL`` seconds during it, and once at the end. ``read``
replays the journal onto the document, so a crash or kill at any point loses nothing.

With RECONCILER_STATE_KEY (``key``) the document is signed as the git store signs its own
(``state_mac``), and the journal's lines are chained to it (``journal.py``); a read checks
both, and a record that no signature vouches for is unverified (``State.unverified``): never
deleted on its word. Unlike a branch, a file has no history to bind a signature to: an older
signed copy of the file put back in its place verifies (the in-run continuity checks of
``StateStore`` still apply).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reconciler.errors import StateError
from reconciler.model import load_json
from reconciler.secrets import read_bounded
from reconciler.state import journal
from reconciler.state.base import (
    MAX_STATE_BYTES,
    State,
    StateStore,
    note,
    scrub_entry,
    signature_problem,
    state_mac,
    unsigned_note,
)
from reconciler.state.lock import exclusive
from reconciler.testhooks import checkpoint

_POLL = 0.05
COMPACT_INTERVAL = 5.0  # seconds between document rewrites during a long apply


class FileStateStore(StateStore):
    def __init__(self, path: Path, *, key: str | None = None, notify: Callable[[str], None] = note) -> None:
        path = Path(path)
        if path.is_symlink():
            # written where the link points (os.replace onto the link replaced the link, and the
            # file it names kept the old records), locked and journaled there too
            path = Path(os.path.realpath(path))
        self.path = path
        self.key = key or None  # RECONCILER_STATE_KEY: signs what is written, checks what is read
        self.notify = notify
        self._chain = ""  # with a key: the mac the next journal line chains to (the document's, then each line's)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self._jfd: int | None = None
        self._entries = 0  # changes in the open journal
        self._folded_at = 0.0
        self._last_raw = b""

    @property
    def description(self) -> str:
        return str(self.path)

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        if self.path.is_dir():
            raise StateError(f"{self.path}: is a directory, not a state file")
        with exclusive(self.lock_path, timeout, str(self.path), "another reconcile is running"):
            self._locked, self._run_seen = True, None
            try:
                yield
            finally:
                self._locked, self._run_seen = False, None
                self._close_journal()

    def unlock(self, lock_id: str) -> str:
        raise StateError(
            f"{self.path}: the file state's lock is a flock ({self.lock_path}); the kernel releases it when its "
            "holder exits, even under kill -9, so there is nothing to release by hand"
        )

    # -- read -----------------------------------------------------------------------------

    def read(self) -> State:
        # A reader without the lock (a dry-run beside an apply) can see the document and the
        # journal of two different moments: read again while the document keeps changing.
        for _ in range(4):
            try:
                return self._read()
            except StateError:
                if self._locked or not self._moved():
                    raise
        return self._read()

    def _moved(self) -> bool:
        try:  # bounded, regular files only: never read /dev/zero or a FIFO without end
            return read_bounded(self.path, MAX_STATE_BYTES) != self._last_raw
        except (OSError, ValueError):
            return False

    def _read(self) -> State:
        try:
            raw = read_bounded(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            if self.journal_path.exists():
                raise StateError(
                    f"{self.journal_path}: a state journal without its state {self.path}; refusing to start a "
                    "new state over it"
                ) from None
            self._remember(None, str(self.path))
            return State()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state: {exc.strerror}") from exc
        self._last_raw = raw
        try:
            data = load_json(raw)
        except ValueError as exc:
            raise StateError(
                f"{self.path}: state is not valid JSON ({exc}); refusing to use or overwrite it"
            ) from exc
        state = State.from_json(data, str(self.path))
        if self.key and state.records:
            why = signature_problem(self.key, data)
            if why:  # anyone who can write the file could add a record for a registry we never managed
                state.unverified = set(state.records)
                self.notify(unsigned_note(str(self.path), why, "the file was changed"))
        try:  # bounded, regular files only: a FIFO or /dev/zero put there must not hang the run
            entries = read_bounded(self.journal_path, MAX_STATE_BYTES)
        except FileNotFoundError:
            entries = b""
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot read the state journal: {exc.strerror}") from exc
        if entries:
            mac = data.get("mac") if isinstance(data, dict) else None
            state, _, unsigned = journal.replay(state, entries, str(self.journal_path), self.key,
                                                mac if isinstance(mac, str) else "")
            if unsigned:
                self.notify(
                    f"{self.journal_path}: {unsigned} change(s) are not signed with RECONCILER_STATE_KEY, or follow "
                    "one that is not (written without the key, or the journal was changed outside reconcile): a "
                    "registry they record is not deleted on their word; each declared one is written again from its "
                    "definition by the next apply")
        self._remember(state, str(self.path))
        return state

    def check_writable(self) -> None:
        """A temp file can be made beside the state, and the state file itself can be
        opened for writing (an immutable or read-only file fails here, unchanged)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-probe-", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
            os.unlink(tmp)
            if self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            raise StateError(f"{self.path}: state cannot be written ({exc.strerror}); nothing was changed") from exc

    # -- write ----------------------------------------------------------------------------

    def write(self, state: State, message: str = "") -> None:
        doc = state.to_json()
        if self.key:
            doc["mac"] = state_mac(self.key, doc)
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write state: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # The journal's changes are about to be in the document: say so in the journal
            # first, so that a kill between the rename and the unlink leaves a journal that
            # reads as already folded, not as one of another serial.
            journal_left = self._jfd is not None or self.journal_path.exists()
            if journal_left and self._complete_lines():
                self._append(journal.line({"op": "fold", "serial": state.serial}))
            checkpoint("state-write:before-rename")
            os.replace(tmp, self.path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):  # a full disk at fsync or rename: a state error, not a bug
                raise StateError(f"{self.path}: cannot write state: {exc.strerror or exc}") from exc
            raise
        if journal_left:
            self._close_journal()
            try:
                os.unlink(self.journal_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StateError(f"{self.journal_path}: cannot remove the folded journal: {exc.strerror}") from exc
        self._fsync_dir()
        self._chain = str(doc.get("mac", ""))  # a journal begun now chains to this document

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise StateError(f"{self.path.parent}: cannot sync the state's directory: {exc.strerror}") from exc

    # -- the journal ------------------------------------------------------------------------

    def _complete_lines(self) -> bool:
        """Cut the journal back to its last complete line, and say whether one is left. A torn
        last line (a run killed mid-write, a write cut short by a full disk) is ignored on
        read, but a line appended after it would join it into a corrupt middle line; an empty
        journal, or a torn header, would make the appended line the first. Either way every
        later run refused the state (review, this round). A journal with no complete line
        replays to nothing: nothing is appended to it."""
        try:
            fd = os.open(self.journal_path, os.O_RDWR)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot read the state journal: {exc.strerror}") from exc
        try:
            end = size = os.fstat(fd).st_size
            while end > 0:  # back from the end, a block at a time, to the last newline
                start = max(0, end - (1 << 16))
                at = os.pread(fd, end - start, start).rfind(b"\n")
                if at >= 0:
                    end = start + at + 1
                    break
                end = start
            if end != size:
                os.ftruncate(fd, end)
                os.fsync(fd)
            return end > 0
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot repair the state journal: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _append(self, data: bytes) -> None:
        fd = self._jfd
        own = fd is None
        try:
            if fd is None:
                fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            view = memoryview(data)
            while view:  # a write may be cut short (a full disk, a signal): the rest, or its error
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "the journal took no bytes")
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot write the state journal: {exc.strerror}") from exc
        finally:
            if own and fd is not None:
                os.close(fd)

    def _close_journal(self) -> None:
        if self._jfd is not None:
            os.close(self._jfd)
            self._jfd = None
        self._entries = 0

    def begin(self, state: State, message: str) -> None:
        """One document write (the state can be written; a journal left by a killed run is
        folded in), then a fresh journal on top of it."""
        state.serial += 1
        self.write(state, message)
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot create the state journal: {exc.strerror}") from exc
        self._jfd = fd
        head, self._chain = journal.header(state, self.key, self._chain)
        self._append(head)
        self._fsync_dir()
        self._entries = 0
        self._folded_at = time.monotonic()

    def record(self, state: State, entry: dict[str, Any], message: str) -> None:
        entry = scrub_entry(entry)  # the line holds no free text the document would not
        self._refuse_unreadable(state, entry)
        if self._jfd is None:
            self.begin(state, message)
        data, self._chain = journal.signed(entry, self.key, self._chain)
        self._append(data)
        self._entries += 1
        if time.monotonic() - self._folded_at >= COMPACT_INTERVAL:
            self.begin(state, message)  # rewrite the document, start a new journal

    def finish(self, state: State, message: str) -> None:
        if self._entries:
            state.serial += 1
            self.write(state, message)
        elif self._jfd is not None:
            self._close_journal()
            try:
                os.unlink(self.journal_path)
            except FileNotFoundError:
                pass
