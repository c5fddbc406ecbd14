"""Benchmark: Helm index sync vs libyaml's C loader (``yaml.CSafeLoader``) on the same file.

The baseline is the strongest fair one: parsing the same index with the C loader (about four
times faster than ``yaml.safe_load``'s pure-Python parser, which ``--pure`` prints for the
record), measured in the same run.

Every case runs in its own child process, so peak memory (``ru_maxrss`` of the child) is
comparable between the baseline and ours; wall times are measured inside the child around
the parse (baseline) or the ``sync_registry`` call (ours, download included). The index is
served over loopback by the test Helm repository (ETag + Last-Modified).

Cases: cold (empty catalog), warm (unchanged index: one 304), incremental (catalog of the
``-prev`` file, then the real next one: one version added). Targets: cold <= 0.2 of the
C-loader baseline's time and <= 0.5 of its memory; warm <= 0.05 of cold; incremental <= 0.25 of cold.

    python bench/sync_helm.py [--repeat N] [--no-union]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import compiled_bytecode  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "helm-index"
BITNAMI = "bitnami-index-2023-03-01.yaml.gz"
BITNAMI_PREV = "bitnami-index-2023-03-01-prev.yaml.gz"
UNION = "DERIVED-bitnami-index-union-2022-06-02+2023-03-01.yaml.gz"


def child(argv: list[str]) -> None:
    case = argv[0]
    if case in ("baseline", "pure"):
        import yaml

        data = Path(argv[1]).read_bytes()
        loader = yaml.CSafeLoader if case == "baseline" else yaml.SafeLoader
        t0 = time.perf_counter()
        doc = yaml.load(data, Loader=loader)
        wall = time.perf_counter() - t0
        n = sum(len(v) for v in doc["entries"].values())
        out = {"wall": wall, "versions": n}
    else:
        import sqlite3

        import httpcore  # noqa: F401  (imported lazily by httpx; kept off the clock like `import yaml`)

        from reconciler.content import sync_registry

        url, db = argv[1], argv[2]
        # the local target's connection settings (reconciler/targets/local.py)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        spec = {
            "endpoint": url,
            "sync": True,
            "auth": {"type": "noAuth"},
            "tls": {"insecureSkipVerify": False},
            "fips": False,
        }
        t0 = time.perf_counter()
        res = sync_registry(conn, "bench", "HelmRegistry", spec, {}, base_dir=Path("."))
        wall = time.perf_counter() - t0
        conn.close()
        assert res.status == "Completed", res.message
        out = {
            "wall": wall,
            "added": len(res.added),
            "not_modified": res.not_modified,
            "versions": res.counts.get("versions"),
        }
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(results: list[dict]) -> dict:
    return min(results, key=lambda r: r["wall"])


def bench_file(repo, tmp: Path, name: str, prev: str | None, repeat: int, pure: bool = False) -> dict[str, float]:
    raw = tmp / name.removesuffix(".gz")
    raw.write_bytes(gzip.open(DATA / name, "rb").read())
    print(f"\n== {name} ({raw.stat().st_size / 1e6:.1f} MB)")
    bases = [run_child("baseline", str(raw)) for _ in range(repeat)]
    base = best(bases)
    walls = sorted(b["wall"] for b in bases)
    print(f"baseline yaml.load(CSafeLoader): {base['wall']:.2f} s (range {walls[0]:.2f}-{walls[-1]:.2f}), "
          f"{max(b['maxrss_mb'] for b in bases):.0f} MB peak RSS")
    if pure:
        p = run_child("pure", str(raw))
        print(f"for the record, yaml.safe_load (pure Python): {p['wall']:.2f} s, {p['maxrss_mb']:.0f} MB")

    repo.write_index(raw.read_bytes())
    colds, warms = [], []
    for i in range(repeat):
        db = tmp / f"cold{i}.db"
        colds.append(run_child("sync", repo.url, str(db)))
        for _ in range(2):  # warm runs are cheap: two per cold catalog
            warms.append(run_child("sync", repo.url, str(db)))
            assert warms[-1]["not_modified"], "warm sync was not a 304"
    cold, warm = best(colds), best(warms)
    mem_cold = max(r["maxrss_mb"] for r in colds)
    print(
        f"cold sync: {cold['wall'] * 1000:.0f} ms, {mem_cold:.0f} MB ({cold['versions']} versions)"
    )
    print(
        f"warm sync (304): {warm['wall'] * 1000:.1f} ms "
        f"(median {sorted(r['wall'] for r in warms)[len(warms) // 2] * 1000:.1f} ms)"
    )
    cw = sorted(r["wall"] for r in colds)
    print(f"  cold range {cw[0] * 1000:.0f}-{cw[-1] * 1000:.0f} ms -> ratio to baseline "
          f"{cw[0] / base['wall']:.3f}-{cw[-1] / base['wall']:.3f}")
    ratios = {
        "cold/baseline time": cold["wall"] / base["wall"],
        "cold/baseline memory": mem_cold / max(b["maxrss_mb"] for b in bases),
        "warm/cold time": warm["wall"] / cold["wall"],
    }
    if prev:
        prev_raw = gzip.open(DATA / prev, "rb").read()
        incs = []
        for i in range(repeat):
            db = tmp / f"inc{i}.db"
            repo.write_index(prev_raw)
            run_child("sync", repo.url, str(db))
            repo.write_index(raw.read_bytes())
            incs.append(run_child("sync", repo.url, str(db)))
            assert incs[-1]["added"] == 1, incs[-1]
        inc = best(incs)
        print(f"incremental sync (+1 version): {inc['wall'] * 1000:.0f} ms")
        ratios["incremental/cold time"] = inc["wall"] / cold["wall"]
    targets = {
        "cold/baseline time": 0.2,
        "cold/baseline memory": 0.5,
        "warm/cold time": 0.05,
        "incremental/cold time": 0.25,
    }
    for k, v in ratios.items():
        verdict = "ok" if v <= targets[k] else "OVER"
        print(f"  {k:24s} {v:6.3f}  (target <= {targets[k]})  {verdict}")
    return ratios


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="runs per case; the best is kept")
    ap.add_argument("--no-union", action="store_true")
    ap.add_argument("--pure", action="store_true", help="also time yaml.safe_load (pure Python), for the record")
    args = ap.parse_args()
    compiled_bytecode()
    if not (DATA / BITNAMI).exists():
        raise SystemExit(f"real indexes not found under {DATA}")
    from tests.support.helm_repo import HelmRepo

    tmp = Path(tempfile.mkdtemp(prefix="bench-helm-"))
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    try:
        with HelmRepo(tmp / "repo") as repo:
            bench_file(repo, tmp, BITNAMI, BITNAMI_PREV, args.repeat, args.pure)
            if not args.no_union:
                bench_file(repo, tmp, UNION, None, args.repeat, args.pure)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
