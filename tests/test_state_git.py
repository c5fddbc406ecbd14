from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.errors import StateConflict, StateError, StateLocked
from reconciler.state.base import State, StateStore
from reconciler.state.git import GitBranchStateStore, parse_state_url
from tests.support.state_contract import StateStoreContract, make_record, with_record

BRANCH = "reconciler-state"


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, input=input, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def make_work_repo(path: Path, origin: Path | None) -> Path:
    if origin is not None:
        if not origin.exists():
            git(path.parent, "init", "--quiet", "--bare", "-b", "main", str(origin))
            seed = path.parent / (origin.name + "-seed")
            git(path.parent, "init", "--quiet", "-b", "main", str(seed))
            (seed / "registries.d").mkdir()
            (seed / "registries.d" / "a.yaml").write_text("kind: OciRegistry\n")
            git(seed, "add", ".")
            git(seed, "commit", "--quiet", "-m", "initial")
            git(seed, "push", "--quiet", str(origin), "main")
        git(path.parent, "clone", "--quiet", str(origin), str(path))
    else:
        git(path.parent, "init", "--quiet", "-b", "main", str(path))
        (path / "registries.d").mkdir()
        (path / "registries.d" / "a.yaml").write_text("kind: OciRegistry\n")
        git(path, "add", ".")
        git(path, "commit", "--quiet", "-m", "initial")
    return path


def commit_doc(repo: Path, branch: str, files: dict[str, str], message: str = "planted") -> str:
    """Commit ``files`` as the whole tree of ``branch`` in ``repo`` (bare or not) with plumbing."""
    entries = []
    for name, text in files.items():
        blob = git(repo, "hash-object", "-w", "--stdin", input=text)
        entries.append(f"100644 blob {blob}\t{name}")
    tree = git(repo, "mktree", input="\n".join(entries) + "\n")
    parent = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    sha = git(repo, *args)
    git(repo, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def show(repo: Path, rev: str) -> str | None:
    out = subprocess.run(["git", "show", rev], cwd=repo, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def history(repo: Path, branch: str = BRANCH) -> list[tuple[str, str]]:
    """(sha, subject) along the first-parent history of ``branch``, newest first."""
    text = git(repo, "log", "--first-parent", "--format=%H %s", f"refs/heads/{branch}")
    return [tuple(line.split(" ", 1)) for line in text.splitlines()]  # type: ignore[misc]


class TestGitStoreWithRemote(StateStoreContract):
    def make_store(self, tmp_path: Path) -> StateStore:
        work = make_work_repo(tmp_path / "work", tmp_path / "origin.git")
        return GitBranchStateStore(work)

    def origin(self, store: GitBranchStateStore) -> Path:
        return Path(store.repo.working_tree_dir).parent / "origin.git"  # type: ignore[arg-type]

    def reopen(self, store: StateStore) -> StateStore:
        assert isinstance(store, GitBranchStateStore)
        return GitBranchStateStore(store.repo.working_tree_dir)  # type: ignore[arg-type]

    def plant(self, store: StateStore, text: str) -> None:
        assert isinstance(store, GitBranchStateStore)
        commit_doc(self.origin(store), BRANCH, {"state.json": text})

    def raw(self, store: StateStore) -> str | None:
        assert isinstance(store, GitBranchStateStore)
        return show(self.origin(store), f"refs/heads/{BRANCH}:state.json")

    def other_runner(self, store: StateStore) -> StateStore:
        assert isinstance(store, GitBranchStateStore)
        work = Path(store.repo.working_tree_dir)  # type: ignore[arg-type]
        other = work.parent / "other-runner"
        if not other.exists():
            make_work_repo(other, self.origin(store))
        return GitBranchStateStore(other)

    def open_code(self, store: StateStore) -> str:
        assert isinstance(store, GitBranchStateStore)
        work = Path(store.repo.working_tree_dir).parent / "killed-runner"  # type: ignore[arg-type]
        make_work_repo(work, self.origin(store))
        return f"from reconciler.state.git import GitBranchStateStore\nstore = GitBranchStateStore({str(work)!r})"


class TestGitStoreWithoutRemote(StateStoreContract):
    def make_store(self, tmp_path: Path) -> StateStore:
        return GitBranchStateStore(make_work_repo(tmp_path / "work", None))

    def reopen(self, store: StateStore) -> StateStore:
        assert isinstance(store, GitBranchStateStore)
        return GitBranchStateStore(store.repo.working_tree_dir)  # type: ignore[arg-type]

    def plant(self, store: StateStore, text: str) -> None:
        assert isinstance(store, GitBranchStateStore)
        commit_doc(Path(store.repo.working_tree_dir), BRANCH, {"state.json": text})  # type: ignore[arg-type]

    def raw(self, store: StateStore) -> str | None:
        assert isinstance(store, GitBranchStateStore)
        return show(Path(store.repo.working_tree_dir), f"refs/heads/{BRANCH}:state.json")  # type: ignore[arg-type]

    def open_code(self, store: StateStore) -> str:
        assert isinstance(store, GitBranchStateStore)
        return (f"from reconciler.state.git import GitBranchStateStore\n"
                f"store = GitBranchStateStore({store.repo.working_tree_dir!r})")


# -- git-specific behaviour ----------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    make_work_repo(tmp_path / "first", tmp_path / "origin.git")
    return tmp_path / "origin.git"


def clone(tmp_path: Path, origin: Path, name: str) -> Path:
    return make_work_repo(tmp_path / name, origin)


def bump(store: GitBranchStateStore, state: State, *names: str) -> State:
    state.serial += 1
    for n in names:
        with_record(state, make_record(n, salt=state.salt))
    return state


def test_work_tree_index_and_head_untouched(tmp_path: Path, origin: Path) -> None:
    work = clone(tmp_path, origin, "work")
    (work / "registries.d" / "a.yaml").write_text("kind: HelmRegistry\n")  # unstaged change
    (work / "new.yaml").write_text("x: 1\n")  # untracked
    (work / "staged.yaml").write_text("y: 2\n")
    git(work, "add", "staged.yaml")
    before = (git(work, "status", "--porcelain"), git(work, "rev-parse", "HEAD"),
              git(work, "symbolic-ref", "HEAD"), (work / ".git" / "index").read_bytes())
    store = GitBranchStateStore(work)
    store.write(bump(store, store.read(), "a"), "apply 3f2a1bc: 1 created")
    after = (git(work, "status", "--porcelain"), git(work, "rev-parse", "HEAD"),
             git(work, "symbolic-ref", "HEAD"), (work / ".git" / "index").read_bytes())
    assert after == before
    assert git(work, "branch", "--list", BRANCH) == ""  # no local branch appears


def test_first_write_creates_an_orphan_branch_with_the_message(tmp_path: Path, origin: Path) -> None:
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    state = store.read()
    assert store.base_commit is None
    store.write(bump(store, state, "a", "b"), "apply 3f2a1bc: 2 created, 1 updated")
    (sha, subject), = history(origin)
    assert subject == "apply 3f2a1bc: 2 created, 1 updated"
    assert git(origin, "rev-list", "--parents", "-n1", sha) == sha  # no parent: orphan
    assert git(origin, "ls-tree", "--name-only", sha) == "state.json"
    assert store.base_commit == sha
    # Following writes chain on the previous one without a re-read (apply writes per change).
    store.write(bump(store, state, "c"), "apply 3f2a1bc: 1 created")
    assert [s for _, s in history(origin)] == ["apply 3f2a1bc: 1 created", "apply 3f2a1bc: 2 created, 1 updated"]


def test_other_files_on_the_branch_are_kept_and_nested_paths_work(tmp_path: Path, origin: Path) -> None:
    commit_doc(origin, BRANCH, {"README.md": "state of the registries\n"})
    store = GitBranchStateStore(clone(tmp_path, origin, "work"), path="envs/prod/state.json")
    store.write(bump(store, store.read(), "a"), "apply")
    names = git(origin, "ls-tree", "-r", "--name-only", f"refs/heads/{BRANCH}").splitlines()
    assert names == ["README.md", "envs/prod/state.json"]
    assert GitBranchStateStore(tmp_path / "work", path="envs/prod/state.json").read().serial == 1


def test_rejected_push_is_a_conflict_and_nothing_is_overwritten(tmp_path: Path, origin: Path) -> None:
    a = GitBranchStateStore(clone(tmp_path, origin, "a"))
    b = GitBranchStateStore(clone(tmp_path, origin, "b"))
    sa, sb = a.read(), b.read()
    a.write(bump(a, sa, "from-a"), "apply aaaaaaa: 1 created")
    tip = git(origin, "rev-parse", f"refs/heads/{BRANCH}")
    with pytest.raises(StateConflict, match="state branch moved; re-read and re-plan"):
        b.write(bump(b, sb, "from-b"), "apply bbbbbbb: 1 created")
    assert git(origin, "rev-parse", f"refs/heads/{BRANCH}") == tip
    assert "from-b" not in (show(origin, f"refs/heads/{BRANCH}:state.json") or "")


def test_write_without_read_or_after_a_failed_read_is_refused(tmp_path: Path, origin: Path) -> None:
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    with pytest.raises(StateError, match="without a successful read"):
        store.write(State(serial=1), "blind")
    commit_doc(origin, BRANCH, {"state.json": "{corrupt"})
    with pytest.raises(StateError):
        store.read()
    with pytest.raises(StateError):
        store.write(State(serial=1), "over a corrupt document")
    assert show(origin, f"refs/heads/{BRANCH}:state.json") == "{corrupt"


def test_lineage_and_serial_checks(tmp_path: Path, origin: Path) -> None:
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    state = store.read()
    state.serial = 5
    store.write(state, "first")
    store.read()
    with pytest.raises(StateError, match="lineage"):
        store.write(State(serial=6), "a foreign state")
    older = store.read()
    older.serial = 4
    with pytest.raises(StateError, match="roll the state back"):
        store.write(older, "rollback")
    assert store.read().serial == 5


def test_deleted_remote_branch_reads_as_empty(tmp_path: Path, origin: Path) -> None:
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    store.write(bump(store, store.read(), "a"), "first")
    git(origin, "update-ref", "-d", f"refs/heads/{BRANCH}")
    assert store.read().records == {}
    assert store.base_commit is None


def test_no_remote_commits_to_the_local_branch_with_compare_and_swap(tmp_path: Path) -> None:
    work = make_work_repo(tmp_path / "work", None)
    a, b = GitBranchStateStore(work), GitBranchStateStore(work)
    sa, sb = a.read(), b.read()
    a.write(bump(a, sa, "a"), "apply from a")
    with pytest.raises(StateConflict):
        b.write(bump(b, sb, "b"), "apply from b")
    sb = b.read()
    b.write(bump(b, sb, "b"), "apply from b")
    assert [s for _, s in history(work)] == ["apply from b", "apply from a"]
    assert git(work, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_no_remote_says_once_that_the_state_is_not_shared(tmp_path: Path) -> None:
    notes: list[str] = []
    GitBranchStateStore(make_work_repo(tmp_path / "work", None), notify=notes.append)
    assert len(notes) == 1 and "has no remote" in notes[0] and "not shared with any other clone" in notes[0], notes


def test_a_repository_whose_remote_is_not_origin_is_refused_not_kept_local(tmp_path: Path, origin: Path) -> None:
    """Adversarial pass 6: a clone whose remote is called upstream committed the state, the lease
    and the protect records to its local branch only and never pushed; a second clone planned
    everything as adopts from an empty state, and the two runs did not exclude each other."""
    work = clone(tmp_path, origin, "work")
    git(work, "remote", "rename", "origin", "upstream")
    git(work, "remote", "add", "mirror", str(origin))
    with pytest.raises(StateError) as info:
        GitBranchStateStore(work)
    assert str(info.value) == (
        f"--state git:{BRANCH}: this repository has no remote named 'origin' to push the state to (its remotes: "
        "mirror, upstream); choose one with RECONCILER_STATE_REMOTE=NAME; nothing was changed")
    with pytest.raises(StateError, match="no remote named 'elsewhere'.*its remotes: mirror, upstream"):
        GitBranchStateStore(work, remote="elsewhere")
    with pytest.raises(StateError, match="no remote named 'upstream'.*its remotes: none"):
        GitBranchStateStore(make_work_repo(tmp_path / "lonely", None), remote="upstream")
    assert git(work, "for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH}") == ""
    store = GitBranchStateStore(work, remote="upstream")
    with store.lock():
        store.write(bump(store, store.read(), "a"), "apply")
    assert git(work, "for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH}") == ""  # nothing kept local
    other = GitBranchStateStore(clone(tmp_path, origin, "other"))
    assert {k[2] for k in other.read().records} == {"a"}


def test_the_cli_pushes_the_state_to_the_remote_chosen_with_reconciler_state_remote(tmp_path: Path) -> None:
    from tests.support.gitops_repo import registry_doc, run, seeded_clone

    origin, work = seeded_clone(tmp_path, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    git(work, "remote", "rename", "origin", "upstream")
    res = run(work, "--state", f"git:{BRANCH}")
    assert res.returncode == 1 and "no remote named 'origin'" in res.stderr, res.stdout + res.stderr
    assert "RECONCILER_STATE_REMOTE=NAME" in res.stderr and "create" not in res.stdout
    assert show(work, f"refs/heads/{BRANCH}") is None and show(origin, f"refs/heads/{BRANCH}") is None
    res = run(work, "--state", f"git:{BRANCH}", env={"RECONCILER_STATE_REMOTE": "upstream"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"name": "h"' in (show(origin, f"refs/heads/{BRANCH}:state.json") or "")
    assert show(work, f"refs/heads/{BRANCH}") is None


def test_checked_out_state_branch_is_refused(tmp_path: Path) -> None:
    # Refused when the store is opened, before any read or write (issue #9.28).
    work = make_work_repo(tmp_path / "work", None)
    git(work, "checkout", "--quiet", "-b", BRANCH)
    with pytest.raises(StateError, match="checked out"):
        GitBranchStateStore(work)
    assert git(work, "rev-parse", "HEAD") == git(work, "rev-parse", "main")


def test_branch_checked_out_in_another_worktree_is_refused(tmp_path: Path) -> None:
    work = make_work_repo(tmp_path / "work", None)
    git(work, "worktree", "add", "--quiet", "-b", "ops", str(tmp_path / "other"))
    with pytest.raises(StateError, match="checked out"):
        GitBranchStateStore(work, branch="ops")


@pytest.mark.parametrize("remote_head", ["trunk", None], ids=["origin-head", "unknown-head"])
def test_default_branch_is_refused_as_state_branch(tmp_path: Path, remote_head: str | None) -> None:
    origin = tmp_path / "origin.git"
    work = make_work_repo(tmp_path / "work", origin)
    git(work, "checkout", "--quiet", "-b", "feature")  # main is no longer checked out
    if remote_head:
        git(work, "push", "--quiet", "origin", "main:trunk")
        git(work, "symbolic-ref", "refs/remotes/origin/HEAD", f"refs/remotes/origin/{remote_head}")
        refused = ["trunk"]
        GitBranchStateStore(work, branch="main")  # main is an ordinary branch here
    else:
        subprocess.run(["git", "symbolic-ref", "--delete", "refs/remotes/origin/HEAD"], cwd=work, check=False)
        refused = ["main", "master"]
    for branch in refused:
        with pytest.raises(StateError, match="default branch"):
            GitBranchStateStore(work, branch=branch)
    tip = git(origin, "rev-parse", "refs/heads/main")
    assert git(origin, "rev-parse", "refs/heads/main") == tip


def test_state_git_main_through_the_cli_exits_1_and_commits_nothing(tmp_path: Path) -> None:
    from tests.support.gitops_repo import registry_doc, run

    origin = tmp_path / "origin.git"
    work = make_work_repo(tmp_path / "work", origin)
    (work / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com"))
    git(work, "commit", "--quiet", "-am", "a real definition")
    git(work, "push", "--quiet", "origin", "main")
    tip = git(origin, "rev-parse", "refs/heads/main")
    res = run(work, "--state", "git:main")
    assert res.returncode == 1, res.stderr
    assert "checked out" in res.stderr and "Traceback" not in res.stderr
    git(work, "checkout", "--quiet", "-b", "feature")
    res = run(work, "--state", "git:main")
    assert res.returncode == 1 and "default branch" in res.stderr, res.stderr
    assert git(origin, "rev-parse", "refs/heads/main") == tip
    assert git(work, "rev-parse", "main") == tip


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not inside a git repository"):
        GitBranchStateStore(tmp_path)


@pytest.mark.parametrize("branch", ["", "-x", "a..b", "a b", "x~1", "refs/heads/"])
def test_bad_branch_names(tmp_path: Path, branch: str) -> None:
    with pytest.raises(StateError, match="branch"):
        GitBranchStateStore(make_work_repo(tmp_path / "work", None), branch=branch)


def test_parse_state_url() -> None:
    assert parse_state_url("git:reconciler-state") == "reconciler-state"
    assert parse_state_url("git:") == "reconciler-state"
    assert parse_state_url(".reconciler/state.json") is None


@pytest.mark.parametrize("preexisting", [False, True], ids=["new-branch", "existing-branch"])
def test_race_between_two_appliers(tmp_path: Path, origin: Path, preexisting: bool) -> None:
    """Two clones read the same revision and both write: one wins, the other gets
    StateConflict, re-reads and re-writes; both records survive and no commit is lost."""
    if preexisting:
        seed = GitBranchStateStore(clone(tmp_path, origin, "seed"))
        seed.write(bump(seed, seed.read(), "seed"), "apply 0000000: 1 created")
    a = GitBranchStateStore(clone(tmp_path, origin, "a"))
    b = GitBranchStateStore(clone(tmp_path, origin, "b"))
    sa, sb = a.read(), b.read()
    assert sa.serial == sb.serial
    a.write(bump(a, sa, "from-a"), "apply aaaaaaa: 1 created")
    with pytest.raises(StateConflict):
        b.write(bump(b, sb, "from-b"), "apply bbbbbbb: 1 created")
    # Re-read, re-plan (here: add our record again to the fresh state), re-write.
    fresh = b.read()
    assert ("tenant", "OciRegistry", "from-a") in fresh.records
    b.write(bump(b, fresh, "from-b"), "apply bbbbbbb: 1 created")

    final = GitBranchStateStore(clone(tmp_path, origin, "check")).read()
    names = {k[2] for k in final.records}
    assert {"from-a", "from-b"} <= names
    assert final.lineage == sa.lineage if preexisting else final.lineage == fresh.lineage
    # One commit per state revision; each revision's serial appears exactly once.
    commits = history(origin)
    serials = [
        json.loads(git(origin, "show", f"{sha}:state.json"))["serial"] for sha, _ in commits
    ]
    assert serials == sorted(set(serials), reverse=True)
    assert [s for _, s in commits][:2] == ["apply bbbbbbb: 1 created", "apply aaaaaaa: 1 created"]
    assert len(commits) == (3 if preexisting else 2)


def test_push_that_loses_a_race_on_the_server_is_the_documented_conflict(tmp_path: Path, origin: Path) -> None:
    """Two pushes meet on the server: the loser's ref update fails under the ref lock
    ("[remote rejected] (failed to update ref)", "cannot lock ref"). Issue #9.35: that is the
    documented conflict message, not git's raw output."""
    a = GitBranchStateStore(clone(tmp_path, origin, "a"))
    a.write(bump(a, a.read(), "first"), "apply 1111111: 1 created")
    b = GitBranchStateStore(clone(tmp_path, origin, "b"))
    sb = b.read()
    a.write(bump(a, a.read(), "from-a"), "apply aaaaaaa: 1 created")
    winner = git(origin, "rev-parse", f"refs/heads/{BRANCH}")
    git(origin, "update-ref", f"refs/heads/{BRANCH}", f"{winner}~1")  # b's push will look like a fast-forward
    hook = origin / "hooks" / "update"
    # The other push lands while ours is being received: the server then fails our ref update.
    hook.write_text(f"#!/bin/sh\ngit update-ref refs/heads/{BRANCH} {winner}\n")
    hook.chmod(0o755)
    with pytest.raises(StateConflict) as info:
        b.write(bump(b, sb, "from-b"), "apply bbbbbbb: 1 created")
    assert str(info.value) == (
        f"state branch moved; re-read and re-plan (git:{BRANCH} on origin changed since it was read; "
        "nothing was overwritten)"
    )
    assert git(origin, "rev-parse", f"refs/heads/{BRANCH}") == winner


def test_push_refused_by_the_server_names_the_reason_only(tmp_path: Path, origin: Path) -> None:
    hook = origin / "hooks" / "update"
    hook.write_text("#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    with pytest.raises(StateError) as info:
        store.write(bump(store, store.read(), "a"), "apply")
    assert not isinstance(info.value, StateConflict)
    assert str(info.value) == f"git:{BRANCH}: cannot push to origin: [remote rejected] (hook declined)"


# -- a remote that stops answering (adversarial pass 6, item 1) ----------------------------


def _stalling(script: Path, pidfile: Path, then: str = "exit 0") -> Path:
    """A hook or upload-pack that records its pid and sleeps far longer than the test runs."""
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nsleep 60\n{then}\n")
    script.chmod(0o755)
    return script


def _gone(pidfile: Path) -> bool:
    """Whether the process that wrote ``pidfile`` (and slept) is dead: killed with git's group."""
    pid = int(pidfile.read_text())
    for _ in range(50):  # bounded: 5 s
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):  # dead, not yet reaped by whoever adopted it
            return True
        time.sleep(0.1)
    return False


def test_a_push_the_remote_never_answers_is_stopped_after_the_timeout(tmp_path: Path, origin: Path,
                                                                      monkeypatch) -> None:
    """A pre-receive hook that sleeps stands in for a stalled network: the push held the run (and
    the mutex the lease's heartbeat needs) for as long as the remote kept silent."""
    monkeypatch.setenv("RECONCILER_GIT_TIMEOUT", "1")
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    state = store.read()
    _stalling(origin / "hooks" / "pre-receive", tmp_path / "hook.pid")
    started = time.monotonic()
    with pytest.raises(StateError) as info:
        store.write(bump(store, state, "a"), "apply")
    assert time.monotonic() - started < 10
    assert not isinstance(info.value, StateConflict)
    assert str(info.value).startswith(
        f"git:{BRANCH}: origin did not answer within 1 s, so git push was stopped (RECONCILER_GIT_TIMEOUT sets the "
        "limit); whether commit ")
    assert "The next run reads what the branch holds and adopts, by name," in str(info.value)
    assert _gone(tmp_path / "hook.pid"), "the hook git started outlived the stopped push"
    assert show(origin, f"refs/heads/{BRANCH}") is None


def test_a_push_that_landed_but_whose_answer_timed_out_does_not_block_the_next_write(
        tmp_path: Path, origin: Path, monkeypatch) -> None:
    """Left alone last round: a post-receive hook (or the network) stalls after the ref moved,
    so the push times out though it landed; the run's next write (its final one, after the
    apply stopped) said "state branch moved" for a branch only this run had moved. It sees the
    branch holds its own commit now and writes on top; a branch someone else moved is still a
    conflict."""
    monkeypatch.setenv("RECONCILER_GIT_TIMEOUT", "1")
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    state = store.read()
    hook = _stalling(origin / "hooks" / "post-receive", tmp_path / "hook.pid")
    with pytest.raises(StateError, match="did not answer within 1 s, so git push was stopped"):
        store.write(bump(store, state, "a"), "apply: a")
    hook.unlink()
    [(landed, subject)] = history(origin)  # the ref moved before the hook stalled
    assert subject == "apply: a"
    store.write(bump(store, state, "b"), "apply: b")  # not "state branch moved"
    assert [subject for _, subject in history(origin)] == ["apply: b", "apply: a"]
    doc = json.loads(show(origin, f"refs/heads/{BRANCH}:state.json") or "{}")
    assert {r["name"] for r in doc["registries"]} == {"a", "b"}

    # the same lost answer, but another run wrote after it: a conflict, nothing overwritten
    _stalling(origin / "hooks" / "post-receive", tmp_path / "hook2.pid")
    with pytest.raises(StateError, match="did not answer within 1 s"):
        store.write(bump(store, state, "c"), "apply: c")
    (origin / "hooks" / "post-receive").unlink()
    other = GitBranchStateStore(clone(tmp_path, origin, "other"))
    other.write(bump(other, other.read(), "d"), "other: d")
    with pytest.raises(StateConflict):
        store.write(bump(store, state, "e"), "apply: e")
    assert history(origin)[0][1] == "other: d"


def test_a_fetch_the_remote_never_answers_is_stopped_after_the_timeout(tmp_path: Path, origin: Path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("RECONCILER_GIT_TIMEOUT", "1")
    work = clone(tmp_path, origin, "work")
    upload = _stalling(tmp_path / "upload-pack", tmp_path / "upload.pid", 'exec git-upload-pack "$@"')
    git(work, "config", "remote.origin.uploadpack", str(upload))
    store = GitBranchStateStore(work)
    started = time.monotonic()
    with pytest.raises(StateError) as info:
        store.read()
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        f"git:{BRANCH}: origin did not answer within 1 s, so git fetch was stopped (RECONCILER_GIT_TIMEOUT sets the "
        "limit); the branch was not read and nothing was written")
    assert _gone(tmp_path / "upload.pid")


def test_a_stalled_remote_ends_the_run_within_reconciler_git_timeout(tmp_path: Path) -> None:
    from tests.support.gitops_repo import registry_doc, run, seeded_clone

    origin, work = seeded_clone(tmp_path, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    _stalling(origin / "hooks" / "pre-receive", tmp_path / "hook.pid")
    started = time.monotonic()
    res = run(work, "--state", f"git:{BRANCH}", env={"RECONCILER_GIT_TIMEOUT": "2"}, timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 1, res.stdout + res.stderr
    assert "origin did not answer within 2 s, so git push was stopped" in res.stderr and "Traceback" not in res.stderr
    assert "create" not in res.stdout  # the lock was not taken: nothing reached the target
    bad = run(work, "--state", f"git:{BRANCH}", "--dry-run", env={"RECONCILER_GIT_TIMEOUT": "0"})
    assert bad.returncode == 1 and "RECONCILER_GIT_TIMEOUT must be a number of seconds from 1 to 3600" in bad.stderr


def test_a_lease_that_expired_behind_a_stalled_push_is_noticed_and_stops_the_run(tmp_path: Path, origin: Path,
                                                                                 monkeypatch) -> None:
    """The push holds the mutex the heartbeat needs; a push that runs past the lease (here the
    timeout, 3 s, is longer than the 2 s lease) lets it expire, and another run may take the lock
    over. The run must notice and record nothing more, not carry on changing the target."""
    from reconciler.state.base import entry_put

    monkeypatch.setenv("RECONCILER_LEASE_SECONDS", "2")
    monkeypatch.setenv("RECONCILER_GIT_TIMEOUT", "3")
    notes: list[str] = []
    store = GitBranchStateStore(clone(tmp_path, origin, "work"), notify=notes.append)
    with store.lock():
        state = store.read()
        hook = _stalling(origin / "hooks" / "pre-receive", tmp_path / "hook.pid")
        with pytest.raises(StateError, match="did not answer within 3 s, so git push was stopped"):
            store.write(bump(store, state, "a"), "apply")
        hook.unlink()  # the remote answers again: too late, the lease expired meanwhile
        record = make_record("b", salt=state.salt)
        with_record(state, record)
        with pytest.raises(StateError) as info:
            store.record(state, entry_put(record), "apply: b")
        assert " before it could be renewed (the remote did not answer in time); another run may hold it now, so " \
               "this run writes nothing more to the branch" in str(info.value)
        with pytest.raises(StateError, match="expired at"):
            store.write(state, "apply")
        assert sum("expired at" in n for n in notes) == 1, notes
    assert lease_on(origin) is None  # released: nobody had taken it over
    assert show(origin, f"refs/heads/{BRANCH}:state.json") is None


# -- what an apply says when its git state cannot be written (adversarial pass 6, item 3) ----


def _three(root: Path) -> None:
    from tests.support.gitops_repo import registry_doc

    (root / "registries.d" / "a.yaml").write_text("---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b", "c")))


def _refuse_pushes(origin: Path) -> None:
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'simulated network failure' >&2\nexit 1\n")
    hook.chmod(0o755)


def _apply_three(tmp_path: Path, origin: Path, monkeypatch, create=None):
    from reconciler.apply import apply_plan
    from reconciler.plan import make_plan
    from reconciler.targets.local import LocalTarget
    from reconciler.validation import load_and_validate

    monkeypatch.setenv("RECONCILER_STATE_COMMIT_SECONDS", "600")  # one commit, at the end
    work = clone(tmp_path, origin, "work")
    _three(work)
    store = GitBranchStateStore(work)

    class Target(LocalTarget):
        def create(self, reg, values):
            uid = super().create(reg, values)
            if create:
                create(reg, store)
            return uid

    target = Target(tmp_path / "tenant.db", base_dir=tmp_path)
    state = store.read()
    plan = make_plan(load_and_validate(work).desired.registries, state, target.list())
    try:
        return apply_plan(plan, target, store, state, {}), target.list()
    finally:
        target.close()


def test_a_final_git_state_write_that_fails_names_what_reached_the_target_unrecorded(tmp_path: Path, origin: Path,
                                                                                      monkeypatch) -> None:
    """The remote refuses the apply's only commit: nothing reached the branch, and all three
    creates reached the target. The error said 'the changes already recorded are kept and the
    next run reads them' and named none of them."""
    _refuse_pushes(origin)
    with pytest.raises(StateError) as info:
        _apply_three(tmp_path, origin, monkeypatch)
    assert str(info.value) == (
        f"git:{BRANCH}: the state could not be written at the end of the apply (git:{BRANCH}: cannot push to origin: "
        "[remote rejected] (pre-receive hook declined)); nothing this apply did is recorded. Reached the target but "
        "NOT recorded: create HelmRegistry/a, create HelmRegistry/b, create HelmRegistry/c. The next plan finds them "
        "again (a created registry is adopted by name)")
    assert show(origin, f"refs/heads/{BRANCH}") is None


def test_a_git_state_write_failing_mid_apply_names_the_whole_uncommitted_window(tmp_path: Path, origin: Path,
                                                                                monkeypatch) -> None:
    """b's record brings a commit, which the remote refuses: a, recorded by the same window, is
    as unrecorded as b, though only b said so."""
    def on_create(reg, store):
        if reg.name == "b":
            _refuse_pushes(origin)
            store._interval = 0  # b's record commits the window

    res, _ = _apply_three(tmp_path, origin, monkeypatch, on_create)
    assert [(r.change.name, r.ok, r.unrecorded, r.skipped) for r in res.results] == [
        ("a", True, True, False), ("b", False, True, False), ("c", False, False, True)]
    assert show(origin, f"refs/heads/{BRANCH}") is None


def test_the_cli_names_what_reached_the_target_when_the_remote_refuses_every_push_after_the_lock(
        tmp_path: Path) -> None:
    from tests.support.gitops_repo import registry_doc, run, seeded_clone

    origin, work = seeded_clone(tmp_path, {"h.yaml": "---\n".join(
        registry_doc("HelmRegistry", n, f"endpoint: https://{n}.example.com") for n in ("a", "b"))})
    count = tmp_path / "pushes"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\nn=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}\n"
                    "[ $n -gt 1 ] && { echo 'simulated network failure' >&2; exit 1; }\nexit 0\n")
    hook.chmod(0o755)
    res = run(work, "--state", f"git:{BRANCH}", env={"RECONCILER_LEASE_SECONDS": "2"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "create HelmRegistry/a: done" in res.stdout and "create HelmRegistry/b: done" in res.stdout
    assert ("nothing this apply did is recorded. Reached the target but NOT recorded: create HelmRegistry/a, create "
            "HelmRegistry/b. The next plan finds them again (a created registry is adopted by name)") in res.stderr
    assert "the next run reads them" not in res.stderr
    hook.unlink()
    rerun = run(work, "--state", f"git:{BRANCH}", "--lock-timeout", "20")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "adopt HelmRegistry/a: done" in rerun.stdout and "adopt HelmRegistry/b: done" in rerun.stdout


# -- the lease (issue #10.1) ---------------------------------------------------------------


def lease_on(origin: Path) -> dict | None:
    text = show(origin, f"refs/heads/{BRANCH}:state.json.lock")
    return json.loads(text) if text else None


@pytest.fixture
def strict_origin(origin: Path) -> Path:
    """The remote refuses every forced update: the lease must never need --force."""
    git(origin, "config", "receive.denyNonFastForwards", "true")
    git(origin, "config", "receive.denyDeletes", "true")
    return origin


def test_lease_is_pushed_names_its_holder_and_is_released(tmp_path: Path, strict_origin: Path, monkeypatch) -> None:
    import os
    import socket

    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    store = GitBranchStateStore(clone(tmp_path, strict_origin, "work"))
    with store.lock():
        lease = lease_on(strict_origin)
        assert lease is not None
        assert lease["holder"] == f"pid {os.getpid()} on {socket.gethostname()}"
        assert lease["taken_at"] < lease["expires_at"]
        state = store.read()
        store.write(bump(store, state, "a"), "apply 1234567: 1 created")
        assert lease_on(strict_origin) == lease  # a state write keeps the lease
    assert lease_on(strict_origin) is None
    assert GitBranchStateStore(clone(tmp_path, strict_origin, "check")).read().serial == 1
    subjects = [s for _, s in history(strict_origin)]
    assert subjects[0].startswith("unlock: ") and subjects[1] == "apply 1234567: 1 created"
    assert subjects[2].startswith("lock: reconcile by pid ")


def test_lease_holder_is_the_github_run_when_there_is_one(tmp_path: Path, origin: Path, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/registries")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    other = GitBranchStateStore(clone(tmp_path, origin, "other"))
    with store.lock():
        assert lease_on(origin)["holder"].startswith("https://github.com/acme/registries/actions/runs/4242 (pid ")
        with pytest.raises(StateLocked) as info:
            with other.lock(timeout=0):
                pass
    message = str(info.value)
    assert "locked by https://github.com/acme/registries/actions/runs/4242" in message
    assert "reconcile unlock " in message and "--lock-timeout" in message


def test_lease_is_released_when_the_run_fails(tmp_path: Path, strict_origin: Path) -> None:
    store = GitBranchStateStore(clone(tmp_path, strict_origin, "work"))
    with pytest.raises(RuntimeError):
        with store.lock():
            raise RuntimeError("apply failed")
    assert lease_on(strict_origin) is None


def test_expired_lease_is_taken_over_with_a_message(tmp_path: Path, origin: Path, monkeypatch) -> None:
    from reconciler.state.lease import Lease

    dead = Lease.new("apply", 60, now=time.time() - 3600)
    commit_doc(origin, BRANCH, {"state.json.lock": json.dumps(dead.to_json())})
    notes: list[str] = []
    store = GitBranchStateStore(clone(tmp_path, origin, "work"), notify=notes.append)
    with store.lock(timeout=0):
        assert lease_on(origin)["id"] != dead.id
    assert any("taking over the expired lock" in n and dead.id in n for n in notes), notes


def test_unlock_releases_only_the_named_lease(tmp_path: Path, strict_origin: Path) -> None:
    from reconciler.state.lease import Lease

    stuck = Lease.new("apply", 3600)
    commit_doc(strict_origin, BRANCH, {"state.json.lock": json.dumps(stuck.to_json())})
    store = GitBranchStateStore(clone(tmp_path, strict_origin, "work"))
    with pytest.raises(StateLocked, match=f"reconcile unlock {stuck.id}"):
        with store.lock(timeout=0):
            pass
    with pytest.raises(StateError, match="not with lock id wrong-id"):
        store.unlock("wrong-id")
    assert lease_on(strict_origin)["id"] == stuck.id
    assert "released the lock of" in store.unlock(stuck.id)
    assert lease_on(strict_origin) is None
    with pytest.raises(StateError, match="is not locked"):
        store.unlock(stuck.id)
    with store.lock(timeout=0):
        pass


def test_reconcile_unlock_cli(tmp_path: Path, origin: Path) -> None:
    from reconciler.state.lease import Lease
    from tests.support.gitops_repo import run

    stuck = Lease.new("apply", 3600)
    commit_doc(origin, BRANCH, {"state.json.lock": json.dumps(stuck.to_json())})
    work = clone(tmp_path, origin, "work")
    res = run(work, "unlock", "nope", "--state", f"git:{BRANCH}")
    assert res.returncode == 1 and "not with lock id nope" in res.stderr and "Traceback" not in res.stderr
    res = run(work, "unlock", stuck.id, "--state", f"git:{BRANCH}")
    assert res.returncode == 0, res.stderr
    assert f"git:{BRANCH}: released the lock of" in res.stdout
    assert lease_on(origin) is None
    res = run(work, "unlock", "x", "--state", str(tmp_path / "s.json"))
    assert res.returncode == 1 and "nothing to release by hand" in res.stderr


def test_a_lease_with_an_integer_of_5000_digits_is_corrupt_not_an_internal_error(tmp_path: Path, origin: Path) -> None:
    """Adversarial pass 3: a 5 KB state.json.lock pushed to the branch (json.loads raises a
    plain ValueError for an integer of more than 4,300 digits) made every apply and unlock
    exit 3, an internal error."""
    from tests.support.gitops_repo import registry_doc, run

    commit_doc(origin, BRANCH, {"state.json.lock": '{"version": ' + "9" * 5000 + "}"})
    work = clone(tmp_path, origin, "work")
    (work / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com"))
    with pytest.raises(StateError, match="the lock record is corrupt"):
        with GitBranchStateStore(work).lock(timeout=0):
            pass
    for args in ((), ("unlock", "x")):
        res = run(work, *args, "--state", f"git:{BRANCH}")
        assert res.returncode == 1 and "the lock record is corrupt" in res.stderr, res.stdout + res.stderr
        assert "internal error" not in res.stderr


HOSTILE = "evil\x1b[2J\x1b[1;1H\x1b]0;pwned\x07\rhonest\nNo changes. 0 to create, 0 to update"


@pytest.mark.parametrize("field, value", [
    ("holder", HOSTILE), ("id", "ID\x1b[2J"), ("id", "$(touch /tmp/owned)"), ("holder", "h" * 5000),
    ("operation", "apply\u202e"),
], ids=["holder-controls", "id-csi", "id-shell", "holder-5000-chars", "operation-bidi"])
@pytest.mark.parametrize("expired", [True, False], ids=["expired", "live"])
def test_a_lease_with_controls_or_an_odd_id_is_corrupt_and_nothing_of_it_is_printed(
        tmp_path: Path, origin: Path, field: str, value: str, expired: bool) -> None:
    """Adversarial pass 3: a lease pushed to the branch printed its holder and id raw in the
    notes and the StateLocked error (ESC, OSC, CR, LF: a cleared screen, a forged 'No
    changes.' line), and the unlock hint named an id click had stripped, or one that runs a
    command when pasted. reconcile never writes such a lease: it is refused as corrupt."""
    from reconciler.state.lease import Lease

    lease = Lease.new("apply", 60, now=time.time() - (3600 if expired else 0)).to_json()
    lease[field] = value
    commit_doc(origin, BRANCH, {"state.json.lock": json.dumps(lease)})
    notes: list[str] = []
    store = GitBranchStateStore(clone(tmp_path, origin, "work"), notify=notes.append)
    with pytest.raises(StateError) as info:
        with store.lock(timeout=0):
            pass
    message = str(info.value)
    assert f"git:{BRANCH}:state.json.lock: the lock record is corrupt ({field!r} " in message
    assert f"reconcile unlock --corrupt --state git:{BRANCH}" in message
    assert value not in message and "pwned" not in message and not any(c in message for c in "\x1b\r\n\x07\u202e")
    assert notes == []
    with pytest.raises(StateError, match="the lock record is corrupt"):
        store.unlock(lease["id"])


def test_our_own_lease_is_never_one_we_refuse(tmp_path: Path, origin: Path, monkeypatch) -> None:
    """The holder comes from the environment and the host name: escaped and bounded when
    written, so the run can renew and release its own lease."""
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/reg\x1b]0;x\x07" + "y" * 600)
    monkeypatch.setenv("GITHUB_RUN_ID", "42\n")
    store = GitBranchStateStore(clone(tmp_path, origin, "work"))
    with store.lock(timeout=0):
        holder = lease_on(origin)["holder"]
        assert holder.startswith("https://github.com/acme/reg\\x1b]0;x\\x07yyy") and len(holder) == 512
    assert lease_on(origin) is None


@pytest.mark.parametrize("planted", [
    "not json", '{"version": 1}', json.dumps({"id": 7, "holder": "h", "operation": "o", "taken_at": "x",
                                              "expires_at": "y"}), "tree",
], ids=["not-json", "missing-fields", "wrong-types", "a-directory"])
def test_unlock_corrupt_removes_a_lock_record_that_cannot_be_read(tmp_path: Path, strict_origin: Path,
                                                                  planted: str) -> None:
    """Adversarial pass 3: reconcile unlock could not remove a corrupt lease ("remove it by
    hand"), so every apply failed until someone committed on the state branch."""
    if planted == "tree":
        blob = git(strict_origin, "hash-object", "-w", "--stdin", input="x")
        sub = git(strict_origin, "mktree", input=f"100644 blob {blob}\tx\n")
        tree = git(strict_origin, "mktree", input=f"040000 tree {sub}\tstate.json.lock\n")
        git(strict_origin, "update-ref", f"refs/heads/{BRANCH}", git(strict_origin, "commit-tree", tree, "-m", "x"))
    else:
        commit_doc(strict_origin, BRANCH, {"state.json.lock": planted, "README": "kept"})
    store = GitBranchStateStore(clone(tmp_path, strict_origin, "work"))
    with pytest.raises(StateError, match="the lock record is corrupt"):
        with store.lock(timeout=0):
            pass
    done = store.unlock_corrupt()
    assert done.startswith("removed the corrupt lock record state.json.lock (")
    assert show(strict_origin, f"refs/heads/{BRANCH}:state.json.lock") is None
    assert planted == "tree" or show(strict_origin, f"refs/heads/{BRANCH}:README") == "kept"
    assert history(strict_origin)[0][1] == "unlock by hand: a corrupt lock record"
    with store.lock(timeout=0):
        pass
    with pytest.raises(StateError, match="is not locked; nothing was changed"):
        store.unlock_corrupt()


def test_unlock_corrupt_leaves_a_readable_lease_and_loses_a_race_safely(tmp_path: Path, strict_origin: Path,
                                                                        monkeypatch) -> None:
    from reconciler.state.lease import Lease

    live = Lease.new("apply", 3600)
    commit_doc(strict_origin, BRANCH, {"state.json.lock": json.dumps(live.to_json())})
    store = GitBranchStateStore(clone(tmp_path, strict_origin, "work"))
    with pytest.raises(StateError, match=f"not corrupt: it is held by .*reconcile unlock {live.id}"):
        store.unlock_corrupt()
    assert lease_on(strict_origin)["id"] == live.id
    # compare-and-swap: a run takes the lock between our look at the corrupt record and our push
    commit_doc(strict_origin, BRANCH, {"state.json.lock": "not json"})
    real = GitBranchStateStore._read_lease
    raced = []

    def racing(self, commit):
        found = real(self, commit) if raced else None
        if not raced:
            raced.append(commit)
            try:
                real(self, commit)
            except ValueError as exc:
                found = exc
            commit_doc(strict_origin, BRANCH, {"state.json.lock": json.dumps(live.to_json())})
            raise found
        return found

    monkeypatch.setattr(GitBranchStateStore, "_read_lease", racing)
    with pytest.raises(StateError, match="not corrupt: it is held by"):
        store.unlock_corrupt()
    assert lease_on(strict_origin)["id"] == live.id  # the lease taken meanwhile stays


def test_reconcile_unlock_corrupt_cli(tmp_path: Path, origin: Path) -> None:
    from tests.support.gitops_repo import registry_doc, run

    commit_doc(origin, BRANCH, {"state.json.lock": "not json"})
    work = clone(tmp_path, origin, "work")
    (work / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com"))
    args = ("--state", f"git:{BRANCH}")
    res = run(work, *args)
    assert res.returncode == 1 and f"remove it: reconcile unlock --corrupt --state git:{BRANCH}" in res.stderr
    for bad in (("unlock",), ("unlock", "x", "--corrupt")):
        res = run(work, *bad, *args)
        assert res.returncode != 0 and "give the lock id" in res.stderr and "Traceback" not in res.stderr
    assert show(origin, f"refs/heads/{BRANCH}:state.json.lock") == "not json"
    res = run(work, "unlock", "--corrupt", *args)
    assert res.returncode == 0 and f"git:{BRANCH}: removed the corrupt lock record" in res.stdout, res.stderr
    res = run(work, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(work, "unlock", "--corrupt", "--state", str(tmp_path / "s.json"))
    assert res.returncode == 1 and "nothing to release by hand" in res.stderr


# -- continuity (issue #9.4) ---------------------------------------------------------------


def test_branch_forced_back_to_an_older_serial_is_refused(tmp_path: Path, origin: Path) -> None:
    work = clone(tmp_path, origin, "work")
    store = GitBranchStateStore(work)
    state = store.read()
    for n in ("a", "b", "c"):
        store.write(bump(store, state, n), f"apply {n}")
    old = git(origin, "rev-parse", f"refs/heads/{BRANCH}~2")
    git(origin, "update-ref", f"refs/heads/{BRANCH}", old)  # git push --force to an older commit
    again = GitBranchStateStore(work)  # a later run in the same clone
    with pytest.raises(StateError, match="older than the serial 3 this clone last saw"):
        again.read()
    with pytest.raises(StateError):
        again.write(State(serial=9), "over it")
    assert git(origin, "rev-parse", f"refs/heads/{BRANCH}") == old
    # A user's own `git fetch` does not make the rollback acceptable.
    git(work, "fetch", "--quiet", "origin")
    with pytest.raises(StateError, match="force-pushed back"):
        GitBranchStateStore(work).read()


def test_replaced_branch_is_refused_while_the_target_holds_what_the_old_state_recorded(
    tmp_path: Path, origin: Path
) -> None:
    work = clone(tmp_path, origin, "work")
    store = GitBranchStateStore(work)
    state = bump(store, store.read(), "precious")
    state.records[("tenant", "OciRegistry", "precious")].protect = True
    store.write(state, "apply: precious")
    # Someone replaces the branch with a fresh state of another lineage at serial 0.
    git(origin, "update-ref", "-d", f"refs/heads/{BRANCH}")
    commit_doc(origin, BRANCH, {"state.json": json.dumps(State().to_json())}, "replaced")
    again = GitBranchStateStore(work)
    fresh = again.read()
    assert fresh.lineage != state.lineage
    with pytest.raises(StateError, match="another lineage") as info:
        again.verify(fresh, {"uid-precious", "uid-unrelated"})
    assert "OciRegistry/precious" in str(info.value)
    with pytest.raises(StateError, match="check it against the target"):
        again.write(bump(again, fresh, "x"), "apply")
    # Deleting the branch is the same loss.
    git(origin, "update-ref", "-d", f"refs/heads/{BRANCH}")
    third = GitBranchStateStore(work)
    with pytest.raises(StateError, match="no state"):
        third.verify(third.read(), {"uid-precious"})
    # When the target holds none of them, the new state is accepted and remembered.
    commit_doc(origin, BRANCH, {"state.json": json.dumps(fresh.to_json())}, "replaced again")
    fourth = GitBranchStateStore(work)
    s4 = fourth.read()
    fourth.verify(s4, {"uid-unrelated"})
    fourth.write(bump(fourth, s4, "new"), "apply: new")
    fifth = GitBranchStateStore(work)
    fifth.verify(fifth.read(), {"uid-precious"})  # remembered: no longer "replaced"


def test_a_live_holder_renews_its_lease_so_it_never_expires_under_it(tmp_path: Path, origin: Path,
                                                                     monkeypatch) -> None:
    """The heartbeat: a run that holds the lock longer than the lease keeps it; only a dead
    holder's lease expires (and is taken over)."""
    lease = 3.0  # renewed every second

    monkeypatch.setenv("RECONCILER_LEASE_SECONDS", str(lease))
    holder = GitBranchStateStore(clone(tmp_path, origin, "holder"))
    other = GitBranchStateStore(clone(tmp_path, origin, "other"))
    with holder.lock(timeout=0):
        first = lease_on(origin)
        time.sleep(lease * 1.5)  # past the first lease's expiry: renewed meanwhile
        with pytest.raises(StateLocked):
            with other.lock(timeout=0):
                pass
        assert lease_on(origin)["id"] == first["id"] and lease_on(origin)["expires_at"] > first["expires_at"]


STATE_KEY = {"RECONCILER_STATE_KEY": "a-long-random-state-key-0123456789abcdef"}


def _plant_record(tmp_path: Path, origin: Path, name: str, uid: str) -> None:
    """What anyone who can push to the state branch could do: add a record, serial + 1."""
    atk = clone(tmp_path, origin, "attacker")
    git(atk, "checkout", "--quiet", BRANCH)
    doc = json.loads((atk / "state.json").read_text())
    planted = dict(doc["registries"][0], name=name, uid=uid, protect=False, origin="adopted")
    doc["registries"].append(planted)
    doc["serial"] += 1
    (atk / "state.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    git(atk, "commit", "--quiet", "-am", "routine")
    git(atk, "push", "--quiet", "origin", BRANCH)


def test_a_record_planted_on_the_state_branch_deletes_nothing(tmp_path: Path) -> None:
    """Adversarial pass: a record pushed to the state branch for a registry reconcile never
    managed made the next apply delete it (up to maxDeletions), unseen by any reviewed plan.
    With RECONCILER_STATE_KEY the state is signed; a record no signed state vouches for is
    never deleted on its word, and a declared one is verified by the next apply."""
    from reconciler.model import Registry
    from reconciler.targets.local import LocalTarget
    from tests.support.gitops_repo import registry_doc, run

    origin = tmp_path / "origin.git"
    work = make_work_repo(tmp_path / "work", origin)
    (work / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "charts", "endpoint: https://c.example.com"))
    git(work, "commit", "--quiet", "-am", "charts")
    git(work, "push", "--quiet", "origin", "main")
    db = tmp_path / "tenant.db"  # the target, shared by every clone as Palette would be
    tenant = LocalTarget(db, base_dir=tmp_path)
    prod = tenant.create(Registry("HelmRegistry", "prod-critical", "tenant",
                                  {"endpoint": "https://prod.example.com", "auth": {"type": "noAuth"}}), {})
    tenant.close()
    args = ("--state", f"git:{BRANCH}", "--local-db", str(db))
    first = run(work, *args, env=STATE_KEY)
    assert first.returncode == 0, first.stdout + first.stderr
    signed = json.loads(git(origin, "show", f"{BRANCH}:state.json"))
    assert signed["mac"].startswith("hmac-sha256:")

    _plant_record(tmp_path, origin, "prod-critical", prod)
    ci = clone(tmp_path, origin, "ci")  # the next apply, on a fresh runner
    plan = run(ci, *args, "--dry-run", "--detailed-exitcode", env=STATE_KEY)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "! HelmRegistry/prod-critical: delete blocked: recorded only by a state that is not signed" in plan.stdout
    assert "has a signature that does not match with RECONCILER_STATE_KEY" in plan.stderr
    applied = run(ci, *args, env=STATE_KEY)
    assert applied.returncode == 1 and "1 change blocked" in applied.stderr, applied.stdout + applied.stderr
    tenant = LocalTarget(db, base_dir=tmp_path)
    assert {o.name for o in tenant.list() if not o.builtin} == {"charts", "prod-critical"}  # nothing deleted
    tenant.close()
    # the apply verified the declared record and signed the state; the planted one stays unverified
    after = json.loads(git(origin, "show", f"{BRANCH}:state.json"))
    assert after["unverified"] == [["tenant", "HelmRegistry", "prod-critical"]] and after["mac"] != signed["mac"]
    again = run(clone(tmp_path, origin, "ci2"), *args, "--dry-run", env=STATE_KEY)
    assert "not signed" not in again.stderr and "delete blocked: recorded only by a state" in again.stdout

    # a registry whose definition is removed is still deleted: its record is signed
    ci3 = clone(tmp_path, origin, "ci3")
    (ci3 / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "other", "endpoint: https://o.example.com"))
    git(ci3, "commit", "--quiet", "-am", "charts goes")
    removed = run(ci3, *args, "--allow-empty", env=STATE_KEY)
    assert "- HelmRegistry/charts" in removed.stdout and "delete HelmRegistry/charts: done" in removed.stdout, removed.stdout
    tenant = LocalTarget(db, base_dir=tmp_path)
    assert {o.name for o in tenant.list() if not o.builtin} == {"other", "prod-critical"}
    tenant.close()


def test_a_state_signed_without_the_key_is_verified_by_the_next_apply(tmp_path: Path) -> None:
    """Upgrading, or setting RECONCILER_STATE_KEY for the first time: each declared record of
    the unsigned state is written again from its definition (one update each, whose spec is
    not taken from the unsigned record) and the state signed; deletes then work as before."""
    from tests.support.gitops_repo import registry_doc, run

    origin = tmp_path / "origin.git"
    work = make_work_repo(tmp_path / "work", origin)
    (work / "registries.d" / "a.yaml").write_text(
        registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com") + "---\n"
        + registry_doc("HelmRegistry", "b", "endpoint: https://b.example.com"))
    git(work, "commit", "--quiet", "-am", "a and b")
    args = ("--state", f"git:{BRANCH}")
    assert run(work, *args).returncode == 0  # no key: unsigned, as before
    assert "mac" not in json.loads(git(origin, "show", f"{BRANCH}:state.json"))
    plan = run(work, *args, "--dry-run", "--detailed-exitcode", env=STATE_KEY)
    assert plan.returncode == 2 and "is not signed with RECONCILER_STATE_KEY" in plan.stderr, plan.stdout + plan.stderr
    assert plan.stdout.count("its record is not signed with RECONCILER_STATE_KEY: written again from the definition") == 2
    signing = run(work, *args, env=STATE_KEY)
    assert signing.returncode == 0 and "update HelmRegistry/b: done" in signing.stdout, signing.stdout + signing.stderr
    doc = json.loads(git(origin, "show", f"{BRANCH}:state.json"))
    assert doc["mac"].startswith("hmac-sha256:") and "unverified" not in doc
    settled = run(work, *args, "--dry-run", "--detailed-exitcode", env=STATE_KEY)
    assert settled.returncode == 0 and "not signed" not in settled.stderr, settled.stdout + settled.stderr
    (work / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "a", "endpoint: https://a.example.com"))
    git(work, "commit", "--quiet", "-am", "b goes")
    gone = run(work, *args, env=STATE_KEY)
    assert gone.returncode == 0 and "delete HelmRegistry/b: done" in gone.stdout, gone.stdout + gone.stderr
    assert "not signed" not in gone.stderr


def _protected_after_a_signed_state(tmp_path: Path) -> tuple[Path, tuple[str, ...], str]:
    """A git-branch state signed with STATE_KEY holding keep and other, then keep applied with
    protect: true: (the origin, the run's arguments, the older signed document, keep unprotected)."""
    from tests.support.gitops_repo import registry_doc, run

    origin = tmp_path / "origin.git"
    work = make_work_repo(tmp_path / "work", origin)
    defs = work / "registries.d" / "a.yaml"
    defs.write_text(registry_doc("HelmRegistry", "keep", "endpoint: https://k.example.com") + "---\n"
                    + registry_doc("HelmRegistry", "other", "endpoint: https://o.example.com"))
    git(work, "commit", "--quiet", "-am", "two")
    args = ("--state", f"git:{BRANCH}", "--local-db", str(tmp_path / "tenant.db"))  # one target for every clone
    assert run(work, *args, env=STATE_KEY).returncode == 0
    old = git(origin, "show", f"{BRANCH}:state.json")  # signed; keep not protected
    defs.write_text(registry_doc("HelmRegistry", "keep", "endpoint: https://k.example.com", "protect: true") + "---\n"
                    + registry_doc("HelmRegistry", "other", "endpoint: https://o.example.com"))
    git(work, "commit", "--quiet", "-am", "protect keep")
    git(work, "push", "--quiet", "origin", "main")
    assert run(work, *args, env=STATE_KEY).returncode == 0
    return origin, args, old


def _plan_without_keep(tmp_path: Path, origin: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """A pull request's dry-run that removes keep's definition, on a fresh clone of ``origin``."""
    from tests.support.gitops_repo import registry_doc, run

    ci = clone(tmp_path, origin, "ci")
    git(ci, "checkout", "--quiet", "-b", "drop-keep")
    (ci / "registries.d" / "a.yaml").write_text(registry_doc("HelmRegistry", "other", "endpoint: https://o.example.com"))
    git(ci, "commit", "--quiet", "-am", "keep goes from the file")
    return run(ci, *args, "--dry-run", env=STATE_KEY)


def test_an_older_signed_state_pushed_back_vouches_for_nothing(tmp_path: Path) -> None:
    """Adversarial pass 2: a signature proves reconcile wrote a document, not that it is the
    latest. An older signed state.json pushed back on top of the branch (undoing a later
    protect: true), or one from another repository with the same key, names another parent
    commit than the one it sits on: its records are unverified, so none is deleted on its word."""
    from tests.support.gitops_repo import run

    origin, args, old = _protected_after_a_signed_state(tmp_path)
    # the attacker pushes the older signed document back, as an ordinary commit on top
    atk = clone(tmp_path, origin, "attacker")
    git(atk, "checkout", "--quiet", BRANCH)
    (atk / "state.json").write_text(old + "\n")
    git(atk, "commit", "--quiet", "-am", "routine")
    git(atk, "push", "--quiet", "origin", BRANCH)
    plan = _plan_without_keep(tmp_path, origin, args)
    assert "was signed on top of another commit than the one it is on" in plan.stderr, plan.stdout + plan.stderr
    assert "! HelmRegistry/keep: delete blocked: recorded only by a state that is not signed" in plan.stdout, plan.stdout
    # untouched, the same branch verifies: the signed tip sits on the commit it names
    honest = run(clone(tmp_path, origin, "honest"), *args, "--dry-run", env=STATE_KEY)
    assert "signed on top of another commit" in honest.stderr  # the attacker's commit is still the tip
    git(origin, "update-ref", f"refs/heads/{BRANCH}", f"refs/heads/{BRANCH}~1")  # the owner drops it
    fixed = run(clone(tmp_path, origin, "fixed"), *args, "--dry-run", "--detailed-exitcode", env=STATE_KEY)
    assert fixed.returncode == 0 and "not signed" not in fixed.stderr and "another commit" not in fixed.stderr, \
        fixed.stdout + fixed.stderr


def test_a_state_blob_over_the_bound_is_refused_unread(tmp_path: Path, origin: Path, monkeypatch) -> None:
    """A blob pushed to the branch is read only up to the file store's bound (256 MiB here,
    lowered for the test): a huge one is refused by its size, never read into memory."""
    import reconciler.state.git as git_store

    work = clone(tmp_path, origin, "w")
    commit_doc(origin, BRANCH, {"state.json": json.dumps(State().to_json()) + " " * 4096})
    monkeypatch.setattr(git_store, "MAX_STATE_BYTES", 1024)
    store = GitBranchStateStore(work, branch=BRANCH)
    with pytest.raises(StateError, match=r"state\.json is [0-9,]+ bytes, more than the 1,024 a state may hold"):
        store.read()
    monkeypatch.setattr(git_store, "MAX_STATE_BYTES", 1 << 20)
    assert store.read().records == {}


def test_git_never_waits_for_credentials_typed_at_a_terminal(tmp_path: Path, origin: Path) -> None:
    """A CI run whose remote asks for credentials must fail at once, not wait on a prompt: the
    git commands that talk to the remote run with GIT_TERMINAL_PROMPT=0 and ssh in batch mode.
    The remote here is git's ext:: transport, a command that runs with git's environment."""
    work = clone(tmp_path, origin, "work")
    store = GitBranchStateStore(work)
    state = store.read()
    seen = tmp_path / "env.txt"
    helper = tmp_path / "remote.sh"
    helper.write_text(f'#!/bin/sh\necho "prompt=$GIT_TERMINAL_PROMPT ssh=$GIT_SSH_COMMAND" > {seen}\nexit 1\n')
    helper.chmod(0o755)
    git(work, "config", "protocol.ext.allow", "always")
    git(work, "remote", "set-url", "origin", f"ext::{helper}")
    with pytest.raises(StateError):
        store.write(bump(store, state, "a"), "apply")
    said = seen.read_text()
    assert "prompt=0" in said and "BatchMode=yes" in said, said


def test_an_older_signed_state_brought_back_by_a_merge_commit_vouches_for_nothing(tmp_path: Path) -> None:
    """Adversarial pass 8: the check that a signed document sits on the commit it names followed
    first parents only. A merge commit whose first parent is the old document's own parent and
    whose second is the tip (a plain fast-forward push, no force) holding that older signed
    state.json passed as written there: protect: true was undone, signed, and the delete went
    through. reconcile never writes a merge commit: a document brought by one vouches for nothing."""
    origin, args, old = _protected_after_a_signed_state(tmp_path)
    atk = clone(tmp_path, origin, "attacker")
    git(atk, "checkout", "--quiet", BRANCH)
    (atk / "state.json").write_text(old + "\n")
    git(atk, "add", "state.json")
    tree = git(atk, "write-tree")
    merge = git(atk, "commit-tree", tree, "-p", json.loads(old)["parent_commit"], "-p", "HEAD", "-m", "routine")
    git(atk, "push", "--quiet", "origin", f"{merge}:refs/heads/{BRANCH}")  # a fast-forward: no force
    plan = _plan_without_keep(tmp_path, origin, args)
    assert "- HelmRegistry/keep" not in plan.stdout, plan.stdout + plan.stderr
    assert "! HelmRegistry/keep: delete blocked: recorded only by a state that is not signed" in plan.stdout, plan.stdout


def test_a_bad_commit_interval_is_refused_before_the_branch_is_touched(tmp_path: Path) -> None:
    """Adversarial pass 8: RECONCILER_STATE_COMMIT_SECONDS was read only when the apply began
    recording, after the lease had been pushed (creating the state branch on the remote) and the
    target read; a bad value, like every bad input, now changes nothing: no branch, no push."""
    from tests.support.gitops_repo import registry_doc, run, seeded_clone

    origin, work = seeded_clone(tmp_path, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    res = run(work, "--state", f"git:{BRANCH}", env={"RECONCILER_STATE_COMMIT_SECONDS": "nan"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "RECONCILER_STATE_COMMIT_SECONDS must be a number of seconds from 0 to 600" in res.stderr, res.stderr
    assert git(origin, "branch", "--list", BRANCH) == "", "the bad input pushed the state branch"
    assert not (work / ".reconciler" / "local.db").exists()


@pytest.mark.parametrize("raw", ["1_0", "\u0665", "1e3", "inf", "0x10", "+5", "5 s", "\uff15"])
def test_a_number_of_seconds_is_plain_ascii_decimals(raw: str) -> None:
    """Left alone by the bad-input audit: float() takes RECONCILER_GIT_TIMEOUT=1_0 as ten seconds
    and Arabic-Indic or full-width digits as numbers; a value a reviewer of the workflow file
    cannot read at a glance is refused, as other bad values are, naming the range."""
    from reconciler.state.lease import env_seconds

    with pytest.raises(StateError, match="RECONCILER_GIT_TIMEOUT must be a number of seconds from 1 to 3600"):
        env_seconds("RECONCILER_GIT_TIMEOUT", 120.0, 1.0, 3600.0, {"RECONCILER_GIT_TIMEOUT": raw})
    for good, want in (("10", 10.0), (" 2.5 ", 2.5), (".5", 0.5), ("", 120.0)):
        assert env_seconds("X", 120.0, 0.0, 3600.0, {"X": good}) == want
