"""The lease record a git-branch state holds while a run changes the target (issue #10.1).

A lease names its holder (the GitHub Actions run URL when ``GITHUB_SERVER_URL``,
``GITHUB_REPOSITORY`` and ``GITHUB_RUN_ID`` are set, plus host and pid), when it was taken
and when it expires. It is committed to the state branch beside the state document and
pushed compare-and-swap, so two runners cannot both hold it; a holder killed with SIGKILL
cannot release it, so it expires, and the next run takes it over. The holder renews it
while it runs. ``RECONCILER_LEASE_SECONDS`` sets the lease length (default 900 s; tests use
a short one).

A lease is read from a branch anyone with push access can change, and its holder and id are
printed (notes, the ``StateLocked`` error, the ``reconcile unlock ID`` hint). One whose fields
hold a control character or are longer than ``MAX_FIELD_CHARS``, or whose id is not made of
letters, digits, ``.``, ``_`` and ``-``, was not written by reconcile: it is refused as corrupt
(``reconcile unlock --corrupt`` removes it), so nothing of it reaches a terminal or a CI log,
and the id in the hint is one a user can paste into a shell.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import StateError
from reconciler.state.lock import this_process
from reconciler.text import CONTROL, escape

DEFAULT_SECONDS = 900.0
MIN_SECONDS, MAX_SECONDS = 1.0, 86_400.0
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_LEASE_BYTES = 64 << 10
MAX_FIELD_CHARS = 512  # a holder is a run URL, a host and a pid; an id a uuid
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9}")


def env_seconds(name: str, default: float, low: float, high: float,
                environ: Mapping[str, str] | None = None) -> float:
    """The seconds the variable ``name`` sets (``default`` when unset or blank); a value that is
    not a finite number from ``low`` to ``high`` is a ``StateError`` naming the range."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    # plain ASCII decimals only: float() also takes 1_0 (ten), Arabic-Indic digits, 1e3 and inf
    value = float(raw) if _SECONDS.fullmatch(raw) else math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise StateError(f"{name} must be a number of seconds from {low:.0f} to {high:.0f}")
    return value


def lease_seconds(environ: Mapping[str, str] | None = None) -> float:
    return env_seconds("RECONCILER_LEASE_SECONDS", DEFAULT_SECONDS, MIN_SECONDS, MAX_SECONDS, environ)


def holder_identity(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    local = this_process()
    server, repo, run = (env.get(k, "").strip() for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        local = f"{server.rstrip('/')}/{repo}/actions/runs/{run} ({local})"
    # never a lease that from_json refuses: the environment and the host name are not ours
    # bytes that are not UTF-8 (kept by os.environ as surrogates) are written as \\udcff: a
    # commit message and the lease's JSON could not hold them
    return escape(local).encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_FIELD_CHARS]


def _stamp(t: float) -> str:
    return time.strftime(_FORMAT, time.gmtime(t))


def _parse(text: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(text, _FORMAT)))


@dataclass(frozen=True)
class Lease:
    id: str
    holder: str
    operation: str
    taken_at: str
    expires_at: str

    @classmethod
    def new(cls, operation: str, seconds: float, now: float | None = None) -> Lease:
        t = time.time() if now is None else now
        return cls(str(uuid.uuid4()), holder_identity(), operation, _stamp(t), _stamp(t + seconds))

    def renewed(self, seconds: float, now: float | None = None) -> Lease:
        t = time.time() if now is None else now
        return Lease(self.id, self.holder, self.operation, self.taken_at, _stamp(t + seconds))

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= _parse(self.expires_at)

    def describe(self) -> str:
        return f"{self.holder} since {self.taken_at} (lock id {self.id}, expires {self.expires_at})"

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "id": self.id, "holder": self.holder, "operation": self.operation,
                "taken_at": self.taken_at, "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, data: Any) -> Lease:
        """The lease in ``data``; ``CorruptLease`` (why) for anything reconcile would not have
        written. The reason never quotes the record: it is not ours to print."""
        problem = _problem(data)
        if problem:
            raise CorruptLease(problem)
        return cls(**{k: data[k] for k in _FIELDS})


class CorruptLease(ValueError):
    """A lock record that cannot be read: said by the store, with how to remove it."""


_FIELDS = ("id", "holder", "operation", "taken_at", "expires_at")


def _problem(data: Any) -> str:
    if not isinstance(data, dict):
        return "not a JSON object"
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        return f"no {missing[0]!r}"
    for k in _FIELDS:
        value = data[k]
        if not isinstance(value, str) or not value:
            return f"{k!r} is not a non-empty string"
        if len(value) > MAX_FIELD_CHARS:
            return f"{k!r} is longer than {MAX_FIELD_CHARS} characters"
        if CONTROL.search(value):
            return f"{k!r} holds a control character"
    if not _ID.fullmatch(data["id"]):
        return "'id' is not letters, digits, '.', '_' and '-' (at most 64)"
    for k in ("taken_at", "expires_at"):
        try:
            _parse(data[k])
        except ValueError:
            return f"{k!r} is not a UTC time like 2024-01-01T00:00:00Z"
    return ""
