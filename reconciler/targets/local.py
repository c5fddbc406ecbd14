"""The embedded local target: one SQLite file that behaves like a Palette tenant.

It assigns uids, stores each registry's canonical spec (secret *references* only, never
values) by kind and scope, refuses duplicate names as Palette does, carries the profile's
built-in default registries (read-only), and runs content syncs for real through
``reconciler.content``, whose catalog tables live in the same database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping
from operator import attrgetter
from pathlib import Path

from reconciler.errors import ClientError, Conflict, NotFound, TargetError
from reconciler.model import (
    KIND_NAMES,
    SCOPE_NAMES,
    Key,
    ObservedRegistry,
    Registry,
    key_str,
    load_json_object,
    observed_from_json,
    observed_registry,
    stored_spec,
    target_spec,
)
from reconciler.profiles import default_registries as _default_registries
from reconciler.targets.base import Known, ObservedList, Secrets, SyncStatus, Target

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registries (
    uid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    builtin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, scope, name)
);
CREATE TABLE IF NOT EXISTS sync_status (
    uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    last_synced TEXT,
    last_run TEXT,
    detail TEXT
);
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def open_snapshot(path: Path) -> sqlite3.Connection:
    """Open an existing database to read, creating nothing beside it.

    A read-only open of a WAL database creates its -wal and -shm files when they are missing
    (and fails in a read-only directory). Without a -wal file every committed change is in the
    main file: read it as immutable, which creates nothing (a writer starting meanwhile is not
    seen: a snapshot). With one, a writer is active or was killed: read through its WAL
    (mode=ro), whose files already exist. Raises ``sqlite3.DatabaseError``."""
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "immutable=1"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=30,
                           check_same_thread=False, isolation_level=None)


class LocalTarget(Target):
    max_concurrency = 1
    needs_secrets = False
    observe_reads_known = False  # observe: one SELECT of every row, whatever is known

    def __init__(
        self,
        path: Path,
        *,
        profile: str = "saas",
        base_dir: Path | None = None,
        progress: Callable[[str], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.base_dir = base_dir or Path.cwd()
        self.progress = progress
        self.read_only = read_only
        self._lock = threading.Lock()
        self._deadline: float | None = None  # time.monotonic() by which a content sync ends
        # #9.40: a read-only target (dry-run, status) writes nothing, not even the built-ins:
        # they are the profile's, held in memory, and a missing database is an empty tenant
        self._builtins = [
            ObservedRegistry(uid=f"builtin-{reg.kind}-{reg.name}".lower().replace(" ", "-"), kind=reg.kind,
                             name=reg.name, scope=reg.scope, spec=json.loads(json.dumps(target_spec(reg.spec))),
                             builtin=True)
            for reg in _default_registries(profile)
        ]
        if read_only:
            self.conn = self._open_read_only()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = self._open()
        self._seed_builtins()

    @property
    def description(self) -> str:
        return f"local ({self.path})"

    def _open(self) -> sqlite3.Connection:
        # Two processes creating the database at once can meet SQLITE_BUSY on the WAL switch,
        # which the busy timeout does not cover: retry for a bounded time.
        deadline = time.monotonic() + 30
        while True:
            conn = None
            try:
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
                return conn
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise TargetError(f"local target {self.path}: {exc}") from exc
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                if conn is not None:
                    conn.close()
                raise TargetError(f"local target {self.path}: {exc}") from exc

    @property
    def identity(self) -> str:
        return "local"

    def _open_read_only(self) -> sqlite3.Connection:
        try:
            if not self.path.exists():
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                conn.executescript(_SCHEMA)
                return conn
            conn = open_snapshot(self.path)
            conn.execute("SELECT count(*) FROM registries").fetchone()
            return conn
        except sqlite3.DatabaseError as exc:
            raise TargetError(f"local target {self.path}: {exc}") from exc

    def _seed_builtins(self) -> None:
        want = sorted((b.uid, b.kind, b.scope, b.name, json.dumps(b.spec, sort_keys=True)) for b in self._builtins)
        with self._lock:
            have = sorted(self.conn.execute(
                "SELECT uid, kind, scope, name, spec FROM registries WHERE builtin = 1").fetchall())
        if have == want:
            return  # nothing to rewrite
        with self._lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM registries WHERE builtin = 1")
            for uid, kind, scope, name, spec in want:
                self.conn.execute(
                    "INSERT OR IGNORE INTO registries VALUES (?,?,?,?,?,1,?,?)",
                    (uid, kind, scope, name, spec, _now(), _now()),
                )

    def _row(self, row: tuple[str, str, str, str, str, int]) -> ObservedRegistry:
        uid, kind, scope, name, spec, builtin = row
        value = stored_spec(kind, name, uid, spec, f"local target {self.path}")
        return observed_registry(uid, kind, name, scope, value, bool(builtin))

    @staticmethod
    def _lazy_row(row: tuple[str, str, str, str, str, int]) -> ObservedRegistry:
        uid, kind, scope, name, spec, builtin = row
        return observed_from_json(uid, KIND_NAMES.get(kind, kind), name, SCOPE_NAMES.get(scope, scope), spec,
                                  bool(builtin))

    def list(self) -> list[ObservedRegistry]:
        return self._list(self._row)

    def observe(self, wanted: Collection[Key], known: Mapping[str, Known]) -> ObservedList:
        """``list()``, each spec decoded only when read: the text in the database is the spec's
        canonical JSON (as written by ``create`` and ``update``), which a plan compares with
        the desired spec's, so an unchanged registry's spec is never decoded. A row that is
        not valid JSON is refused (``TargetError``) when its spec is read."""
        return self._list(self._lazy_row)

    def _list(self, row: Callable[[tuple[str, str, str, str, str, int]], ObservedRegistry]) -> ObservedList:
        try:
            with self._lock:
                rows = self.conn.execute(
                    "SELECT uid, kind, scope, name, spec, builtin FROM registries"
                    + (" WHERE builtin = 0" if self.read_only else "") + " ORDER BY kind, scope, name"
                ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise TargetError(f"local target {self.path}: {exc}") from exc
        out = [row(r) for r in rows]
        if self.read_only:
            # already in order but for the built-ins: the sort is one pass (attrgetter: the same
            # (kind, scope, name) key as before, without a Python call per registry)
            out = sorted(out + self._builtins, key=attrgetter("kind", "scope", "name"))
        return out

    def get(self, kind: str, uid: str) -> ObservedRegistry:
        if self.read_only:
            found = next((o for o in self.list() if (o.uid, o.kind) == (uid, kind)), None)
            if found is None:
                raise NotFound(f"local: {kind} {uid} not found", status=404)
            return found
        with self._lock:
            row = self.conn.execute(
                "SELECT uid, kind, scope, name, spec, builtin FROM registries WHERE uid = ? AND kind = ?", (uid, kind)
            ).fetchone()
        if row is None:
            raise NotFound(f"local: {kind} {uid} not found", status=404)
        return self._row(row)

    def find(self, scope: str, kind: str, name: str) -> ObservedRegistry | None:
        if self.read_only:
            return next((o for o in self.list() if o.key == (scope, kind, name)), None)
        with self._lock:
            row = self.conn.execute(
                "SELECT uid, kind, scope, name, spec, builtin FROM registries WHERE scope = ? AND kind = ? AND name = ?",
                (scope, kind, name),
            ).fetchone()
        return self._row(row) if row else None

    def _refuse_if_read_only(self) -> None:
        if self.read_only:
            raise TargetError(f"local target {self.path} is open read-only (dry-run or status)")

    def create(self, registry: Registry, secrets: Secrets) -> str:
        self._refuse_if_read_only()
        uid = os.urandom(12).hex()  # secrets.token_hex(12)
        try:
            with self._lock, self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute(
                    "INSERT INTO registries VALUES (?,?,?,?,?,0,?,?)",
                    (uid, registry.kind, registry.scope, registry.name, registry.target_json, _now(), _now()),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"local: {key_str(registry.key)} already exists", status=409) from exc
        return uid

    def _check_writable(self, kind: str, uid: str) -> None:
        self._refuse_if_read_only()
        if self.get(kind, uid).builtin:
            raise ClientError(f"local: {kind} {uid} is a built-in default registry and is read-only", status=403)

    def update(self, uid: str, registry: Registry, secrets: Secrets) -> None:
        self._check_writable(registry.kind, uid)
        try:
            with self._lock, self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                cur = self.conn.execute(
                    "UPDATE registries SET name = ?, scope = ?, spec = ?, updated_at = ? WHERE uid = ? AND kind = ?",
                    (registry.name, registry.scope, registry.target_json, _now(), uid, registry.kind),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"local: {key_str(registry.key)} already exists", status=409) from exc
        if cur.rowcount == 0:
            raise NotFound(f"local: {registry.kind} {uid} not found", status=404)

    def delete(self, kind: str, uid: str) -> None:
        self._check_writable(kind, uid)
        with self._lock, self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.execute("DELETE FROM registries WHERE uid = ? AND kind = ?", (uid, kind))
            self.conn.execute("DELETE FROM sync_status WHERE uid = ?", (uid,))
        if cur.rowcount == 0:
            raise NotFound(f"local: {kind} {uid} not found", status=404)
        from reconciler import content

        with self._lock:
            content.ensure_schema(self.conn)
            content.delete_catalog(self.conn, uid)

    def set_deadline(self, seconds: float) -> None:
        # the content sync runs here, in this process: `sync --timeout` bounds it between requests
        self._deadline = time.monotonic() + max(0.0, seconds)

    def sync(self, kind: str, uid: str, *, force: bool = False, secrets: Secrets | None = None) -> None:
        from reconciler import content

        self._refuse_if_read_only()
        reg = self.get(kind, uid)
        started = _now()
        with self._lock:
            content.ensure_schema(self.conn)
        result = content.sync_registry(
            self.conn, uid, kind, reg.spec, dict(secrets or {}), base_dir=self.base_dir, force=force,
            progress=self.progress, deadline=self._deadline,
        )
        ok = result.status.lower() not in ("failed", "error")
        detail = {"counts": dict(result.counts), "added": len(result.added), "removed": len(result.removed),
                  "not_modified": result.not_modified}
        with self._lock, self.conn:
            prev = self.conn.execute("SELECT last_synced FROM sync_status WHERE uid = ?", (uid,)).fetchone()
            last_synced = _now() if ok else (prev[0] if prev else None)
            self.conn.execute(
                "INSERT OR REPLACE INTO sync_status VALUES (?,?,?,?,?,?)",
                (uid, result.status, result.message, last_synced, started, json.dumps(detail)),
            )

    def catalog(self, uid: str) -> Mapping[str, object] | None:
        from reconciler import content

        with self._lock:
            return content.catalog_summary(self.conn, uid)

    def sync_status(self, kind: str, uid: str) -> SyncStatus:
        self.get(kind, uid)
        with self._lock:
            row = self.conn.execute(
                "SELECT status, message, last_synced, last_run, detail FROM sync_status WHERE uid = ?", (uid,)
            ).fetchone()
        if row is None:
            return SyncStatus(status="", message="never synced")
        status, message, last_synced, last_run, detail = row
        return SyncStatus(status=status, message=message, last_synced=last_synced, last_run=last_run,
                          detail=load_json_object(detail))

    def close(self) -> None:
        self.conn.close()

