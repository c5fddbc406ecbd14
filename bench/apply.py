"""Benchmark: apply growth and state-store cost on the local target, and 200 creates to the
Palette API emulator through the apply engine.

Growth (issue #11.1): a fresh ``reconcile`` apply through the CLI on the local target, 200 vs
2,000 registries (bar: 2,000 at most 12x the time of 200, i.e. near-linear), and 300 creates
with ``--state git:BRANCH`` (a local bare remote) vs the file state (bar: at most 3x). Each
is the median wall time of ``--repeat`` runs, each on a fresh repository.

Palette:
The emulator answers after 100 ms and allows 50 requests/s (429 beyond); the target is set to
50 requests/s. The ideal wall time is (requests / 50) s, so the printed ratio is
wall / (requests / 50): the concurrent apply should stay <= 1.2 with zero 429s. A serial run
(max_concurrency 1) in the same process is the baseline.

Run: python bench/apply.py [--only growth|git|palette] [--repeat 3] [--count 200] [--latency 0.1] [--rate 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import compiled_bytecode  # noqa: E402

from reconciler.apply import apply_plan  # noqa: E402
from reconciler.model import Registry  # noqa: E402
from reconciler.plan import make_plan  # noqa: E402
from reconciler.state.base import State  # noqa: E402
from reconciler.state.file import FileStateStore  # noqa: E402
from reconciler.targets.palette import PaletteTarget  # noqa: E402
from tests.support.palette_emulator import API_KEY, PaletteEmulator  # noqa: E402


def desired(count: int) -> list[Registry]:
    regs = []
    for i in range(count):
        name = f"bench-{i:03}"
        if i % 3 == 0:
            spec = {"endpoint": f"oci{i}.example.com", "provider": "helm", "baseContentPath": "charts",
                    "sync": True, "auth": {"type": "basic", "username": "bot", "password": {"fromEnv": "PW"}},
                    "tls": {"insecureSkipVerify": False}, "fips": False}
            regs.append(Registry("OciRegistry", name, "tenant", spec))
        elif i % 3 == 1:
            spec = {"endpoint": f"https://charts{i}.example.com", "sync": True, "auth": {"type": "noAuth"},
                    "tls": {"insecureSkipVerify": False}, "fips": False}
            regs.append(Registry("HelmRegistry", name, "tenant", spec))
        else:
            spec = {"endpoint": f"https://packs{i}.example.com", "auth": {"type": "token", "token": {"fromEnv": "T"}},
                    "tls": {"insecureSkipVerify": False}, "fips": False}
            regs.append(Registry("PackRegistry", name, "tenant", spec))
    return regs


def run(label: str, concurrency: int, args: argparse.Namespace) -> dict[str, float]:
    with PaletteEmulator(rate=args.rate, burst=args.server_burst) as emu, tempfile.TemporaryDirectory() as tmp:
        emu.faults.latency = args.latency
        target = PaletteTarget(emu.url, API_KEY, rate=args.rate, burst=5, max_concurrency=concurrency)
        try:
            regs = desired(args.count)
            state = State()
            plan = make_plan(regs, state, target.list())
            secrets = {r.key: {"auth.password": "bench-password", "auth.token": "bench-token"} for r in regs}
            store = FileStateStore(Path(tmp) / "state.json")
            before = len(emu.requests)
            start = time.monotonic()
            # keyed state hashes, as the workflows run (RECONCILER_STATE_KEY); without a key each
            # recorded secret costs one scrypt (~50 ms of CPU), which this benchmark does not measure
            result = apply_plan(plan, target, store, state, secrets, state_key="bench-state-key")
            wall = time.monotonic() - start
            requests = len(emu.requests) - before
        finally:
            target.close()
        failed = len(result.failed)
        ideal = requests / args.rate
        ratio = wall / ideal if ideal else float("nan")
        print(f"{label:<22} concurrency={concurrency:<2} changes={len(plan.actionable):<4} requests={requests:<4} "
              f"wall={wall:6.2f}s ideal={ideal:5.2f}s ratio={ratio:5.2f} 429s={emu.count_429} "
              f"failed={failed} registries={emu.store.count()}")
        return {"wall": wall, "ratio": ratio, "429": emu.count_429, "failed": failed}


ROOT = Path(__file__).resolve().parent.parent


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo(tmp: Path, count: int, origin: bool) -> Path:
    """A committed repository of ``count`` varied definitions (and a bare origin if asked)."""
    work = tmp / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / ".gitignore").write_text(".reconciler/\n")
    defs = work / "registries.d"
    for i in range(count):
        folder = defs / f"team-{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            spec = (f"  endpoint: oci{i}.example.com\n  provider: helm\n  baseContentPath: charts\n  sync: true\n"
                    f"  auth: {{type: basic, username: bot{i}, password: {{fromEnv: PW}}}}\n")
            kind = "OciRegistry"
        elif i % 3 == 1:
            spec = f"  endpoint: https://charts{i}.example.com\n  sync: {'true' if i % 2 else 'false'}\n"
            kind = "HelmRegistry"
        else:
            spec = f"  endpoint: https://packs{i}.example.com\n"
            kind = "PackRegistry"
        (folder / f"r{i:05}.yaml").write_text(
            f"apiVersion: reconciler/v1\nkind: {kind}\nmetadata:\n  name: r{i:05}\nspec:\n{spec}")
    _git(work, "add", "-A")
    _git(work, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "defs")
    if origin:
        _git(tmp, "init", "-q", "--bare", "-b", "main", str(tmp / "origin.git"))
        _git(work, "remote", "add", "origin", str(tmp / "origin.git"))
        _git(work, "push", "-q", "origin", "main")
    return work


def _apply_once(count: int, state: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        work = _repo(Path(tmp), count, origin=bool(state))
        env = dict(os.environ, PW="bench-password", PYTHONPATH=str(ROOT), RECONCILER_CACHE_DIR=str(Path(tmp) / "cache"),
                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x")  # a cold validation cache each run
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "reconciler.cli", *state, "--quiet"], cwd=work, env=env,
                             capture_output=True, text=True)
        wall = time.monotonic() - start
        if res.returncode != 0:
            raise SystemExit(f"apply of {count} failed: {res.stderr[-2000:]}")
        return wall


def _median(count: int, state: list[str], repeat: int, label: str) -> float:
    walls = [_apply_once(count, state) for _ in range(repeat)]
    med = statistics.median(walls)
    print(f"{label:<34} median {med:6.2f}s  runs " + " ".join(f"{w:.2f}" for w in walls))
    return med


def growth(repeat: int) -> bool:
    print("fresh apply on the local target through the CLI (load, validate, plan, apply, state):")
    small = _median(200, [], repeat, "200 registries, file state")
    large = _median(2000, [], repeat, "2,000 registries, file state")
    ratio = large / small
    ok = ratio <= 12
    print(f"growth 2,000 / 200: {ratio:.2f}x for 10x the work (bar <= 12x): {'met' if ok else 'NOT met'}")
    return ok


def git_vs_file(repeat: int) -> bool:
    print("300 creates on the local target, state in a git branch (local bare remote) vs a file:")
    file_wall = _median(300, [], repeat, "300 creates, file state")
    git_wall = _median(300, ["--state", "git:reconciler-state"], repeat, "300 creates, git:reconciler-state")
    ratio = git_wall / file_wall
    ok = ratio <= 3
    print(f"git-branch / file: {ratio:.2f}x (bar <= 3x): {'met' if ok else 'NOT met'}")
    return ok


def palette(args: argparse.Namespace) -> bool:
    print(f"emulator: latency {args.latency * 1000:.0f} ms, limit {args.rate:g} req/s; "
          f"{args.count} creates through reconciler.apply.apply_plan")
    conc = run("concurrent apply", args.concurrency, args)
    if not args.skip_serial:
        serial = run("serial baseline", 1, args)
        print(f"speed-up vs serial: {serial['wall'] / conc['wall']:.2f}x")
    ok = conc["ratio"] <= 1.2 and conc["429"] == 0 and conc["failed"] == 0
    print("target (ratio <= 1.2, zero 429s):", "met" if ok else "NOT met")
    return bool(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["growth", "git", "palette"], default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--server-burst", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=PaletteTarget.max_concurrency)
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args()
    compiled_bytecode()
    ok = True
    if args.only in (None, "growth"):
        ok = growth(args.repeat) and ok
    if args.only in (None, "git"):
        ok = git_vs_file(args.repeat) and ok
    if args.only in (None, "palette"):
        ok = palette(args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
