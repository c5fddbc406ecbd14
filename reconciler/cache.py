"""A content-addressed cache of per-file validation results (``.reconciler/cache/``).

Only files that loaded and validated with no problem at all are cached, keyed by a digest
of their bytes, their display name, and the code and schema that checked them. A hit
skips the YAML parse and the per-document checks; cross-file rules (duplicate names,
profiles, Settings) always run. Positions beyond a few hints are re-derived by parsing the
file again on demand, which only happens when a cross-file rule reports a problem.

The cache is plain JSON (never pickle: a pull request could plant the file) and is only
trusted for values JSON round-trips exactly. ``RECONCILER_NO_CACHE=1`` turns it off;
``RECONCILER_CACHE_DIR`` puts it elsewhere (entries are keyed so that repositories can share it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reconciler import __version__

FORMAT = 1
HINTS: tuple[tuple[str, ...], ...] = ((), ("kind",), ("metadata", "name"))
_MAX_ENTRIES = 50_000
_RACY_NS = 2_000_000_000


def _code_salt() -> str:
    here = Path(__file__).resolve().parent
    parts = [str(FORMAT), __version__]
    digest = hashlib.blake2b(digest_size=16)
    for rel in ("loader.py", "validation.py", "cache.py", "profiles.py", "model.py", "text.py",
                "schema/registry.schema.json"):
        try:
            digest.update(rel.encode() + b"\0" + (here / rel).read_bytes())
        except OSError:
            digest.update(rel.encode() + b"\0missing")
    parts.append(digest.hexdigest())
    return "|".join(parts)


def _plain(value: Any) -> bool:
    """True when JSON gives back exactly this value (str keys, JSON scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, int, float))


class ValidationCache:
    def __init__(self, directory: Path | None) -> None:
        self.path = directory / "validate.json" if directory is not None else None
        self.salt = _code_salt()
        self.entries: dict[str, Any] = {}
        self.stats: dict[str, str] = {}  # stat key -> content key
        self.used: set[str] = set()
        self.used_stats: set[str] = set()
        self.dirty = False
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_bytes())
            if isinstance(data, dict) and data.get("salt") == self.salt and isinstance(data.get("files"), dict):
                self.entries = data["files"]
                stats = data.get("stats")
                self.stats = stats if isinstance(stats, dict) else {}
        except (OSError, ValueError):
            self.entries = {}

    @classmethod
    def for_root(cls, root: Path) -> ValidationCache:
        if os.environ.get("RECONCILER_NO_CACHE"):
            return cls(None)
        elsewhere = os.environ.get("RECONCILER_CACHE_DIR")
        return cls(Path(elsewhere) if elsewhere else root / ".reconciler" / "cache")

    def key(self, name: str, data: bytes) -> str:
        return hashlib.blake2b(name.encode() + b"\0" + data, digest_size=20).hexdigest()

    def stat_key(self, name: str, size: int, stamp: tuple[int, int, int] | None) -> str:
        return f"{name}\0{size}\0{stamp}"

    def get_by_stat(self, stat_key: str) -> list[Any] | None:
        key = self.stats.get(stat_key)
        if not isinstance(key, str):
            return None
        entry = self.get(key)
        if entry is not None:
            self.used_stats.add(stat_key)
        return entry

    def alias(self, stat_key: str | None, key: str, stamp: tuple[int, int, int] | None) -> None:
        """Remember a file by its stat too, unless it changed too recently to trust its
        mtime (a write in the same clock tick could leave it unchanged: git's racy-clean)."""
        if stat_key is None or stamp is None or self.path is None or key not in self.entries:
            return
        if time.time_ns() - max(stamp[0], stamp[2]) < _RACY_NS:
            return
        if self.stats.get(stat_key) != key:
            self.stats[stat_key] = key
            self.dirty = True
        self.used_stats.add(stat_key)

    def get(self, key: str) -> list[Any] | None:
        entry = self.entries.get(key)
        if isinstance(entry, list):
            self.used.add(key)
            return entry
        return None

    def put(self, key: str, docs: list[tuple[int, Any, dict[tuple[str, ...], tuple[int, int]]]]) -> None:
        if self.path is None or not all(_plain(v) for _, v, _ in docs):
            return
        self.entries[key] = [
            [index, json.loads(json.dumps(value)), [[list(p), list(pos)] for p, pos in hints.items()]]
            for index, value, hints in docs
        ]
        self.used.add(key)
        self.dirty = True

    def save(self) -> None:
        """Keep the entries used in this run (so the cache tracks the repository), atomically."""
        if self.path is None:
            return
        if not self.dirty and len(self.used) == len(self.entries) and len(self.used_stats) == len(self.stats):
            return
        keep = {k: self.entries[k] for k in self.used if k in self.entries}
        stats = {k: self.stats[k] for k in self.used_stats if self.stats.get(k) in keep}
        if len(keep) > _MAX_ENTRIES:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ignore = self.path.parent / ".gitignore"
            if not ignore.exists():  # like .pytest_cache: never shows up in `git status`
                ignore.write_text("# created by reconcile\n*\n", encoding="utf-8")
            fd, tmp = tempfile.mkstemp(prefix=".validate-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"salt": self.salt, "files": keep, "stats": stats}, fh, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written is only slower


def hints_of(position: Callable[[Sequence[str]], tuple[int, int]]) -> dict[tuple[str, ...], tuple[int, int]]:
    return {h: position(h) for h in HINTS}
