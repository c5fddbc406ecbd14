"""What a plan's process loads: a `reconcile --dry-run` on the local target starts without
``html`` (about 1 ms: redaction's forms of a value, needed only once a known secret value is
redacted). Issue #11: a cold plan is measured against a bare parse of the same files.
(``hashlib`` stays: OpenSSL's SHA-256 costs 2.5 ms to load and saves 3.4 ms over CPython's
own on the fingerprints of 5,000 registries.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["reconcile", "--dry-run"]
from reconciler import cli
cli.entry()
"""

NOT_LOADED = {"html", "html.entities"}


def test_a_dry_run_on_the_local_target_does_not_load_html(tmp_path: Path) -> None:
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "oci.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: OciRegistry\nmetadata:\n  name: zot\n"
        "spec:\n  endpoint: zot.example.com\n  auth:\n    type: basic\n    username: ci\n"
        "    password:\n      fromEnv: ZOT_PASSWORD\n", encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECONCILER_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for run in range(2):  # a cold validation cache, then a warm one (its file's MAC is checked)
        res = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, env=env,
                             timeout=60)
        assert "+ OciRegistry/zot" in res.stdout, res.stdout + res.stderr
        loaded = set(json.loads(res.stderr.rsplit("MODULES ", 1)[1]))
        assert not NOT_LOADED & loaded, f"run {run}: {sorted(NOT_LOADED & loaded)} loaded by a dry-run"
