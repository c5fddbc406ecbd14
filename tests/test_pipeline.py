"""One pipeline (issue 11.4): loader -> validation, with the cache wrapped around that pair at
one boundary, and callers that reach targets through the ``Target`` interface only."""

from __future__ import annotations

import ast
from pathlib import Path

from reconciler.targets.base import Target
from reconciler.targets.local import LocalTarget

PKG = Path(__file__).resolve().parents[1] / "reconciler"


def names_used(module: str) -> set[str]:
    tree = ast.parse((PKG / module).read_text(encoding="utf-8"))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_loader_knows_nothing_of_the_cache():
    tree = ast.parse((PKG / "loader.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("cache" in m for m in imported)


def test_validation_consults_the_cache_in_one_function_only():
    tree = ast.parse((PKG / "validation.py").read_text(encoding="utf-8"))
    users = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            body = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            body |= {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
            if body & {"ValidationCache", "cache"}:
                users.add(fn.name)
    # load_and_validate builds it and hands it to the boundary; nothing else touches it
    assert users == {"load_and_validate", "_cached_check_file"}


def test_runner_reaches_the_catalog_through_the_target_interface(tmp_path: Path):
    assert "conn" not in names_used("runner.py")
    assert Target.catalog is not LocalTarget.catalog
    target = LocalTarget(tmp_path / "local.db", base_dir=tmp_path)
    try:
        assert target.catalog("no-such-uid") == {}
    finally:
        target.close()


def test_the_core_runs_without_the_cyclic_collector_and_gives_it_back(monkeypatch, tmp_path) -> None:
    """runner.paused_gc: load and plan run with the collector paused (it would walk their
    containers for nothing); it is back on afterwards, after an error too, and a nested pause
    does not turn it back on early."""
    import gc

    from reconciler import runner, validation

    assert gc.isenabled()
    seen = []
    real = validation.load_and_validate

    def spy(*a, **k):
        seen.append(gc.isenabled())
        with runner.paused_gc():  # nested: still paused inside, still paused after
            pass
        seen.append(gc.isenabled())
        return real(*a, **k)

    monkeypatch.setattr(validation, "load_and_validate", spy)
    (tmp_path / "registries.d").mkdir()
    runner._load(runner.Options(root=tmp_path))
    assert seen == [False, False] and gc.isenabled()
    try:
        with runner.paused_gc():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
