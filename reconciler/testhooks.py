"""Crash points for the crash-safety tests; inert unless RECONCILER_CRASH_AT is set.

``RECONCILER_CRASH_AT=N`` makes the process SIGKILL itself at the N-th checkpoint it
passes (1-based), so a test can stop an apply at every interesting moment: before a
target call, after it but before the state write, in the middle of the state write.
"""

from __future__ import annotations

import os
import signal
import threading

_count = 0
_lock = threading.Lock()


def checkpoint(label: str) -> None:
    at = os.environ.get("RECONCILER_CRASH_AT")
    if not at:
        return
    global _count
    with _lock:
        _count += 1
        hit = _count == int(at)
    if hit:
        log = os.environ.get("RECONCILER_CRASH_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"{at} {label}\n")
        os.kill(os.getpid(), signal.SIGKILL)
