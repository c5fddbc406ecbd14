"""Helm repository sync: ``index.yaml`` over HTTP into the catalog.

Why not just ``yaml.load``: a real index is megabytes of YAML, and even libyaml spends
seconds and ~30x the file size in memory building objects we mostly throw away. Helm
writes its index with go-yaml in a fixed layout::

    entries:
      <chart>:            <- a chart block starts at "^  <chart>:$"
      - apiVersion: v2    <- an entry starts at "^  - "
        version: 1.2.3    <- entry fields sit at indent 4, nested content deeper

so we split the raw bytes into per-chart blocks with one regex pass, hash each block and
compare with the hashes stored at the last sync: only changed blocks are read, with a
regex scanner for the few fields we keep (name, version, appVersion, digest, created,
deprecated). A block the scanner is not sure about (odd indentation, multi-line or
complex values, unterminated quotes, flow style) is parsed alone with libyaml's
``CBaseLoader``; an index whose top level is not in that layout (flow style, anchors
across charts, directives) is parsed whole with ``CBaseLoader``. ``CBaseLoader`` keeps every
scalar a string, as Helm's Go structs do (``appVersion: 1.10`` stays ``"1.10"``); plain
``null``/``~``/empty values become None in both paths.

What libyaml is given is read as events first (``_load``), and refused if it uses an alias
(Helm never writes anchors or aliases; 257 KB of aliases expanded to 40 million entries,
62 s and 4 GB) or nests deeper than ``MAX_DEPTH`` (libyaml's composer recurses in C: some
thousand levels of ``[`` raised RecursionError, 100,000 crashed the process). The events
cost about an eighth of the load, and only on the slow path.

Conditional requests: the ETag / Last-Modified of the last good fetch are sent back, so
an unchanged index costs one 304; a server without validators still costs no parsing
when the body's sha256 matches the last one.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import yaml

from reconciler.content import catalog
from reconciler.content.http import (
    ACCEPT_ENCODING,
    MAX_ANSWER_SECONDS,
    Access,
    ProbeError,
    answer_deadline,
    build_access,
    decoded,
    describe_error,
    make_client,
    status_error,
    stream_redirected,
    strip_userinfo,
    time_left,
)
from reconciler.content.result import SyncResult
from reconciler.errors import redact

KIND = "HelmRegistry"
MAX_INDEX_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64  # collections nested in an index: Helm's go structs need about 6
_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_NULLS = frozenset({"", "null", "Null", "NULL", "~"})
Progress = Callable[[str], None] | None


class Entry(NamedTuple):
    version: str
    app_version: str | None
    digest: str | None
    created: str | None
    deprecated: bool


class _Irregular(Exception):
    """The text is not in the layout the fast path understands."""


def index_url(spec: Mapping[str, Any]) -> str:
    endpoint = str(spec.get("endpoint") or "").strip()
    if not endpoint.startswith(("http://", "https://")):
        endpoint = "https://" + endpoint
    return endpoint.rstrip("/") + "/index.yaml"


# --------------------------------------------------------------------------- fetching


class Fetched(NamedTuple):
    status: int  # 200 or 304
    body: bytearray
    etag: str | None
    last_modified: str | None
    sha256: str = ""  # of the body, hashed while it streams in


def fetch_index(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = MAX_INDEX_BYTES,
    progress: Progress = None,
    deadline: float | None = None,
) -> Fetched:
    """GET the index, streamed into one buffer, redirects followed by ``stream_redirected``;
    raises ProbeError on any failure. Complete within ``MAX_ANSWER_SECONDS`` or by ``deadline``
    (the sync's), whichever comes first: a byte every few seconds must not hold a preflight
    (which has no deadline of its own) or a nightly sync for ever (adversarial pass 7, item 3)."""
    until = answer_deadline(deadline)
    headers: dict[str, str] = {"Accept-Encoding": ACCEPT_ENCODING}  # decoded here, bounded (http.decoded)
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    body = bytearray()
    try:
        with stream_redirected(client, url, headers=headers, deadline=until) as resp:
            if resp.status_code == 304:
                return Fetched(304, body, etag, last_modified)
            if resp.status_code != 200:
                raise status_error(resp.status_code, url, "index.yaml")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ProbeError(
                    f"{strip_userinfo(url)} is {int(declared)} bytes, over the "
                    f"{max_bytes}-byte limit",
                    check="content",
                )
            if progress:
                size = f" ({int(declared) / 1e6:.1f} MB)" if declared and declared.isdigit() else ""
                progress(f"downloading {strip_userinfo(url)}{size}")
            hasher = hashlib.sha256()
            for chunk in decoded(resp, url):
                time_left(deadline, url)  # a slow trickle of bytes is bounded too
                if time.monotonic() > until:
                    raise ProbeError(f"{strip_userinfo(url)} was still arriving after {MAX_ANSWER_SECONDS:.0f} s: "
                                     "refused", check="reach")
                body += chunk
                hasher.update(chunk)
                if len(body) > max_bytes:
                    raise ProbeError(
                        f"{strip_userinfo(url)} exceeds the {max_bytes}-byte limit", check="content"
                    )
            return Fetched(
                200,
                body,
                resp.headers.get("ETag"),
                resp.headers.get("Last-Modified"),
                hasher.hexdigest(),
            )
    except ProbeError:
        raise
    except (httpx.HTTPError, OSError) as exc:
        time_left(deadline, url)  # timed out by the deadline: say so
        raise describe_error(exc, url) from None


# --------------------------------------------------------------------------- parsing

_KEYS = rb"name|version|appVersion|digest|created|deprecated"
_TOP_KEY = re.compile(rb"([A-Za-z_][\w.-]*):([^\n]*)")
_CHART_HEADER = re.compile(rb"  ([A-Za-z0-9_][\w.+-]*):[ ]*(?:#[^\n]*)?")
# Lines that can end a chart block: not at field indent (4+) and not an entry start.
_BOUNDARY = re.compile(rb"\n(?!    |  - )[^\n]*")


def _block_regexes(d: int) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    dd = b" " * d
    ff = b" " * (d + 2)
    key = rb"[A-Za-z_][\w.\-/]*"
    fields = re.compile(
        rb"\n(?:("
        + dd
        + rb"- )(?:("
        + _KEYS
        + rb"):[ ]*([^\n]*))?|"
        + ff
        + rb"("
        + _KEYS
        + rb"):[ ]*([^\n]*))"
    )
    anomalies = re.compile(
        rb"\n {0,%d}\t" % (d + 2)  # tab in indentation
        + rb"|\n"
        + dd
        + rb"(?!  |- |#)"  # stray line at entry indent
        + rb"|\n"
        + ff
        + rb"(?![ #]|- |"
        + key
        + rb":(?: |\n))"  # odd line at field indent
        + rb"|\n"
        + dd
        + rb"- (?!"
        + key
        + rb":(?: |\n))"  # entry not a block mapping
        + rb"|\n(?:"
        + dd
        + rb"- |"
        + ff
        + rb")(?:"
        + _KEYS
        + rb"):[ ]*(?:[|>&*!{\[%@`#]|\n)"  # complex or empty value
        + rb"|\n(?:"
        + dd
        + rb"- |"
        + ff
        + rb")(?:"
        + _KEYS
        + rb"):[^\n]*\n(?:[ ]*\n)*"
        + ff
        + rb" "  # value continues below
        + rb"|\n(?:"
        + dd
        + rb"- |"
        + ff
        + rb")"
        + key
        + rb":[ ]+(?:\"(?:[^\n]*[^\"\n ])?|'(?:[^\n]*[^'\n ])?)[ ]*(?=\n)",  # open quote
    )
    return fields, anomalies


_REGEXES = {2: _block_regexes(2), 4: _block_regexes(4)}


def _norm(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return None if isinstance(value, dict | list) else str(value)
    return None if value in _NULLS else value


def _scalar(raw: bytes) -> str | None:
    v = raw.strip()
    if not v:
        return None
    first = v[:1]
    if first == b'"':
        if len(v) < 2 or not v.endswith(b'"'):
            raise _Irregular("unterminated quote")
        inner = v[1:-1]
        if b"\\" in inner or b'"' in inner:
            try:
                return _norm(yaml.load(v, Loader=_Loader))
            except yaml.YAMLError as exc:
                raise _Irregular(str(exc)) from None
        return _norm(inner.decode())
    if first == b"'":
        if len(v) < 2 or not v.endswith(b"'"):
            raise _Irregular("unterminated quote")
        return _norm(v[1:-1].replace(b"''", b"'").decode())
    cut = v.find(b" #")
    if cut >= 0:
        v = v[:cut].rstrip()
    return _norm(v.decode())


def _entry_from_fields(fields: Mapping[str, str | None]) -> Entry | None:
    version = fields.get("version")
    if not version:
        return None
    dep = fields.get("deprecated")
    return Entry(
        version,
        fields.get("appVersion"),
        fields.get("digest"),
        fields.get("created"),
        dep in ("true", "True", "TRUE"),
    )


def _entries_from_objects(items: Any) -> list[Entry]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ProbeError("index.yaml: a chart's entries are not a list", check="content")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ProbeError("index.yaml: a chart entry is not a mapping", check="content")
        entry = _entry_from_fields(
            {
                k: _norm(item.get(k))
                for k in ("version", "appVersion", "digest", "created", "deprecated")
            }
        )
        if entry:
            out.append(entry)
    return out


def parse_block(data: bytes | bytearray, start: int, end: int, chart: str) -> list[Entry]:
    """Entries of one chart block ``data[start:end]`` (header line included)."""
    hdr_end = data.index(b"\n", start, end) if b"\n" in data[start:end] else end
    try:
        d = (
            2
            if data.startswith(b"  - ", hdr_end + 1)
            else (4 if data.startswith(b"    - ", hdr_end + 1) else 0)
        )
        if not d:
            raise _Irregular("no entry after header")
        fields_re, anomalies_re = _REGEXES[d]
        if anomalies_re.search(data, hdr_end, end):
            raise _Irregular("anomaly")
        out: list[Entry] = []
        cur: dict[str, str | None] | None = None
        for m in fields_re.finditer(data, hdr_end, end):
            if m.group(1):  # entry start
                if cur is not None:
                    entry = _entry_from_fields(cur)
                    if entry:
                        out.append(entry)
                cur = {}
                if m.group(2):
                    cur[m.group(2).decode()] = _scalar(m.group(3))
            elif cur is not None:
                cur[m.group(4).decode()] = _scalar(m.group(5))
        if cur is not None:
            entry = _entry_from_fields(cur)
            if entry:
                out.append(entry)
        return out
    except _Irregular:
        pass
    try:  # this block alone, through libyaml
        doc = _load(bytes(data[start:end]))
    except yaml.YAMLError as exc:
        raise _Irregular(f"block {chart}: {exc}") from None
    if not isinstance(doc, dict) or list(doc) != [chart]:
        raise _Irregular(f"block {chart} does not parse alone")
    return _entries_from_objects(doc[chart])


class Layout(NamedTuple):
    blocks: dict[str, tuple[int, int, str]]  # chart -> (start, end, sha256 of the block)


def split_index(data: bytes | bytearray) -> Layout | None:
    """Per-chart blocks of a go-yaml-style index, or None if the layout is not recognised."""
    mv = memoryview(data)
    blocks: dict[str, tuple[int, int, str]] = {}
    in_entries = seen_entries = False
    gap_start = -1  # where "entries:" content starts while no chart header has been seen
    open_chart: tuple[str, int] | None = None

    def close(pos: int) -> None:
        nonlocal open_chart
        if open_chart is not None:
            name, start = open_chart
            blocks[name] = (start, pos, hashlib.sha256(mv[start:pos]).hexdigest())
            open_chart = None

    first_end = data.find(b"\n")
    first_end = len(data) if first_end < 0 else first_end
    lines = _chain_first(
        [(0, first_end)], ((m.start() + 1, m.end()) for m in _BOUNDARY.finditer(data))
    )
    for start, end in lines:
        line = bytes(mv[start:end])
        stripped = line.strip()
        if not stripped or stripped.startswith(b"#"):
            continue  # blank or comment: never ends a block (block scalars have blank lines)
        if line[:1] == b" ":
            if not line.startswith(b"  ") or line[2:3] in (b" ", b"\t"):
                return None
            if not in_entries:
                continue  # content of another top-level key (e.g. serverInfo)
            m = _CHART_HEADER.fullmatch(line)
            if not m:
                return None
            name = m.group(1).decode()
            if name in blocks or (open_chart and open_chart[0] == name):
                return None
            if gap_start >= 0:
                if not _only_blank(mv, gap_start, start):
                    return None
                gap_start = -1
            close(start)
            open_chart = (name, start)
            continue
        m = _TOP_KEY.fullmatch(line)
        if not m:
            return None  # directives, document markers, top-level sequences, tabs ...
        if gap_start >= 0 and not _only_blank(mv, gap_start, start):
            return None
        gap_start = -1
        close(start)
        rest = m.group(2).strip()
        in_entries = False
        if m.group(1) == b"entries":
            if seen_entries or (rest and not rest.startswith(b"#")):
                return None
            in_entries = seen_entries = True
            gap_start = end
    if gap_start >= 0 and not _only_blank(mv, gap_start, len(data)):
        return None
    close(len(data))
    if not seen_entries:
        return None
    return Layout(blocks)


def _only_blank(mv: memoryview, start: int, end: int) -> bool:
    for ln in bytes(mv[start:end]).split(b"\n"):
        ln = ln.strip()
        if ln and not ln.startswith(b"#"):
            return False
    return True


def _chain_first(
    first: Iterable[tuple[int, int]], rest: Iterable[tuple[int, int]]
) -> Iterable[tuple[int, int]]:
    yield from first
    yield from rest


def parse_full(data: bytes | bytearray) -> dict[str, list[Entry]]:
    """The whole index through libyaml (the slow, always-correct path)."""
    try:
        doc = _load(bytes(data))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ProbeError(
            f"index.yaml is not valid YAML: {problem}{where}", check="content"
        ) from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if entries in ("", None, "null", "~") and isinstance(doc, dict) and "entries" in doc:
        entries = {}
    if not isinstance(entries, dict):
        raise ProbeError(
            "index.yaml is not a Helm repository index (no 'entries' mapping)", check="content"
        )
    return {str(name): _entries_from_objects(items) for name, items in entries.items()}


_OPEN = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _load(data: bytes) -> Any:
    """``yaml.load`` of an index (or one chart block) that uses no alias and nests at most
    MAX_DEPTH collections; raises ProbeError (refused) or yaml.YAMLError (not YAML).

    The events are read lazily, so a refusal comes at the first alias or the level too deep:
    libyaml's scanner is quadratic in the depth of flow collections (100,000 levels: 20 s)."""
    depth = 0
    for event in yaml.parse(data, Loader=_Loader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise ProbeError(
                    f"index.yaml nests collections more than {MAX_DEPTH} deep: refused "
                    "(a Helm index needs a handful of levels)",
                    check="content",
                )
        elif isinstance(event, _CLOSE):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            raise ProbeError(
                "index.yaml uses YAML aliases (*name): refused, since Helm never writes "
                "them and each alias can multiply the entries to read",
                check="content",
            )
    return yaml.load(data, Loader=_Loader)


def parse_index(data: bytes | bytearray) -> dict[str, list[Entry]]:
    """Every chart's entries (fast path when the layout allows it)."""
    layout = split_index(data)
    if layout is not None:
        try:
            return {
                name: parse_block(data, s, e, name) for name, (s, e, _) in layout.blocks.items()
            }
        except _Irregular:
            pass
    return parse_full(data)


# --------------------------------------------------------------------------- sync


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
    url = index_url(spec)
    prev = catalog.previous(conn, uid, KIND)
    try:
        access = build_access(spec, secrets, base_dir, https=url.startswith("https://"))
    except ProbeError as exc:
        return _failed(conn, uid, url, str(exc), (), prev)
    validators = prev if prev is not None and not force and prev["status"] == "Completed" else None
    try:
        with make_client(access, pool=1) as client:
            fetched = fetch_index(
                client,
                url,
                etag=validators["etag"] if validators else None,
                last_modified=validators["last_modified"] if validators else None,
                progress=progress,
                deadline=deadline,
            )
    except ProbeError as exc:
        return _failed(conn, uid, url, str(exc), access.secrets, prev)
    if fetched.status == 304:
        if validators is None:
            msg = f"unexpected HTTP 304 from {strip_userinfo(url)} to an unconditional request"
            return _failed(conn, uid, url, msg, access.secrets, prev)
        return _unchanged(conn, uid, url, validators, fetched, "not modified (HTTP 304)")
    body = fetched.body
    body_sha = fetched.sha256
    if validators is not None and validators["body_sha256"] == body_sha:
        return _unchanged(conn, uid, url, validators, fetched, "unchanged (same sha256)")
    try:
        with catalog.transaction(conn):
            added, removed, mode, charts = _store(
                conn, uid, url, body, force=force or prev is None, progress=progress
            )
            before = catalog.stored_counts(prev).get("versions", 0) if prev else 0
            counts = {"charts": charts, "versions": before + len(added) - len(removed)}
            message = (
                f"{counts['charts']} charts, {counts['versions']} versions; "
                f"+{len(added)} -{len(removed)}"
            )
            catalog.record(
                conn,
                uid,
                KIND,
                "Completed",
                message,
                prev=prev,
                counts=counts,
                source=url,
                etag=fetched.etag,
                last_modified=fetched.last_modified,
                body_sha256=body_sha,
                layout=mode,
            )
    except ProbeError as exc:
        return _failed(conn, uid, url, str(exc), access.secrets, prev)
    if progress:
        progress(f"{KIND}: {message}")
    return SyncResult("Completed", message, added, removed, counts, False)


def _store(
    conn: sqlite3.Connection,
    uid: str,
    url: str,
    body: bytearray,
    *,
    force: bool,
    progress: Progress,
) -> tuple[list[str], list[str], str, int]:
    """Apply the new index to the catalog; returns (added, removed, layout, charts)."""
    old_hashes: dict[str, str | None] = dict(
        conn.execute(
            "SELECT chart, block_hash FROM content_helm_charts WHERE uid = ?", (uid,)
        ).fetchall()
    )
    layout = split_index(body)
    parsed: dict[str, list[Entry]] = {}
    hashes: dict[str, str | None] = {}
    mode = "blocks"
    if layout is not None:
        changed = [n for n, (_, _, h) in layout.blocks.items() if force or old_hashes.get(n) != h]
        if progress:
            progress(f"index: {len(layout.blocks)} charts, {len(changed)} changed")
        try:
            for i, name in enumerate(changed, 1):
                s, e, _ = layout.blocks[name]
                parsed[name] = parse_block(body, s, e, name)
                if progress and i % 50 == 0:
                    progress(f"parsed {i}/{len(changed)} changed charts")
            hashes = {n: h for n, (_, _, h) in layout.blocks.items()}
            present = set(layout.blocks)
        except _Irregular:
            layout = None
            parsed = {}
    if layout is None:
        mode = "full"
        if progress:
            progress("index layout not recognised: full YAML parse")
        parsed = parse_full(body)
        hashes = dict.fromkeys(parsed)
        present = set(parsed)
    del body

    gone = [n for n in old_hashes if n not in present]
    touched = list(parsed) + gone
    old_versions: dict[str, set[str]] = {}
    if len(touched) > 20:
        for chart, version in conn.execute(
            "SELECT chart, version FROM content_helm_versions WHERE uid = ?", (uid,)
        ):
            old_versions.setdefault(chart, set()).add(version)
    else:
        for name in touched:
            old_versions[name] = {
                v
                for (v,) in conn.execute(
                    "SELECT version FROM content_helm_versions WHERE uid = ? AND chart = ?",
                    (uid, name),
                )
            }
    added: list[str] = []
    removed: list[str] = []
    rows: list[tuple[str, str, str, str | None, str | None, str | None, int]] = []
    for name, entries in parsed.items():
        entries = _dedupe(entries)
        before = old_versions.get(name, set())
        now = {e.version for e in entries}
        added.extend(f"{name}@{e.version}" for e in entries if e.version not in before)
        removed.extend(f"{name}@{v}" for v in sorted(before - now))
        rows.extend(
            (uid, name, e.version, e.app_version, e.digest, e.created, int(e.deprecated))
            for e in entries
        )
    for name in gone:
        removed.extend(f"{name}@{v}" for v in sorted(old_versions.get(name, ())))

    conn.executemany(
        "DELETE FROM content_helm_versions WHERE uid = ? AND chart = ?", [(uid, n) for n in touched]
    )
    conn.executemany(
        "DELETE FROM content_helm_charts WHERE uid = ? AND chart = ?", [(uid, n) for n in touched]
    )
    conn.executemany(
        "INSERT OR REPLACE INTO content_helm_versions VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
    conn.executemany(
        "INSERT OR REPLACE INTO content_helm_charts VALUES (?, ?, ?)",
        [(uid, n, hashes.get(n)) for n in parsed],
    )
    return added, removed, mode, len(present)


def _dedupe(entries: list[Entry]) -> list[Entry]:
    seen: set[str] = set()
    out = []
    for e in entries:
        if e.version not in seen:
            seen.add(e.version)
            out.append(e)
    return out


def _unchanged(
    conn: sqlite3.Connection,
    uid: str,
    url: str,
    prev: Mapping[str, Any],
    fetched: Fetched,
    why: str,
) -> SyncResult:
    counts = catalog.stored_counts(prev)
    message = f"{counts.get('charts', 0)} charts, {counts.get('versions', 0)} versions; {why}"
    with catalog.transaction(conn):
        catalog.record(
            conn,
            uid,
            KIND,
            "Completed",
            message,
            prev=prev,
            source=url,
            etag=fetched.etag or prev["etag"],
            last_modified=fetched.last_modified or prev["last_modified"],
        )
    return SyncResult("Completed", message, [], [], counts, True)


def _failed(
    conn: sqlite3.Connection,
    uid: str,
    url: str,
    message: str,
    secrets: tuple[str, ...],
    prev: Mapping[str, Any] | None,
) -> SyncResult:
    return catalog.failed(conn, uid, KIND, redact(message, secrets), prev, url)


# --------------------------------------------------------------------------- preflight


def probe(
    spec: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    base_dir: Path,
    access: Access | None = None,
) -> dict[str, list[Entry]]:
    """Fetch and parse the index (no catalog); raises ProbeError."""
    url = index_url(spec)
    access = access or build_access(spec, secrets, base_dir, https=url.startswith("https://"))
    with make_client(access, pool=1) as client:
        fetched = fetch_index(client, url)
    return parse_index(fetched.body)
