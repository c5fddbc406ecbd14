"""Benchmark: `reconcile --dry-run` on 5,000 varied registries with a recorded state of 5,000
and 50 differences, against the floor: a plain load (libyaml C loader, ``yaml.CSafeLoader``)
of the same files, all run as fresh processes, interleaved in the same run.

The repository is a git work tree at a commit, as a pull request's checkout is.
Cold: a fresh, empty ``RECONCILER_CACHE_DIR`` per run (a pull request's fresh checkout);
warm: the cache of the previous run. The corpus is ``bench/corpus.py`` (kinds, optional
fields, key order, styles, comments, several documents per file, nested folders).
Bars: cold <= 1.3x the floor (aim 1.1).

    python bench/plan.py [--n 5000] [--diff 50] [--repeat 9] [--instructions]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.model import fingerprint, target_spec  # noqa: E402
from reconciler.state.base import Record, State  # noqa: E402
from reconciler.state.file import FileStateStore  # noqa: E402
from reconciler.targets.local import LocalTarget  # noqa: E402
from reconciler.validation import load_and_validate  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from corpus import compiled_bytecode, generate  # noqa: E402

FLOOR = """
import sys, pathlib, yaml
L = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
n = 0
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*")):
    if p.suffix in (".yaml", ".yml"):
        n += sum(1 for d in yaml.load_all(p.read_bytes(), Loader=L) if d is not None)
print(n)
"""


CPU: dict[int, float] = {}  # id(list of wall times) -> CPU seconds of the same runs


def timed(cmd: list[str], cwd: Path, repeat: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; CPU (user + system, from the children's
    rusage) is far less sensitive than wall time to the other tenants of a shared machine."""
    walls, cpus = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if res.returncode not in (0, 2):
            raise SystemExit(f"{cmd} failed: {res.stderr[-2000:]}")
    return statistics.median(walls), statistics.median(cpus)


def instructions(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Instructions one run executes, counted by callgrind (``valgrind`` must be installed)."""
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", *cmd], cwd=cwd,
                             capture_output=True, text=True, env={**os.environ, **env})
    counts = [line for line in res.stderr.splitlines() if "Collected :" in line]
    if not counts:
        raise SystemExit(f"valgrind gave no count: {res.stderr[-1000:]}")
    return int(counts[-1].rsplit(":", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--diff", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--keep", action="store_true", help="keep the generated repository (for profiling)")
    ap.add_argument("--instructions", action="store_true",
                    help="also count instructions (valgrind --tool=callgrind, about 2 minutes): the floor and one "
                         "cold dry-run; unlike CPU time, the count does not move with the machine's other tenants")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    caches = Path(tempfile.mkdtemp(prefix="bench-plan-caches-"))  # outside the work tree, as ~/.cache is
    try:
        defs = tmp / "registries.d"
        generate(tmp, a.n)
        os.environ["RECONCILER_CACHE_DIR"] = str(tmp / "setup-cache")
        # recorded state and target built directly (5,000 applies would measure apply, not plan)
        result = load_and_validate(tmp)
        assert not result.errors, result.errors[:3]
        target = LocalTarget(tmp / ".reconciler/local.db", base_dir=tmp)
        state = State(target=target.identity)
        for reg in result.desired.registries:
            uid = target.create(reg, {})
            state.records[reg.key] = Record(uid=uid, kind=reg.kind, name=reg.name, scope=reg.scope,
                                            fingerprint=fingerprint(reg.spec), spec=target_spec(reg.spec),
                                            protect=reg.protect)
        target.close()
        FileStateStore(tmp / ".reconciler/state.json").write(state)
        step = max(1, a.n // a.diff)
        generate(tmp, a.n, changed=set(range(0, a.n, step)[: a.diff]))
        del os.environ["RECONCILER_CACHE_DIR"]
        # a pull request's checkout: a git work tree at the commit (reconcile asks git for the
        # commit and whether registries.d/ is dirty; the floor does not)
        (tmp / ".gitignore").write_text(".reconciler/\n")
        for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=bench", "-c", "user.email=bench@example.com",
                                                     "commit", "-qm", "definitions"]):
            subprocess.run(["git", *git], cwd=tmp, check=True, capture_output=True)

        cmd = [sys.executable, "-m", "reconciler.cli"]
        env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        compiled_bytecode()
        warm_env = {**env, "RECONCILER_CACHE_DIR": str(caches / "warm")}
        for _ in range(2):  # also fill the warm cache (values are stored on a file's second sight)
            dry = subprocess.run([*cmd, "--dry-run", "--detailed-exitcode"], cwd=tmp, capture_output=True,
                                 text=True, env={**os.environ, **warm_env})
        summary = [line for line in dry.stdout.splitlines() if line.startswith("Plan:")]
        # interleaved runs, so that load on the machine hits every side alike
        floors, warm, cold = [], [], []  # (wall, CPU) per run
        for r in range(a.repeat):
            sides = [
                (floors, [sys.executable, "-c", FLOOR, str(defs)], env),
                (cold, [*cmd, "--dry-run"], {**env, "RECONCILER_CACHE_DIR": str(caches / f"cold-{r}")}),
                (warm, [*cmd, "--dry-run"], warm_env),
            ]
            k = r % len(sides)
            for out, c, e in sides[k:] + sides[:k]:
                out.append(timed(c, tmp, 1, env=e))

        def med(xs: list[tuple[float, float]], i: int) -> float:
            return statistics.median(x[i] for x in xs)

        def line(label: str, xs: list[tuple[float, float]], bar: bool) -> None:
            out = f"{label:52s}"
            for i, what in ((0, "wall"), (1, "CPU")):
                v, f = med(xs, i), med(floors, i)
                lo, hi = min(x[i] for x in xs) / max(x[i] for x in floors), max(x[i] for x in xs) / min(x[i] for x in floors)
                out += f"  {what} {v:.2f} s ratio {v / f:.2f} [{lo:.2f}-{hi:.2f}]"
            # the lower bound (timeit's advice: the fastest run is the one the neighbours
            # disturbed least; noise only adds time), each side's fastest round of the same run
            out += f"  fastest/fastest CPU {min(x[1] for x in xs) / min(x[1] for x in floors):.2f}"
            # each round's own ratio (the two runs of a round are next to each other in time,
            # so a slow spell of the machine hits both): median and quartiles over the rounds
            pairs = sorted(x[1] / f[1] for x, f in zip(xs, floors))
            q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
            out += f"  per-round CPU ratio median {statistics.median(pairs):.2f} [quartiles {q[0]:.2f}-{q[2]:.2f}]"
            if bar:
                r = med(xs, 1) / med(floors, 1)
                out += f"  (bar <= 1.3 on CPU, aim 1.1): {'ok' if r <= 1.3 else 'OVER'}"
            print(out)

        print(f"registries: {a.n} (varied corpus), differences: {a.diff}; "
              f"{summary[0] if summary else dry.stdout[-300:]}; {a.repeat} interleaved rounds, medians [ranges]")
        print(f"{'plain load (floor, CSafeLoader)':52s}  wall {med(floors, 0):.2f} s"
              f"{'':26s}CPU {med(floors, 1):.2f} s")
        line("reconcile --dry-run cold (empty RECONCILER_CACHE_DIR)", cold, True)
        line("reconcile --dry-run warm (validation cache)", warm, False)
        if a.instructions:
            floor_ir = instructions([sys.executable, "-c", FLOOR, str(defs)], tmp, env)
            cold_ir = instructions([*cmd, "--dry-run"], tmp, {**env, "RECONCILER_CACHE_DIR": str(caches / "cold-ir")})
            print(f"{'instructions (callgrind): floor':52s}  {floor_ir / 1e9:.2f} G; cold --dry-run "
                  f"{cold_ir / 1e9:.2f} G, ratio {cold_ir / floor_ir:.2f} (not the bar: CPU time also pays for "
                  "memory, page faults and cache misses)")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(caches, ignore_errors=True)


if __name__ == "__main__":
    main()
