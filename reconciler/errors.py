"""One error base and its family; the CLI maps them to exit codes (1 user/API, 3 internal).

Messages never carry secret values: errors raised from target responses go through
``redact`` before they are stored, and ``redact`` always masks the tool's own credentials
too, whatever secrets its caller knew of.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus


class ReconcilerError(Exception):
    """Base of every error we expect; the CLI prints ``str(err)`` and exits 1."""

    exit_code = 1


class InputError(ReconcilerError):
    """A problem in the user's input, located at file:line:col (1-based)."""

    def __init__(self, message: str, file: str = "", line: int = 0, col: int = 0) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        if not self.file:
            return ""
        if self.line:
            return f"{self.file}:{self.line}:{self.col}: "
        return f"{self.file}: "


class PlanRefused(ReconcilerError):
    """A prune guard or another safety rule refused the plan."""


class StateError(ReconcilerError):
    """The recorded state is unreadable, from a newer version, or locked."""


class StateLocked(StateError):
    """Another reconcile holds the state lock."""


class StateConflict(StateError):
    """The state moved under us (e.g. a rejected push); re-read and re-plan."""


class TargetError(ReconcilerError):
    """A target (local database or Palette API) refused or failed a request."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class ClientError(TargetError):
    """4xx: our request was wrong; not retried."""


class NotFound(ClientError):
    """404: the object is not there."""


class Conflict(ClientError):
    """409 or a duplicate name: the object already exists."""


class ServerError(TargetError):
    """5xx, timeouts, connection failures: transient, retried where safe."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", delay: float = 0.0) -> None:
        self.delay = delay
        super().__init__(message, status=status, code=code)


class ContentError(ReconcilerError):
    """Content sync or a preflight probe failed (unreachable, TLS, credentials, missing)."""


# Values shorter than this are not searched for in free text: "a" or "pw" would turn every
# message into "st(sensitive)te" soup, and no real credential is that short (resolution warns).
MIN_REDACT_LEN = 4

# The environment variables that hold the tool's own credentials: the Palette API key, the
# key of the state's secret hashes, and the tokens of the CI runner the tool runs in. A
# definition may not name them (secrets.RESERVED_ENV); ``redact`` masks their values always.
OWN_CREDENTIAL_ENV = ("PALETTE_API_KEY", "RECONCILER_STATE_KEY", "GITHUB_TOKEN", "ACTIONS_RUNTIME_TOKEN",
                      "ACTIONS_ID_TOKEN_REQUEST_TOKEN")

# The tool's own credentials as they were read (from a given environment, not only from
# ``os.environ``). Replaced, never changed in place: a thread redacting meanwhile reads a
# whole set.
_own: frozenset[str] = frozenset()
_own_lock = threading.Lock()


def remember_credential(value: str | None) -> None:
    """A credential of the tool itself, read where it is used (the Palette API key, the state
    key): from now on every ``redact`` masks it, whichever secrets its caller passed."""
    global _own
    if value:
        with _own_lock:
            _own = _own | {value}


def own_credentials() -> frozenset[str]:
    """The tool's own credentials: those remembered, and those in this process's environment
    (before any was read: a message can leave earlier, or through a path that never read it)."""
    env = {v for v in (os.environ.get(name) for name in OWN_CREDENTIAL_ENV) if v}
    return _own | env if env else _own


_PCT = re.compile(r"%[0-9A-F]{2}")


@lru_cache(maxsize=4096)
def _forms(value: str) -> frozenset[str]:
    """Every form a value can take in a server's message: raw, JSON-escaped (ASCII or not),
    URL-encoded (path, query, form), and inside a Python ``repr`` (of a dict a server or a
    library prints), in either of its quotes."""
    e = "surrogateescape"  # an environment value of bytes that are not UTF-8: its bytes, escaped
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             quote(value, safe="", errors=e), quote(value, errors=e), quote_plus(value, errors=e),
             quote_plus(value, safe="/", errors=e),
             repr(value)[1:-1], repr(value + '"')[1:-2]}  # the '"' makes repr use (and escape) single quotes
    forms |= {_PCT.sub(lambda m: m.group().lower(), f) for f in forms}  # some servers lower-case escapes
    return frozenset(f for f in forms if len(f) >= MIN_REDACT_LEN)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value, and every credential of the tool itself
    (``own_credentials``), in each of its forms, by ``(sensitive)``.

    Call it on the full text, before collapsing whitespace or shortening: a cut or reflowed
    value can no longer be found."""
    forms: set[str] = set()
    for s in {*secrets, *own_credentials()}:
        if s and len(s) >= MIN_REDACT_LEN:
            forms |= _forms(s)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "(sensitive)")
    return text
