"""Benchmark: `reconcile validate` against check-jsonschema on the same 5,000 registry files.

    python bench/validate.py [--files N] [--repeat R]

Both tools run as subprocesses (start-up included) on the same generated files in the same
run; the best of R runs each is compared. Target: ours <= 0.25 of check-jsonschema's wall time.
Our command is the `reconcile` console script when it has a `validate` subcommand, else
`python -m reconciler.cli validate`, else `run_validate` called through `python -c`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schema" / "registry.schema.json"
HEADER = (
    "# yaml-language-server: $schema=../schema/registry.schema.json\napiVersion: reconciler/v1\n"
)


def registry_yaml(i: int) -> str:
    n = i % 5
    if n == 0:
        return (
            HEADER
            + f"""kind: OciRegistry
metadata:
  name: oci-{i}
  scope: tenant
spec:
  endpoint: registry-{i}.example.com
  provider: pack
  baseContentPath: production/{i}
  sync: true
  auth:
    type: basic
    username: ci-bot-{i}
    password: {{fromEnv: OCI_{i}_PASSWORD}}
  tls: {{caFile: certs/ca-{i}.pem, insecureSkipVerify: false}}
  fips: true
"""
        )
    if n == 1:
        return (
            HEADER
            + f"""kind: OciRegistry
metadata: {{name: ecr-{i}, scope: tenant, protect: true}}
spec:
  endpoint: {100000000000 + i}.dkr.ecr.us-east-1.amazonaws.com
  provider: helm
  baseContentPath: charts
  sync: true
  auth:
    type: ecr
    credentials:
      credentialType: sts
      arn: "arn:aws:iam::{100000000000 + i}:role/palette"
      externalId: ext-{i}
"""
        )
    if n == 2:
        return (
            HEADER
            + f"""kind: HelmRegistry
metadata:
  name: helm-{i}
spec:
  endpoint: https://charts-{i}.example.com/stable
  sync: false
  auth: {{type: token, token: {{fromEnv: HELM_{i}_TOKEN}}}}
  requiredCharts:
    - {{name: nginx, version: 1.2.{i}}}
    - {{name: redis}}
"""
        )
    if n == 3:
        return (
            HEADER
            + f"""kind: HelmRegistry
metadata:
  name: public-helm-{i}
spec:
  endpoint: https://public-{i}.example.org
"""
        )
    return (
        HEADER
        + f"""kind: OciRegistry
metadata:
  name: zarf-{i}
spec:
  endpoint: zarf-{i}.example.net:5000
  provider: zarf
  auth: {{type: noAuth}}
  tls: {{insecureSkipVerify: false}}
"""
    )


def generate(root: Path, count: int) -> list[Path]:
    d = root / "registries.d"
    d.mkdir(parents=True)
    paths = []
    for i in range(count):
        sub = d / f"team-{i % 20:02d}"
        sub.mkdir(exist_ok=True)
        p = sub / f"registry-{i:05d}.yaml"
        p.write_text(registry_yaml(i), encoding="utf-8")
        paths.append(p)
    return paths


def our_command() -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = shutil.which("reconcile")
    candidates = []
    if script:
        candidates.append([script, "validate"])
    candidates.append([sys.executable, "-m", "reconciler.cli", "validate"])
    for cmd in candidates:
        probe = subprocess.run([*cmd, "--help"], capture_output=True, env=env, cwd=REPO)
        if probe.returncode == 0:
            return cmd
    code = (
        "import sys; from pathlib import Path; "
        "from reconciler.commands.validate import run_validate; "
        "sys.exit(run_validate(sys.argv[1:], Path('.'), None, 'text', sys.stdout))"
    )
    return [sys.executable, "-c", code]


def timed(
    cmd: list[str], cwd: Path, repeat: int, extra: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra or {})}
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("check-jsonschema") is None:
        print("check-jsonschema is not installed (pip install check-jsonschema)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        root = Path(tmp)
        paths = generate(root, args.files)
        rel = [str(p.relative_to(root)) for p in paths]
        ours_cmd = our_command()
        # cold: no validation cache (what a fresh CI checkout sees); warm: the cache of a previous run
        ours, ours_res = timed([*ours_cmd, "registries.d"], root, args.repeat, {"RECONCILER_NO_CACHE": "1"})
        warm, _ = timed([*ours_cmd, "registries.d"], root, args.repeat + 1)
        theirs, theirs_res = timed(
            ["check-jsonschema", "--schemafile", str(SCHEMA), *rel], root, args.repeat
        )
    tail = (ours_res.stdout.strip().splitlines() or [""])[-1]
    print(f"files:            {args.files}")
    print(
        f"reconcile:        {ours:7.3f} s  (exit {ours_res.returncode}; {tail})"
        f"  [{' '.join(ours_cmd[:2])} ...]"
    )
    print(f"reconcile (warm validation cache): {warm:7.3f} s")
    print(f"check-jsonschema: {theirs:7.3f} s  (exit {theirs_res.returncode})")
    print(f"ratio (cold):     {ours / theirs:7.3f}  (target <= 0.25)")
    print(f"ratio (warm):     {warm / theirs:7.3f}")
    if ours_res.returncode != 0 or theirs_res.returncode != 0:
        print("warning: a tool reported problems on the generated files:", file=sys.stderr)
        print((ours_res.stdout + ours_res.stderr)[-2000:], file=sys.stderr)
        print((theirs_res.stdout + theirs_res.stderr)[-2000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
