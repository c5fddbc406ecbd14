"""The lease record a git-branch state holds while a run changes the target (issue #10.1).

A lease names its holder (the GitHub Actions run URL when ``GITHUB_SERVER_URL``,
``GITHUB_REPOSITORY`` and ``GITHUB_RUN_ID`` are set, plus host and pid), when it was taken
and when it expires. It is committed to the state branch beside the state document and
pushed compare-and-swap, so two runners cannot both hold it; a holder killed with SIGKILL
cannot release it, so it expires, and the next run takes it over. The holder renews it
while it runs. ``RECONCILER_LEASE_SECONDS`` sets the lease length (default 900 s; tests use
a short one).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import StateError
from reconciler.state.lock import this_process

DEFAULT_SECONDS = 900.0
MIN_SECONDS, MAX_SECONDS = 1.0, 86_400.0
_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def lease_seconds(environ: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get("RECONCILER_LEASE_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not MIN_SECONDS <= value <= MAX_SECONDS:
        raise StateError(
            f"RECONCILER_LEASE_SECONDS must be a number of seconds from {MIN_SECONDS:.0f} to {MAX_SECONDS:.0f}"
        )
    return value


def holder_identity(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    local = this_process()
    server, repo, run = (env.get(k, "").strip() for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repo and run:
        return f"{server.rstrip('/')}/{repo}/actions/runs/{run} ({local})"
    return local


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
    def from_json(cls, data: Any, where: str) -> Lease:
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            values = {k: data[k] for k in ("id", "holder", "operation", "taken_at", "expires_at")}
            if not all(isinstance(v, str) and v for v in values.values()):
                raise ValueError("every field must be a non-empty string")
            _parse(values["taken_at"])
            _parse(values["expires_at"])
        except (KeyError, ValueError) as exc:
            raise StateError(
                f"{where}: the lock record is corrupt ({exc}); remove it by hand once no reconcile runs"
            ) from exc
        return cls(**values)
