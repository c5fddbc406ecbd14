"""A content-addressed cache of per-file validation results, kept outside the repository.

Only files that loaded and validated with no problem at all are cached, keyed by a digest
of their bytes, their display name, and the code and schema that checked them. A hit
skips the YAML parse and the per-document checks; cross-file rules (duplicate names,
profiles, Settings) always run. Positions beyond a few hints are re-derived by parsing the
file again on demand, which only happens when a cross-file rule reports a problem.

A cache never comes from the repository (issue 9.7: a pull request that force-adds a cache
mapping the real file's bytes to another spec would have a fresh clone plan an attacker's
endpoint while reviewers read the trusted one):
- it lives in the user's cache directory (``$XDG_CACHE_HOME/reconciler``, else
  ``~/.cache/reconciler``), or in ``RECONCILER_CACHE_DIR``;
- the file is authenticated with HMAC-SHA256 under a per-machine key (``key``, 32 random
  bytes created 0600 in the cache directory; a key that is not a private regular file of
  ours is replaced), so bytes written by anyone without the key are never trusted;
- when the cache directory holds anything tracked by git, the cache is not used at all, and
  the run says so in a warning.
A damaged file or a malformed entry is a miss (recomputed and rewritten), never an error.

A file's values are stored on its second sight, not its first: a run records the content
keys it checked clean, and the next run that meets one of them again stores that file's
values. Most runs are a pull request's or a nightly job's fresh checkout with an empty cache
directory, which nothing reads again: they write a list of keys instead of every value (a
cold plan of 5,000 definitions saves about 4% of its time). A cache that is kept (a work
tree, a CI cache) is warm from its third run on.

The file is ``marshal`` data (never pickle: marshal builds only plain values, and runs no
code): three times faster to write than JSON, which a cold plan of thousands of files
pays on every fresh checkout. marshal is not meant for data from anyone else, and none is
read: the MAC is checked first, and a body that does not decode to the expected shape is a
miss. It is tied to this Python (``sys.implementation.cache_tag`` is part of the salt).
``RECONCILER_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import hmac
import marshal
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.loader import HINTS

FORMAT = 5  # 5: stored on second sight, stat keys as tuples (4: tuples, flat hints; 3: marshal lists; 2: JSON)
KEY_FILE = "key"
CACHE_FILE = "validate.cache"
_KEY_BYTES = 32
_MAX_ENTRIES = 50_000
_RACY_NS = 2_000_000_000
_MARSHAL_VERSION = 2  # see save

FlatHints = tuple[int, ...]  # (line, col) of each of ``HINTS``, in order, one flat tuple
Entry = list[tuple[int, Any, FlatHints]]  # (document index, value, position hints) per document
StatKey = tuple[str, int, int, int, int]  # (display name, size, mtime_ns, inode, ctime_ns)
_FLAT = 2 * len(HINTS)


def _code_salt() -> str:
    here = Path(__file__).resolve().parent
    parts = [str(FORMAT), __version__, sys.implementation.cache_tag or "", f"{marshal.version}/{_MARSHAL_VERSION}"]
    digest = hashlib.blake2b(digest_size=16)
    for rel in ("loader.py", "validation.py", "cache.py", "fastschema.py", "profiles.py", "model.py", "text.py",
                "schema/registry.schema.json"):
        try:
            digest.update(rel.encode() + b"\0" + (here / rel).read_bytes())
        except OSError:
            digest.update(rel.encode() + b"\0missing")
    parts.append(digest.hexdigest())
    return "|".join(parts)


def default_dir() -> Path:
    """The user's cache directory (XDG base directory spec), never the work tree."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "reconciler"


def _entry(raw: Any) -> Entry | None:
    """A well-formed entry, or None (a malformed one is a miss, issue 9.19).

    Stored: a tuple per file of ``(index, value, flat hints)`` per document (plain tuples,
    so that a cold run, which writes thousands, builds few objects)."""
    if type(raw) is not tuple:
        return None
    out: Entry = []
    for item in raw:
        if type(item) is not tuple or len(item) != 3:
            return None
        index, value, flat = item
        if type(index) is not int or type(value) is not dict or type(flat) is not tuple or len(flat) != _FLAT:
            return None
        for n in flat:
            if type(n) is not int or n < 1:
                return None
        out.append((index, value, flat))
    return out


class ValidationCache:
    def __init__(
        self, directory: Path | None, *, tracked: Callable[[Path], bool] | None = None
    ) -> None:
        """``tracked(directory)``: whether git tracks anything there (the wiring asks git;
        this module does not import it)."""
        self.directory = directory
        self.path = directory / CACHE_FILE if directory is not None else None
        self.salt = _code_salt()
        self.entries: dict[str, Any] = {}
        self.stats: dict[StatKey, str] = {}  # stat key -> content key
        self.seen: frozenset[str] = frozenset()  # content keys an earlier run checked clean, not stored
        self.seen_now: set[str] = set()  # this run's clean files, not stored (the next run stores them)
        self.used: set[str] = set()
        self.used_stats: set[StatKey] = set()
        self.dirty = False
        self.warnings: list[tuple[str, str]] = []  # (where, message)
        self._now = time.time_ns()  # files changed less than _RACY_NS before the run are not aliased
        self._key: bytes | None = None
        if directory is None:
            return
        try:
            inside_git = tracked is not None and tracked(directory)
        except OSError:  # e.g. a name too long for the file system: no cache, never a failed run
            self.directory = self.path = None
            return
        if inside_git:
            self.warnings.append((
                str(directory),
                "the validation cache holds files tracked by git; it is ignored "
                "(a cache never comes from the repository: set RECONCILER_CACHE_DIR elsewhere)",
            ))
            self.directory = self.path = None
            return
        self._key = self._machine_key(directory)
        if self._key is None:
            self.directory = self.path = None
            return
        self._read()

    @classmethod
    def for_root(cls, root: Path, *, tracked: Callable[[Path], bool] | None = None) -> ValidationCache:
        """The cache for a run on ``root``. Entries are keyed by file name and bytes, so one
        directory serves every repository; ``root`` is not where it lives."""
        if os.environ.get("RECONCILER_NO_CACHE"):
            return cls(None)
        elsewhere = os.environ.get("RECONCILER_CACHE_DIR")
        try:
            directory = Path(elsewhere).absolute() if elsewhere else default_dir()
        except (RuntimeError, KeyError):  # no home directory to be found: no cache
            return cls(None)
        return cls(directory, tracked=tracked)

    # -- the per-machine key
    @staticmethod
    def _machine_key(directory: Path) -> bytes | None:
        """Our key, created on first use; None when none can be had (no cache then)."""
        path = directory / KEY_FILE
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                st = os.fstat(fd)
                private = stat.S_ISREG(st.st_mode) and not st.st_mode & 0o077 and st.st_uid == os.getuid()
                data = os.read(fd, _KEY_BYTES + 1) if private else b""
            except OSError:
                data = b""
            finally:
                os.close(fd)
            if len(data) == _KEY_BYTES:
                return data
        key = os.urandom(_KEY_BYTES)  # missing, or not ours: a new one (secrets.token_bytes)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".key-", dir=directory)  # created 0600
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            return None
        return key

    def _mac(self, body: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def _read(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except OSError:
            return
        mac, _, body = raw.partition(b"\n")
        if not hmac.compare_digest(mac, self._mac(body).encode()):
            return  # not written with our key: ignored, and replaced on save
        try:
            data = marshal.loads(body)
        except (ValueError, EOFError, TypeError):
            return
        if not (isinstance(data, dict) and data.get("salt") == self.salt):
            return
        files, stats, seen = data.get("files"), data.get("stats"), data.get("seen")
        if isinstance(files, dict):
            self.entries = files
        if isinstance(stats, dict):
            self.stats = {k: v for k, v in stats.items() if isinstance(v, str)}
        if isinstance(seen, frozenset):
            self.seen = seen

    @property
    def empty(self) -> bool:
        """Nothing to compare a file with (no cache, or a fresh one): a file's stat is not asked."""
        return self.path is None or not (self.entries or self.stats or self.seen)

    # -- lookups
    def key(self, name: str, data: bytes) -> str:
        digest = hashlib.blake2b(name.encode() + b"\0", digest_size=20)
        digest.update(data)  # the bytes are not copied into one string with the name first
        return digest.hexdigest()

    def stat_key(self, name: str, size: int, stamp: tuple[int, int, int] | None) -> StatKey:
        mtime, inode, ctime = stamp or (0, 0, 0)
        return (name, size, mtime, inode, ctime)

    def get_by_stat(self, stat_key: StatKey) -> Entry | None:
        key = self.stats.get(stat_key)
        if key is None:
            return None
        entry = self.get(key)
        if entry is not None:
            self.used_stats.add(stat_key)
        return entry

    def alias(self, stat_key: StatKey | None, key: str, stamp: tuple[int, int, int] | None) -> None:
        """Remember a file by its stat too, unless it changed too recently to trust its
        mtime (a write in the same clock tick could leave it unchanged: git's racy-clean)."""
        if stat_key is None or stamp is None or self.path is None or key not in self.entries:
            return
        if self._now - max(stamp[0], stamp[2]) < _RACY_NS:
            return
        if self.stats.get(stat_key) != key:
            self.stats[stat_key] = key
            self.dirty = True
        self.used_stats.add(stat_key)

    def get(self, key: str) -> Entry | None:
        entry = _entry(self.entries.get(key))
        if entry is None:
            return None
        self.used.add(key)
        return entry

    def put(self, key: str, docs: Callable[[], Sequence[tuple[int, Any, FlatHints]]]) -> None:
        """A file checked clean: ``docs()`` gives (index, value, flat hints) of each of its
        documents. Stored when an earlier run saw these bytes too (second sight); else only
        its key is kept, and the next run that meets it stores it."""
        if self.path is None:
            return
        if key not in self.seen and key not in self.entries:  # (an entry found damaged: stored again)
            self.seen_now.add(key)
            self.dirty = True
            return
        self.entries[key] = tuple(docs())  # values are the loader's: str keys and plain scalars
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
        seen = frozenset(self.seen_now)
        if len(keep) + len(seen) > _MAX_ENTRIES:
            return
        try:
            # version 2: without the back-references of 3 and 4, which marshal finds with a table
            # of every object shared elsewhere; here that is every value (the run still holds
            # its documents), so the table costs more than the file it saves (27% larger)
            body = marshal.dumps({"salt": self.salt, "files": keep, "stats": stats, "seen": seen}, _MARSHAL_VERSION)
        except ValueError:
            return  # a value marshal cannot write: no cache rather than a wrong one
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".validate-", dir=self.path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._mac(body).encode() + b"\n")
                fh.write(body)  # not joined first: a copy of the whole file
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written is only slower
