"""The validation cache changes speed, never results."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.validation import load_and_validate


def write(root: Path, name: str, text: str) -> None:
    p = root / "registries.d" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def helm(name: str, extra: str = "") -> str:
    return (f"apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata:\n  name: {name}\n"
            f"spec:\n  endpoint: https://{name}.example.com\n{extra}")


def summary(r):
    return ([str(p) for p in r.problems], [(x.key, dict(x.spec), str(x.source)) for x in r.desired.registries],
            sorted(r.failed_files), r.desired.settings)


@pytest.fixture(autouse=True)
def _cache_in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CACHE_DIR", raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path, "a.yaml", helm("a") + "---\n" + helm("b"))
    write(tmp_path, "sub/c.yaml", "# comment\n\n" + helm("c"))
    write(tmp_path, "pack.yaml", "apiVersion: reconciler/v1\nkind: PackRegistry\nmetadata: {name: p}\n"
                                 "spec: {endpoint: 'https://p.example.com'}\n")
    return tmp_path


def test_second_run_hits_the_cache_with_identical_results(repo: Path):
    cold = load_and_validate(repo)
    cache = repo / ".reconciler/cache/validate.json"
    data = json.loads(cache.read_text())
    assert len(data["files"]) == 3
    warm = load_and_validate(repo)
    assert summary(warm) == summary(cold)
    assert any("PackRegistry is legacy" in str(p) for p in warm.problems)


def test_cross_file_problems_on_cached_files_keep_exact_positions(repo: Path):
    load_and_validate(repo)  # both files cached clean
    write(repo, "z.yaml", "\n\n" + helm("c"))  # duplicate of sub/c.yaml's name
    expected = [str(p) for p in load_and_validate(repo).problems]
    assert any("registries.d/z.yaml:6:9: duplicate registry name 'c'" in p and "sub/c.yaml:6" in p for p in expected)
    assert [str(p) for p in load_and_validate(repo).problems] == expected
    # vertex rules need positions the cache does not keep: they are parsed again on demand
    with_cache = [str(p) for p in load_and_validate(repo, profile="vertex").problems]
    (repo / ".reconciler/cache/validate.json").unlink()
    without = [str(p) for p in load_and_validate(repo, profile="vertex").problems]
    assert with_cache == without and any("fips" in p for p in without)


def test_changed_file_misses_and_bad_cache_is_ignored(repo: Path):
    load_and_validate(repo)
    write(repo, "a.yaml", helm("a", "  sync: maybe\n"))
    r = load_and_validate(repo)
    assert any("spec.sync" in str(p) for p in r.problems)
    (repo / ".reconciler/cache/validate.json").write_text("{garbage")
    assert any("spec.sync" in str(p) for p in load_and_validate(repo).problems)
    (repo / ".reconciler/cache/validate.json").write_text(json.dumps({"salt": "x", "files": {"k": 1}}))
    assert any("spec.sync" in str(p) for p in load_and_validate(repo).problems)


def test_problem_files_are_never_cached(repo: Path):
    write(repo, "bad.yaml", helm("bad", "  auth: {type: basic, username: u, password: literal-pw}\n"))
    load_and_validate(repo)
    assert "literal-pw" not in (repo / ".reconciler/cache/validate.json").read_text()
    assert any("bad.yaml" in str(p) for p in load_and_validate(repo).problems)


def test_cache_stays_out_of_git_status(repo: Path):
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    load_and_validate(repo)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    assert ".reconciler" not in status


def test_no_cache_env(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RECONCILER_NO_CACHE", "1")
    load_and_validate(repo)
    assert not (repo / ".reconciler").exists()


def _age(root: Path, seconds: int = 60) -> None:
    for p in (root / "registries.d").rglob("*.yaml"):
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def test_unchanged_files_are_not_even_read(repo: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    from reconciler import loader

    _age(repo)
    time.sleep(0.01)
    first = summary(load_and_validate(repo))  # content-addressed; ctime is recent, so not aliased yet
    calls = []
    real = loader.read_source
    monkeypatch.setattr(loader, "read_source", lambda src: calls.append(src.name) or real(src))
    monkeypatch.setattr("reconciler.cache._RACY_NS", 0)
    assert summary(load_and_validate(repo)) == first  # now remembered by stat too
    calls.clear()
    assert summary(load_and_validate(repo)) == first
    assert calls == []


def test_same_size_rewrite_with_old_mtime_is_still_seen(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("reconciler.cache._RACY_NS", 0)
    _age(repo)
    load_and_validate(repo)
    load_and_validate(repo)
    p = repo / "registries.d/a.yaml"
    st = p.stat()
    text = p.read_text()
    p.write_text(text.replace("https://a.example.com", "https://A.example.com"))  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moves anyway
    r = load_and_validate(repo)
    assert any(x.spec["endpoint"] == "https://A.example.com" for x in r.desired.registries)


def test_cache_dir_elsewhere(repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    elsewhere = tmp_path_factory.mktemp("shared-cache")
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(elsewhere))
    first = summary(load_and_validate(repo))
    assert (elsewhere / "validate.json").exists() and not (repo / ".reconciler").exists()
    assert summary(load_and_validate(repo)) == first
