"""Apply with ``--state git:BRANCH`` commits the state once per apply and at most every
``RECONCILER_STATE_COMMIT_SECONDS`` (default 10) during it (issue #11.1). A runner killed
between two commits loses at most that window of records; its lease expires, and the rerun
recovers the lost records by adoption: nothing is created twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from reconciler.state.git import GitBranchStateStore
from tests.support.gitops_repo import git, managed_on_local, registry_doc, run, seeded_clone

N = 30
BRANCH = "reconciler-state"
STATE = ["--state", f"git:{BRANCH}"]


def defs() -> dict[str, str]:
    return {"all.yaml": "---\n".join(registry_doc("HelmRegistry", f"h{i:02}", f"endpoint: https://h{i}.example.com")
                                     for i in range(N))}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return seeded_clone(tmp_path, defs())[1]


def recorded(tmp_path: Path, name: str) -> dict[str, str]:
    """The state on the branch as a fresh clone reads it."""
    check = tmp_path / name
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(check))
    return {r.name: r.uid for r in GitBranchStateStore(check).read().records.values()}


def subjects(tmp_path: Path) -> list[str]:
    out = git(tmp_path / "origin.git", "log", "--format=%s", f"refs/heads/{BRANCH}")
    return out.splitlines()


def test_one_state_commit_per_apply(tmp_path: Path, work: Path) -> None:
    res = run(work, *STATE)
    assert res.returncode == 0, res.stderr
    log = subjects(tmp_path)
    assert [s.split(":")[0] for s in log] == ["unlock", "apply " + git(work, "rev-parse", "HEAD")[:12], "lock"], log
    assert f"{N} change(s) recorded" in log[1]
    assert len(recorded(tmp_path, "check")) == N


@pytest.mark.parametrize("interval", ["10", "0"], ids=["default-window", "commit-every-change"])
def test_runner_killed_between_commits_loses_at_most_the_window(tmp_path: Path, work: Path, interval: str) -> None:
    env = {"RECONCILER_STATE_COMMIT_SECONDS": interval, "RECONCILER_LEASE_SECONDS": "2"}
    # 3 checkpoints per create (before/after target, after state) plus one per state commit.
    res = run(work, *STATE, env=dict(env, RECONCILER_CRASH_AT="40"))
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    landed = managed_on_local(work)
    assert 0 < len(landed) < N
    state = recorded(tmp_path, "after-kill")
    assert all(landed.get(name) == uid for name, uid in state.items()), "the state records what is not there"
    lost = sorted(set(landed) - set(state))
    if interval == "0":
        assert len(lost) <= 1, lost  # only the change in flight
    else:
        assert lost, "an apply shorter than the window commits no state before the end"
    # The killed runner's lease is still on the branch until it expires; the rerun takes it over.
    rerun = run(work, *STATE, "--lock-timeout", "30", env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "taking over the expired lock" in rerun.stderr
    for name in lost:
        assert f"adopt HelmRegistry/{name}" in rerun.stdout, rerun.stdout
    final = managed_on_local(work)
    assert len(final) == N and all(final[n] == uid for n, uid in landed.items())  # nothing created twice
    assert recorded(tmp_path, "final") == final
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(fresh))
    (fresh / ".reconciler").mkdir()
    (fresh / ".reconciler/local.db").write_bytes((work / ".reconciler/local.db").read_bytes())
    plan = run(fresh, *STATE, "--dry-run", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
