from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import StateConflict, StateError
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
