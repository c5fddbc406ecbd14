"""``reconcile unlock ID``: release by hand the state lock a run that is gone left behind
(as ``terraform force-unlock``). Only the lock with that id is released, compare-and-swap;
the git store's lease also expires by itself."""

from __future__ import annotations

from typing import TextIO

from ..runner import EXIT_OK, Options, build_store


def run_unlock(opts: Options, lock_id: str, out: TextIO) -> int:
    store = build_store(opts)
    out.write(f"{store.description}: {store.unlock(lock_id)}\n")
    return EXIT_OK
