"""Benchmark: `reconcile --dry-run` on 5,000 registries with a recorded state of 5,000 and
50 differences, against the floor: a plain load (libyaml C loader) of the same files, both
run as fresh processes in the same run. Prints the ratio; target <= 1.3.

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

FLOOR = """
import sys, pathlib, yaml
L = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
n = 0
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*.yaml")):
    n += sum(1 for _ in yaml.load_all(p.read_bytes(), Loader=L))
print(n)
"""


def doc(i: int, variant: str = "") -> str:
    kind = ("OciRegistry", "HelmRegistry", "PackRegistry")[i % 3]
    if kind == "OciRegistry":
        spec = (f"  endpoint: oci-{i}{variant}.example.com\n  provider: helm\n  baseContentPath: charts\n"
                f"  sync: true\n  auth:\n    type: basic\n    username: bot{i}\n    password: {{fromEnv: PW}}\n")
    elif kind == "HelmRegistry":
        spec = f"  endpoint: https://charts-{i}{variant}.example.com\n  sync: false\n  auth: {{type: noAuth}}\n"
    else:
        spec = f"  endpoint: https://packs-{i}{variant}.example.com\n  auth: {{type: token, token: {{fromEnv: TK}}}}\n"
    return f"apiVersion: reconciler/v1\nkind: {kind}\nmetadata:\n  name: reg-{i:05d}\nspec:\n{spec}"


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
        defs.mkdir()
        for i in range(a.n):
            (defs / f"reg-{i:05d}.yaml").write_text(doc(i))
        # recorded state and target built directly (5,000 applies would measure apply, not plan)
        result = load_and_validate(tmp)
        assert not result.errors, result.errors[:3]
        target = LocalTarget(tmp / ".reconciler/local.db", base_dir=tmp)
        state = State(target=target.identity)
        for reg in result.desired.registries:
            uid = target.create(reg, {})
            state.records[reg.key] = Record(uid=uid, kind=reg.kind, name=reg.name, scope=reg.scope,
                                            fingerprint=fingerprint(reg.spec), spec=target_spec(reg.spec))
        target.close()
        FileStateStore(tmp / ".reconciler/state.json").write(state)
        step = max(1, a.n // a.diff)
        for i in range(0, a.n, step)[: a.diff]:
            (defs / f"reg-{i:05d}.yaml").write_text(doc(i, "-changed"))

        reconcile = shutil.which("reconcile")
        cmd = [reconcile] if reconcile else [sys.executable, "-m", "reconciler.cli"]
        dry = subprocess.run([*cmd, "--dry-run", "--detailed-exitcode"], cwd=tmp, capture_output=True, text=True)
        summary = [line for line in dry.stdout.splitlines() if line.startswith("Plan:")]
        # interleaved runs, so that load on the machine hits both sides alike
        floors, warm, cold = [], [], []
        for _ in range(a.repeat):
            floors.append(timed([sys.executable, "-c", FLOOR, str(defs)], tmp, 1))
            warm.append(timed([*cmd, "--dry-run"], tmp, 1))
            cold.append(timed([*cmd, "--dry-run"], tmp, 1, env={"RECONCILER_NO_CACHE": "1"}))
        floor, ours, ours_cold = (statistics.median(x) for x in (floors, warm, cold))
        print(f"registries: {a.n}, differences: {a.diff}; {summary[0] if summary else dry.stdout[-300:]}")
        print(f"plain load (floor, CSafeLoader):          {floor:.3f} s")
        print(f"reconcile --dry-run (validation cache):   {ours:.3f} s   ratio {ours / floor:.2f} (target <= 1.3)")
        print(f"reconcile --dry-run (RECONCILER_NO_CACHE): {ours_cold:.3f} s   ratio {ours_cold / floor:.2f}")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
