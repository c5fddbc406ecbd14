"""``.pre-commit-hooks.yaml`` run the way pre-commit runs it: ``entry + args + filenames``
(the staged files matching ``files``/``exclude``), from the repository root."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / ".pre-commit-hooks.yaml"

GOOD = """\
apiVersion: reconciler/v1
kind: HelmRegistry
metadata:
  name: charts
spec:
  endpoint: https://charts.example.com
  sync: true
  auth: {type: noAuth}
"""
BAD = """\
apiVersion: reconciler/v1
kind: OciRegistry
metadata:
  name: bad
spec:
  endpoint: registry.example.com
  colour: red
"""


def hook() -> dict[str, Any]:
    hooks = yaml.safe_load(HOOKS.read_text())
    (only,) = [h for h in hooks if h["id"] == "reconcile-validate"]
    return only  # type: ignore[no-any-return]


def test_hook_definition() -> None:
    h = hook()
    assert h["entry"] == "reconcile validate"
    assert h["language"] == "python"
    assert h["pass_filenames"] is True
    assert h["files"] == r"^registries\.d/.*\.ya?ml$"
    files = re.compile(h["files"])
    assert files.search("registries.d/oci.yaml") and files.search("registries.d/team/helm.yml")
    assert not files.search("docs/registries.d/x.yaml") and not files.search("registries.d/README.md")
    # language: python installs the repository itself: it must be a package providing the entry.
    assert (ROOT / "pyproject.toml").exists()
    assert '\nreconcile = "' in (ROOT / "pyproject.toml").read_text()


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run_like_pre_commit(repo: Path) -> subprocess.CompletedProcess[str]:
    h = hook()
    include = re.compile(h["files"])
    exclude = re.compile(h.get("exclude", "^$"))
    staged = git(repo, "diff", "--cached", "--name-only", "--diff-filter=ACMR", "-z").split("\0")
    filenames = [f for f in staged if f and include.search(f) and not exclude.search(f) and (repo / f).is_file()]
    assert filenames, "the hook would not run"
    argv = shlex.split(h["entry"]) + list(h.get("args", [])) + (filenames if h["pass_filenames"] else [])
    return subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("reconcile") is None:
        pytest.skip("the reconcile console script is not installed (pip install -e .)")
    git(tmp_path, "init", "--quiet", "-b", "main")
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "README.md").write_text("not a registry\n")
    return tmp_path


def test_valid_files_pass(repo: Path) -> None:
    (repo / "registries.d" / "charts.yaml").write_text(GOOD)
    git(repo, "add", ".")
    proc = run_like_pre_commit(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_invalid_file_fails_with_its_location(repo: Path) -> None:
    (repo / "registries.d" / "charts.yaml").write_text(GOOD)
    (repo / "registries.d" / "bad.yml").write_text(BAD)
    git(repo, "add", ".")
    proc = run_like_pre_commit(repo)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert re.search(r"registries\.d/bad\.yml:7:\d+: .*colour", out), out
    assert "Traceback" not in out


def test_in_ci_a_missing_component_fails_instead_of_skipping(tmp_path: Path) -> None:
    """Issue 10.5: missing components became skips or xfails, so CI could pass having run
    nothing that needs them. With CI=true (how .ci/run is run) they fail; locally they skip."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "test_components.py").write_text(
        "import pytest\n"
        "def test_binary():\n    pytest.skip('docker-registry not installed (apt-get install docker-registry)')\n"
        "def test_module():\n    pytest.importorskip('no_such_module_for_this_test')\n"
        "@pytest.fixture\ndef need_cli():\n    pytest.xfail('the reconcile console script is not installed')\n"
        "def test_cli(need_cli):\n    pass\n"
        "def test_other_reason():\n    pytest.skip('only meaningful on Windows')\n"
    )

    def session(ci: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        if ci is not None:
            env["CI"] = ci
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", os.devnull, "--rootdir",
             str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_components.py")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        return proc.stdout.strip().splitlines()[-1]

    def count(line: str, word: str) -> int:
        import re

        m = re.search(rf"(\d+) {word}", line)
        return int(m.group(1)) if m else 0

    ci = session("true")
    assert count(ci, "failed") + count(ci, "error") == 3 and count(ci, "skipped") == 1, ci  # setup xfail: error
    local = session(None)
    assert count(local, "failed") == 0 and count(local, "skipped") == 3 and count(local, "xfailed") == 1, local
