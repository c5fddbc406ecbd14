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
