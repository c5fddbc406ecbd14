"""What a run keeps until its process ends.

The console script leaves with ``os._exit`` once its output is flushed (``cli._exit_now``: no
teardown), so what is held here is never freed object by object. Freed at each return
instead, the documents, records, listed registries and changes of a dry run of 5,000
registries cost about 4 % of it: 30-40 ms, timed at the returns (10-27 ms at the end of
validation, 17-27 ms after the plan is written); 0.94 and 0.98 of the time before in two
runs of paired rounds on ``bench/plan.py``'s corpus.

Holding starts only in ``cli.entry``: any caller in the same process (the tests, a library
user) holds nothing and frees everything as usual. One value per slot, so a command that
plans twice holds its last plan, and what is held stays bounded. The price is memory that is
not reused: a dry run of 5,000 registries peaks at 73 MB resident instead of 64 MB.
"""

from __future__ import annotations

from typing import Any

_held: dict[str, Any] | None = None


def hold_until_exit_starts() -> None:
    """From now on, ``hold_until_exit`` keeps what it is given (``cli.entry`` only, which ends
    the process with ``os._exit``)."""
    global _held
    _held = {}


def hold_until_exit(slot: str, value: Any) -> None:
    """Keep ``value`` in ``slot`` until the process ends, if it ends with ``os._exit``."""
    if _held is not None:
        _held[slot] = value


def keep_list() -> list[Any] | None:
    """A list for a callee to put its intermediates in (``load_and_validate(keep=...)``), for the
    caller to hold; None when nothing is held."""
    return [] if _held is not None else None


def held() -> dict[str, Any]:
    """What is held, by slot (empty when nothing is)."""
    return dict(_held or {})
