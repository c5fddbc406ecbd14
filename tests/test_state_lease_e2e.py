"""The state branch as a lock, end to end (issue #10.1 bar): two applies started together from
two clones of one bare repository, against the Palette emulator (409 on duplicate names), with
``--state git:BRANCH --lock-timeout 60``. The second waits for the first's lease, then re-reads
and re-plans: every registry is created exactly once and no create of an existing name is sent."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

from tests.support.gitops_repo import (
    commit_all,
    git,
    init_repo,
    managed_on_local,
    reconcile_cmd,
    registry_doc,
    run,
    seeded_clone,
    write_defs,
)
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

N = 12
BRANCH = "reconciler-state"


def defs() -> dict[str, str]:
    docs = [registry_doc("HelmRegistry", f"helm-{i}", f"endpoint: https://charts-{i}.example.com")
            for i in range(N)]
    return {"all.yaml": "---\n".join(docs)}


def test_two_concurrent_applies_from_two_clones_create_each_registry_once(
    tmp_path: Path, palette_emulator_factory  # noqa: F811
) -> None:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(origin, "config", "receive.denyNonFastForwards", "true")  # nothing may need --force
    seed = tmp_path / "seed"
    init_repo(seed)
    write_defs(seed, defs())
    commit_all(seed, "registries")
    git(seed, "push", "-q", str(origin), "main")
    clones = []
    for name in ("runner-a", "runner-b", "fresh"):
        git(tmp_path, "clone", "-q", str(origin), str(tmp_path / name))
        clones.append(tmp_path / name)

    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    emu.faults.latency = 0.05  # long enough for the two runs to overlap
    args = ["--target", "palette", "--endpoint", emu.url, "--state", f"git:{BRANCH}", "--lock-timeout", "60"]
    env = dict(os.environ, PALETTE_API_KEY=API_KEY)
    procs = [subprocess.Popen([*reconcile_cmd(), *args], cwd=c, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for c in clones[:2]]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    # One of them waited for the other's lease, then planned nothing.
    assert sum("is locked by" in err and "waiting up to" in err for _, err in outs) == 1, outs

    posts = [c for c in emu.calls("POST") if c["path"].endswith("/registries/helm")]
    names = Counter(c["body"]["metadata"]["name"] for c in posts)
    assert names == Counter({f"helm-{i}": 1 for i in range(N)}), names  # no create of an existing name
    assert all(c["status"] < 400 for c in posts), [c["status"] for c in posts]
    with emu.store.lock:
        managed = Counter(r.name for r in emu.store.records.values() if not r.builtin)
    assert managed == Counter({f"helm-{i}": 1 for i in range(N)})

    plan = run(clones[2], *args, "--dry-run", "--detailed-exitcode", env={"PALETTE_API_KEY": API_KEY})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert git(origin, "ls-tree", "--name-only", f"refs/heads/{BRANCH}") == "state.json"  # lease released


def _local_clone(tmp_path: Path) -> tuple[Path, Path]:
    return seeded_clone(tmp_path, defs())


def test_second_apply_fails_at_once_naming_the_holder_and_changes_nothing(tmp_path: Path) -> None:
    from reconciler.state.git import GitBranchStateStore

    origin, work = _local_clone(tmp_path)
    git(tmp_path, "clone", "-q", str(origin), str(tmp_path / "other"))
    holder = GitBranchStateStore(tmp_path / "other", branch=BRANCH)
    with holder.lock():
        res = run(work, "--state", f"git:{BRANCH}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"state git:{BRANCH} is locked by pid {os.getpid()}" in res.stderr
    assert "reconcile unlock " in res.stderr and "Traceback" not in res.stderr
    assert not (work / ".reconciler" / "local.db").exists()  # the target was never opened


def test_apply_refuses_a_replaced_state_branch_while_the_target_holds_its_registries(tmp_path: Path) -> None:
    """Issue #9.4 end to end: the state branch is replaced by a fresh lineage (serial 0):
    the next apply from the clone that applied before refuses, naming what would be lost."""
    import json

    from reconciler.state.base import State

    origin, work = _local_clone(tmp_path)
    assert run(work, "--state", f"git:{BRANCH}").returncode == 0
    before = managed_on_local(work)
    assert len(before) == N
    # Someone force-pushes a fresh state of another lineage over the branch.
    other = tmp_path / "vandal"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    git(other, "checkout", "-q", "--orphan", "fresh")
    git(other, "rm", "-rfq", ".")
    (other / "state.json").write_text(json.dumps(State().to_json()))
    git(other, "add", "state.json")
    git(other, "-c", "user.name=v", "-c", "user.email=v@x", "commit", "-qm", "fresh state")
    git(other, "push", "-qf", "origin", f"fresh:{BRANCH}")
    for args in (["--dry-run"], []):
        res = run(work, "--state", f"git:{BRANCH}", *args)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "another lineage" in res.stderr and "HelmRegistry/helm-0" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert managed_on_local(work) == before  # nothing created again, nothing deleted
