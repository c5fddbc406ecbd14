"""Benchmark: apply 200 creates to the Palette API emulator through the apply engine.

The emulator answers after 100 ms and allows 50 requests/s (429 beyond); the target is set to
50 requests/s. The ideal wall time is (requests / 50) s, so the printed ratio is
wall / (requests / 50): the concurrent apply should stay <= 1.2 with zero 429s. A serial run
(max_concurrency 1) in the same process is the baseline.

Run: python bench/apply.py [--count 200] [--latency 0.1] [--rate 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--server-burst", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=PaletteTarget.max_concurrency)
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args()
    print(f"emulator: latency {args.latency * 1000:.0f} ms, limit {args.rate:g} req/s; "
          f"{args.count} creates through reconciler.apply.apply_plan")
    conc = run("concurrent apply", args.concurrency, args)
    if not args.skip_serial:
        serial = run("serial baseline", 1, args)
        print(f"speed-up vs serial: {serial['wall'] / conc['wall']:.2f}x")
    ok = conc["ratio"] <= 1.2 and conc["429"] == 0 and conc["failed"] == 0
    print("target (ratio <= 1.2, zero 429s):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
