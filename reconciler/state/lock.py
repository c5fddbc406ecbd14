"""The exclusive process lock both state stores hold while a reconcile runs.

An ``flock`` on a small file that names its holder, so that a second reconcile can say who
is in the way. The kernel drops the lock when the process dies, even under SIGKILL.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import StateError, StateLocked
from reconciler.text import escape

_POLL = 0.05
_MAX_HOLDER = 300


def this_process() -> str:
    """'pid 123 on host': who holds a lock or a lease (os.uname is gethostname without
    importing socket)."""
    return f"pid {os.getpid()} on {os.uname().nodename}"


def holder(lock_path: Path) -> str:
    """Who the lock file names, escaped and bounded: anyone who can write the file could put
    terminal controls or forged lines in it."""
    try:
        with open(lock_path, encoding="utf-8", errors="replace", newline="") as fh:
            text = fh.read(_MAX_HOLDER + 1).strip()
    except OSError:
        return "unknown holder"
    return escape(text[:_MAX_HOLDER]) or "unknown holder"


@contextmanager
def exclusive(lock_path: Path, timeout: float, what: str, hint: str) -> Iterator[None]:
    """Hold ``lock_path``; after ``timeout`` seconds raise ``StateLocked`` naming the holder."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"{lock_path}: cannot create the state lock: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StateError(f"{lock_path}: cannot lock: {exc.strerror}") from exc
                if time.monotonic() >= deadline:
                    raise StateLocked(
                        f"state {what} is locked by {holder(lock_path)}; {hint} "
                        "(wait for it, or pass --lock-timeout SECONDS)"
                    ) from None
                time.sleep(min(_POLL, max(deadline - time.monotonic(), 0.001)))
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(fd, f"{this_process()} since {stamp}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
