"""The validation cache changes speed, never results."""

from __future__ import annotations

import hashlib
import hmac
import marshal
import os
import stat
import subprocess
from pathlib import Path

import pytest

from reconciler.cache import CACHE_FILE
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
def cache_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default location: the user's cache directory (HOME is a temp dir, see conftest)."""
    monkeypatch.delenv("RECONCILER_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return Path.home() / ".cache" / "reconciler"


def sign(cache_dir: Path, data: dict) -> None:
    """Write a cache file as reconcile would, with this machine's key (to plant bad entries)."""
    body = marshal.dumps(data)
    mac = hmac.new((cache_dir / "key").read_bytes(), body, hashlib.sha256).hexdigest()
    (cache_dir / CACHE_FILE).write_bytes(mac.encode() + b"\n" + body)


def contents(cache_dir: Path) -> dict:
    return marshal.loads((cache_dir / CACHE_FILE).read_bytes().partition(b"\n")[2])


def replaced(value, old: str, new: str):
    """``value`` with every string holding ``old`` rewritten (to forge a cache entry)."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {replaced(k, old, new): replaced(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(replaced(v, old, new) for v in value)
    return value


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path, "a.yaml", helm("a") + "---\n" + helm("b"))
    write(tmp_path, "sub/c.yaml", "# comment\n\n" + helm("c"))
    write(tmp_path, "pack.yaml", "apiVersion: reconciler/v1\nkind: PackRegistry\nmetadata: {name: p}\n"
                                 "spec: {endpoint: 'https://p.example.com'}\n")
    return tmp_path


def test_values_are_stored_on_second_sight_and_hit_with_identical_results(repo: Path, cache_dir: Path):
    cold = load_and_validate(repo)
    data = contents(cache_dir)  # a fresh checkout's run: the keys it checked clean, no value
    assert len(data["seen"]) == 3 and data["files"] == {} and data["stats"] == {}
    assert b"example.com" not in (cache_dir / CACHE_FILE).read_bytes()
    second = load_and_validate(repo)  # the same bytes again: checked again, and now stored
    data = contents(cache_dir)
    assert len(data["files"]) == 3 and not data["seen"]
    assert summary(second) == summary(cold)
    calls = []
    from reconciler import loader

    real = loader.load_file
    loader.load_file = lambda src: calls.append(src.name) or real(src)
    try:
        warm = load_and_validate(repo)
    finally:
        loader.load_file = real
    assert calls == []  # every file a hit: nothing parsed
    assert summary(warm) == summary(cold)
    assert any("PackRegistry is legacy" in str(p) for p in warm.problems)


def prime(repo: Path) -> None:
    """Two runs: the values of every clean file are stored (second sight)."""
    load_and_validate(repo)
    load_and_validate(repo)


def test_cross_file_problems_on_cached_files_keep_exact_positions(repo: Path, cache_dir: Path):
    prime(repo)  # both files cached clean
    write(repo, "z.yaml", "\n\n" + helm("c"))  # duplicate of sub/c.yaml's name
    expected = [str(p) for p in load_and_validate(repo).problems]
    assert any("registries.d/z.yaml:6:9: duplicate registry name 'c'" in p and "sub/c.yaml:6" in p for p in expected)
    assert [str(p) for p in load_and_validate(repo).problems] == expected
    # vertex rules need positions the cache does not keep: they are parsed again on demand
    with_cache = [str(p) for p in load_and_validate(repo, profile="vertex").problems]
    (cache_dir / CACHE_FILE).unlink()
    without = [str(p) for p in load_and_validate(repo, profile="vertex").problems]
    assert with_cache == without and any("fips" in p for p in without)


def test_changed_file_misses_and_bad_cache_is_ignored(repo: Path, cache_dir: Path):
    prime(repo)
    write(repo, "a.yaml", helm("a", "  sync: maybe\n"))
    r = load_and_validate(repo)
    assert any("spec.sync" in str(p) for p in r.problems)
    (cache_dir / CACHE_FILE).write_text("{garbage")
    assert any("spec.sync" in str(p) for p in load_and_validate(repo).problems)
    sign(cache_dir, {"salt": "x", "files": {"k": 1}})
    assert any("spec.sync" in str(p) for p in load_and_validate(repo).problems)


def test_problem_files_are_never_cached(repo: Path, cache_dir: Path):
    write(repo, "bad.yaml", helm("bad", "  auth: {type: basic, username: u, password: literal-pw}\n"))
    prime(repo)
    assert len(contents(cache_dir)["files"]) == 3  # the clean ones
    assert b"literal-pw" not in (cache_dir / CACHE_FILE).read_bytes()
    assert any("bad.yaml" in str(p) for p in load_and_validate(repo).problems)


def test_cache_stays_out_of_git_status(repo: Path):
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    load_and_validate(repo)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout
    assert ".reconciler" not in status


def test_no_cache_env(repo: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RECONCILER_NO_CACHE", "1")
    load_and_validate(repo)
    assert not (repo / ".reconciler").exists() and not cache_dir.exists()


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


def test_a_cold_cache_asks_no_stat_and_a_kept_one_still_skips_reading(repo: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh checkout (an empty cache) compares no stat, so discovery stats nothing: the fstat
    of each file's read says its size (one system call per file, not two). Once the cache holds
    anything, every file is stat'ed again, and unchanged files are still not even read."""
    import time

    from reconciler import loader

    _age(repo)
    time.sleep(0.01)
    stats: list[str] = []
    reads: list[str] = []
    real_stat, real_read = loader.stat_source, loader.read_source
    monkeypatch.setattr(loader, "stat_source", lambda src: stats.append(src.name) or real_stat(src))
    monkeypatch.setattr(loader, "read_source",  # from the disk (the checker is then handed the bytes)
                        lambda src: (src.data is None and reads.append(src.name)) or real_read(src))
    found: list[loader.SourceFile] = []
    real_discover = loader.discover
    monkeypatch.setattr(loader, "discover", lambda *a: (lambda r: found.extend(r[0]) or r)(real_discover(*a)))
    monkeypatch.setattr("reconciler.cache._RACY_NS", 0)
    first = summary(load_and_validate(repo))
    assert stats == [] and len(reads) == 3, (stats, reads)  # cold: read, never stat'ed
    assert len(found) == 3 and all(f.stamp is None for f in found), found
    for _ in range(2):  # second sight stores values and stats; the third run hits by stat
        stats.clear()
        reads.clear()
        assert summary(load_and_validate(repo)) == first
        assert len(stats) == 3, stats
    assert reads == []


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
    assert (elsewhere / CACHE_FILE).exists() and not (repo / ".reconciler").exists()
    assert summary(load_and_validate(repo)) == first


# --------------------------------------------------------------------------- issue 9.7 / 9.19


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def endpoints(r) -> set[str]:
    return {x.spec["endpoint"] for x in r.desired.registries}


def test_default_cache_lives_outside_the_work_tree_with_a_private_key(repo: Path, cache_dir: Path):
    load_and_validate(repo)
    assert not (repo / ".reconciler").exists()
    assert (cache_dir / CACHE_FILE).is_file()
    key = cache_dir / "key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32


def test_xdg_cache_home_is_honoured(repo: Path, tmp_path_factory: pytest.TempPathFactory,
                                    monkeypatch: pytest.MonkeyPatch):
    xdg = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    load_and_validate(repo)
    assert (xdg / "reconciler" / CACHE_FILE).is_file()


def _poisoned_clone(repo: Path, tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Path:
    """The attack of issue 9.7: a pull request force-adds a cache (and its key) that maps the
    real file's bytes to another endpoint; the victim plans from a fresh clone."""
    attacker = repo / ".reconciler" / "cache"
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(attacker))
    prime(repo)
    data = contents(attacker)
    forged = replaced(data, "https://c.example.com", "https://evil.example.net")
    assert forged != data
    sign(attacker, forged)
    monkeypatch.delenv("RECONCILER_CACHE_DIR")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "add", "-f", ".reconciler")
    git(repo, "commit", "-qm", "innocent change")
    clone = tmp_path_factory.mktemp("victim") / "clone"
    git(repo.parent, "clone", "-q", str(repo), str(clone))
    assert (clone / ".reconciler" / "cache" / CACHE_FILE).exists()
    return clone


def test_a_cache_committed_to_the_repository_is_never_used(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
):
    clone = _poisoned_clone(repo, tmp_path_factory, monkeypatch)
    _age(clone, 600)  # old enough to be trusted by stat, as a checkout of yesterday would be
    r = load_and_validate(clone)  # default location: the user's cache, not the clone's
    assert "https://evil.example.net" not in endpoints(r)
    assert "https://c.example.com" in endpoints(r)


def test_a_cache_dir_tracked_by_git_is_ignored_with_a_warning(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
):
    clone = _poisoned_clone(repo, tmp_path_factory, monkeypatch)
    # a workflow that points the cache into the checkout: the planted key and cache are tracked
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(clone / ".reconciler" / "cache"))
    r = load_and_validate(clone)
    assert "https://evil.example.net" not in endpoints(r)
    assert "https://c.example.com" in endpoints(r)
    warnings = [p for p in r.problems if p.rule == "cache"]
    assert len(warnings) == 1 and "tracked by git" in warnings[0].message and r.ok
    assert git(clone, "status", "--porcelain") == ""  # nothing written into the checkout


def test_entries_not_written_with_our_key_are_ignored(repo: Path, cache_dir: Path):
    prime(repo)
    raw = (cache_dir / CACHE_FILE).read_bytes()
    assert b"https://c.example.com" in raw
    # someone who can write the file but does not hold the key
    forged = raw.partition(b"\n")[2].replace(b"https://c.example.com", b"https://evil.example.net")
    for mac in (raw.partition(b"\n")[0], b"0" * 64, b""):
        (cache_dir / CACHE_FILE).write_bytes(mac + b"\n" + forged)
        assert endpoints(load_and_validate(repo)) >= {"https://c.example.com"}
    # and a key that is not ours (readable by others) is replaced, which voids old entries
    prime(repo)
    (cache_dir / "key").chmod(0o644)
    old_key = (cache_dir / "key").read_bytes()
    sign(cache_dir, replaced(contents(cache_dir), "https://c.example.com", "https://evil.example.net"))
    assert "https://evil.example.net" not in endpoints(load_and_validate(repo))
    assert (cache_dir / "key").read_bytes() != old_key
    assert stat.S_IMODE((cache_dir / "key").stat().st_mode) == 0o600


@pytest.mark.parametrize("entry", [
    1, "x", None, [1], [[0]], [["0", {}, []]], [[0, "not a mapping", []]], [[0, {}, "hints"]],
    [[0, {"kind": "HelmRegistry"}, [["kind"]]]], [[0, {"kind": "x"}, [[["kind"], [0, 1]]]]],
    [[0, {"kind": "x"}, [[["kind"], ["1", 1]]]]], [[0, {}, [[[1], [1, 1]]]]],
    (0,), ((0, {}),), (("0", {}, (1,) * 6),), ((0, "not a mapping", (1,) * 6),), ((0, {}, [1] * 6),),
    ((0, {}, (1,) * 5),), ((0, {}, (1,) * 7),), ((0, {}, (1, 1, 1, 1, 1, 0)),), ((0, {}, (1, 1, 1, 1, 1, "1")),),
    ((0, {}, (1, 1, True, 1, 1, 1)),), ((0, {"kind": "HelmRegistry"}, (1,) * 6), 1),
])
def test_corrupt_entries_are_recomputed_not_a_traceback(repo: Path, cache_dir: Path, entry):
    prime(repo)
    expected = summary(load_and_validate(repo))
    data = contents(cache_dir)
    assert len(data["files"]) == 3
    data["files"] = {k: entry for k in data["files"]}
    sign(cache_dir, data)  # correctly signed: damage from a bug or the disk, not an attacker
    assert summary(load_and_validate(repo)) == expected
    assert summary(load_and_validate(repo)) == expected  # and the rewritten cache is sound
    files = contents(cache_dir)["files"]  # rewritten at once: a stored key needs no second sight
    assert len(files) == 3 and all(type(v) is tuple and v and type(v[0]) is tuple for v in files.values())


@pytest.mark.parametrize("what", ["key", CACHE_FILE])
def test_odd_cache_files_are_only_slower(repo: Path, cache_dir: Path, what: str):
    expected = summary(load_and_validate(repo))
    (cache_dir / what).unlink()
    (cache_dir / what).mkdir()  # a directory where a file should be
    assert summary(load_and_validate(repo)) == expected
    assert summary(load_and_validate(repo)) == expected


def test_a_symlinked_key_is_not_followed(repo: Path, cache_dir: Path, tmp_path: Path):
    load_and_validate(repo)
    elsewhere = tmp_path / "someone-elses-key"
    elsewhere.write_bytes(b"k" * 32)
    elsewhere.chmod(0o600)
    (cache_dir / "key").unlink()
    (cache_dir / "key").symlink_to(elsewhere)
    load_and_validate(repo)
    assert not (cache_dir / "key").is_symlink() and (cache_dir / "key").read_bytes() != b"k" * 32
    assert elsewhere.read_bytes() == b"k" * 32
