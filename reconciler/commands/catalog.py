"""``reconcile catalog``: what the last syncs stored, offline.

Answers "which registry offers chart X at version Y" from the content catalog that
``reconcile sync`` keeps in the local target's database. The database is opened read-only:
querying never creates, seeds or changes it.

Exit codes: 0 when something matched, 1 when nothing did (or the catalog is empty, or a
``--registry`` is unknown), so scripts can test for an offering as with ``grep``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import render
from reconciler.content.query import KINDS, SHORT, Entry, RegistryInfo, query, registries
from reconciler.errors import InputError
from reconciler.runner import one_json_document
from reconciler.targets.local import open_snapshot
from reconciler.text import escape

CATALOG_FORMAT_VERSION = 1
SHOWN_VERSIONS = 5  # text output: the newest few versions per entry, then a count


def _printable(s: Any) -> str:
    """Names come from remote indexes: never let them move the cursor (lines GitHub would run
    as workflow commands are escaped for every command under CI, in cli.py)."""
    return escape("" if s is None else str(s))


def _open(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise InputError(f"no local catalog at {db}: run `reconcile` and then `reconcile sync` first")
    try:
        conn = open_snapshot(db)  # creates no -wal/-shm beside it
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error as exc:
        raise InputError(f"{db}: not a readable reconcile database ({exc})") from exc
    return conn


def run_catalog(
    db: Path,
    *,
    target: str,
    pattern: str | None,
    version: str | None,
    names: Sequence[str],
    kinds: Sequence[str],
    fmt: str,
    out: TextIO,
    err: TextIO,
) -> int:
    def why(error: str) -> dict[str, Any]:
        return {"catalog_format_version": CATALOG_FORMAT_VERSION, "query": pattern, "version": version,
                "registries": [], "entries": [], "error": error}

    with one_json_document(fmt, out, why):
        if target != "local":
            raise InputError(
                "the catalog holds what `reconcile sync` fetched on the local target; "
                "Palette keeps the content of its registries itself (see the Palette UI or API)"
            )
        conn = _open(db)
        try:
            regs = registries(conn)
            if names:
                known = {r.name for r in regs}
                unknown = sorted(set(names) - known)
                if unknown:
                    listed = ", ".join(sorted(known)) or "none"
                    raise InputError(f"unknown registry {', '.join(map(_printable, unknown))} (registries: {listed})")
                regs = [r for r in regs if r.name in names]
            if kinds:
                regs = [r for r in regs if SHORT.get(r.kind) in kinds]
            entries = query(conn, regs, pattern=pattern, version=version, kinds=kinds)
        except sqlite3.Error as exc:
            raise InputError(f"{db}: cannot read the catalog ({exc})") from exc
        finally:
            conn.close()
    synced = [r for r in regs if r.synced]
    if fmt == "json":
        render.write_json({
            "catalog_format_version": CATALOG_FORMAT_VERSION,
            "query": pattern,
            "version": version,
            "registries": [r.as_dict() for r in regs if r.synced or names],
            "entries": [e.as_dict() for e in entries],
        }, out)
    elif fmt == "markdown":
        render.markdown_table(_rows(entries), ["REGISTRY", "KIND", "NAME", "VERSIONS"], out)
    else:
        if entries:
            render.table(_rows(entries), ["REGISTRY", "KIND", "NAME", "VERSIONS"], out)
        _footer(regs if names else synced, err if fmt != "text" else out)
    if not synced:
        err.write("the catalog is empty: no registry has synced yet (run `reconcile sync`)\n")
        return 1
    if not entries:
        what = f"matching {_printable(pattern)!r}" if pattern else "at all"
        at = f" at version {_printable(version)!r}" if version else ""
        err.write(f"no content {what}{at} in {len(synced)} synced registr{'y' if len(synced) == 1 else 'ies'}\n")
        return 1
    return 0


def _rows(entries: Sequence[Entry]) -> list[list[str]]:
    rows = []
    for e in entries:
        vs = [_printable(v["version"]) for v in e.versions]
        shown = ", ".join(vs[:SHOWN_VERSIONS]) + (f" ... ({len(vs)} in all)" if len(vs) > SHOWN_VERSIONS else "")
        reg = _printable(e.registry.name) + (" (system)" if e.registry.scope == "system" else "")
        rows.append([reg, e.kind, _printable(e.name), shown or "(no tags)"])
    return rows


def _footer(regs: Sequence[RegistryInfo], out: TextIO) -> None:
    if not regs:
        return
    out.write("\n")
    for r in regs:
        if not r.synced:
            out.write(f"{_printable(r.name)}: never synced\n")
        elif r.failed:
            out.write(f"{_printable(r.name)}: last sync FAILED at {r.last_attempt}: {_printable(r.message)}"
                      f" (content shown is from {r.last_synced or 'no earlier successful sync'})\n")
        else:
            out.write(f"{_printable(r.name)}: synced {r.last_synced}\n")


__all__ = ["KINDS", "run_catalog"]
