"""State kept in a git branch (``--state git:BRANCH``), committed with gitpython.

The branch holds one JSON document (``state.json``) and, while a run changes the target, a
lease record beside it (``state.json.lock``, see ``lease.py``). Commits are built from
low-level objects (blob, tree, commit) in the object database, so the user's work tree,
index and HEAD are never touched. Every write is a compare-and-swap against the commit
``read`` saw: with a remote, a plain (never forced) push that git rejects as
non-fast-forward when someone else moved the branch; without a remote, ``git update-ref
REF NEW OLD``. A lost race raises ``StateConflict``: re-read and re-plan, never overwrite.

``lock`` is the lease on the branch, taken and released with the same compare-and-swap,
so it holds between machines (CI runners), plus a flock in the git directory that keeps two
processes of one clone from interleaving their git calls.

The remote is ``RECONCILER_STATE_REMOTE``, else ``origin``; a repository that has remotes but
not that one is refused (the state would live in one clone only), one with none keeps the
state on its local branch and says so. Every fetch and push ends within
``RECONCILER_GIT_TIMEOUT`` seconds (a remote that stops answering held the run, and the lock,
for ever); a run whose lease expired unrenewed meanwhile writes nothing more.

Continuity (issue #9.4): the clone remembers the last state it accepted in
``refs/reconciler/seen/BRANCH`` (a ref ``git fetch`` does not move). A branch whose state
went back to a lower serial of the same lineage is refused at ``read``; a state of another
lineage (or a deleted branch) is refused at ``verify`` when the target still holds a
registry that the remembered state recorded. A fresh clone has nothing remembered, so
there only the in-run checks of ``StateStore`` apply.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import git
from git.objects.fun import tree_entries_from_data, tree_to_stream
from gitdb import IStream

from reconciler.errors import StateConflict, StateError, StateLocked
from reconciler.model import Key, load_json
from reconciler.state.base import (
    MAX_STATE_BYTES,
    State,
    StateStore,
    entry_key,
    free_text_scrubber,
    note,
    signature_problem,
    state_mac,
    unsigned_note,
)
from reconciler.state.lease import MAX_LEASE_BYTES, CorruptLease, Lease, env_seconds, lease_seconds
from reconciler.state.lock import exclusive
from reconciler.testhooks import checkpoint


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_POLL = 0.5  # seconds between looks at a held lease
_ZERO = "0" * 40
_BLOB_MODE = 0o100644
_TREE_MODE = 0o040000
_FALLBACK_ACTOR = git.Actor("reconcile", "reconcile@users.noreply.github.com")
_CAS_TRIES = 20
# The apply commits its state at most this often (issue #11.1); a kill loses at most this
# window of records, which the rerun recovers by adoption.
COMMIT_INTERVAL = 10.0


# lease commits (lock, heartbeat, release) between two state commits that a read walks past
MAX_LEASE_COMMITS = 10_000

# The longest a git fetch or push may take (the loader's git calls have the same bound): a
# remote that stops answering would otherwise hold the run, and the lock, for ever. With the
# default lease (900 s, renewed every 300 s) a renewal lands within 300 + 3 * 120 s: it may wait
# for a push of the main thread, then fetch and push itself.
NETWORK_TIMEOUT = 120.0


def _network_timeout() -> float:
    """``RECONCILER_GIT_TIMEOUT`` (1 to 3600) overrides NETWORK_TIMEOUT."""
    return env_seconds("RECONCILER_GIT_TIMEOUT", NETWORK_TIMEOUT, 1.0, 3600.0)


class _NoAnswer(Exception):
    """A git fetch or push ran out of its time and was stopped."""


def _commit_interval() -> float:
    """``RECONCILER_STATE_COMMIT_SECONDS`` (0 to 600) overrides COMMIT_INTERVAL (tests)."""
    return env_seconds("RECONCILER_STATE_COMMIT_SECONDS", COMMIT_INTERVAL, 0.0, 600.0)


class GitBranchStateStore(StateStore):
    def __init__(
        self,
        repo_dir: str | os.PathLike[str],
        branch: str = "reconciler-state",
        remote: str | None = None,
        path: str = "state.json",
        *,
        notify: Callable[[str], None] = note,
        operation: str = "reconcile",
        key: str | None = None,
    ) -> None:
        self.key = key or None  # RECONCILER_STATE_KEY: signs what is written, checks what is read
        try:
            self.repo = git.Repo(repo_dir, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise StateError(f"--state git:{branch}: {repo_dir} is not inside a git repository") from exc
        # HEAD, @ and refs/... are valid ref names but not branches (git branch refuses them too)
        if not branch or branch.startswith(("-", "refs/")) or branch in ("HEAD", "@") or subprocess.run(
            ["git", "check-ref-format", f"refs/heads/{branch}"], capture_output=True, check=False
        ).returncode:
            raise StateError(f"--state git:{branch}: not a valid branch name")
        self.branch = branch
        self.path = path.strip("/")
        if not self.path:
            raise StateError(f"--state git:{branch}: empty document path")
        self.lease_path = f"{self.path}.lock"
        self.notify = notify
        self.remote = self._choose_remote(remote)
        self._refuse_work_branch()
        self.operation = operation
        self._base: str | None = None  # commit our last read/write saw; None = no branch
        self._base_meta: tuple[str, int] | None = None  # (lineage, serial) of the branch's state
        self._have_read = False
        self._replaced: State | None = None  # the remembered state, when the branch holds another lineage
        self._mutex = threading.RLock()  # the heartbeat and the main thread share the repo
        self._lease: Lease | None = None
        self._lapsed = ""  # why this run no longer holds its lock: its lease expired before it was renewed
        self._last_commit = 0.0
        self._pending: list[Key] = []  # what record took since the last commit
        self._unanswered: str | None = None  # our commit whose push timed out: it may have landed
        # both read now: a bad value is refused before the lease is pushed (bad input changes nothing)
        self._commit_every = _commit_interval()
        self._interval = self._commit_every
        self._timeout = _network_timeout()
        self.lock_path = Path(self.repo.common_dir) / "reconciler" / f"{branch.replace('/', '%')}.lock"

    def _choose_remote(self, remote: str | None) -> str | None:
        """The remote the state is pushed to: ``remote`` (``RECONCILER_STATE_REMOTE``), else
        ``origin``. A repository with remotes but not that one is refused: committing locally
        there would keep the state, its lock and its protect records in this clone alone, where
        no other clone sees them. One with no remote at all keeps the state on the local
        branch, and says so."""
        remotes = sorted(r.name for r in self.repo.remotes)
        wanted = remote or "origin"
        if wanted in remotes:
            return wanted
        if remote or remotes:
            there = ", ".join(remotes) if remotes else "none"
            raise StateError(
                f"--state git:{self.branch}: this repository has no remote named {wanted!r} to push the state to "
                f"(its remotes: {there}); choose one with RECONCILER_STATE_REMOTE=NAME; nothing was changed"
            )
        self.notify(f"git:{self.branch}: this repository has no remote; the state and its lock are committed to the "
                    f"local branch {self.branch} only, not shared with any other clone")
        return None

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
    def seen_ref(self) -> str:
        """The last state this clone accepted (moved by reconcile only)."""
        return f"refs/reconciler/seen/{self.branch}"

    @property
    def base_commit(self) -> str | None:
        return self._base

    # -- git plumbing ---------------------------------------------------------------------

    def _git(self, *args: str) -> str:
        try:
            return self.repo.git.execute(["git", *args], with_extended_output=False)
        except git.GitCommandError as exc:
            raise StateError(f"git:{self.branch}: git {args[0]} failed: {_stderr(exc)}") from exc

    def _network(self, *args: str) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of a git command that talks to the remote, stopped after
        ``RECONCILER_GIT_TIMEOUT`` seconds (``_NoAnswer``). It runs in a process group of its
        own, so that ssh, git-remote-https or a local receive-pack dies with it."""
        config: list[str] = []
        env = dict(os.environ)
        reader = self.repo.config_reader()
        if not (reader.has_option("http", "lowSpeedLimit") or reader.has_option("http", "lowSpeedTime")):
            # an HTTP transfer that moves (almost) nothing for half the time is given up by git itself
            config += ["-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, int(self._timeout / 2))}"]
        if not (env.get("GIT_SSH_COMMAND") or env.get("GIT_SSH") or reader.has_option("core", "sshCommand")):
            env["GIT_SSH_COMMAND"] = "ssh -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o BatchMode=yes"
        # a run in CI must never wait for credentials typed at a terminal: git says so and stops
        env.setdefault("GIT_TERMINAL_PROMPT", "0")
        proc = subprocess.Popen(["git", *config, *args], cwd=self.repo.working_dir, env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise _NoAnswer() from None
        except BaseException:
            _kill_group(proc)
            raise
        return proc.returncode, out, err

    def _no_answer(self, what: str, then: str) -> str:
        return (f"git:{self.branch}: {self.remote} did not answer within {self._timeout:g} s, so git {what} was "
                f"stopped (RECONCILER_GIT_TIMEOUT sets the limit); {then}")

    def _fetch(self) -> None:
        assert self.remote is not None
        refspec = f"+refs/heads/{self.branch}:{self.ref}"
        try:
            code, _, err = self._network("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, refspec)
        except _NoAnswer:
            raise StateError(self._no_answer("fetch", "the branch was not read and nothing was written")) from None
        if code:
            text = _clean(err) or f"git fetch failed (exit code {code})"
            if "couldn't find remote ref" in text.lower():
                # The branch does not exist (yet, or any more): forget a stale tracking ref.
                if self._resolve() is not None:
                    self._git("update-ref", "-d", self.ref)
                return
            raise StateError(f"git:{self.branch}: cannot fetch from {self.remote}: {text}")

    def _tip(self) -> str | None:
        if self.remote:
            self._fetch()
        return self._resolve()

    def _resolve(self, ref: str | None = None) -> str | None:
        try:
            out = self.repo.git.execute(
                ["git", "rev-parse", "--verify", "--quiet", f"{ref or self.ref}^{{commit}}"]
            )
        except git.GitCommandError:
            return None
        return str(out).strip() or None

    def _blob(self, commit: str, path: str) -> bytes | None:
        tree = self.repo.commit(commit).tree
        try:
            blob = tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            raise StateError(f"git:{self.branch}:{path} is not a file; refusing to use or overwrite it")
        if blob.size > MAX_STATE_BYTES:  # a blob pushed to the branch must not exhaust memory
            raise StateError(f"git:{self.branch}:{path} is {blob.size:,} bytes, more than the {MAX_STATE_BYTES:,} "
                             "a state may hold; refusing to use or overwrite it")
        return blob.data_stream.read()  # type: ignore[no-any-return]

    def _document(self, commit: str) -> bytes | None:
        return self._blob(commit, self.path)

    def _parse(self, raw: bytes, where: str, *, at: str | None = None) -> State:
        """The state in ``raw``; ``at``: the commit it was read at, given when its signature
        (with the key) and its place in the branch (``_written_here``) are to be checked."""
        try:
            data = load_json(raw)
        except ValueError as exc:
            raise StateError(f"{where}: state is not valid JSON ({exc}); refusing to use or overwrite it") from exc
        state = State.from_json(data, where)
        if at and self.key and state.records:
            why = signature_problem(self.key, data)
            if not why and not self._written_here(at, data.get("parent_commit")):
                # a signature proves reconcile wrote the document, not that it is the latest:
                # one pushed back on top (an older serial of this branch, another branch's or
                # repository's with the same key) names another parent than the one it has
                why = "was signed on top of another commit than the one it is on"
            if why:
                # Anyone who can push to the branch could add a record for a registry we never
                # managed, and the next apply would delete it: such a state vouches for nothing
                state.unverified = set(state.records)
                self.notify(unsigned_note(where, why, "the branch was changed"))
        return state

    def _written_here(self, commit: str, parent: Any) -> bool:
        """Whether the commit that brought the document at ``commit`` (lease commits on top
        leave it as it was) has the parent the signed document names: what ``write`` built.
        Reads trees only, never a second document. ``write`` and the lease commits have one
        parent (the first state none): a merge commit on the way was made by someone else, and
        its first parent can be any commit, the one an older signed document names among them."""
        at = self.repo.commit(commit)
        blob = self._blob_sha(at)
        for _ in range(MAX_LEASE_COMMITS):
            if len(at.parents) > 1:
                return False
            if not at.parents or self._blob_sha(at.parents[0]) != blob:
                break
            at = at.parents[0]
        else:
            return False
        return bool((at.parents[0].hexsha if at.parents else None) == parent)

    def _blob_sha(self, commit: Any) -> bytes | None:
        try:
            return bytes((commit.tree / self.path).binsha)
        except KeyError:
            return None

    def _remember_commit(self, commit: str | None) -> None:
        if commit is not None:
            self._git("update-ref", self.seen_ref, commit)

    # -- lock (the lease) -------------------------------------------------------------------

    def _lease_at(self, commit: str | None) -> Lease | None:
        """The lease at ``commit``; ``StateError`` naming ``reconcile unlock --corrupt`` when it
        cannot be read."""
        try:
            return self._read_lease(commit)
        except CorruptLease as exc:
            raise StateError(
                f"git:{self.branch}:{self.lease_path}: the lock record is corrupt ({exc}); once no reconcile runs, "
                f"remove it: reconcile unlock --corrupt --state git:{self.branch}"
            ) from exc

    def _read_lease(self, commit: str | None) -> Lease | None:
        try:
            entry = self.repo.commit(commit).tree / self.lease_path if commit else None
        except KeyError:
            entry = None
        if entry is None:
            return None
        if entry.type != "blob":
            raise CorruptLease("not a file")
        if entry.size > MAX_LEASE_BYTES:
            raise CorruptLease(f"{entry.size:,} bytes, more than the {MAX_LEASE_BYTES:,} a lock record may hold")
        try:
            data = load_json(entry.data_stream.read())
        except ValueError as exc:
            raise CorruptLease(f"not valid JSON: {exc}") from exc
        return Lease.from_json(data)

    def _commit_lease(self, parent: str | None, lease: Lease | None, message: str) -> str:
        """Commit ``lease`` (None: no lease) on top of ``parent``, compare-and-swap."""
        parent_tree = self.repo.commit(parent).tree.binsha if parent else None
        blob = None
        if lease is not None:
            blob = self._store("blob", json.dumps(lease.to_json(), indent=1, sort_keys=True).encode() + b"\n")
        tree = self._tree_with(parent_tree, self.lease_path.split("/"), blob)
        new = self._commit(tree, parent, message)
        self._publish(new, parent)
        return new

    @contextmanager
    def lock(self, timeout: float = 0.0) -> Iterator[None]:
        deadline = time.monotonic() + max(timeout, 0.0)
        seconds = lease_seconds()  # the environment's words are checked before the lock file is made
        self._actor()
        with exclusive(self.lock_path, timeout, f"git:{self.branch}", "another reconcile is running in this clone"):
            lease = self._acquire(deadline, seconds)
            stop = threading.Event()
            beat = threading.Thread(target=self._heartbeat, args=(stop,), name="reconcile-lease", daemon=True)
            self._locked, self._run_seen, self._lapsed = True, None, ""
            beat.start()
            try:
                yield
            finally:
                stop.set()
                beat.join(timeout=60)
                self._locked, self._run_seen, self._lapsed = False, None, ""
                self._release(lease)

    def _refuse_lapsed(self) -> None:
        """``StateError`` once the lease this run holds is past its expiry, unrenewed (renewals
        failed, or waited for a push that took long): another run may have taken the lock over
        and be changing the target, so this run records nothing more, and the apply stops."""
        if not self._locked:
            return
        lease = self._lease
        if not self._lapsed and lease is not None and lease.expired():
            self._lapsed = (
                f"git:{self.branch}: the lock {lease.id} this run holds expired at {lease.expires_at} before it could "
                "be renewed (the remote did not answer in time); another run may hold it now, so this run writes "
                "nothing more to the branch. The next run adopts, by name, what reached the target unrecorded")
            self.notify(self._lapsed)
        if self._lapsed:
            raise StateError(self._lapsed)

    def _acquire(self, deadline: float, seconds: float) -> Lease:
        told = False
        for _ in range(100_000):  # bounded: each pass sleeps or makes progress
            with self._mutex:
                tip = self._tip()
                current = self._lease_at(tip)
                if current is None or current.expired():
                    if current is not None:
                        self.notify(f"git:{self.branch}: taking over the expired lock of {current.describe()}")
                    mine = Lease.new(self.operation, seconds)
                    try:
                        self._commit_lease(tip, mine, f"lock: {self.operation} by {mine.holder}\n\nlock id {mine.id}")
                    except StateConflict:
                        continue  # someone moved the branch meanwhile: look again
                    self._lease = mine
                    return mine
            left = deadline - time.monotonic()
            if left <= 0:
                raise StateLocked(
                    f"state git:{self.branch} is locked by {current.describe()}; wait for it, or pass "
                    f"--lock-timeout SECONDS (if that run is gone: reconcile unlock {current.id})"
                )
            if not told:
                self.notify(f"git:{self.branch} is locked by {current.describe()}; waiting up to {left:.0f} s")
                told = True
            time.sleep(min(_POLL, left))
        raise StateLocked(f"state git:{self.branch}: could not take the lock")  # pragma: no cover

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew the lease while the run holds it, so only a dead holder's lease expires."""
        seconds = lease_seconds()
        while not stop.wait(seconds / 3):
            with self._mutex:
                lease = self._lease
                if lease is None:
                    return
                try:
                    self._refuse_lapsed()
                except StateError:
                    return  # said once; renewing now would claim a lock another run may hold
                try:
                    tip = self._tip()
                    current = self._lease_at(tip)
                    if current is None or current.id != lease.id:
                        self.notify(f"git:{self.branch}: the lock {lease.id} was released or taken over while this "
                                    "run held it; the next state write will be refused")
                        self._lease = None
                        return
                    renewed = lease.renewed(seconds)
                    new = self._commit_lease(tip, renewed, f"lock renewed: {lease.holder}\n\nlock id {lease.id}")
                    if self._base == tip or self._base is None:
                        self._base = new
                    self._lease = renewed
                except StateError as exc:  # a lost race or an unreachable remote: try again later
                    self.notify(f"git:{self.branch}: could not renew the lock ({exc})")

    def _release(self, lease: Lease) -> None:
        with self._mutex:
            self._lease = None
            for _ in range(_CAS_TRIES):
                try:
                    tip = self._tip()
                    current = self._lease_at(tip)
                    if current is None or current.id != lease.id:
                        self.notify(f"git:{self.branch}: the lock {lease.id} was already released or taken over")
                        return
                    new = self._commit_lease(tip, None, f"unlock: {lease.holder}\n\nlock id {lease.id}")
                    if self._base == tip:
                        self._base = new
                    return
                except StateConflict:
                    continue
                except StateError as exc:
                    why = f" ({exc})"
                    break
            else:
                why = " (the branch kept moving)"
            self.notify(f"git:{self.branch}: could not release the lock {lease.id}{why}; it expires at "
                        f"{lease.expires_at}, or run: reconcile unlock {lease.id}")

    def unlock(self, lock_id: str) -> str:
        with self._mutex:
            for _ in range(_CAS_TRIES):
                tip = self._tip()
                current = self._lease_at(tip)
                if current is None:
                    raise StateError(f"git:{self.branch} is not locked; nothing was changed")
                if current.id != lock_id:
                    raise StateError(
                        f"git:{self.branch} is locked by {current.describe()}, not with lock id {lock_id}; "
                        "nothing was changed"
                    )
                try:
                    self._commit_lease(tip, None, f"unlock by hand: {current.holder}\n\nlock id {current.id}")
                except StateConflict:
                    continue
                return f"released the lock of {current.describe()}"
            raise StateConflict(f"git:{self.branch} kept moving; try again")

    def unlock_corrupt(self) -> str:
        """Remove a lock record that cannot be read (not JSON, wrong fields, not a file),
        compare-and-swap like ``unlock``; a readable one is released by its id only."""
        with self._mutex:
            for _ in range(_CAS_TRIES):
                tip = self._tip()
                try:
                    current = self._read_lease(tip)
                except CorruptLease as exc:
                    why = str(exc)
                else:
                    if current is None:
                        raise StateError(f"git:{self.branch} is not locked; nothing was changed")
                    raise StateError(
                        f"git:{self.branch}: the lock record is not corrupt: it is held by {current.describe()}; "
                        f"nothing was changed (if that run is gone: reconcile unlock {current.id})"
                    )
                try:
                    self._commit_lease(tip, None, f"unlock by hand: a corrupt lock record\n\n{why}")
                except StateConflict:
                    continue  # the branch moved: look at its lock record again
                return f"removed the corrupt lock record {self.lease_path} ({why})"
            raise StateConflict(f"git:{self.branch} kept moving; try again")

    # -- read -----------------------------------------------------------------------------

    def read(self) -> State:
        with self._mutex:
            self._have_read = False
            self._base_meta = None
            self._replaced = None
            self._base = self._tip()
            where = f"git:{self.branch}:{self.path} at {self._base[:12] if self._base else '-'}"
            raw = self._document(self._base) if self._base else None
            state = None if raw is None else self._parse(raw, where, at=self._base)
            self._remember(state, f"git:{self.branch}")
            self._continuity(state, where)
            if state is None:
                state = State()
            else:
                self._base_meta = (state.lineage, state.serial)
            self._have_read = True
            return state

    def _continuity(self, state: State | None, where: str) -> None:
        """Compare what the branch holds with the last state this clone accepted."""
        seen = self._resolve(self.seen_ref)
        if seen is None or seen == self._base:
            self._remember_commit(self._base)
            return
        try:
            raw = self._document(seen)
            old = self._parse(raw, f"{self.seen_ref}") if raw is not None else None
        except (StateError, ValueError):
            old = None
        if old is None:
            self._remember_commit(self._base)
            return
        if state is not None and state.lineage == old.lineage:
            if state.serial < old.serial:
                raise StateError(
                    f"{where}: state serial {state.serial} is older than the serial {old.serial} this clone last "
                    f"saw on git:{self.branch} (was the branch force-pushed back?); refusing to use it, the newer "
                    f"records would be lost. Restore the branch, or accept it: git update-ref -d {self.seen_ref}"
                )
            self._remember_commit(self._base)
            return
        self._replaced = old  # decided in verify, which knows the target

    def verify(self, state: State, live_uids: Collection[str]) -> None:
        old = self._replaced
        if old is None:
            return
        live = set(live_uids)
        held = sorted(f"{r.kind}/{r.name}" for r in old.records.values() if r.uid in live)
        if held:
            now = (f"a state of another lineage ({state.lineage}, serial {state.serial})"
                   if self._base_meta is not None else "no state (the branch or document was deleted)")
            more = f" and {len(held) - 5} more" if len(held) > 5 else ""
            raise StateError(
                f"git:{self.branch} now holds {now}, but the target still holds {len(held)} registr"
                f"{'y' if len(held) == 1 else 'ies'} recorded by the state this clone last saw (lineage "
                f"{old.lineage}, serial {old.serial}): {', '.join(held[:5])}{more}; refusing to use it "
                f"(their records, protect among them, would be lost). Restore the branch, or accept it: "
                f"git update-ref -d {self.seen_ref}"
            )
        self._replaced = None
        self._remember_commit(self._base)

    # -- write ----------------------------------------------------------------------------

    def _store(self, kind: str, data: bytes) -> bytes:
        try:
            return self.repo.odb.store(IStream(kind, len(data), BytesIO(data))).binsha  # type: ignore[no-any-return]
        except (git.GitCommandError, BrokenPipeError) as exc:  # e.g. a .git/config git refuses
            from reconciler.loader import git_complaint

            why = git_complaint(str(self.repo.working_tree_dir or self.repo.git_dir)) or str(exc)
            raise StateError(f"git:{self.branch}: git failed: {why}") from exc

    def _tree_with(self, tree_sha: bytes | None, parts: list[str], blob: bytes | None) -> bytes:
        """A tree equal to ``tree_sha`` (or empty) with ``parts`` set to ``blob`` (None:
        removed); other entries (a README someone added to the branch) are kept."""
        entries: list[tuple[bytes, int, str]] = []
        if tree_sha is not None:
            entries = list(tree_entries_from_data(self.repo.odb.stream(tree_sha).read()))
        name, rest = parts[0], parts[1:]
        existing = next((e for e in entries if e[2] == name), None)
        entries = [e for e in entries if e[2] != name]
        if rest:
            sub = existing[0] if existing is not None and existing[1] == _TREE_MODE else None
            if blob is not None or sub is not None:
                entries.append((self._tree_with(sub, rest, blob), _TREE_MODE, name))
        elif blob is not None:
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
        if not (name and email):
            return _FALLBACK_ACTOR
        # as git does, '<ci@example.com>' is taken without its brackets; what is left must have none
        given = {"name": str(name), "email": str(email)}
        name, email = (v.strip().strip("<>").strip() for v in given.values())
        for what, value in (("name", name), ("email", email)):
            if any(c in value for c in "<>\n"):
                raise StateError(f"git:{self.branch}: the committer {what} {given[what]!r} (GIT_COMMITTER_"
                                 f"{what.upper()} or user.{what}) must not contain '<', '>' or a line feed; "
                                 "nothing was changed")
            if not _utf8(value):  # bytes a commit cannot hold (os.environ keeps them as surrogates)
                raise StateError(f"git:{self.branch}: the committer {what} {given[what]!r} (GIT_COMMITTER_"
                                 f"{what.upper()} or user.{what}) is not valid UTF-8; nothing was changed")
        return git.Actor(name, email)

    def _check(self, state: State) -> None:
        if not self._have_read:
            raise StateError(
                f"git:{self.branch}: write without a successful read; refusing to overwrite the branch"
            )
        if self._replaced is not None:
            raise StateError(
                f"git:{self.branch} holds another state than the one this clone last saw; check it against the "
                "target first (reconcile --dry-run)"
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

    def _commit(self, tree: bytes, parent: str | None, message: str) -> str:
        actor = self._actor()
        commit = git.Commit.create_from_tree(
            self.repo,
            git.Tree(self.repo, tree),
            free_text_scrubber()(message).rstrip() + "\n",  # "sync h: <status>": the status is the server's
            parent_commits=[self.repo.commit(parent)] if parent else [],
            head=False,
            author=actor,
            committer=actor,
        )
        return commit.hexsha

    def _publish(self, new: str, parent: str | None) -> None:
        """Move the branch from ``parent`` to ``new``, compare-and-swap."""
        if self.remote:
            self._push(new)
            self._git("update-ref", self.ref, new)
        else:
            self._update_local(new, parent)

    def write(self, state: State, message: str = "") -> None:
        with self._mutex:
            self._refuse_lapsed()
            self._check(state)
            try:
                new = self._write_on(self._base, state, message)
            except StateConflict:
                landed = self._landed()
                if landed is None:
                    raise
                new = self._write_on(landed, state, message)  # the branch holds what we wrote: on top of it
            self._base = new
            self._base_meta = (state.lineage, state.serial)
            self._remember_commit(new)
            if self._locked:
                self._run_seen = (state.lineage, state.serial)
            self._last_commit = time.monotonic()
            self._pending = []

    def _write_on(self, parent: str | None, state: State, message: str) -> str:
        """Commit ``state`` on ``parent`` and move the branch there (compare-and-swap); the commit."""
        doc = state.to_json()
        if self.key:
            doc["parent_commit"] = parent  # signed: the document belongs on top of this commit
            doc["mac"] = state_mac(self.key, doc)
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        parent_tree = self.repo.commit(parent).tree.binsha if parent else None
        tree = self._tree_with(parent_tree, self.path.split("/"), self._store("blob", data))
        text = (message or f"reconcile state serial {state.serial}").rstrip() + "\n"
        if "serial" not in text:
            text += f"\nserial {state.serial}, lineage {state.lineage}\n"
        new = self._commit(tree, parent, text)
        checkpoint("state-write:before-push")
        self._publish(new, parent)
        return new

    def _landed(self) -> str | None:
        """The commit whose push got no answer in time, when the branch holds it now: the push
        landed and only its answer was lost (a hook or the network slow after the ref moved).
        Then nobody wrote after it, and the state it holds is ours: the next commit goes on
        top, instead of "state branch moved" for a branch only this run moved. None otherwise."""
        pending, self._unanswered = self._unanswered, None
        if pending is None or not self.remote:
            return None
        try:
            tip = self._tip()
        except StateError:
            return None
        if tip != pending:
            return None
        self._base = tip
        self._remember_commit(tip)
        return tip

    # -- recording an apply: one commit at the end, and at most every COMMIT_INTERVAL --------

    def begin(self, state: State, message: str) -> None:
        self._last_commit = time.monotonic()
        self._pending = []
        self._interval = self._commit_every

    def record(self, state: State, entry: dict[str, Any], message: str) -> None:
        self._refuse_unreadable(state, entry)  # now, not at the next commit: it would refuse the whole window
        self._refuse_lapsed()  # at each change, not at the next commit: the apply stops before the next one
        self._pending.append(entry_key(entry))
        if time.monotonic() - self._last_commit >= self._interval:
            state.serial += 1
            self.write(state, message)

    def unsaved(self) -> list[Key]:
        return list(self._pending)

    def finish(self, state: State, message: str) -> None:
        if self._pending:
            state.serial += 1
            self.write(state, message)

    def _push(self, new: str) -> None:
        assert self.remote is not None
        # Plain push: git refuses anything but a fast-forward from the commit we read.
        try:
            code, out, err = self._network("push", "--porcelain", "--quiet", self.remote,
                                           f"{new}:refs/heads/{self.branch}")
        except _NoAnswer:
            self._unanswered = new
            raise StateError(self._no_answer(
                "push", f"whether commit {new[:12]} reached the branch is not known. The next run reads what the "
                "branch holds and adopts, by name, what the target holds that it does not record")) from None
        if code:
            if _lost_race(f"{out}\n{err}"):
                raise StateConflict(
                    f"state branch moved; re-read and re-plan (git:{self.branch} on {self.remote} "
                    "changed since it was read; nothing was overwritten)"
                )
            raise StateError(f"git:{self.branch}: cannot push to {self.remote}: {_push_reason(out, err)}")

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


def _push_reason(stdout: str, stderr: str) -> str:
    """The server's reason from ``--porcelain`` output (``!<TAB>ref<TAB>[remote rejected] (why)``),
    else git's first error line; never git's whole output."""
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "!":
            return parts[2].strip()
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (errors or lines or ["git push failed"])[0][:300]


def _clean(stderr: str) -> str:
    return stderr.strip().strip("'").strip()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Stop ``proc`` and everything it started (its own process group), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)  # a grandchild outside the group may hold the pipes: not for long
    except subprocess.TimeoutExpired:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait(timeout=5)


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
