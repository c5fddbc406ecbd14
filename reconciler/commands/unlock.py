"""``reconcile unlock ID``: release by hand the state lock a run that is gone left behind
(as ``terraform force-unlock``). Only the lock with that id is released, compare-and-swap;
the git store's lease also expires by itself. ``reconcile unlock --corrupt`` (ID None here)
removes a lock record that cannot be read, which never expires, compare-and-swap too."""

from __future__ import annotations

from typing import TextIO

from ..runner import EXIT_OK, Options, build_store


def run_unlock(opts: Options, lock_id: str | None, out: TextIO) -> int:
    store = build_store(opts)
    done = store.unlock_corrupt() if lock_id is None else store.unlock(lock_id)
    out.write(f"{store.description}: {done}\n")
    return EXIT_OK
