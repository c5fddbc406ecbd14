"""Queries over the content catalog that ``reconcile sync`` stores (``reconcile catalog``).

Read-only: the caller opens the database with ``mode=ro``. Names in the catalog come from
remote indexes and registries we do not control, so matching never evaluates them as
anything but text.
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.content import catalog

KINDS = {"helm": "HelmRegistry", "oci": "OciRegistry", "pack": "PackRegistry"}
SHORT = {v: k for k, v in KINDS.items()}


@dataclass(frozen=True)
class RegistryInfo:
    uid: str
    name: str
    scope: str
    kind: str  # HelmRegistry | OciRegistry | PackRegistry
    status: str = ""  # "" when never synced
    message: str = ""
    last_synced: str | None = None
    last_attempt: str | None = None

    @property
    def synced(self) -> bool:
        return bool(self.status)

    @property
    def failed(self) -> bool:
        return self.status.lower() in ("failed", "error")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "kind": SHORT.get(self.kind, self.kind),
            "uid": self.uid,
            "status": self.status or "never synced",
            "failed": self.failed,
            "message": self.message,
            "last_synced": self.last_synced,
            "last_attempt": self.last_attempt,
        }


@dataclass(frozen=True)
class Entry:
    registry: RegistryInfo
    kind: str  # helm | oci | pack
    name: str  # chart, repository or pack name
    versions: tuple[dict[str, Any], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "registry": self.registry.name,
            "scope": self.registry.scope,
            "kind": self.kind,
            "name": self.name,
            "versions": list(self.versions),
        }


def matcher(pattern: str | None) -> Any:
    """A glob when the pattern has ``* ? [``, else a substring; both case-insensitive."""
    if not pattern:
        return lambda _s: True
    p = pattern.lower()
    if any(c in p for c in "*?["):
        rx = re.compile(fnmatch.translate(p))
        return lambda s: rx.match(s.lower()) is not None
    return lambda s: p in s.lower()


_PART = re.compile(r"(\d+)|[^\d.+\-_]+")


def version_key(v: str) -> tuple[Any, ...]:
    """Newest first when sorted in reverse: numeric parts compare as numbers; a pre-release
    (``1.0.0-rc1``) sorts below its release."""
    core, _, pre = v.lstrip("vV").partition("-")
    parts = tuple((0, int(m.group(1)), "") if m.group(1) else (1, 0, m.group(0)) for m in _PART.finditer(core))
    return (parts, 0 if pre else 1, pre)


def registries(conn: sqlite3.Connection) -> list[RegistryInfo]:
    """Every registry of the local target with its last sync (if any)."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "registries" not in have:
        return []
    sync_cols = "s.status, s.message, s.last_synced, s.last_attempt" if "content_sync" in have else "NULL, NULL, NULL, NULL"
    join = "LEFT JOIN content_sync s ON s.uid = r.uid" if "content_sync" in have else ""
    rows = conn.execute(
        f"SELECT r.uid, r.name, r.scope, r.kind, {sync_cols} FROM registries r {join} ORDER BY r.name, r.scope"
    ).fetchall()
    return [RegistryInfo(uid, name, scope, kind, status or "", message or "", synced, attempt)
            for uid, name, scope, kind, status, message, synced, attempt in rows]


def query(
    conn: sqlite3.Connection,
    regs: Sequence[RegistryInfo],
    *,
    pattern: str | None = None,
    version: str | None = None,
    kinds: Collection[str] = (),
) -> list[Entry]:
    """Entries of ``regs`` whose name matches ``pattern`` and that offer ``version`` (if given).

    With ``version``, only the matching versions are listed (exact, or a glob)."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not set(catalog.TABLES) <= have:
        return []
    name_ok = matcher(pattern)
    if version and any(c in version for c in "*?["):
        version_ok = matcher(version)
    else:
        version_ok = (lambda s: s == version) if version else (lambda _s: True)
    by_uid = {r.uid: r for r in regs if not kinds or SHORT.get(r.kind) in kinds}
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    def add(uid: str, kind: str, name: str, item: dict[str, Any]) -> None:
        if uid in by_uid and name_ok(name) and version_ok(item["version"]):
            grouped.setdefault((uid, kind, name), []).append(item)

    for uid, chart, ver, app, created, deprecated in conn.execute(
        "SELECT uid, chart, version, app_version, created, deprecated FROM content_helm_versions"
    ):
        add(uid, "helm", chart, {"version": ver, "appVersion": app, "created": created, "deprecated": bool(deprecated)})
    for uid, repo, tag in conn.execute("SELECT uid, repository, tag FROM content_oci_tags"):
        add(uid, "oci", repo, {"version": tag})
    if not version:  # a repository with no tags is still content
        for uid, repo in conn.execute(
            "SELECT r.uid, r.repository FROM content_oci_repositories r WHERE NOT EXISTS "
            "(SELECT 1 FROM content_oci_tags t WHERE t.uid = r.uid AND t.repository = r.repository)"
        ):
            if uid in by_uid and name_ok(repo):
                grouped.setdefault((uid, "oci", repo), [])
    for uid, name, ver in conn.execute("SELECT uid, name, version FROM content_packs"):
        add(uid, "pack", name, {"version": ver})
    entries = [
        Entry(by_uid[uid], kind, name, tuple(sorted(items, key=lambda i: version_key(i["version"]), reverse=True)))
        for (uid, kind, name), items in grouped.items()
    ]
    entries.sort(key=lambda e: (e.name.lower(), e.registry.name, e.registry.scope, e.kind))
    return entries
