"""JSON file state store: atomic writes (temp, fsync, rename) under an exclusive flock."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import StateError
from reconciler.secrets import read_bounded
from reconciler.state.base import State, StateStore
from reconciler.state.lock import exclusive
from reconciler.testhooks import checkpoint

_POLL = 0.05
MAX_STATE_BYTES = 256 << 20  # regular files only, bounded: --state /dev/zero must not exhaust memory


class FileStateStore(StateStore):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

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

    def unlock(self, lock_id: str) -> str:
        raise StateError(
            f"{self.path}: the file state's lock is a flock ({self.lock_path}); the kernel releases it when its "
            "holder exits, even under kill -9, so there is nothing to release by hand"
        )

    def read(self) -> State:
        try:
            raw = read_bounded(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            self._remember(None, str(self.path))
            return State()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(
                f"{self.path}: state is not valid JSON ({exc}); refusing to use or overwrite it"
            ) from exc
        state = State.from_json(data, str(self.path))
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

    def write(self, state: State, message: str = "") -> None:
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
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
            checkpoint("state-write:before-rename")
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
