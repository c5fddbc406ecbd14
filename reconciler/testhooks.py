"""Crash points for the crash-safety tests; inert for users.

``RECONCILER_CRASH_AT=N`` makes the process SIGKILL itself at the N-th checkpoint it
passes (1-based), so a test can stop an apply at every interesting moment: before a
target call, after it but before the state write, in the middle of the state write.

Failpoints are armed only when the test suite enables them as well
(``RECONCILER_TESTHOOKS=1``, set by ``tests/conftest.py``): a ``RECONCILER_CRASH_AT`` left in
a user's environment does nothing, and a value that is not a positive integer is ignored,
never an error.
"""

from __future__ import annotations

import os
import threading

ENABLE = "RECONCILER_TESTHOOKS"
CRASH_AT = "RECONCILER_CRASH_AT"

_count = 0
_lock = threading.Lock()


def crash_at() -> int | None:
    """The armed checkpoint number, or None (not enabled by the tests, unset, or not a number)."""
    if os.environ.get(ENABLE) != "1":
        return None
    at = os.environ.get(CRASH_AT, "").strip()
    if not (at.isascii() and at.isdigit()) or int(at) < 1:
        return None
    return int(at)


def checkpoint(label: str) -> None:
    at = crash_at()
    if at is None:
        return
    global _count
    with _lock:
        _count += 1
        hit = _count == at
    if hit:
        log = os.environ.get("RECONCILER_CRASH_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"{at} {label}\n")
        import signal  # here: a run that is not a crash test does not pay for its import (1 ms)

        os.kill(os.getpid(), signal.SIGKILL)
