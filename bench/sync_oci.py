"""Benchmark: OCI sync (parallel tags) vs a serial one-request-at-a-time baseline.

Starts Debian's docker-registry on 127.0.0.1, pushes REPOS repositories x TAGS tags under
``bench/`` (the first tag of each with oras-py, the others by re-tagging its manifest),
then times, in the same run and alternating:
- baseline: one httpx client, ``/v2/``, ``/v2/_catalog?n=1000`` pages, then each
  repository's ``tags/list``, strictly one request after another (nothing stored);
- ours: ``sync_registry`` on a fresh SQLite catalog (listing + storing).
Target: ours / baseline <= 0.35 (best of --repeat runs each).

    python bench/sync_oci.py [--repos 200] [--tags 5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serial_baseline(url: str) -> int:
    import httpx

    n = 0
    with httpx.Client(trust_env=False, timeout=30) as c:
        c.get(f"{url}/v2/").raise_for_status()
        nxt: str | None = f"{url}/v2/_catalog?n=1000"
        repos: list[str] = []
        while nxt:
            r = c.get(nxt)
            r.raise_for_status()
            repos += [x for x in r.json()["repositories"] if x.startswith("bench/")]
            link = r.links.get("next")
            nxt = httpx.URL(url).join(link["url"]).__str__() if link else None
        for repo in repos:
            r = c.get(f"{url}/v2/{repo}/tags/list")
            r.raise_for_status()
            n += len(r.json()["tags"])
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=200)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5, help="runs per side; the best is kept")
    args = ap.parse_args()
    from reconciler.content import sync_registry
    from tests.support.oci_registry import have_registry, running

    if not have_registry():
        raise SystemExit("docker-registry is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    with running(tmp / "reg") as reg:
        t0 = time.perf_counter()

        def seed(i: int) -> None:
            repo = f"bench/app-{i:03d}"
            reg.push(repo, "v0")
            for t in range(1, args.tags):
                reg.tag(repo, "v0", f"v{t}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(seed, range(args.repos)))
        print(
            f"seeded {args.repos} repositories x {args.tags} tags in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        spec = {
            "endpoint": reg.url,
            "provider": "helm",
            "baseContentPath": "bench",
            "sync": True,
            "auth": {"type": "noAuth"},
            "tls": {"insecureSkipVerify": False},
        }
        base_times, our_times = [], []
        for i in range(args.repeat):
            t = time.perf_counter()
            n = serial_baseline(reg.url)
            base_times.append(time.perf_counter() - t)
            assert n == args.repos * args.tags, n
            conn = sqlite3.connect(tmp / f"cat{i}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            t = time.perf_counter()
            res = sync_registry(conn, "bench", "OciRegistry", spec, {}, base_dir=tmp)
            our_times.append(time.perf_counter() - t)
            conn.close()
            assert res.status == "Completed", res.message
            assert res.counts["tags"] == args.repos * args.tags, res.counts
        base, ours = min(base_times), min(our_times)
        print(f"serial baseline: {base * 1000:.0f} ms ({args.repos + 2} requests)")
        print(f"sync_registry:   {ours * 1000:.0f} ms (parallel tags, catalog stored)")
        ratio = ours / base
        print(f"  ours/baseline {ratio:.3f}  (target <= 0.35)  {'ok' if ratio <= 0.35 else 'OVER'}")


if __name__ == "__main__":
    main()
