"""State kept in a git branch (``--state git:BRANCH``), committed with gitpython.

The branch holds one JSON document (``state.json``). Commits are built from low-level
objects (blob, tree, commit) in the object database, so the user's work tree, index and
HEAD are never touched. Every write is a compare-and-swap against the commit ``read``
saw: with a remote, a plain (never forced) push that git rejects as non-fast-forward when
someone else moved the branch; without a remote, ``git update-ref REF NEW OLD``. A lost
race raises ``StateConflict``: re-read and re-plan, never overwrite.

``lock`` is only a local lock (flock on a file in the git directory) that keeps two
processes on one machine from interleaving; the branch's compare-and-swap is the real
guard between machines (CI runners).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import git
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import IStream

from reconciler.errors import StateConflict, StateError
from reconciler.state.base import State, StateStore
from reconciler.state.lock import exclusive
from reconciler.testhooks import checkpoint

_POLL = 0.05
_ZERO = "0" * 40
_BLOB_MODE = 0o100644
_TREE_MODE = 0o040000
_FALLBACK_ACTOR = git.Actor("reconcile", "reconcile@users.noreply.github.com")


class GitBranchStateStore(StateStore):
    def __init__(
        self,
        repo_dir: str | os.PathLike[str],
        branch: str = "reconciler-state",
        remote: str = "origin",
        path: str = "state.json",
    ) -> None:
        try:
            self.repo = git.Repo(repo_dir, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise StateError(f"--state git:{branch}: {repo_dir} is not inside a git repository") from exc
        if not branch or branch.startswith("-") or subprocess.run(
            ["git", "check-ref-format", f"refs/heads/{branch}"], capture_output=True, check=False
        ).returncode:
            raise StateError(f"--state git:{branch}: not a valid branch name")
        self.branch = branch
        self.path = path.strip("/")
        if not self.path:
            raise StateError(f"--state git:{branch}: empty document path")
        remotes = {r.name for r in self.repo.remotes}
        self.remote = remote if remote in remotes else None
        self._refuse_work_branch()
        self._base: str | None = None  # commit our last read/write saw; None = no branch
        self._base_meta: tuple[str, int] | None = None  # (lineage, serial) of the branch's state
        self._have_read = False
        self.lock_path = Path(self.repo.common_dir) / "reconciler" / f"{branch.replace('/', '%')}.lock"

    def _refuse_work_branch(self) -> None:
        """State commits never go onto a branch people work on (issue #9.28): not a branch
        checked out in any work tree of this repository, not the default branch (the
        remote's HEAD, or main/master when that is unknown)."""
        checked_out = set()
        try:
            listing = self.repo.git.execute(["git", "worktree", "list", "--porcelain"])
        except git.GitCommandError:
            listing = ""
        for line in str(listing).splitlines():
            if line.startswith("branch refs/heads/"):
                checked_out.add(line.removeprefix("branch refs/heads/"))
        if not self.repo.head.is_detached:
            try:
                checked_out.add(self.repo.head.ref.name)
            except TypeError:
                pass
        if self.branch in checked_out:
            raise StateError(
                f"--state git:{self.branch}: {self.branch} is checked out in this repository; "
                "the state needs a branch of its own that nobody works on (e.g. git:reconciler-state)"
            )
        default = None
        if self.remote:
            try:
                head = self.repo.git.execute(
                    ["git", "symbolic-ref", "--quiet", f"refs/remotes/{self.remote}/HEAD"]
                )
                default = str(head).strip().removeprefix(f"refs/remotes/{self.remote}/") or None
            except git.GitCommandError:
                default = None
        defaults = {default} if default else {"main", "master"}
        if self.branch in defaults:
            raise StateError(
                f"--state git:{self.branch}: {self.branch} is the repository's default branch; "
                "the state needs a branch of its own that nobody works on (e.g. git:reconciler-state)"
            )

    # -- identity -------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"git:{self.branch}"

    @property
    def ref(self) -> str:
        """The ref we read the state from (remote-tracking when there is a remote)."""
        if self.remote:
            return f"refs/remotes/{self.remote}/{self.branch}"
        return f"refs/heads/{self.branch}"

    @property
    def base_commit(self) -> str | None:
        return self._base

    # -- lock -----------------------------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        with exclusive(self.lock_path, timeout, f"git:{self.branch}", "another reconcile is running in this clone"):
            yield

    # -- read -----------------------------------------------------------------------------

    def _git(self, *args: str) -> str:
        try:
            return self.repo.git.execute(["git", *args], with_extended_output=False)
        except git.GitCommandError as exc:
            raise StateError(f"git:{self.branch}: git {args[0]} failed: {_stderr(exc)}") from exc

    def _fetch(self) -> None:
        assert self.remote is not None
        refspec = f"+refs/heads/{self.branch}:{self.ref}"
        try:
            self.repo.git.execute(
                ["git", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, refspec]
            )
        except git.GitCommandError as exc:
            text = _stderr(exc)
            if "couldn't find remote ref" in text.lower():
                # The branch does not exist (yet, or any more): forget a stale tracking ref.
                if self._resolve() is not None:
                    self._git("update-ref", "-d", self.ref)
                return
            raise StateError(
                f"git:{self.branch}: cannot fetch from {self.remote}: {text}"
            ) from exc

    def _resolve(self) -> str | None:
        try:
            out = self.repo.git.execute(
                ["git", "rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}"]
            )
        except git.GitCommandError:
            return None
        return str(out).strip() or None

    def _document(self, commit: str) -> bytes | None:
        tree = self.repo.commit(commit).tree
        try:
            blob = tree / self.path
        except KeyError:
            return None
        if blob.type != "blob":
            raise StateError(f"git:{self.branch}:{self.path} is not a file; refusing to use or overwrite it")
        return blob.data_stream.read()  # type: ignore[no-any-return]

    def read(self) -> State:
        self._have_read = False
        self._base_meta = None
        if self.remote:
            self._fetch()
        self._base = self._resolve()
        where = f"git:{self.branch}:{self.path} at {self._base[:12] if self._base else '-'}"
        raw = self._document(self._base) if self._base else None
        if raw is None:
            state = State()
        else:
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StateError(f"{where}: state is not valid JSON ({exc}); refusing to use or overwrite it") from exc
            state = State.from_json(data, where)
            # Keep copies: the caller mutates the State it got back.
            self._base_meta = (state.lineage, state.serial)
        self._have_read = True
        return state

    # -- write ----------------------------------------------------------------------------

    def _store(self, kind: str, data: bytes) -> bytes:
        return self.repo.odb.store(IStream(kind, len(data), BytesIO(data))).binsha  # type: ignore[no-any-return]

    def _tree_with(self, tree_sha: bytes | None, parts: list[str], blob: bytes) -> bytes:
        """A tree equal to ``tree_sha`` (or empty) with ``parts`` set to ``blob``; other
        entries (a README someone added to the branch) are kept."""
        entries: list[tuple[bytes, int, str]] = []
        if tree_sha is not None:
            entries = list(tree_entries_from_data(self.repo.odb.stream(tree_sha).read()))
        name, rest = parts[0], parts[1:]
        existing = next((e for e in entries if e[2] == name), None)
        entries = [e for e in entries if e[2] != name]
        if rest:
            sub = existing[0] if existing is not None and existing[1] == _TREE_MODE else None
            entries.append((self._tree_with(sub, rest, blob), _TREE_MODE, name))
        else:
            entries.append((blob, _BLOB_MODE, name))
        # git sorts tree entries by name, with a tree sorting as if its name ended in "/".
        entries.sort(key=lambda e: e[2] + "/" if e[1] == _TREE_MODE else e[2])
        buf = BytesIO()
        tree_to_stream(entries, buf.write)
        return self._store("tree", buf.getvalue())

    def _actor(self) -> git.Actor:
        reader = self.repo.config_reader()
        name = os.environ.get("GIT_COMMITTER_NAME") or reader.get_value("user", "name", "")
        email = os.environ.get("GIT_COMMITTER_EMAIL") or reader.get_value("user", "email", "")
        if name and email:
            return git.Actor(str(name), str(email))
        return _FALLBACK_ACTOR

    def _check(self, state: State) -> None:
        if not self._have_read:
            raise StateError(
                f"git:{self.branch}: write without a successful read; refusing to overwrite the branch"
            )
        if self._base_meta is None:
            return
        lineage, serial = self._base_meta
        if state.lineage != lineage:
            raise StateError(
                f"git:{self.branch}: state lineage {state.lineage} differs from the branch's "
                f"{lineage}; refusing to overwrite another state"
            )
        if state.serial < serial:
            raise StateError(
                f"git:{self.branch}: state serial {state.serial} is older than the branch's "
                f"{serial}; refusing to roll the state back"
            )

    def write(self, state: State, message: str = "") -> None:
        self._check(state)
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
        parent = self._base
        parent_tree = self.repo.commit(parent).tree.binsha if parent else None
        tree = self._tree_with(parent_tree, self.path.split("/"), self._store("blob", data))
        actor = self._actor()
        text = (message or f"reconcile state serial {state.serial}").rstrip() + "\n"
        if "serial" not in text:
            text += f"\nserial {state.serial}, lineage {state.lineage}\n"
        commit = git.Commit.create_from_tree(
            self.repo,
            git.Tree(self.repo, tree),
            text,
            parent_commits=[self.repo.commit(parent)] if parent else [],
            head=False,
            author=actor,
            committer=actor,
        )
        new = commit.hexsha
        checkpoint("state-write:before-push")
        if self.remote:
            self._push(new)
            self._git("update-ref", self.ref, new)
        else:
            self._update_local(new, parent)
        self._base = new
        self._base_meta = (state.lineage, state.serial)

    def _push(self, new: str) -> None:
        assert self.remote is not None
        # Plain push: git refuses anything but a fast-forward from the commit we read.
        try:
            self.repo.git.execute(
                ["git", "push", "--porcelain", "--quiet", self.remote, f"{new}:refs/heads/{self.branch}"]
            )
        except git.GitCommandError as exc:
            text = f"{exc.stdout or ''}\n{_stderr(exc)}"
            if _lost_race(text):
                raise StateConflict(
                    f"state branch moved; re-read and re-plan (git:{self.branch} on {self.remote} "
                    "changed since it was read; nothing was overwritten)"
                ) from exc
            raise StateError(f"git:{self.branch}: cannot push to {self.remote}: {_push_reason(exc)}") from exc

    def _update_local(self, new: str, parent: str | None) -> None:
        head = self.repo.head
        if head.is_detached is False and head.ref.path == self.ref:
            raise StateError(
                f"git:{self.branch} is checked out in {self.repo.working_tree_dir}; "
                "use a branch nobody works on for the state"
            )
        try:
            self.repo.git.execute(["git", "update-ref", "-m", "reconcile state", self.ref, new, parent or _ZERO])
        except git.GitCommandError as exc:
            raise StateConflict(
                f"state branch moved; re-read and re-plan (git:{self.branch} changed since it was read; "
                "nothing was overwritten)"
            ) from exc


# What git says when another push moved the branch first: the client saw it ("[rejected]",
# "fetch first", "non-fast-forward", "stale info"), or the two pushes met on the server and
# the loser could not take the ref's lock ("[remote rejected] ... (failed to update ref)",
# "cannot lock ref ... but expected ...", "incorrect old value provided").
_RACE_MARKS = ("[rejected]", "non-fast-forward", "fetch first", "stale info", "failed to update ref",
               "cannot lock ref", "incorrect old value", "but expected")


def _lost_race(text: str) -> bool:
    return any(mark in text for mark in _RACE_MARKS)


def _push_reason(exc: git.GitCommandError) -> str:
    """The server's reason from ``--porcelain`` output (``!<TAB>ref<TAB>[remote rejected] (why)``),
    else git's last error line; never git's whole output."""
    for line in str(exc.stdout or "").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "!":
            return parts[2].strip()
    lines = [ln.strip() for ln in _stderr(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (errors or lines or ["git push failed"])[0][:300]


def _stderr(exc: git.GitCommandError) -> str:
    text = str(exc.stderr or "").strip()
    for prefix in ("stderr:",):
        text = text.removeprefix(prefix).strip()
    return text.strip("'").strip() or str(exc)


def parse_state_url(url: str) -> str | None:
    """``git:BRANCH`` -> ``BRANCH``; anything else -> None (a file path)."""
    if url.startswith("git:"):
        return url[4:] or "reconciler-state"
    return None
