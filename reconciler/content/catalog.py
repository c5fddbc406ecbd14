"""The content catalog: our own tables in the local target's SQLite database.

Every table is keyed by the registry ``uid`` and prefixed ``content_`` so it cannot clash
with the target's tables. ``content_sync`` holds one row per registry: last status,
conditional-request validators (ETag / Last-Modified) and counts. Helm charts keep a
per-chart block hash (``content_helm_charts``) so an unchanged chart is never re-parsed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from reconciler.content.result import SyncResult
from reconciler.model import load_json_object

SCHEMA = """
CREATE TABLE IF NOT EXISTS content_sync (
    uid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    etag TEXT,
    last_modified TEXT,
    body_sha256 TEXT,
    layout TEXT,
    counts TEXT NOT NULL DEFAULT '{}',
    last_synced TEXT,
    last_attempt TEXT
);
CREATE TABLE IF NOT EXISTS content_helm_charts (
    uid TEXT NOT NULL,
    chart TEXT NOT NULL,
    block_hash TEXT,
    PRIMARY KEY (uid, chart)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content_helm_versions (
    uid TEXT NOT NULL,
    chart TEXT NOT NULL,
    version TEXT NOT NULL,
    app_version TEXT,
    digest TEXT,
    created TEXT,
    deprecated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, chart, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content_oci_repositories (
    uid TEXT NOT NULL,
    repository TEXT NOT NULL,
    layout TEXT,
    PRIMARY KEY (uid, repository)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content_oci_tags (
    uid TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (uid, repository, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content_packs (
    uid TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (uid, name, version)
) WITHOUT ROWID;
"""

TABLES = (
    "content_sync",
    "content_helm_charts",
    "content_helm_versions",
    "content_oci_repositories",
    "content_oci_tags",
    "content_packs",
)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_schema(conn: sqlite3.Connection) -> None:
    have = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'content_%'"
        )
    }
    if not set(TABLES) <= have:
        # executescript commits any pending transaction first; the tables come in one
        # transaction of their own (one fsync, not one per table, and all or none)
        conn.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}COMMIT;\n")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One explicit transaction, whatever the connection's isolation level.

    The local target opens its connection in autocommit mode (``isolation_level=None``):
    without this, every inserted row would be its own fsync'd transaction. Inside a
    caller's open transaction we nest with a savepoint instead.
    """
    if conn.in_transaction:
        conn.execute("SAVEPOINT content_sync")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO content_sync")
            conn.execute("RELEASE content_sync")
            raise
        conn.execute("RELEASE content_sync")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def sync_row(conn: sqlite3.Connection, uid: str) -> dict[str, Any] | None:
    cur = conn.execute("SELECT * FROM content_sync WHERE uid = ?", (uid,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def record(
    conn: sqlite3.Connection,
    uid: str,
    kind: str,
    status: str,
    message: str,
    *,
    prev: Mapping[str, Any] | None = None,
    counts: Mapping[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Upsert the registry's sync row (``prev``: the row as read before the sync, if any).

    ``last_synced`` moves only on success."""
    now = now_iso()
    row: dict[str, Any] = dict(prev or {})
    row.update(uid=uid, kind=kind, status=status, message=message, last_attempt=now)
    if counts is not None:
        row["counts"] = json.dumps(dict(counts), sort_keys=True)
    row.setdefault("counts", "{}")
    if status == "Completed":
        row["last_synced"] = now
    row.update(fields)
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(
        f"INSERT OR REPLACE INTO content_sync ({cols}) VALUES ({marks})", tuple(row.values())
    )


def stored_counts(prev: Mapping[str, Any] | None) -> dict[str, Any]:
    return (load_json_object(prev["counts"]) or {}) if prev else {}


def summary(conn: sqlite3.Connection, uid: str) -> dict[str, Any]:
    ensure_schema(conn)
    row = sync_row(conn, uid)
    if row is None:
        return {}
    out: dict[str, Any] = {"kind": row["kind"]}
    out.update(load_json_object(row["counts"]) or {})
    out.update(
        status=row["status"],
        message=row["message"],
        last_synced=row["last_synced"],
        last_attempt=row["last_attempt"],
    )
    return out


def delete(conn: sqlite3.Connection, uid: str) -> None:
    ensure_schema(conn)
    with transaction(conn):
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE uid = ?", (uid,))


def previous(conn: sqlite3.Connection, uid: str, kind: str) -> dict[str, Any] | None:
    """The last sync row of ``uid``; a row left by another kind (the uid was reused) is dropped."""
    prev = sync_row(conn, uid)
    if prev is not None and prev["kind"] != kind:
        delete(conn, uid)
        return None
    return prev


def failed(
    conn: sqlite3.Connection, uid: str, kind: str, message: str, prev: Mapping[str, Any] | None, source: str
) -> SyncResult:
    """Record a failed sync (the previous catalog stays) and return its result."""
    with transaction(conn):
        record(conn, uid, kind, "Failed", message, prev=prev, source=source)
    return SyncResult("Failed", message, [], [], stored_counts(prev), False)
