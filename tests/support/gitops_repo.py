"""A throwaway GitOps repository in a temp dir, and a runner for the installed ``reconcile``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import leaks

RECONCILE = shutil.which("reconcile") or ""


def reconcile_cmd() -> list[str]:
    if RECONCILE:
        return [RECONCILE]
    return [sys.executable, "-m", "reconciler.cli"]


def write_defs(root: Path, files: dict[str, str]) -> None:
    d = root / "registries.d"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def init_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text(".reconciler/\n")


def commit_all(root: Path, message: str = "change") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def run(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    leaks.note_env(env)
    res = subprocess.run([*reconcile_cmd(), *args], cwd=root, capture_output=True, text=True, env=full_env,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    leaks.note_output(res.stdout, res.stderr)
    return res


def registry_doc(kind: str, name: str, spec: str, extra_meta: str = "") -> str:
    meta = f"  name: {name}\n" + "".join(f"  {line}\n" for line in extra_meta.splitlines() if line)
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return f"apiVersion: reconciler/v1\nkind: {kind}\nmetadata:\n{meta}spec:\n{body}\n"


def seeded_clone(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path]:
    """A bare ``origin.git`` whose ``main`` declares ``files``, and a clone of it (``work``)."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    init_repo(seed)
    write_defs(seed, files)
    commit_all(seed, "registries")
    git(seed, "push", "-q", str(origin), "main")
    git(tmp_path, "clone", "-q", str(origin), str(tmp_path / "work"))
    return origin, tmp_path / "work"


def managed_on_local(root: Path) -> dict[str, str]:
    """name -> uid of every non-built-in registry in the repository's local target."""
    from reconciler.targets.local import LocalTarget

    t = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    try:
        return {o.name: o.uid for o in t.list() if not o.builtin}
    finally:
        t.close()
