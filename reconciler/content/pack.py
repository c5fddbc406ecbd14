"""Legacy Pack registry: reachability, credentials, and the pack list where offered.

Checks: ``GET <endpoint>`` with the configured auth must answer without 401/403 and
below 500 (any other status still proves the host and TLS). Listing, tried in order, the
first that answers 200 with JSON wins; absence of both is not a failure:
- ``GET <endpoint>/v1/packs``: a JSON list (or ``{"items"|"packs": [...]}``) of objects
  with ``name`` and ``version`` (or ``tag``, or a ``versions`` / ``tags`` list);
- ``GET <endpoint>/v2/_catalog``: a distribution-based pack registry, one pack per
  repository (version left empty).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from reconciler.content import catalog
from reconciler.content.http import (
    Access,
    ProbeError,
    build_access,
    describe_error,
    get_answer,
    make_client,
    status_error,
    time_left,
)
from reconciler.content.result import SyncResult
from reconciler.errors import redact
from reconciler.model import load_json

KIND = "PackRegistry"
Progress = Callable[[str], None] | None


def base_url(spec: Mapping[str, Any]) -> str:
    endpoint = str(spec.get("endpoint") or "").strip()
    if not endpoint.startswith(("http://", "https://")):
        endpoint = "https://" + endpoint
    return endpoint.rstrip("/")


def check(
    client: httpx.Client, url: str, secrets: tuple[str, ...], deadline: float | None = None
) -> None:
    try:
        resp, _ = get_answer(client, url + "/", deadline=deadline, read_body=False)
    except (httpx.HTTPError, OSError) as exc:
        time_left(deadline, url)
        raise describe_error(exc, url, secrets) from None
    if resp.status_code in (401, 403) or resp.status_code >= 500:
        raise status_error(resp.status_code, url)


def list_packs(
    client: httpx.Client, url: str, deadline: float | None = None
) -> set[tuple[str, str]] | None:
    """(name, version) pairs, or None when the server offers no listing we know."""
    for path in ("/v1/packs", "/v2/_catalog"):
        try:
            resp, body = get_answer(client, url + path, deadline=deadline)
            if resp.status_code != 200:
                continue
            doc = load_json(body)
        except (httpx.HTTPError, OSError, ValueError):
            time_left(deadline, url + path)
            continue  # not a listing we know (a body nested 100,000 deep was an internal error)
        if path == "/v2/_catalog":
            repos = doc.get("repositories") if isinstance(doc, dict) else None
            if isinstance(repos, list):
                return {(name, "") for name in map(_text, repos) if name}
            continue
        items = doc.get("items", doc.get("packs")) if isinstance(doc, dict) else doc
        if isinstance(items, list):
            return set(_pairs(items))
    return None


def _text(value: Any) -> str | None:
    """A name or version as text; None for anything but a string or a number (a nested
    list from the server is no name, and ``str()`` of one a thousand deep raised
    RecursionError)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def _pairs(items: list[Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        name = _text(item.get("name"))
        if not name:
            continue
        versions = item.get("versions") or item.get("tags")
        if isinstance(versions, list):
            for v in versions:
                if isinstance(v, Mapping):
                    v = v.get("version", v.get("tag", ""))
                version = _text(v)
                if version is not None:
                    out.append((name, version))
        else:
            out.append((name, _text(item.get("version") or item.get("tag") or "") or ""))
    return out


def _access(spec: Mapping[str, Any], secrets: Mapping[str, str], base_dir: Path) -> Access:
    return build_access(spec, secrets, base_dir, https=base_url(spec).startswith("https://"))


def sync(
    conn: sqlite3.Connection,
    uid: str,
    spec: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    base_dir: Path,
    force: bool = False,
    progress: Progress = None,
    deadline: float | None = None,
) -> SyncResult:
    url = base_url(spec)
    prev = catalog.previous(conn, uid, KIND)
    values = tuple(v for v in secrets.values() if v)
    try:
        access = _access(spec, secrets, base_dir)
        with make_client(access, pool=1) as client:
            check(client, url, access.secrets, deadline)
            if progress:
                progress(f"listing packs at {url}")
            packs = list_packs(client, url, deadline)
    except ProbeError as exc:
        return catalog.failed(conn, uid, KIND, redact(str(exc), values), prev, url)

    with catalog.transaction(conn):
        added: list[str] = []
        removed: list[str] = []
        if packs is None:
            counts: dict[str, Any] = {"packs": None}
            message = "reachable, credentials accepted; the server offers no pack listing"
        else:
            old = set(
                conn.execute(
                    "SELECT name, version FROM content_packs WHERE uid = ?", (uid,)
                ).fetchall()
            )
            add, rem = sorted(packs - old), sorted(old - packs)
            conn.executemany(
                "DELETE FROM content_packs WHERE uid = ? AND name = ? AND version = ?",
                [(uid, n, v) for n, v in rem],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO content_packs VALUES (?, ?, ?)",
                [(uid, n, v) for n, v in add],
            )
            added = [f"{n}@{v}" if v else n for n, v in add]
            removed = [f"{n}@{v}" if v else n for n, v in rem]
            counts = {"packs": len({n for n, _ in packs}), "versions": len(packs)}
            message = (
                f"{counts['packs']} packs, {counts['versions']} versions; "
                f"+{len(added)} -{len(removed)}"
            )
        catalog.record(conn, uid, KIND, "Completed", message, prev=prev, counts=counts, source=url)
    return SyncResult("Completed", message, added, removed, counts, False)
