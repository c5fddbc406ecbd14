"""Benchmark: `reconcile --dry-run` on 5,000 varied registries with a recorded state of 5,000
and 50 differences, against the floor: a plain load (libyaml C loader, ``yaml.CSafeLoader``)
of the same files, all run as fresh processes, interleaved in the same run.

Cold: a fresh, empty ``RECONCILER_CACHE_DIR`` per run (a pull request's fresh checkout);
warm: the cache of the previous run. The corpus is ``bench/corpus.py`` (kinds, optional
fields, key order, styles, comments, several documents per file, nested folders).
Bars: cold <= 1.3x the floor (aim 1.1).

    python bench/plan.py [--n 5000] [--diff 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
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
from corpus import generate  # noqa: E402

FLOOR = """
import sys, pathlib, yaml
L = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
n = 0
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*")):
    if p.suffix in (".yaml", ".yml"):
        n += sum(1 for d in yaml.load_all(p.read_bytes(), Loader=L) if d is not None)
print(n)
"""


def timed(cmd: list[str], cwd: Path, repeat: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t0)
        if res.returncode not in (0, 2):
            raise SystemExit(f"{cmd} failed: {res.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--diff", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated repository (for profiling)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-plan-"))
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

        cmd = [sys.executable, "-m", "reconciler.cli"]
        env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        warm_env = {**env, "RECONCILER_CACHE_DIR": str(tmp / "warm-cache")}
        dry = subprocess.run([*cmd, "--dry-run", "--detailed-exitcode"], cwd=tmp, capture_output=True, text=True,
                             env={**os.environ, **warm_env})  # also fills the warm cache
        summary = [line for line in dry.stdout.splitlines() if line.startswith("Plan:")]
        # interleaved runs, so that load on the machine hits every side alike
        floors, warm, cold = [], [], []
        for r in range(a.repeat):
            sides = [
                (floors, [sys.executable, "-c", FLOOR, str(defs)], env),
                (cold, [*cmd, "--dry-run"], {**env, "RECONCILER_CACHE_DIR": str(tmp / f"cold-cache-{r}")}),
                (warm, [*cmd, "--dry-run"], warm_env),
            ]
            k = r % len(sides)
            for out, c, e in sides[k:] + sides[:k]:
                out.append(timed(c, tmp, 1, env=e))
        floor, ours, ours_cold = (statistics.median(x) for x in (floors, warm, cold))

        def rng(xs: list[float]) -> str:
            return f"{min(xs):.2f}-{max(xs):.2f} s"

        print(f"registries: {a.n} (varied corpus), differences: {a.diff}; "
              f"{summary[0] if summary else dry.stdout[-300:]}; {a.repeat} interleaved rounds, medians")
        print(f"plain load (floor, CSafeLoader):   {floor:.3f} s ({rng(floors)})")
        print(f"reconcile --dry-run cold (empty RECONCILER_CACHE_DIR): {ours_cold:.3f} s ({rng(cold)})"
              f"   ratio {ours_cold / floor:.2f} [{min(cold) / floor:.2f}-{max(cold) / floor:.2f}]"
              f" (bar <= 1.3, aim 1.1): {'ok' if ours_cold / floor <= 1.3 else 'OVER'}")
        print(f"reconcile --dry-run warm (validation cache):           {ours:.3f} s ({rng(warm)})"
              f"   ratio {ours / floor:.2f} [{min(warm) / floor:.2f}-{max(warm) / floor:.2f}]")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
