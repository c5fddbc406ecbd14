"""The state journal: one JSON line per recorded change, appended and fsynced (issue #11.1).

Rewriting the whole state document per change made apply quadratic. Instead the file store
appends each change to ``<state>.journal`` and rewrites the document once at the end (and
every few seconds during a long apply); a read replays the journal onto the document.

Format, one JSON object per line::

    {"journal": 1, "lineage": L, "serial": S}     header: applies on top of state L at serial S
    {"op": "put", "record": {...}}                 a record as the state document holds it
    {"op": "drop", "key": [scope, kind, name]}
    {"op": "fold", "serial": S2}                   the document is about to be rewritten at S2

A torn last line (no newline: the process died mid-write) is ignored. A journal of another
lineage, or of another serial (unless its fold line says the document already holds it), is
refused: it does not belong to this state.

With RECONCILER_STATE_KEY the header and each put and drop line carry a ``mac``: an HMAC of
the line chained to the one before it, and the header's to the signature of the document it
applies on top of. Anyone can read the lineage and serial and write a line; without the key
they cannot sign it, so a record put by a line that does not verify (or by any line after it:
a chain broken once stays broken) is unverified (``State.unverified``), as a record of an
unsigned document is: never deleted on its word. Fold lines are not signed: one only says that
the document holds the journal's changes, and makes a reader skip them, as deleting the
journal would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from reconciler.errors import StateError
from reconciler.model import load_json
from reconciler.state.base import MAC_PREFIX, State, _record

JOURNAL_VERSION = 1


def header(state: State, key: str | None = None, document_mac: str = "") -> tuple[bytes, str]:
    """The header line, and its mac ('' without a key) that the next line chains to."""
    return signed({"journal": JOURNAL_VERSION, "lineage": state.lineage, "serial": state.serial}, key, document_mac)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def signed(obj: dict[str, Any], key: str | None, prev: str) -> tuple[bytes, str]:
    """``line(obj)``, with its ``mac`` chained to ``prev`` when there is a key; and that mac."""
    if not key:
        return line(obj), ""
    mac = entry_mac(key, prev, obj)
    return line({**obj, "mac": mac}), mac


def entry_mac(key: str, prev: str, obj: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in obj.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    msg = b"reconcile-journal-v1\0" + prev.encode() + b"\0" + body.encode()
    return MAC_PREFIX + hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def replay(state: State, data: bytes, where: str, mac_key: str | None = None,
           document_mac: str = "") -> tuple[State, int, int]:
    """``state`` with the journal ``data`` applied, how many changes that was, and how many of
    them are not signed with ``mac_key`` (RECONCILER_STATE_KEY; none without a key)."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last piece has no newline: empty, or a torn write
    if not complete:
        return state, 0, 0
    chain: str | None = document_mac  # the mac of the last line that verified; None once one did not

    def verified(obj: dict[str, Any]) -> bool:
        nonlocal chain
        mac = obj.get("mac")
        if chain is not None and isinstance(mac, str) \
                and hmac.compare_digest(mac, entry_mac(mac_key or "", chain, obj)):
            chain = mac
            return True
        chain = None
        return False

    def bad(n: int, why: str) -> StateError:
        return StateError(f"{where}:{n}: journal is corrupt ({why}); refusing to use or overwrite the state")

    def parse(n: int, raw: bytes) -> dict[str, Any]:
        try:
            obj = load_json(raw)
        except ValueError as exc:
            raise bad(n, f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise bad(n, "not a JSON object")
        return obj

    head = parse(1, complete[0])
    lineage, serial = head.get("lineage"), head.get("serial")
    if head.get("journal") != JOURNAL_VERSION or not isinstance(lineage, str) or not isinstance(serial, int):
        raise bad(1, "no journal header")
    entries = [(n, parse(n, raw)) for n, raw in enumerate(complete[1:], start=2)]
    if lineage != state.lineage:
        raise StateError(
            f"{where}: journal of another state (lineage {lineage}, serial {serial}), not of this one (lineage "
            f"{state.lineage}, serial {state.serial}); refusing to use or overwrite either"
        )
    if serial != state.serial:
        folded = any(e.get("op") == "fold" and e.get("serial") == state.serial for _, e in entries)
        if serial < state.serial and folded:
            return state, 0, 0  # the document was rewritten with these changes; the journal outlived it
        raise StateError(
            f"{where}: journal of serial {serial}, but the state is at serial {state.serial}; it does not belong "
            "to this state; refusing to use or overwrite either"
        )
    count = unsigned = 0
    if mac_key:
        verified(head)
    for n, e in entries:
        op = e.get("op")
        trusted = op == "fold" or not mac_key or verified(e)
        unsigned += not trusted
        if op == "put":
            try:
                rec = _record(e.get("record"), n)
            except (TypeError, ValueError) as exc:  # said of line n, not of the document's registries[n]
                raise bad(n, str(exc).removeprefix(f"registries[{n}]: ")) from exc
            state.records[rec.key] = rec
            if trusted:
                state.unverified.discard(rec.key)  # written by an apply, from its definition
            else:
                state.unverified.add(rec.key)
        elif op == "drop":
            key = e.get("key")
            if not (isinstance(key, list) and len(key) == 3 and all(isinstance(k, str) for k in key)):
                raise bad(n, "'key' must be [scope, kind, name]")
            state.records.pop((key[0], key[1], key[2]), None)
        elif op == "fold":
            continue
        else:
            raise bad(n, f"unknown op {op!r}")
        count += 1
    # #9.3, as State.from_json checks the document: one uid under two records would make a plan
    # delete a registry it keeps (or PUT one registry's spec onto another)
    holders: dict[str, Any] = {}
    for key, rec in state.records.items():
        other = holders.setdefault(rec.uid, key)
        if other != key:
            raise StateError(f"{where}: journal is corrupt (uid {rec.uid!r} is recorded for {other[1]}/{other[2]} "
                             f"and {key[1]}/{key[2]}); refusing to use or overwrite the state")
    return state, count, unsigned
