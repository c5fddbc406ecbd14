"""One error base and its family; the CLI maps them to exit codes (1 user/API, 3 internal).

Messages never carry secret values: errors raised from target responses go through
``redact`` before they are stored, and ``redact`` always masks the tool's own credentials
too, whatever secrets its caller knew of.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote, quote_plus

from .text import lazy_pattern


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


_PCT = lazy_pattern(r"%[0-9A-F]{2}")
_UESC = lazy_pattern(r"\\u[0-9a-f]{4}")
# What Go's encoding/json escapes besides JSON's own (quote, backslash, controls): it
# writes &, <, > and the JavaScript line separators as \u escapes (encoding/json Marshal,
# "HTMLEscape"). Palette is a Go service: a body it marshals shows a secret this way.
_GO_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})
# One escape sequence of a JSON string, so that a rewrite of some never touches the
# backslash of another ("\\\\b" is a backslash and a b, not a backspace).
_JSON_ESC = lazy_pattern(r"\\(?:u[0-9a-fA-F]{4}|.)", re.S)
# Go's encoding/json before 1.22 wrote a backspace and a form feed as \u0008 and \u000c
# (Python, and Go since, write \b and \f); some encoders write every control as \u00XX.
_LONG_CONTROLS = ({"\\b": "\\u0008", "\\f": "\\u000c"},
                  {"\\b": "\\u0008", "\\f": "\\u000c", "\\n": "\\u000a", "\\r": "\\u000d", "\\t": "\\u0009"})


def _json_forms(value: str) -> set[str]:
    """A value inside a JSON string, as the encoders of servers write it: Python's (ASCII or
    not), Go's (&, <, > escaped; controls as \\u00XX), with '/' written '\\/' (PHP, some
    Java ones) or not, and the \\u escapes in either case."""
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    if any(c < " " for c in value):
        forms |= {_JSON_ESC.sub(lambda m, t=table: t.get(m.group(), m.group()), f)  # type: ignore[misc]
                  for f in forms for table in _LONG_CONTROLS}
    forms |= {f.translate(_GO_ESCAPES) for f in forms}
    forms |= {f.replace("/", "\\/") for f in forms}
    forms |= {_UESC.sub(lambda m: m.group().upper().replace("\\U", "\\u"), f) for f in forms}
    return forms


def _bytes_forms(raw: bytes) -> set[str]:
    """A value that is not ASCII as bytes are shown: Python's ``repr`` of them (b'p\\xc3\\xa4ss',
    in either quote), and \\xNN escapes of the bytes past ASCII alone (``backslashreplace``,
    and in upper case as C-style escapers write them)."""
    return {repr(raw)[2:-1], repr(raw + b'"')[2:-2],
            "".join(chr(b) if b < 128 else f"\\x{b:02x}" for b in raw),
            "".join(chr(b) if b < 128 else f"\\x{b:02X}" for b in raw)}


# A value's forms are computed once per run: a sync redacts each of its messages with every
# value resolved (5,000 registries with a password each), and a cache smaller than that missed
# on every value past it (10 ms per message at 4,000 values, 94 ms at 4,097).
_FORMS_CACHE = 1 << 15
# Go's html.EscapeString (a Go service's HTML error page): &#39; and &#34; where Python writes
# &#x27; and &quot;
_GO_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"})
_ALNUM = lazy_pattern(r"[A-Za-z0-9]+")

# A value this long (in bytes) or longer is also searched for in base64: in an echoed
# "Authorization: Basic base64(user:password)" header, or a docker config's "auth". Each of
# its three alignments then yields at least 8 characters, too many to match by chance. Its
# hex (14 digits and more) is searched for from the same length on.
MIN_BASE64_LEN = 7
_HEX_RUN = lazy_pattern(r"[0-9a-fA-F]{14}")


@lru_cache(maxsize=_FORMS_CACHE)
def _forms(value: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What ``redact`` looks for, computed once per value: ``(keys, text forms, hex, base64 cores)``.

    The text forms are every form a value can take in a server's message: raw, JSON-escaped
    (``_json_forms``), URL-encoded (path, query, form), HTML-escaped (an error page), inside a
    Python ``repr`` (of a dict a server or a library prints) in either of its quotes, and as
    bytes (``_bytes_forms``). None of those escapers touches an ASCII letter or digit, so each
    form holds every run of them the value holds: a message without its longest (``keys``:
    the three longest, the longest first, as values of one pattern share some) holds none of
    the forms, and costs one look instead of twenty (no key: a value without such runs). Forms that
    only some messages can hold are computed when one does (``_spelt_pattern``,
    ``_double_percent_forms``). The hex (lower and upper case) and the base64 cores
    (``_base64_cores``) encode the letters too: they are looked for apart."""
    import html  # here, not at the top: a run that redacts no known value never needs it (about 1 ms)

    e = "surrogateescape"  # an environment value of bytes that are not UTF-8: its bytes, escaped
    raw = value.encode("utf-8", e)
    forms = {value, *_json_forms(value), *_percent_forms(value),
             html.escape(value, quote=False), html.escape(value), value.translate(_GO_HTML),
             repr(value)[1:-1], repr(value + '"')[1:-2]}  # the '"' makes repr use (and escape) single quotes
    if not value.isascii():
        forms |= _bytes_forms(raw)
    keys = tuple(sorted(set(_ALNUM.findall(value)), key=lambda k: (-len(k), k))[:3])
    hexes = (raw.hex(), raw.hex().upper()) if len(raw) >= MIN_BASE64_LEN else ()
    return (keys, tuple(sorted(f for f in forms if len(f) >= MIN_REDACT_LEN)), hexes, _base64_cores(raw))


def _percent_forms(value: str) -> set[str]:
    """URL-encoded: path, query, form; some servers lower-case the escapes."""
    e = "surrogateescape"
    forms = {quote(value, safe="", errors=e), quote(value, errors=e), quote_plus(value, errors=e),
             quote_plus(value, safe="/", errors=e)}
    return forms | {_PCT.sub(lambda m: m.group().lower(), f) for f in forms}


@lru_cache(maxsize=_FORMS_CACHE)
def _double_percent_forms(value: str) -> tuple[str, ...]:
    """URL-encoded twice (``%2526`` for ``&``: a proxy that encodes a URL it was given
    encoded): looked for only in a message holding ``%25``."""
    once = {f for f in _percent_forms(value) if "%" in f}
    twice = {f.replace("%", "%25") for f in once} | {quote(f, safe="") for f in once}
    return tuple(sorted(twice))  # lower-case escapes: of the lower-cased forms of ``once``


# A character reference as HTML and XML escapers write one: decimal (&#38;: Go's
# html/template writes + as &#43;, .NET and Python's xmlcharrefreplace non-ASCII as &#228;),
# hex (&#x26; / &#X26;, either case: Python's &#x27;, Go's encoding/xml &#xA;, JS's he
# &#xE4;), or named (&amp;, XML's &apos;, Java's escapeHtml4 &auml;). Each escaper writes
# its own mix, so a message holding one is decoded (``_decoded``), values are looked for in
# that, and a value found is masked by a pattern that takes any spelling of each of its
# characters (``_spelt_pattern``). So are %XX and \\xXX escapes of a value's bytes, letters and
# digits too: a server that escapes every byte (a whole query string percent-encoded, a C-style
# dump of a buffer) leaves none of the value's own runs in the text (adversarial pass 7, F4).
_CHARREF = lazy_pattern(r"&(?:#(?:[0-9]{1,7}|[xX][0-9a-fA-F]{1,6})|[A-Za-z][A-Za-z0-9]{1,15});")
_ANY_PCT = lazy_pattern(r"(?:%[0-9A-Fa-f]{2})+")
_BYTE_ESCAPES = lazy_pattern(r"(?:\\x[0-9A-Fa-f]{2})+")
# a hex dump (``72 6f 62``, ``72:6f:62``) and Go's %v of a []byte (``[114 111 98]``): bytes
# apart, at least four of them (fewer are as likely to be anything else)
_SPACED_HEX = lazy_pattern(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?:[ :][0-9A-Fa-f]{2}){3,}(?![0-9A-Fa-f])")
_GO_BYTES = lazy_pattern(r"\[(?:[0-9]{1,3} ){3,}[0-9]{1,3}\]")


def _go_bytes(m: re.Match[str]) -> str:
    numbers = [int(n) for n in m.group()[1:-1].split()]
    return bytes(numbers).decode("utf-8", "replace") if max(numbers) < 256 else m.group()


def _decoded(text: str) -> str | None:
    """``text`` with its character references, %XX and \\xXX escapes decoded (a run of byte
    escapes as UTF-8); None when it holds none."""
    out = text
    if "&" in out:
        out = _CHARREF.sub(_decode_ref, out)
    if "%" in out:
        out = _ANY_PCT.sub(lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8", "replace"), out)
    if "\\x" in out:
        out = _BYTE_ESCAPES.sub(lambda m: bytes.fromhex(m.group().replace("\\x", "")).decode("utf-8", "replace"),
                                out)
    out = _SPACED_HEX.sub(lambda m: bytes.fromhex(m.group().replace(":", " ")).decode("utf-8", "replace"), out)
    if "[" in out:
        out = _GO_BYTES.sub(_go_bytes, out)
    return out if out != text else None


@lru_cache(maxsize=1)
def _entities() -> tuple[dict[str, int], dict[int, str]]:
    """HTML's character names both ways (``html.entities``: imported when a message holds a
    character reference, not by every run)."""
    from html.entities import name2codepoint

    names = {**name2codepoint, "apos": ord("'")}
    return names, {cp: name for name, cp in name2codepoint.items()} | {ord("'"): "apos"}


def _decode_ref(m: re.Match[str]) -> str:
    ref = m.group()
    if ref[1] != "#":
        cp = _entities()[0].get(ref[1:-1])
        return chr(cp) if cp is not None else ref
    cp = int(ref[3:-1], 16) if ref[2] in "xX" else int(ref[2:-1])
    return chr(cp) if 0 < cp < 0x110000 else ref


def _either_case(hexdigits: str) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in hexdigits)


@lru_cache(maxsize=_FORMS_CACHE)
def _spelt_pattern(value: str) -> re.Pattern[str]:
    """The value with each character spelt as itself or any way a character reference spells
    it (decimal or hex with leading zeros, hex in either case, its HTML name), or as the %XX
    or \\xXX escapes of its UTF-8 bytes (hex in either case); or its bytes as a hex dump
    (``72 6f``, ``72:6F``) or as Go prints a []byte (``[114 111]``)."""
    name_of = _entities()[1]
    parts = []
    for c in value:
        raw = c.encode("utf-8", "surrogateescape")
        spellings = [re.escape(c), f"&#0*{ord(c)};", f"&#[xX]0*{_either_case(f'{ord(c):x}')};",
                     "".join(f"%{_either_case(f'{b:02x}')}" for b in raw),
                     "".join(f"\\\\x{_either_case(f'{b:02x}')}" for b in raw)]
        if ord(c) in name_of:
            spellings.append(f"&{name_of[ord(c)]};")
        parts.append(f"(?:{'|'.join(spellings)})")
    raw = value.encode("utf-8", "surrogateescape")
    dump = "[ :]".join(_either_case(f"{b:02x}") for b in raw)  # a hex dump, its bytes apart
    go = " ".join(str(b) for b in raw)  # Go's %v of a []byte: decimal, apart
    return re.compile(f"{''.join(parts)}|(?<![0-9A-Fa-f]){dump}(?![0-9A-Fa-f])|(?<![0-9]){go}(?![0-9])")


def _base64_cores(raw: bytes) -> tuple[str, ...]:
    """The characters that the value's bytes alone decide in any base64 text holding them,
    at each of the three offsets they can start at (after 0, 1 or 2 other bytes): base64
    character ``j`` stands for bits ``6j`` to ``6j + 6``, so those wholly inside the value's
    bits are the same whatever surrounds it. base64url's (``-_`` for ``+/``) are these in
    the text ``_base64_view`` makes."""
    if len(raw) < MIN_BASE64_LEN:
        return ()
    cores = []
    for pad in range(3):
        encoded = base64.b64encode(bytes(pad) + raw).decode("ascii")
        first, end = -(-8 * pad // 6), 8 * (pad + len(raw)) // 6  # ceil, floor
        cores.append(encoded[first:end])
    return tuple(cores)


# A line break inside base64 that its encoder wrapped: after a line of 16 to 128 base64
# characters (MIME's 76, PEM's 64, and the 60 or 72 other encoders use; left alone in pass 7),
# a newline (\n or \r\n, then any indentation) or one escaped in JSON (\n, \r\n), before
# more of them. Lines of text that look like base64 are joined too: only what holds a value's
# core is masked.
_WRAP = lazy_pattern(r"(?:(?<![A-Za-z0-9+/=])|(?<=\\n))[A-Za-z0-9+/]{16,128}"
                   r"(\r?\n[ \t]*|(?:\\r)?\\n)(?=[A-Za-z0-9+/])")
_B64_RUN = lazy_pattern(r"[A-Za-z0-9+/]*={0,2}")  # padding ends a run: in "auth=dXNl...", "auth=" is not in it
_B64_BACK = lazy_pattern(r"[A-Za-z0-9+/]*")


def _base64_view(text: str) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """The text as one base64 alphabet sees it: base64url's ``-`` and ``_`` read as ``+`` and
    ``/``, and wrapped base64 joined (``_WRAP``); with where the view's characters are in the
    text: ``at[i]`` is the view index after the ``i``-th removed break, ``shift[i]`` how many
    characters were removed up to there. Costs two ``in`` for a message of one line without
    ``-`` or ``_``, real or escaped newline."""
    view = text.replace("-", "+").replace("_", "/") if "-" in text or "_" in text else text
    if "\n" not in text and "\\n" not in text:
        return view, (), ()
    pieces: list[str] = []
    at: list[int] = []
    shift: list[int] = []
    last = removed = 0
    for m in _WRAP.finditer(view):
        s, e = m.span(1)
        pieces.append(view[last:s])
        removed += e - s
        at.append(e - removed)
        shift.append(removed)
        last = e
    if not at:
        return view, (), ()
    pieces.append(view[last:])
    return "".join(pieces), tuple(at), tuple(shift)


def _redact_base64(text: str, cores: Iterable[str]) -> str:
    """Replace each run of base64 characters that holds one of ``cores`` by ``(sensitive)``,
    the whole run (the rest of a Basic header's token is its user name, and the edges carry
    bits of the value; a wrapped blob goes whole, its line breaks too). Linear: one regex
    alternation over the view, each run walked once (backwards on the reversed view), and the
    text joined once from its pieces."""
    view, at, shift = _base64_view(text)
    pattern = re.compile("|".join(re.escape(c) for c in sorted(cores, key=len, reverse=True)))
    n, rev = len(view), ""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (m := pattern.search(view, pos)) is not None:
        rev = rev or view[::-1]
        start = n - _B64_BACK.match(rev, n - m.start()).end()  # type: ignore[union-attr]
        end = _B64_RUN.match(view, m.end()).end()  # type: ignore[union-attr]
        spans.append((start, end))
        pos = end
    if not spans:
        return text
    if at:  # back to the text's indices
        def real(i: int) -> int:
            k = bisect_right(at, i)
            return i + (shift[k - 1] if k else 0)
        spans = [(real(s), real(e - 1) + 1) for s, e in spans]
    pieces: list[str] = []
    last = 0
    for s, e in spans:
        pieces += (text[last:s], "(sensitive)")
        last = e
    pieces.append(text[last:])
    return "".join(pieces)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value, and every credential of the tool itself
    (``own_credentials``), in each of its forms, by ``(sensitive)``.

    Call it on the full text, before collapsing whitespace or shortening: a cut or reflowed
    value can no longer be found.

    Cheap when the message holds none (most hold none, and a sync redacts each of its messages
    with every value resolved): per value, a look for its keys (``_forms``), and one for each
    base64 core; the hex forms, the character references and double percent-encoding only in
    a message that holds some hex, a reference or a ``%25``."""
    forms: set[str] = set()
    cores: set[str] = set()
    refs: list[str] = []
    hexy = _HEX_RUN.search(text) is not None
    twice = "%25" in text
    decoded = _decoded(text) if ("&" in text or "%" in text or "\\x" in text or _SPACED_HEX.search(text)
                                 or "[" in text) else None
    view: str | None = None
    for s in {*secrets, *own_credentials()}:
        if not s or len(s) < MIN_REDACT_LEN:
            continue
        keys, plain, hexes, b64 = _forms(s)
        for k in keys:
            if k not in text:
                break
        else:
            for f in plain:
                if f in text:
                    forms.add(f)
            if twice:
                forms.update(f for f in _double_percent_forms(s) if f in text)
        if decoded is not None and s in decoded:  # spelt with references or escapes, maybe every character
            refs.append(s)
        if hexy:
            forms.update(f for f in hexes if f in text)
        if b64:
            if view is None:
                view = _base64_view(text)[0]
            for c in b64:
                if c in view:
                    cores.add(c)
    if cores:
        text = _redact_base64(text, cores)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "(sensitive)")
    for s in sorted(refs, key=len, reverse=True):
        text = _spelt_pattern(s).sub("(sensitive)", text)
    return text
