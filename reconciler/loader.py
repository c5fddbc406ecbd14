"""Read ``registries.d/`` (work tree or a git commit) into plain values that keep positions.

YAML is composed with libyaml (``CSafeLoader``) and the Python values are built here from the
nodes, so that every value and every mapping key keeps its 1-based line:col, duplicate keys are
seen, and alias expansion is bounded (a billion-laughs file is rejected after a few thousand
nodes, not after it has eaten the memory). Nothing here raises for bad input: problems come
back as ``RawProblem`` values so that one run reports every file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from .text import CONTROL, describe, escape, lazy_pattern

try:  # libyaml: about ten times faster than the pure-Python composer
    from yaml import CSafeLoader as _Loader
    from yaml._yaml import CParser as _CParser

    _LIBYAML = True
except ImportError:  # pragma: no cover - pyyaml built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

    _LIBYAML = False

DEFINITIONS_DIR = "registries.d"
SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1 << 20  # 1 MiB: a registry file is a few hundred bytes
MAX_ALIAS_NODES = 1000  # nodes a document may add through aliases
MAX_DEPTH = 64
# libyaml's composer recurses in C once per level (about 25,000 levels overflow the stack: a
# segmentation fault); deeper than this is refused from the events before anything is composed
MAX_COMPOSE_DEPTH = 1000

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_constructor = yaml.constructor.SafeConstructor()


@dataclass(frozen=True)
class RawProblem:
    """A problem found while reading; ``validation`` turns it into a ``Problem``."""

    file: str
    line: int
    col: int
    message: str
    rule: str
    severity: str = "error"


class Document:
    """One YAML document as plain Python values, with the position of every node on demand.

    Recording a position per node costs about as much as building the values, and positions
    are needed only where a problem is reported. So a document keeps a few hints (``HINTS``)
    and a way to parse its file again (``Reparse``, shared by the documents of one file, so a
    file is parsed again at most once), used only if another position is asked for.
    """

    def __init__(
        self,
        file: str,
        index: int,  # 0-based position of the document in its file
        value: Any,
        positions: dict[Path_, tuple[int, int]] | None = None,  # value nodes
        key_positions: dict[Path_, tuple[int, int]] | None = None,  # mapping keys
        load_errors: int = 0,  # problems found while building it (duplicate keys, odd tags)
    ) -> None:
        self.file, self.index, self.value, self.load_errors = file, index, value, load_errors
        self._positions: dict[Path_, tuple[int, int]] | None = positions if positions is not None else {}
        self._key_positions: dict[Path_, tuple[int, int]] | None = key_positions if key_positions is not None else {}
        self._source: Reparse | None = None
        self._hints: tuple[int, ...] = ()  # flat: (line, col) of each of HINTS, or () when positions are all known
        self.strings: list[str] | None = None

    @classmethod
    def from_fast(
        cls, file: str, index: int, value: Any, hints: tuple[int, ...], source: Reparse, strings: list[str],
    ) -> Document:
        """A document built by the fast path (no alias, merge or duplicate: see ``_fast``).

        ``strings``: every mapping key and string value in it, so that a checker can test them
        all at once (one scan of their join) instead of walking the values.
        Its nodes are not kept (they cost more memory, and collector time, than the values):
        positions beyond ``hints`` come from parsing the file again, if ever asked for."""
        doc = cls.from_source(file, index, value, hints, source)
        doc.strings = strings
        return doc

    @classmethod
    def from_source(
        cls, file: str, index: int, value: Any, hints: tuple[int, ...], source: Reparse
    ) -> Document:
        """A document whose value is known (the fast path, the validation cache); its file is
        parsed again only if a position other than ``hints`` is asked for. ``hints``: the
        positions of ``HINTS``, flat, (line, col) of each in order."""
        doc = cls.__new__(cls)
        doc.file, doc.index, doc.value, doc.load_errors = file, index, value, 0
        doc._positions = doc._key_positions = None
        doc._source, doc._hints, doc.strings = source, hints, None
        return doc

    def _locate(self) -> None:
        if self._positions is not None:
            return
        positions: dict[Path_, tuple[int, int]] = {}
        keys: dict[Path_, tuple[int, int]] = {}
        node = self._source.node(self.index) if self._source is not None else None
        if node is not None:
            builder = _Builder(self.file)
            try:
                builder.build(node, ())
                positions, keys = builder.positions, builder.key_positions
            except _Abort:
                pass  # the file changed since: the hints are all there is
        if not positions and self._hints:
            h = self._hints
            positions = {path: (h[i], h[i + 1]) for path, i in _HINT_AT.items()}
        self._positions, self._key_positions = positions, keys
        self._source = None

    @property
    def positions(self) -> dict[Path_, tuple[int, int]]:
        self._locate()
        assert self._positions is not None
        return self._positions

    @property
    def key_positions(self) -> dict[Path_, tuple[int, int]]:
        self._locate()
        assert self._key_positions is not None
        return self._key_positions

    @property
    def start(self) -> tuple[int, int]:
        return self.position(())

    def flat_hints(self) -> tuple[int, ...]:
        """The positions of ``HINTS`` in one flat tuple, (line, col) of each in order (what
        the validation cache keeps of a document's positions)."""
        if self._positions is None and self._hints:
            return self._hints
        return tuple(n for path in HINTS for n in self.position(path))

    def position(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Position of the node at ``path``, or of its nearest existing ancestor."""
        p = tuple(path)
        if self._positions is None and not key and self._hints:
            i = _HINT_AT.get(p)
            if i is not None:
                h = self._hints
                return (h[i], h[i + 1])
        positions, key_positions = self.positions, self.key_positions
        if key and p in key_positions:
            return key_positions[p]
        while p:
            if p in positions:
                return positions[p]
            p = p[:-1]
        return positions.get((), (1, 1))


def _hints(root: yaml.Node) -> tuple[int, ...]:
    """The positions of ``HINTS`` (each path's node, or its nearest existing ancestor's), in
    one pass over the top-level keys."""
    here = _mark(root)
    kind = meta = name = here
    if type(root) is yaml.MappingNode:
        for k, v in root.value:
            if k.value == "kind" and kind is here:
                kind = _mark(v)
            elif k.value == "metadata" and meta is here:
                meta = name = _mark(v)
                if type(v) is yaml.MappingNode:
                    for k2, v2 in v.value:
                        if k2.value == "name":
                            name = _mark(v2)
                            break
    return (*here, *kind, *name)


class Reparse:
    """A file's text, composed again on the first position asked of any of its documents, and
    kept composed for the others (a file with many bad documents is parsed twice, not once
    per document)."""

    def __init__(self, text: str | Callable[[], str]) -> None:
        """``text``: the file's text, or how to read it again (a cache hit has not read it)."""
        self._text: str | Callable[[], str] | None = text
        self._nodes: list[yaml.Node | None] = []

    def node(self, index: int) -> yaml.Node | None:
        if self._text is not None:
            text, self._text = self._text, None
            if not isinstance(text, str):
                text = text()
            try:
                self._nodes = list(compose_all(text))
            except (yaml.YAMLError, RecursionError):
                self._nodes = []  # the file changed since it was read: no positions but the hints
        return self._nodes[index] if 0 <= index < len(self._nodes) else None


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


@dataclass(slots=True)  # slots: one per file of thousands, each kept to the end of a run
class SourceFile:
    """A file to read: its display name (relative to the root) and how to get its bytes."""

    name: str
    data: bytes | None = None  # None: read from ``path``
    path: str | Path | None = None
    size: int = 0
    stamp: tuple[int, int, int] | None = None  # (mtime_ns, inode, ctime_ns) of a work-tree file
    # a work-tree file not stat'ed yet (``size`` -1): ``stat_source`` stats ``path``. A cold run
    # reads every file anyway, and the fstat of that read says its size: one system call, not two
    pending_stat: bool = False


@dataclass(slots=True)
class LoadedFile:
    """One file's documents and the problems met reading it."""

    name: str
    documents: list[Document] = field(default_factory=list)
    problems: list[RawProblem] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


# --------------------------------------------------------------------------- discovery


BAD_NAME = (
    "a file name with a control character (newline, ESC, CR, ...) is not allowed; rename it"
)
CASE_SUFFIX = (
    "only files ending in .yaml or .yml (lower case, nothing after) are read, and this one would be skipped; rename it"
)


JSON_SUFFIX = (
    "a .json file is not read: definitions are read only from files ending in .yaml or .yml, "
    "and its registries would not be applied; JSON is YAML, so rename it to .yaml (or move it out of registries.d/)"
)


def skipped_definition(name: str) -> str | None:
    """Why a file name that looks like a definition's would not be read (``a.YAML``,
    ``a.yaml ``, ``a.yml.``: ``CASE_SUFFIX``; ``a.json``: ``JSON_SUFFIX``), or None: skipped
    without a word, its registries would be planned as deleted (or never created), so it is
    reported, as an error."""
    if name.endswith(SUFFIXES):
        return None
    plain = name.rstrip(" .").lower()
    if plain.endswith(SUFFIXES):
        return CASE_SUFFIX
    return JSON_SUFFIX if plain.endswith(".json") else None


def bad_name(name: str, is_dir: bool) -> bool:
    """A directory, or a file that would be a definition, whose name holds a control
    character: refused, since the name is printed in CI logs (``::error`` injection, a
    newline breaking out of a fence). Other files are ignored as usual."""
    if not CONTROL.search(name):
        return False
    return is_dir or CONTROL.sub("", name).endswith(SUFFIXES)


def not_regular_file(p: str | Path) -> str:
    """'not a regular file (a FIFO)': what a definitions file that is not one is told."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return "not a regular file"
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return f"not a regular file ({what})"
    return "not a regular file"


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def display_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return Path(os.path.relpath(path, root)).as_posix() if path.is_absolute() else str(path)
        except ValueError:  # pragma: no cover - other drive on Windows
            return str(path)


def _inside(target: Path, root: Path) -> bool:
    try:
        target.relative_to(root)
        return True
    except ValueError:
        return False


def discover(
    root: Path, paths: Sequence[Path] | None = None
) -> tuple[list[SourceFile], list[RawProblem]]:
    """Files to validate in the work tree: ``root/registries.d`` or the given files and dirs.

    Directories are walked recursively for ``*.yaml``/``*.yml`` (hidden entries skipped);
    explicitly named files are taken whatever their suffix. Symlinks are followed only when
    they stay inside ``root``.
    """
    root = Path(root)
    real_root = root.resolve()
    files: list[SourceFile] = []
    problems: list[RawProblem] = []
    seen: set[str] = set()  # real paths, as text (a Path per file costs more than its stat)

    def points_to(p: Path) -> str:
        try:
            return os.readlink(p)
        except OSError as exc:  # e.g. /proc/1/cwd of another user: Permission denied
            return f"unreadable: {exc.strerror}"

    def symlink_ok(p: Path) -> bool:
        try:
            target = p.resolve()
        except (RuntimeError, OSError) as exc:  # a loop: RuntimeError before Python 3.13, then OSError
            if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
                what = f"cannot resolve symlink ({exc.strerror})"
            else:
                what = "symlink loop"
            problems.append(RawProblem(display_name(p, root), 1, 1, f"{what} (points to {points_to(p)})", "symlink"))
            return False
        if not _inside(target, real_root):
            problems.append(
                RawProblem(
                    display_name(p, root),
                    1,
                    1,
                    f"symlink leaves the repository (points to {points_to(p)})",
                    "symlink",
                )
            )
            return False
        from reconciler.secrets import in_git_dir  # only for a link: most trees have none

        # inside the repository, but in its .git/ (or a bare repository's): its config is where
        # actions/checkout keeps the job's token, never read, as a secret or CA file is not
        # (adversarial pass 8, item 4); the folder itself counts for a link to one
        if in_git_dir(str(target / "x")):
            problems.append(RawProblem(display_name(p, root), 1, 1,
                                       f"symlink points into a git directory (points to {points_to(p)}), "
                                       "which is never read", "symlink"))
            return False
        return True

    def add(p: str | Path, real: str, shown: str, stat: Callable[[], os.stat_result]) -> None:
        if real in seen:
            return
        seen.add(real)
        try:
            st = stat()
        except OSError as exc:
            problems.append(RawProblem(shown, 1, 1, f"cannot read: {exc.strerror}", "io"))
            return
        files.append(SourceFile(shown, path=p, size=st.st_size, stamp=_stamp(st)))

    def add_later(p: str, real: str, shown: str) -> None:
        if real in seen:
            return
        seen.add(real)
        files.append(SourceFile(shown, path=p, size=-1, pending_stat=True))

    def not_regular(p: Path) -> None:
        problems.append(RawProblem(display_name(p, root), 1, 1, not_regular_file(p), "io"))

    def add_file(p: Path) -> None:
        if p.is_symlink() and not symlink_ok(p):
            return
        add(p, str(p.resolve()), display_name(p, root), p.stat)

    def walk(d: Path, visited: frozenset[str], real: str | None = None) -> None:
        real = str(d.resolve()) if real is None else real  # given: a plain directory in a resolved one
        if real in visited:
            return
        visited = visited | {real}
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            problems.append(
                RawProblem(display_name(d, root), 1, 1, f"cannot read: {exc.strerror}", "io")
            )
            return
        shown_dir = display_name(d / "x", root)[:-1]
        if not entries:
            empty.append(d)
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if CONTROL.search(name) and bad_name(name, entry.is_dir(follow_symlinks=False)):
                problems.append(RawProblem(escape(shown_dir + name), 1, 1, BAD_NAME, "file-name"))
                continue
            definition = name.endswith(SUFFIXES)  # Path.suffix in SUFFIXES, for a name not hidden
            if not definition and (skipped := skipped_definition(name)) and not entry.is_dir():
                problems.append(RawProblem(escape(shown_dir + name), 1, 1, skipped, "file-name"))
                continue
            if entry.is_symlink():
                p = Path(entry.path)
                if not symlink_ok(p):
                    continue
                if p.is_dir():
                    walk(p, visited)
                elif p.is_file() and definition:
                    add_file(p)
                elif definition and not p.exists():
                    problems.append(
                        RawProblem(
                            display_name(p, root),
                            1,
                            1,
                            f"dangling symlink (points to {points_to(p)})",
                            "symlink",
                        )
                    )
                elif definition:
                    not_regular(p)
            elif entry.is_dir():
                walk(Path(entry.path), visited, os.path.join(real, name))
            elif definition and entry.is_file():
                # fast path: a plain file in a directory already resolved (no realpath per file)
                add_later(entry.path, os.path.join(real, name), shown_dir + name)
            elif definition:
                not_regular(Path(entry.path))  # a FIFO or device: never opened, never skipped silently

    empty: list[Path] = []  # directories with nothing in them: perhaps a submodule not checked out
    targets = list(paths) if paths else [root / DEFINITIONS_DIR]
    for target in targets:
        target = Path(target)
        if CONTROL.search(str(target)):
            problems.append(RawProblem(escape(str(target)), 1, 1, BAD_NAME, "file-name"))
            continue
        if not target.is_absolute() and not target.exists() and (root / target).exists():
            target = root / target
        if target.is_symlink() and not symlink_ok(target):
            continue
        if target.is_dir():
            walk(target, frozenset())
        elif target.is_file():
            add_file(target)
        elif paths and os.path.lexists(target):
            not_regular(target)
        elif paths:
            problems.append(
                RawProblem(display_name(target, root), 1, 1, "no such file or directory", "io")
            )
        # no registries.d/ at all: an empty repository, nothing to check
    # walk calls itself through its closure, a reference cycle that would keep every
    # SourceFile alive until the cyclic collector runs (it is paused while a plan loads)
    del walk
    for d in _submodules_not_checked_out(root, empty):
        problems.append(RawProblem(escape(display_name(d, root)), 1, 1, (
            "a git submodule that is not checked out (an empty directory): its definitions cannot be read; check "
            "out the submodules (actions/checkout: submodules: true, or git submodule update --init)"), "io"))
    return files, problems


def _submodules_not_checked_out(root: Path, empty: Sequence[Path]) -> list[Path]:
    """Which of the ``empty`` directories git records as submodules (gitlinks): a checkout
    without its submodules leaves each one empty, and its definitions read as none would plan
    the deletion of what they declare. Git holds no empty directory of its own, so this asks
    it only when there is one (rarely: in a fresh checkout, only such a submodule)."""
    if not empty or not _in_git_work_tree(root):
        return []
    res = _run_git(root, "ls-files", "--stage", "-z", "--", *(os.path.relpath(d, root) for d in empty))
    if res is None or res.returncode != 0:
        return []
    top = Path(os.path.abspath(root))
    links = {os.path.normpath(top / line.split("\t", 1)[1]) for line in res.stdout.split("\0")
             if line.startswith("160000 ") and "\t" in line}
    return [d for d in empty if os.path.normpath(os.path.abspath(d)) in links]


def resolve_commit(repo: Any, ref: str) -> Any:
    """``repo.commit(ref)``; the revision syntax gitpython does not implement (reflog dates such
    as ``HEAD@{10 years ago}``) is resolved by ``git rev-parse`` instead of raising
    NotImplementedError. Raises ``ValueError`` for a ref git cannot resolve either."""
    import git

    try:
        return repo.commit(ref)
    except (NotImplementedError, IndexError):  # IndexError: HEAD@{99} past the reflog's end
        try:
            sha = repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        except git.GitCommandError as exc:
            raise ValueError(ref) from exc
        return repo.commit(sha.strip())


def discover_git(
    root: Path, ref: str, paths: Sequence[Path] | None = None
) -> tuple[list[SourceFile], list[RawProblem], str]:
    """Files of ``registries.d/`` in commit ``ref``, read from blobs (no checkout).

    Returns the files, problems and the resolved commit SHA. Raises ``InputError`` when
    ``root`` is not in a git repository or ``ref`` does not name a commit.
    """
    import git  # gitpython: only the git source needs it

    from .errors import InputError

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise InputError(f"--ref {ref}: {root} is not in a git repository") from exc
    try:
        commit = resolve_commit(repo, ref)
        commit.tree  # noqa: B018 - a full SHA is taken unread: read it now (a missing one raises ValueError)
    except (git.BadName, git.BadObject, ValueError, BrokenPipeError, git.GitCommandError) as exc:
        complaint = git_complaint(root)
        if complaint:  # a repository git refuses (a bad config line): not a missing commit
            raise InputError(f"--ref {ref}: git failed: {complaint}") from exc
        hint = (" (the all-zero SHA is what GitHub gives as the commit before a branch's first push)"
                if ref.strip("0") == "" and len(ref) >= 7 else "")
        raise InputError(f"--ref {ref}: no such commit{hint}") from exc
    finally:
        repo.close()
    work = Path(repo.working_tree_dir or root).resolve()
    prefix = PurePosixPath(Path(os.path.relpath(Path(root).resolve(), work)).as_posix())
    if str(prefix) == ".":
        prefix = PurePosixPath()

    def rel(p: Path) -> PurePosixPath:
        p = Path(p)
        full = p.resolve() if p.is_absolute() else (Path(root).resolve() / p)
        return PurePosixPath(Path(os.path.relpath(full, work)).as_posix())

    wanted = [rel(p) for p in paths] if paths else [prefix / DEFINITIONS_DIR]
    files: list[SourceFile] = []
    problems: list[RawProblem] = []
    tree = commit.tree

    def shown(repo_path: PurePosixPath) -> str:
        try:
            return repo_path.relative_to(prefix).as_posix()
        except ValueError:
            return repo_path.as_posix()

    def lookup(repo_path: PurePosixPath) -> Any:
        try:
            return tree / repo_path.as_posix() if repo_path.parts else tree
        except KeyError:
            return None

    def add_blob(repo_path: PurePosixPath, obj: Any, explicit: bool, depth: int = 0) -> None:
        if obj.type == "submodule":  # named on the command line, or a symlink's target
            submodule(repo_path, obj)
            return
        name = shown(repo_path)
        if obj.mode == 0o120000:  # symlink: the blob holds the target
            target = obj.data_stream.read().decode("utf-8", "replace")
            resolved = _normalise(repo_path.parent / target)
            if resolved is None or depth > 8:
                problems.append(
                    RawProblem(
                        name, 1, 1, f"symlink leaves the repository (points to {target})", "symlink"
                    )
                )
                return
            obj = lookup(resolved)
            if obj is None:
                problems.append(
                    RawProblem(name, 1, 1, f"dangling symlink (points to {target})", "symlink")
                )
                return
            if obj.type == "tree":
                walk(obj, repo_path, depth + 1)
                return
            if obj.type == "submodule":
                submodule(repo_path, obj)  # said at the link, where the reader looks
                return
            add_blob(resolved, obj, explicit, depth + 1)
            return
        if obj.type != "blob" or not (explicit or repo_path.suffix in SUFFIXES):
            return
        files.append(
            SourceFile(
                name,
                data=None if obj.size > MAX_FILE_BYTES else obj.data_stream.read(),
                size=obj.size,
            )
        )

    def submodule(repo_path: PurePosixPath, obj: Any) -> None:
        # a gitlink: its files are another repository's, not in this commit (the work tree has
        # them checked out); an error, so that a plan deletes nothing on a partial tree's word
        problems.append(RawProblem(escape(shown(repo_path)), 1, 1, (
            f"a git submodule (commit {obj.hexsha[:12]}): its files are not in commit {commit.hexsha[:12]}, so "
            "they cannot be read with --ref; run in a work tree with the submodule checked out"), "io"))

    def walk(t: Any, base: PurePosixPath, depth: int = 0) -> None:
        # by the entry's own name: GitPython's Submodule.name reads .gitmodules (and fails
        # without it)
        for entry_name, obj in sorted(((PurePosixPath(o.path).name, o) for o in t), key=lambda e: e[0]):
            if entry_name.startswith("."):
                continue
            p = base / entry_name
            if bad_name(entry_name, obj.type == "tree"):
                problems.append(RawProblem(escape(shown(p)), 1, 1, BAD_NAME, "file-name"))
                continue
            if obj.type == "submodule":
                submodule(p, obj)
            elif obj.type != "tree" and (skipped := skipped_definition(entry_name)):
                problems.append(RawProblem(escape(shown(p)), 1, 1, skipped, "file-name"))
            elif obj.type == "tree":
                walk(obj, p, depth)
            else:
                add_blob(p, obj, False, depth)

    for repo_path in wanted:
        obj = lookup(repo_path)
        if obj is None:
            if paths:
                problems.append(
                    RawProblem(shown(repo_path), 1, 1, f"not in commit {commit.hexsha[:12]}", "io")
                )
            continue
        if obj.type == "tree":
            walk(obj, repo_path)
        else:
            add_blob(repo_path, obj, True)
    return files, problems, commit.hexsha


def _normalise(p: PurePosixPath) -> PurePosixPath | None:
    parts: list[str] = []
    if p.is_absolute():
        return None
    for part in p.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts)


def _run_git(directory: Path | str, *args: str) -> Any:
    """``git -C directory args``, its output captured (a ``CompletedProcess``), or None when git
    cannot be run at all; git itself, not gitpython, whose import costs more than the question."""
    import subprocess  # not imported by a run that asks git nothing

    try:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None


def git_complaint(directory: Path | str) -> str:
    """What git itself says is wrong in ``directory`` ("fatal: bad config line 7 in file
    .git/config"), or "" when it has no complaint: gitpython's object database talks to a git
    process that dies on such a repository, and says only "exit code(128)" or a broken pipe."""
    res = _run_git(directory, "rev-parse", "--git-dir")
    if res is None:
        return "git cannot be run"
    if res.returncode == 0:
        return ""
    lines = [line.strip() for line in res.stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else "")


def git_info(root: Path) -> tuple[str | None, bool]:
    """(HEAD SHA or None, dirty) for a work tree; (None, False) outside git.

    ``dirty`` is True when ``registries.d/`` has staged, unstaged or untracked changes.
    """
    if not _in_git_work_tree(Path(root)):
        return None, False
    # one `git status` answers both (porcelain v2 names the HEAD commit): no gitpython, whose
    # import alone costs about three times the status of 5,000 files
    res = _run_git(root, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--", DEFINITIONS_DIR)
    if res is not None and res.returncode == 0:
        head: str | None = None
        dirty = False
        for line in res.stdout.splitlines():
            if line.startswith("# branch.oid "):
                oid = line[len("# branch.oid "):].strip()
                head = oid if oid != "(initial)" else None
            elif line and not line.startswith("#"):
                dirty = True
        return head, dirty
    import git  # git refused (e.g. an unsafe directory): as gitpython sees it

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None, False
    try:
        try:
            sha: str | None = repo.head.commit.hexsha
        except ValueError:  # no commits yet
            sha = None
        work = Path(repo.working_tree_dir or root).resolve()
        rel = Path(os.path.relpath((Path(root) / DEFINITIONS_DIR).resolve(), work)).as_posix()
        try:
            out = repo.git.status("--porcelain", "--untracked-files=all", "--", rel)
        except git.GitCommandError:
            out = ""
        return sha, bool(out.strip())
    finally:
        repo.close()


def tracked_by_git(directory: Path) -> bool:
    """Whether git tracks any file under ``directory`` (False outside a work tree).

    The validation cache asks this: a cache directory holding tracked files came (at least
    in part) from a repository, and a cache never comes from the repository (issue 9.7).
    """
    directory = Path(directory)
    if not directory.is_dir() or not _in_git_work_tree(directory):
        return False
    res = _run_git(directory, "ls-files", "--", ".")
    if res is None:
        return True  # cannot tell: do not trust it
    if res.returncode == 0:
        return bool(res.stdout.strip())
    return "not a git repository" not in res.stderr  # any other failure: cannot tell, do not trust it


def _in_git_work_tree(root: Path) -> bool:
    p = root.resolve()
    for d in (p, *p.parents):
        if (d / ".git").exists():
            return True
    return False


# --------------------------------------------------------------------------- reading


def stat_source(src: SourceFile) -> RawProblem | None:
    """Fill in a discovered file's size and stamp (``pending_stat``): what the validation cache
    compares before reading a file. A problem if it cannot be stat'ed."""
    if src.pending_stat:
        src.pending_stat = False
        assert src.path is not None
        try:
            st = os.stat(src.path)  # a plain file when discovered (a link takes the other way)
        except OSError as exc:
            return RawProblem(src.name, 1, 1, f"cannot read: {exc.strerror}", "io")
        src.size, src.stamp = st.st_size, _stamp(st)
    return None


def _too_large(src: SourceFile, size: int) -> RawProblem:
    return RawProblem(src.name, 1, 1, f"file is too large ({size} bytes; the limit is {MAX_FILE_BYTES})", "file-size")


def read_source(src: SourceFile) -> tuple[bytes | None, RawProblem | None]:
    if src.size > MAX_FILE_BYTES:
        return None, _too_large(src, src.size)
    if src.data is not None:
        return src.data, None
    assert src.path is not None
    try:
        # O_NONBLOCK: a FIFO put in place after discovery must not hang the run
        fd = os.open(src.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None, RawProblem(src.name, 1, 1, not_regular_file(src.path), "io")
            size = src.size if src.size >= 0 else st.st_size  # not stat'ed at discovery: this says
            if size > MAX_FILE_BYTES:
                return None, _too_large(src, size)
            # sized by stat (a read of the whole bound allocates 1 MiB per file), but stat is
            # not trusted: whatever it said, at most the bound plus one byte is read
            want = min(size, MAX_FILE_BYTES) + 1 if size > 0 else 1 << 16
            data = os.read(fd, want)
            while data and len(data) <= MAX_FILE_BYTES:  # a short read is not the end: read on
                more = os.read(fd, MAX_FILE_BYTES + 1 - len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
    except OSError as exc:
        return None, RawProblem(src.name, 1, 1, f"cannot read: {exc.strerror}", "io")
    if len(data) > MAX_FILE_BYTES:
        return None, RawProblem(
            src.name, 1, 1, f"file is too large (over {MAX_FILE_BYTES} bytes)", "file-size"
        )
    return data, None


def decode(name: str, data: bytes) -> tuple[str | None, RawProblem | None]:
    """UTF-8 text (a BOM is allowed), or the position of the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        col = len(before[line_start:].decode("utf-8", "replace")) + 1
        return None, RawProblem(
            name, line, col, f"not UTF-8: invalid byte 0x{data[exc.start]:02x}", "encoding"
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, None


_KIND, _NAME = ("kind",), ("metadata", "name")
HINTS: tuple[tuple[str, ...], ...] = ((), _KIND, _NAME)  # placed without parsing again
_HINT_AT: dict[Path_, int] = {path: 2 * i for i, path in enumerate(HINTS)}  # offset of its (line, col), flat

_RESOLVERS = yaml.resolver.Resolver.yaml_implicit_resolvers  # first character -> [(tag, regexp)]
_PLAIN_TAGS: dict[str, str] = {}  # a plain scalar's text -> its tag (keys and values repeat)


def _plain_tag(value: str) -> str:
    """What ``yaml.resolver.Resolver.resolve`` gives a plain scalar (its implicit resolvers,
    in their order), memoised for short texts."""
    tag = _PLAIN_TAGS.get(value)
    if tag is not None:
        return tag
    tag = _STR
    for t, regexp in _RESOLVERS.get(value[0] if value else "", []) + _RESOLVERS.get(None, []):
        if regexp.match(value):
            tag = t
            break
    if len(value) <= 64:
        if len(_PLAIN_TAGS) > 50_000:
            _PLAIN_TAGS.clear()
        _PLAIN_TAGS[value] = tag
    return tag


if _LIBYAML:

    class _Composer(_CParser):
        """libyaml's parser and composer, resolving tags as ``CSafeLoader`` does (the same
        implicit resolvers; SafeLoader has no path resolvers) with less Python per node: the
        composer calls ``descend_resolver(parent, index)`` and ``ascend_resolver()`` around
        every node, which do nothing without path resolvers, so they are builtins here (a C
        call, no Python frame), and a plain scalar's tag is memoised by its text.
        ``test_loader.py`` checks the nodes equal ``CSafeLoader``'s."""

        descend_resolver = slice  # slice(parent, index): any two objects, nothing kept
        ascend_resolver = tuple  # tuple(): the empty tuple

        def resolve(self, kind: type, value: str | None, implicit: Any, _known: Any = _PLAIN_TAGS.get) -> str:
            if kind is _ScalarNode:
                if not implicit[0]:
                    return _STR
                return _known(value) or _plain_tag(value or "")
            return _SEQ if kind is _SequenceNode else _MAP

    def compose_all(text: str) -> Iterator[yaml.Node | None]:
        parser = _Composer(text)
        try:
            while parser.check_node():
                yield parser.get_node()
        finally:
            parser.dispose()

else:  # pragma: no cover - pyyaml built without libyaml

    def compose_all(text: str) -> Iterator[yaml.Node | None]:
        return yaml.compose_all(text, Loader=_Loader)


def load_file(src: SourceFile) -> LoadedFile:
    out = LoadedFile(src.name)
    data, problem = read_source(src)
    if problem is None and data is not None:
        text, problem = decode(src.name, data)
        if problem is None and text is not None:
            parse_text(src.name, text, out)
    if problem is not None:
        out.problems.append(problem)
    return out


def _too_deep(text: str) -> tuple[int, int] | None:
    """Where ``text`` nests collections beyond MAX_COMPOSE_DEPTH, read from libyaml's events
    (its parser keeps a stack, no recursion). Each level on a line takes a ``[``, ``{``, ``-``
    or ``?`` (an explicit key: ``? ? ? x`` nests mappings), and a level by indentation alone a
    line longer than the last (1 MiB holds ~1,400),
    so a file with fewer of those characters is not read twice. A syntax error is left to
    the composer, which meets it at the same place."""
    if text.count("[") + text.count("{") + text.count("-") + text.count("?") <= MAX_COMPOSE_DEPTH:
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                mark = event.start_mark
                if depth > MAX_COMPOSE_DEPTH and mark is not None:
                    return mark.line + 1, mark.column + 1
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass
    return None


def parse_text(name: str, text: str, out: LoadedFile) -> None:
    """Compose every document of ``text`` and build values; problems go to ``out``."""
    deep = _too_deep(text)
    if deep is not None:
        out.problems.append(RawProblem(name, *deep, f"nesting deeper than {MAX_DEPTH} levels", "yaml-depth"))
        return
    source = Reparse(text)
    try:
        for index, node in enumerate(compose_all(text)):
            if node is None:
                continue
            strings: list[str] = []
            try:
                fast = _fast(node, 0, set(), strings)
            except _Slow:
                pass  # something to report, or aliases/merges: the builder that records all
            else:
                if fast is not None:
                    hints = _hints(node)
                    out.documents.append(Document.from_fast(name, index, fast, hints, source, strings))
                continue
            builder = _Builder(name)
            try:
                value = builder.build(node, ())
            except _Abort:
                out.problems.extend(builder.problems)
                continue
            out.problems.extend(builder.problems)
            if value is None:  # an empty document (e.g. a trailing '---')
                continue
            doc = Document(
                name, index, value, builder.positions, builder.key_positions, len(builder.problems)
            )
            out.documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark:
                what += f" at line {exc.context_mark.line + 1}"
            what += ")"
        out.problems.append(
            RawProblem(name, line, col, f"YAML syntax error: {what}", "yaml-syntax")
        )
    except yaml.reader.ReaderError as exc:
        # libyaml's reader refuses NUL, ESC, ... with a two-line message and a character
        # offset; report it once, at the character's own line:col, in our words
        line, col, what = _reader_error_position(text, exc)
        out.problems.append(
            RawProblem(name, line, col, f"YAML error: {what} is not allowed in YAML", "yaml-syntax")
        )
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked reader errors
        out.problems.append(RawProblem(name, 1, 1, f"YAML error: {exc}", "yaml-syntax"))
    except RecursionError:
        out.problems.append(RawProblem(name, 1, 1, "YAML nesting is too deep", "yaml-depth"))


# what YAML's reader refuses (PyYAML's Reader.NON_PRINTABLE)
_NON_PRINTABLE = lazy_pattern(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _reader_error_position(text: str, exc: yaml.reader.ReaderError) -> tuple[int, int, str]:
    m = _NON_PRINTABLE.search(text)
    at = m.start() if m else max(0, min(int(exc.position), len(text)))
    ch = text[at] if at < len(text) else ""
    line = text.count("\n", 0, at) + 1
    col = at - (text.rfind("\n", 0, at) + 1) + 1
    what = f"the control character {describe(ch)}" if ch else "a control character"
    return line, col, what


class _Abort(Exception):
    pass


class _Slow(Exception):
    """The fast path cannot build this document the way ``_Builder`` would."""


def _construct(tag: str) -> Callable[[yaml.Node], Any]:
    f = _constructor.yaml_constructors[tag]
    return lambda n: f(_constructor, n)


def _bool(node: yaml.Node) -> bool:
    """SafeConstructor's bool, without its generic scalar checks (the node is a scalar)."""
    return _constructor.bool_values[node.value.lower()]


_SCALARS: dict[str, Callable[[yaml.Node], Any]] = {
    _INT: _construct(_INT), _FLOAT: _construct(_FLOAT), _BOOL: _bool, _NULL: lambda n: None,
}
_KEY_TAGS = frozenset({_STR, _TIMESTAMP, _INT, _FLOAT, _BOOL, _NULL})
_ScalarNode, _MappingNode, _SequenceNode = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode
_intern = sys.intern


def _fast(node: yaml.Node, depth: int, seen: set[int], strings: list[str]) -> Any:
    """Values only, for the common document: standard tags, no alias of a collection, no merge
    key, no duplicate key, not too deep. Anything else raises ``_Slow`` and the document is
    built again by ``_Builder``, which reports it; so both give the same values. Every key and
    string value goes to ``strings`` too."""
    if depth > MAX_DEPTH:
        raise _Slow
    cls = type(node)
    if cls is _ScalarNode:
        tag = node.tag
        if tag == _STR or tag == _TIMESTAMP:
            strings.append(node.value)
            return node.value
        construct = _SCALARS.get(tag)
        if construct is None:
            raise _Slow
        try:
            return construct(node)
        except (KeyError, ValueError):  # '!!bool maybe', '!!int x': the builder reports it
            raise _Slow from None
    nid = id(node)
    if nid in seen:
        raise _Slow
    seen.add(nid)
    inline = depth < MAX_DEPTH  # a string child is taken here, without a call (most nodes are)
    append = strings.append
    if cls is _MappingNode:
        if node.tag != _MAP:
            raise _Slow
        out: dict[str, Any] = {}
        for k, v in node.value:
            if type(k) is not _ScalarNode:
                raise _Slow
            tag = k.tag
            if tag not in _KEY_TAGS:
                raise _Slow
            name = _intern(k.value)  # keys repeat in every document: one string each, not one per use
            if name in out or (name == "<<" and tag != _STR):
                raise _Slow
            append(name)
            if inline and type(v) is _ScalarNode:
                tag = v.tag
                if tag == _STR or tag == _TIMESTAMP:
                    append(v.value)
                    out[name] = v.value
                    continue
            out[name] = _fast(v, depth + 1, seen, strings)
        return out
    if cls is _SequenceNode and node.tag == _SEQ:
        items = []
        for v in node.value:
            if inline and type(v) is _ScalarNode:
                tag = v.tag
                if tag == _STR or tag == _TIMESTAMP:
                    append(v.value)
                    items.append(v.value)
                    continue
            items.append(_fast(v, depth + 1, seen, strings))
        return items
    raise _Slow


class _Builder:
    """Builds Python values from composed nodes, recording positions and bounding aliases."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.key_positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[RawProblem] = []
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.alias_nodes = 0
        self.alias_use: tuple[int, int] | None = None  # outermost alias being expanded
        self.alias_anchor: tuple[int, int] = (0, 0)  # where its anchor is

    def problem(self, pos: tuple[int, int], message: str, rule: str) -> None:
        self.problems.append(RawProblem(self.name, pos[0], pos[1], message, rule))

    def build(self, node: yaml.Node, path: Path_, use: tuple[int, int] | None = None) -> Any:
        pos = (node.start_mark.line + 1, node.start_mark.column + 1)
        nid = id(node)
        outer = self.alias_use
        if nid in self.active:
            self.problem(use or pos, "recursive alias", "alias-bound")
            raise _Abort
        if nid in self.seen and not isinstance(node, yaml.ScalarNode):
            if self.alias_use is None:
                self.alias_use = use or pos
                self.alias_anchor = pos
        self.seen.add(nid)
        if self.alias_use is not None:
            self.alias_nodes += 1
            if self.alias_nodes > MAX_ALIAS_NODES:
                self.problem(
                    self.alias_use,
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                    "(anchors/aliases are bounded; "
                    f"expanding the anchor at line {self.alias_anchor[0]})",
                    "alias-bound",
                )
                raise _Abort
        if len(path) > MAX_DEPTH:
            self.problem(pos, f"nesting deeper than {MAX_DEPTH} levels", "yaml-depth")
            raise _Abort
        self.positions.setdefault(path, pos)
        try:
            if isinstance(node, yaml.ScalarNode):
                return self.scalar(node, pos)
            self.active.add(nid)
            try:
                if isinstance(node, yaml.SequenceNode):
                    if node.tag != _SEQ:
                        self.problem(pos, f"unsupported YAML tag {node.tag}", "yaml-tag")
                    # an alias item has no position of its own: point at its sequence
                    return [
                        self.build(
                            child, (*path, i), pos if id(child) in self.seen else self.pos_of(child)
                        )
                        for i, child in enumerate(node.value)
                    ]
                assert isinstance(node, yaml.MappingNode)
                if node.tag != _MAP:
                    self.problem(pos, f"unsupported YAML tag {node.tag}", "yaml-tag")
                return self.mapping(node, path)
            finally:
                self.active.discard(nid)
        finally:
            self.alias_use = outer

    @staticmethod
    def pos_of(node: yaml.Node) -> tuple[int, int]:
        return (node.start_mark.line + 1, node.start_mark.column + 1)

    def scalar(self, node: yaml.ScalarNode, pos: tuple[int, int]) -> Any:
        tag = node.tag
        if tag == _STR or tag == _TIMESTAMP:  # timestamps stay text: no field is a date
            return node.value
        if tag in (_INT, _FLOAT, _BOOL, _NULL):
            try:
                return _SCALARS[tag](node)
            except (KeyError, ValueError):  # an explicit tag the text does not fit: '!!bool maybe'
                what = tag.rsplit(":", 1)[-1]  # the text is not quoted back: it may be a secret
                self.problem(pos, f"the value is not a valid {what} (explicit tag !!{what})", "yaml-tag")
                return node.value
        self.problem(pos, f"unsupported YAML tag {tag}", "yaml-tag")
        return node.value

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        key_lines: dict[Any, int] = {}
        merges: list[tuple[yaml.Node, tuple[int, int]]] = []
        for key_node, value_node in node.value:
            kpos = self.pos_of(key_node)
            if key_node.tag == _MERGE:
                merges.append((value_node, kpos))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(kpos, "mapping keys must be plain strings", "yaml-key")
                continue
            key = self.scalar(key_node, kpos)
            if not isinstance(key, str):
                key = key_node.value
            if key in key_lines:
                self.problem(
                    kpos, f"duplicate key '{key}' (first at line {key_lines[key]})", "duplicate-key"
                )
                continue
            key_lines[key] = kpos[0]
            child = (*path, key)
            self.key_positions[child] = kpos
            result[key] = self.build(value_node, child, kpos)
        for value_node, kpos in merges:  # explicit keys win over merged ones
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    self.problem(kpos, "'<<' merges only mappings", "yaml-merge")
                    continue
                merged = self.build(src, (*path, "<<"), kpos)
                for k, v in merged.items():
                    if k not in result:
                        result[k] = v
                        child = (*path, k)
                        self.key_positions.setdefault(child, kpos)
                        self._move_positions((*path, "<<", k), child)
        return result

    def _move_positions(self, old: Path_, new: Path_) -> None:
        n = len(old)
        for table in (self.positions, self.key_positions):
            for p in [p for p in table if p[:n] == old]:
                table.setdefault(new + p[n:], table[p])


def iter_documents(files: Iterable[LoadedFile]) -> Iterator[Document]:
    for f in files:
        yield from f.documents


def definitions_present(root: Path, ref: str | None = None) -> bool:
    """Whether ``registries.d/`` exists under ``root`` (in the work tree, or in commit ``ref``)."""
    if ref is None:
        return (Path(root) / DEFINITIONS_DIR).is_dir()
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    try:
        work = Path(repo.working_tree_dir or root).resolve()
        rel = Path(os.path.relpath((Path(root) / DEFINITIONS_DIR).resolve(), work)).as_posix()
        try:
            return bool((resolve_commit(repo, ref).tree / rel).type == "tree")
        except (KeyError, git.BadName, git.BadObject, ValueError, BrokenPipeError, git.GitCommandError):
            # a git process that died on the repository (a bad config line) may give any of the
            # last two, depending on when it died: the caller asks discover_git, which says why
            return False
    finally:
        repo.close()
