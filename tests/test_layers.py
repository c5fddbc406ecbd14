"""The architecture, enforced: which modules may import which clients (STYLE.md section 2).

Core (model, loader, validation, profiles, plan, cache, render, markdown, secrets) imports no
network, git (except the loader's git source), database or CLI library; targets and state
stores do not import each other; oras-py lives in one module, click in one, httpx only at
the edges that speak HTTP.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "reconciler"
CORE = ["model", "loader", "validation", "profiles", "plan", "cache", "render", "markdown", "secrets", "errors"]


def imports(module: str) -> set[str]:
    path = PKG / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against the package
                parent = module.split(".")[: -node.level] if node.level <= module.count(".") else []
                base = ".".join(["reconciler", *parent, node.module])
            out.add(base)
    return out


def all_modules() -> list[str]:
    return sorted(str(p.relative_to(PKG).with_suffix("")).replace("/", ".") for p in PKG.rglob("*.py"))


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_client_library(module):
    forbidden = {"httpx", "oras", "click", "sqlite3", "requests"} | ({"git"} if module != "loader" else set())
    assert not top(imports(module)) & forbidden


@pytest.mark.parametrize("module", all_modules())
def test_client_libraries_stay_at_their_edges(module):
    used = top(imports(module))
    if "oras" in used:
        assert module == "content.oci"
    if "click" in used:
        assert module == "cli"
    if "httpx" in used:
        assert module == "targets.palette" or module.startswith("content.")
    if "git" in used:
        assert module in ("loader", "state.git")


@pytest.mark.parametrize("module", [m for m in all_modules() if m.startswith(("targets.", "state."))])
def test_targets_and_state_stores_are_independent(module):
    names = imports(module)
    other = "reconciler.state" if module.startswith("targets.") else "reconciler.targets"
    assert not [n for n in names if n.startswith(other)]


def test_the_layering_test_sees_real_imports():
    assert "httpx" in top(imports("targets.palette"))
    assert "oras" in top(imports("content.oci"))
    assert "reconciler.model" in imports("plan")
