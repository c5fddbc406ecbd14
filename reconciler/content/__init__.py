"""Content sync and preflight for Helm, OCI and Pack registries.

The public surface is these four functions and ``SyncResult``; the local target's
``sync()`` calls ``sync_registry`` and ``reconcile status`` calls ``catalog_summary``.
Failures (unreachable, TLS, 401/403, missing content) come back as a ``Failed`` result
or a preflight line, never as an exception; secrets never appear in a message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.content import catalog
from reconciler.content import helm as helm  # imported eagerly: its regexes compile once
from reconciler.content import preflight as _preflight  # before ``def preflight`` shadows it
from reconciler.content.result import SyncResult

__all__ = [
    "SyncResult",
    "catalog_summary",
    "delete_catalog",
    "ensure_schema",
    "preflight",
    "sync_registry",
]


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the ``content_*`` tables if missing (idempotent)."""
    catalog.ensure_schema(conn)


def sync_registry(
    conn: sqlite3.Connection,
    uid: str,
    kind: str,
    spec: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    base_dir: Path,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
) -> SyncResult:
    """Fetch the registry's content and store its catalog under ``uid``; commits.

    ``deadline`` (a ``time.monotonic()`` value): no request starts after it, and no socket
    wait is longer than the time left when its request started; the sync then fails, keeping
    the earlier catalog."""
    ensure_schema(conn)
    if kind == "HelmRegistry":
        from reconciler.content import helm

        return helm.sync(
            conn, uid, spec, secrets, base_dir=Path(base_dir), force=force, progress=progress,
            deadline=deadline,
        )
    if kind == "OciRegistry":
        from reconciler.content import oci

        return oci.sync(
            conn, uid, spec, secrets, base_dir=Path(base_dir), force=force, progress=progress,
            deadline=deadline,
        )
    if kind == "PackRegistry":
        from reconciler.content import pack

        return pack.sync(
            conn, uid, spec, secrets, base_dir=Path(base_dir), force=force, progress=progress,
            deadline=deadline,
        )
    raise ValueError(f"unknown registry kind {kind!r}")


def preflight(
    kind: str,
    spec: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    base_dir: Path,
    label: str | None = None,
) -> list[str]:
    """One line per failed check ([] when all pass); ``label`` (e.g. ``HelmRegistry/charts``)
    prefixes each line as ``label: ...``."""
    lines = _preflight.run(kind, spec, secrets, base_dir=Path(base_dir))
    return [f"{label}: {line}" for line in lines] if label else lines


def catalog_summary(conn: sqlite3.Connection, uid: str) -> dict[str, Any]:
    """Counts and last status of a registry's catalog; {} if it never synced.

    Helm: charts, versions; OCI: repositories, tags, packs; Pack: packs; all: kind,
    status, message, last_synced, last_attempt.
    """
    return catalog.summary(conn, uid)


def delete_catalog(conn: sqlite3.Connection, uid: str) -> None:
    """Drop everything stored for ``uid`` (call when the registry is deleted)."""
    catalog.delete(conn, uid)
