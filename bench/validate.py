"""Benchmark: cold `reconcile validate` against the strongest fair baseline, on a varied corpus.

    python bench/validate.py [--defs 5000] [--repeat 3]

Baseline: a naive loop, in a fresh process, of libyaml's C loader (``yaml.CSafeLoader``) and
``jsonschema.Draft202012Validator`` (the schema compiled once) over the same files: it checks
the schema only, reports no position and no policy rule, so it is the floor for what we do.
check-jsonschema (pure-Python YAML parser) is printed for the record, on the corpus's
single-document files (it rejects files holding several documents).
The corpus (``bench/corpus.py``) varies kinds, optional fields, key order, style, comments,
documents per file and folders. Ours runs cold: a fresh, empty ``RECONCILER_CACHE_DIR`` each
time (what a pull request's fresh checkout sees); warm is printed for the record.
All sides run interleaved, round by round, as fresh processes (start-up included); medians
and ranges of wall and CPU time (user + system: steadier on a shared machine) are printed. Bar: ours cold <= 1.0x the naive loop (aim 0.5).
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

import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "reconciler" / "schema" / "registry.schema.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import compiled_bytecode, generate  # noqa: E402

NAIVE = """
import json, sys, pathlib, yaml
from jsonschema import Draft202012Validator
v = Draft202012Validator(json.loads(pathlib.Path(sys.argv[1]).read_text()))
bad = docs = 0
for p in sorted(pathlib.Path(sys.argv[2]).rglob("*")):
    if p.suffix not in (".yaml", ".yml"):
        continue
    for doc in yaml.load_all(p.read_bytes(), Loader=yaml.CSafeLoader):
        if doc is None:
            continue
        docs += 1
        bad += any(True for _ in v.iter_errors(doc))
print(docs, "documents,", bad, "invalid")
sys.exit(1 if bad else 0)
"""


CPU: dict[str, list[float]] = {}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU (user + system of the child: far steadier on a shared machine)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defs", type=int, default=5000, help="registry definitions")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--no-check-jsonschema", action="store_true")
    args = ap.parse_args()
    compiled_bytecode()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RECONCILER_NO_CACHE", None)
    cj = None if args.no_check_jsonschema else shutil.which("check-jsonschema")
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        root = Path(tmp) / "repo"
        paths = generate(root, args.defs)
        single = [str(p.relative_to(root)) for p in paths
                  if sum(1 for d in yaml.load_all(p.read_bytes(), Loader=yaml.CSafeLoader) if d is not None) == 1]
        ours = [sys.executable, "-m", "reconciler.cli", "validate"]
        warm_dir = Path(tmp) / "warm-cache"
        for _ in range(2):  # fills the warm cache (values are stored on a file's second sight)
            run(ours, root, {**env, "RECONCILER_CACHE_DIR": str(warm_dir)})
        times: dict[str, list[float]] = {"ours cold": [], "ours warm": [], "naive": [], "check-jsonschema": [],
                                         "ours cold, same": []}
        last: dict[str, subprocess.CompletedProcess[str]] = {}
        for r in range(args.repeat):
            cold_dir = Path(tmp) / f"cold-cache-{r}"  # fresh and empty: a cold run
            sides = [
                ("ours cold", ours, {**env, "RECONCILER_CACHE_DIR": str(cold_dir)}),
                ("naive", [sys.executable, "-c", NAIVE, str(SCHEMA), "registries.d"], env),
                ("ours warm", ours, {**env, "RECONCILER_CACHE_DIR": str(warm_dir)}),
            ]
            if cj and r == 0:  # slow (pure-Python YAML): once, for the record, on the files it can
                # read (one document each: it rejects multi-document files), and ours on the same
                sides.append(("check-jsonschema", [cj, "--schemafile", str(SCHEMA), *single], env))
                sides.append(("ours cold, same", [*ours, *single],
                              {**env, "RECONCILER_CACHE_DIR": str(Path(tmp) / "cold-single")}))
            k = r % len(sides)
            for name, cmd, e in sides[k:] + sides[:k]:
                t, cpu, res = run(cmd, root, e)
                times[name].append(t)
                CPU.setdefault(name, []).append(cpu)
                last[name] = res
    summary = (last["ours cold"].stdout.strip().splitlines() or [""])[-1]
    print(f"corpus: {args.defs} definitions in {len(paths)} files ({summary}); {args.repeat} rounds")
    naive = statistics.median(times["naive"])
    naive_cpu = statistics.median(CPU["naive"])

    def line(name: str) -> None:
        ts = times[name]
        if not ts:
            return
        med, cpu = statistics.median(ts), statistics.median(CPU[name])
        print(f"  {name:17s} wall {med:6.2f} s ratio {med / naive:.2f} [{min(ts) / max(times['naive']):.2f}-"
              f"{max(ts) / min(times['naive']):.2f}]   CPU {cpu:6.2f} s ratio {cpu / naive_cpu:.2f} "
              f"[{min(CPU[name]) / max(CPU['naive']):.2f}-{max(CPU[name]) / min(CPU['naive']):.2f}]"
              f"  exit {last[name].returncode}")

    for name in ("naive", "ours cold", "ours warm"):
        line(name)
    if times["check-jsonschema"]:
        cjt, same = times["check-jsonschema"][0], times["ours cold, same"][0]
        print(f"  for the record, on the {len(single)} single-document files (check-jsonschema rejects the others):"
              f"\n    check-jsonschema {cjt:.2f} s (exit {last['check-jsonschema'].returncode}),"
              f" ours cold {same:.2f} s: ratio {same / cjt:.2f}")
    cold = statistics.median(CPU["ours cold"]) / naive_cpu
    cold_wall = statistics.median(times["ours cold"]) / naive
    print(f"bar: ours cold / naive CSafeLoader+jsonschema loop = {cold:.2f} CPU, {cold_wall:.2f} wall"
          f" (<= 1.0, aim 0.5): {'ok' if max(cold, cold_wall) <= 1.0 else 'OVER'}")
    bad = [n for n, res in last.items() if res.returncode != 0]
    if bad:
        for n in bad:
            print(f"warning: {n} exited {last[n].returncode}:\n{(last[n].stdout + last[n].stderr)[-1500:]}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
