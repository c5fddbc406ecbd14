"""JSON file state store: atomic writes (temp, fsync, rename) under an exclusive flock."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import StateError, StateLocked
from reconciler.testhooks import checkpoint
from reconciler.state.base import State, StateStore

_POLL = 0.05


class FileStateStore(StateStore):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._locked = False

    @property
    def description(self) -> str:
        return str(self.path)

    def _holder(self) -> str:
        try:
            text = self.lock_path.read_text(encoding="utf-8").strip()
        except OSError:
            return "unknown holder"
        return text or "unknown holder"

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        if self.path.is_dir():
            raise StateError(f"{self.path}: is a directory, not a state file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{self.lock_path}: cannot create the state lock: {exc.strerror}") from exc
        try:
            deadline = time.monotonic() + max(timeout, 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StateError(f"{self.lock_path}: cannot lock: {exc.strerror}") from exc
                    if time.monotonic() >= deadline:
                        raise StateLocked(
                            f"state {self.path} is locked by {self._holder()}; "
                            "another reconcile is running (wait for it, or pass --lock-timeout SECONDS)"
                        ) from None
                    time.sleep(min(_POLL, max(deadline - time.monotonic(), 0.001)))
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode())
            self._locked = True
            try:
                yield
            finally:
                self._locked = False
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def read(self) -> State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read state: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(
                f"{self.path}: state is not valid JSON ({exc}); refusing to use or overwrite it"
            ) from exc
        return State.from_json(data, str(self.path))

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
