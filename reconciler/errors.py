"""One error base and its family; the CLI maps them to exit codes (1 user/API, 3 internal).

Messages never carry secret values: errors raised from target responses go through
``redact`` before they are stored, and ``redact`` always masks the tool's own credentials
too, whatever secrets its caller knew of.
"""

from __future__ import annotations

import base64
import html
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
_UESC = re.compile(r"\\u[0-9a-f]{4}")
# What Go's encoding/json escapes besides JSON's own (quote, backslash, controls): it
# writes &, <, > and the JavaScript line separators as \u escapes (encoding/json Marshal,
# "HTMLEscape"). Palette is a Go service: a body it marshals shows a secret this way.
_GO_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_forms(value: str) -> set[str]:
    """A value inside a JSON string, as the encoders of servers write it: Python's (ASCII or
    not), Go's (&, <, > escaped), with '/' written '\\/' (PHP, some Java ones) or not, and
    the \\u escapes in either case."""
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {f.translate(_GO_ESCAPES) for f in forms}
    forms |= {f.replace("/", "\\/") for f in forms}
    forms |= {_UESC.sub(lambda m: m.group().upper().replace("\\U", "\\u"), f) for f in forms}
    return forms


# A value's forms are computed once per run: a sync redacts each of its messages with every
# value resolved (5,000 registries with a password each), and a cache smaller than that missed
# on every value past it (10 ms per message at 4,000 values, 94 ms at 4,097).
_FORMS_CACHE = 1 << 15
# Go's html.EscapeString (a Go service's HTML error page): &#39; and &#34; where Python writes
# &#x27; and &quot;
_GO_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"})


@lru_cache(maxsize=_FORMS_CACHE)
def _forms(value: str) -> frozenset[str]:
    """Every form a value can take in a server's message: raw, JSON-escaped (``_json_forms``),
    URL-encoded (path, query, form), HTML-escaped (an error page), and inside a Python
    ``repr`` (of a dict a server or a library prints), in either of its quotes."""
    e = "surrogateescape"  # an environment value of bytes that are not UTF-8: its bytes, escaped
    forms = {value, *_json_forms(value),
             quote(value, safe="", errors=e), quote(value, errors=e), quote_plus(value, errors=e),
             quote_plus(value, safe="/", errors=e),
             html.escape(value, quote=False), html.escape(value), value.translate(_GO_HTML),
             repr(value)[1:-1], repr(value + '"')[1:-2]}  # the '"' makes repr use (and escape) single quotes
    forms |= {_PCT.sub(lambda m: m.group().lower(), f) for f in forms}  # some servers lower-case escapes
    return frozenset(f for f in forms if len(f) >= MIN_REDACT_LEN)


# A value this long (in bytes) or longer is also searched for in base64: in an echoed
# "Authorization: Basic base64(user:password)" header, or a docker config's "auth". Each of
# its three alignments then yields at least 8 characters, too many to match by chance.
MIN_BASE64_LEN = 7
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@lru_cache(maxsize=_FORMS_CACHE)
def _base64_cores(value: str) -> tuple[bytes, ...]:
    """The characters that the value's bytes alone decide in any base64 text holding them,
    at each of the three offsets they can start at (after 0, 1 or 2 other bytes): base64
    character ``j`` stands for bits ``6j`` to ``6j + 6``, so those wholly inside the value's
    bits are the same whatever surrounds it."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) < MIN_BASE64_LEN:
        return ()
    cores = []
    for pad in range(3):
        encoded = base64.b64encode(bytes(pad) + raw)
        first, end = -(-8 * pad // 6), 8 * (pad + len(raw)) // 6  # ceil, floor
        cores.append(encoded[first:end])
    return tuple(cores)


def _redact_base64(text: str, cores: Iterable[bytes]) -> str:
    """Replace each run of base64 characters that holds one of ``cores`` by ``(sensitive)``,
    the whole run (the rest of a Basic header's token is its user name, and the edges carry
    bits of the value). Linear: ``str.find`` and a walk to the run's ends, no regex."""
    for core in cores:
        needle = core.decode("ascii")
        at = text.find(needle)
        while at != -1:
            start, end = at, at + len(needle)
            while start > 0 and ord(text[start - 1]) < 128 and ord(text[start - 1]) in _B64:
                start -= 1
            while end < len(text) and ord(text[end]) < 128 and ord(text[end]) in _B64:
                end += 1
            text = text[:start] + "(sensitive)" + text[end:]
            at = text.find(needle, start + len("(sensitive)"))
    return text


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value, and every credential of the tool itself
    (``own_credentials``), in each of its forms, by ``(sensitive)``.

    Call it on the full text, before collapsing whitespace or shortening: a cut or reflowed
    value can no longer be found."""
    forms: set[str] = set()
    cores: set[bytes] = set()
    for s in {*secrets, *own_credentials()}:
        if s and len(s) >= MIN_REDACT_LEN:  # only the forms present: most messages hold none
            forms.update(f for f in _forms(s) if f in text)
            cores.update(c for c in _base64_cores(s) if c.decode("ascii") in text)
    if cores:
        text = _redact_base64(text, sorted(cores, key=len, reverse=True))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "(sensitive)")
    return text
