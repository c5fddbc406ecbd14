"""Characters that must never reach a terminal or a CI log from user input, and how to show them.

A registry name, endpoint or file name holding ESC, BEL, CR, a newline or a bidirectional
override can rewrite what a reviewer sees (a fake "No changes.", hidden lines, a GitHub
``::error`` command). They are refused at validation; every message that has to mention such a
value shows it escaped (``\\x1b``, ``\\u202e``), never raw. No I/O here.
"""

from __future__ import annotations

import re
from typing import Any, cast

# C0 and C1 controls and DEL, line/paragraph separators, bidirectional embeddings, overrides
# and isolates, interlinear annotations, and every Default_Ignorable_Code_Point of Unicode
# (DerivedCoreProperties.txt: soft hyphen, combining grapheme joiner, Hangul fillers, Mongolian
# and other variation selectors, zero-width characters, invisible operators, BOM, tags) and the
# braille blank (U+2800, not default-ignorable but drawn as nothing): what renders as nothing,
# so that "Bit\u00adnami" cannot pass for "Bitnami" (adversarial passes 6 and 7). The schema's
# patterns use the same set (as \\uXXXX escapes, for editors' JavaScript regexes too), less the
# characters beyond U+FFFF, which validation refuses all the same.
_CONTROL_CLASS = (
    "\x00-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
CONTROL = re.compile(f"[{_CONTROL_CLASS}]")


class _LazyPattern:
    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:  # .search, .sub, ...: what slots do not hold
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(*self._args)
        return getattr(compiled, name)


def lazy_pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """``re.compile(pattern, flags)``, compiled when first used rather than at import: for the
    patterns only an unusual path needs (redaction, a bad file name, a query string), which
    a plan that meets none of them paid about 2.5 ms to compile at every start."""
    return cast("re.Pattern[str]", _LazyPattern(pattern, flags))


_NAMES = {
    "\x00": "NUL",
    "\x07": "BEL",
    "\x08": "backspace",
    "\t": "tab",
    "\n": "newline",
    "\r": "CR",
    "\x1b": "ESC",
    "\x7f": "DEL",
    "\u202e": "right-to-left override",
    "\u202d": "left-to-right override",
    "\u2066": "left-to-right isolate",
    "\u2067": "right-to-left isolate",
    "\u200b": "zero-width space",
    "\ufeff": "byte order mark",
}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control or invisible formatting character written as an escape."""
    return CONTROL.sub(lambda m: _escape_char(m.group()), text) if CONTROL.search(text) else text


def describe(ch: str) -> str:
    """'ESC (\\x1b)', 'U+2068 (\\u2068)': how a message names one refused character."""
    name = _NAMES.get(ch)
    return f"{name} ({_escape_char(ch)})" if name else f"U+{ord(ch):04X} ({_escape_char(ch)})"


def first_control(text: str) -> tuple[int, str] | None:
    """(0-based index, character) of the first refused character, or None."""
    m = CONTROL.search(text)
    return (m.start(), m.group()) if m else None


def header_safe(value: str) -> bool:
    """Whether a credential can go in an HTTP header as it is: printable ASCII, no blank
    (RFC 6750's b64token for a bearer token; an API key of other characters cannot be sent,
    and httpx raises ``UnicodeEncodeError`` deep inside, or strips the blanks at its ends)."""
    return value.isascii() and value.isprintable() and " " not in value


def reads_as_json(text: str) -> bool:
    """``1``, ``true``, ``[1]``: a string that, shown bare, would read as a number, a list...
    (a plan then shows it quoted: the string "1" and the number 1 are two values)."""
    if text[:1] not in "-0123456789[{tfnNI":
        return False
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True
