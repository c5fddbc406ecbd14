from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler import loader
from reconciler.errors import InputError
from reconciler.loader import LoadedFile, SourceFile, discover, load_file, parse_text
from reconciler.validation import load_and_validate


def parse(text: str) -> LoadedFile:
    out = LoadedFile("x.yaml")
    parse_text("x.yaml", text, out)
    return out


def write(root: Path, rel: str, text: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


HELM = "apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata: {{name: {name}}}\nspec:\n  endpoint: https://{name}.example.com\n"


# ------------------------------------------------------------------ positions and values


def test_positions_of_values_and_keys() -> None:
    f = parse("a: 1\nb:\n  c: [x, {d: true}]\n  e: ~\n")
    (doc,) = f.documents
    assert doc.value == {"a": 1, "b": {"c": ["x", {"d": True}], "e": None}}
    assert doc.positions[("a",)] == (1, 4)
    assert doc.key_positions[("b",)] == (2, 1)
    assert doc.positions[("b", "c", 1, "d")] == (3, 14)
    assert doc.key_positions[("b", "c", 1, "d")] == (3, 11)
    assert doc.position(("b", "missing", "deeper")) == (3, 3)  # nearest existing ancestor
    assert doc.position(("b",), key=True) == (2, 1)


def test_several_documents_and_empty_ones() -> None:
    f = parse("---\na: 1\n---\n# only a comment\n---\nb: 2\n---\n")
    assert [d.value for d in f.documents] == [{"a": 1}, {"b": 2}]
    assert [d.index for d in f.documents] == [0, 2]
    assert f.documents[1].start == (6, 1)


def test_scalars_timestamps_stay_text_and_odd_tags_are_reported() -> None:
    f = parse("t: 2024-01-01\nv: 1.5\nn: null\nb: !!binary aGk=\n")
    assert f.documents[0].value["t"] == "2024-01-01"
    assert f.documents[0].value["v"] == 1.5
    (p,) = f.problems
    assert (p.line, p.col, p.rule) == (4, 4, "yaml-tag")


def test_duplicate_keys_are_reported_at_the_second_key() -> None:
    f = parse("a: 1\nb:\n  x: 1\n  x: 2\na: 3\n")
    got = sorted((p.line, p.col, p.message) for p in f.problems)
    assert got == [
        (4, 3, "duplicate key 'x' (first at line 3)"),
        (5, 1, "duplicate key 'a' (first at line 1)"),
    ]
    assert f.documents[0].value == {"a": 1, "b": {"x": 1}}


def test_merge_keys_explicit_keys_win() -> None:
    f = parse("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n")
    assert f.documents[0].value["thing"] == {"x": 1, "y": 3}
    assert not f.problems


# ------------------------------------------------------------------ aliases


def test_billion_laughs_is_rejected_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklmnop":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
        prev = name
    start = time.perf_counter()
    f = parse("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 1.0
    (p,) = f.problems
    assert p.rule == "alias-bound"
    # c: ten *b of 111 nodes each cross the bound of 1000 (b itself adds 110)
    assert (p.line, p.col) == (3, 4)
    assert "expanding the anchor at line 2" in p.message
    assert f.documents == []


def test_small_aliases_are_fine() -> None:
    f = parse("a: &x {k: v}\nb: *x\nc: [*x, *x]\n")
    assert not f.problems
    assert f.documents[0].value["c"] == [{"k": "v"}, {"k": "v"}]


def test_recursive_alias() -> None:
    f = parse("a: &a\n  b: *a\n")
    (p,) = f.problems
    assert (p.line, p.col, p.message) == (2, 3, "recursive alias")


def test_deep_nesting_is_bounded() -> None:
    f = parse("a: " + "[" * 200 + "]" * 200 + "\n")
    assert [p.rule for p in f.problems] == ["yaml-depth"]


@pytest.mark.parametrize("depth", [62, 63, 64, 65])
def test_the_fast_path_bounds_depth_as_the_builder_does(depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast builder takes string children inline (no call per scalar): still not one level
    deeper than the reporting builder allows, in sequences and in mappings."""
    for text in ("a: " + "[" * depth + "x" + "]" * depth + "\n", "a: " + "{b: " * depth + "x" + "}" * depth + "\n"):
        fast = parse(text)
        monkeypatch.setattr(loader, "_fast", lambda *a: (_ for _ in ()).throw(loader._Slow()))
        full = parse(text)
        monkeypatch.undo()
        assert [p.rule for p in fast.problems] == [p.rule for p in full.problems]
        assert [d.value for d in fast.documents] == [d.value for d in full.documents]
    assert bool(fast.problems) is (depth >= 64)


# ------------------------------------------------------------------ bytes


def test_syntax_error_has_position_and_earlier_documents_survive() -> None:
    f = parse("a: 1\n---\nb: [1, 2\nc: 3\n")
    (p,) = f.problems
    assert p.rule == "yaml-syntax"
    assert (p.line, p.col) == (4, 2)
    assert p.message.startswith("YAML syntax error: ")
    assert [d.value for d in f.documents] == [{"a": 1}]


def test_tab_indentation_is_a_syntax_error() -> None:
    f = parse("a:\n\tb: 1\n")
    assert [(p.line, p.rule) for p in f.problems] == [(2, "yaml-syntax")]


def test_non_utf8_points_at_the_first_bad_byte() -> None:
    f = load_file(
        SourceFile("x.yaml", data="a: 1\nname: \u00e9t\u00e9 ".encode() + b"\xff\xfe rest\n")
    )
    (p,) = f.problems
    assert (p.line, p.col, p.rule) == (2, 11, "encoding")  # after "name: été "
    assert "0xff" in p.message


def test_bom_is_accepted() -> None:
    f = load_file(SourceFile("x.yaml", data=b"\xef\xbb\xbfa: 1\n"))
    assert f.documents[0].value == {"a": 1} and not f.problems


def test_file_over_the_size_bound(tmp_path: Path) -> None:
    big = write(tmp_path, "registries.d/big.yaml", "# " + "x" * (1 << 20) + "\n")
    write(tmp_path, "registries.d/ok.yaml", HELM.format(name="ok"))
    result = load_and_validate(tmp_path)
    (p,) = result.errors
    assert (p.file, p.line, p.col, p.rule) == ("registries.d/big.yaml", 1, 1, "file-size")
    assert str(big.stat().st_size) in p.message
    assert result.failed_files == {"registries.d/big.yaml"}
    assert [r.name for r in result.desired.registries] == ["ok"]


# ------------------------------------------------------------------ discovery


def test_discover_recurses_and_filters(tmp_path: Path) -> None:
    write(tmp_path, "registries.d/a.yaml", "")
    write(tmp_path, "registries.d/team/b.yml", "")
    write(tmp_path, "registries.d/README.md", "")
    write(tmp_path, "registries.d/.hidden/c.yaml", "")
    write(tmp_path, "registries.d/.d.yaml", "")
    files, problems = discover(tmp_path)
    assert [f.name for f in files] == ["registries.d/a.yaml", "registries.d/team/b.yml"]
    assert problems == []


def test_discover_explicit_paths(tmp_path: Path) -> None:
    write(tmp_path, "other/x.txt", "")
    write(tmp_path, "more/y.yaml", "")
    files, problems = discover(
        tmp_path, [tmp_path / "other/x.txt", Path("more"), tmp_path / "nope.yaml"]
    )
    assert [f.name for f in files] == ["other/x.txt", "more/y.yaml"]
    assert [(p.file, p.message) for p in problems] == [("nope.yaml", "no such file or directory")]


def test_no_registries_dir_is_empty(tmp_path: Path) -> None:
    result = load_and_validate(tmp_path)
    assert result.ok and result.files == [] and result.desired.registries == []


def test_symlinks_leaving_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = write(tmp_path, "outside/evil.yaml", HELM.format(name="evil"))
    write(tmp_path, "outside/dir/evil2.yaml", HELM.format(name="evil2"))
    write(repo, "shared/inside.yaml", HELM.format(name="inside"))
    (repo / "registries.d").mkdir()
    os.symlink(outside, repo / "registries.d/file-link.yaml")
    os.symlink(tmp_path / "outside/dir", repo / "registries.d/dir-link")
    os.symlink("../shared/inside.yaml", repo / "registries.d/ok-link.yaml")
    result = load_and_validate(repo)
    got = sorted((p.file, p.rule) for p in result.errors)
    assert got == [("registries.d/dir-link", "symlink"), ("registries.d/file-link.yaml", "symlink")]
    assert all("leaves the repository" in p.message for p in result.errors)
    assert [r.name for r in result.desired.registries] == ["inside"]
    assert "registries.d/file-link.yaml" in result.failed_files


def test_a_symlink_into_a_git_directory_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    """Adversarial pass 8, item 4: a pull request's ``registries.d/x.yaml -> ../.git/config``
    stays inside the repository, so it was read as a definition: the file where
    ``actions/checkout`` keeps the job's token (``http.extraheader``), which every secret and CA
    file rule refuses whatever the roots. So was a link to a folder inside ``.git/``
    or inside a bare repository kept in the work tree. Each is a symlink problem now, and the
    file is never opened."""
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "http.https://github.com/.extraheader", "AUTHORIZATION: basic dG9rZW4=")
    write(tmp_path, ".git/info/x.yaml", HELM.format(name="planted"))
    write(tmp_path, "registries.d/a.yaml", HELM.format(name="a"))
    write(tmp_path, "vendor/mirror.git/HEAD", "ref: refs/heads/main\n")
    write(tmp_path, "vendor/mirror.git/config.yaml", HELM.format(name="bare"))
    (tmp_path / "vendor/mirror.git/objects").mkdir()
    (tmp_path / "vendor/mirror.git/refs").mkdir()
    os.symlink("../.git/config", tmp_path / "registries.d/config.yaml")
    os.symlink("../.git/info", tmp_path / "registries.d/info")
    os.symlink("../vendor/mirror.git/config.yaml", tmp_path / "registries.d/bare.yaml")
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    result = load_and_validate(tmp_path)
    got = sorted((p.file, p.rule) for p in result.errors)
    assert got == [("registries.d/bare.yaml", "symlink"), ("registries.d/config.yaml", "symlink"),
                   ("registries.d/info", "symlink")], [str(p) for p in result.errors]
    assert all("git directory" in p.message for p in result.errors), [str(p) for p in result.errors]
    assert [r.name for r in result.desired.registries] == ["a"]
    assert not [p for p in opened if ".git" in p], opened


def test_a_symlink_that_cannot_be_resolved_or_read_is_a_problem_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    """``validate /proc/1`` met links it may not resolve or read (Permission denied): the report
    of the first failure called ``os.readlink``, which raised again (an internal error)."""
    write(tmp_path, "registries.d/a.yaml", HELM.format(name="a"))
    os.symlink("a.yaml", tmp_path / "registries.d/locked.yaml")
    real_resolve, real_readlink = Path.resolve, os.readlink

    def denied(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "resolve", lambda self, *a, **k: denied(self) if self.name == "locked.yaml"
                        else real_resolve(self, *a, **k))
    monkeypatch.setattr(os, "readlink", lambda p, *a, **k: denied(p) if str(p).endswith("locked.yaml")
                        else real_readlink(p, *a, **k))
    result = load_and_validate(tmp_path)
    assert [(p.file, p.rule, p.message) for p in result.errors] == [
        ("registries.d/locked.yaml", "symlink",
         "cannot resolve symlink (Permission denied) (points to unreadable: Permission denied)")]
    assert [r.name for r in result.desired.registries] == ["a"]


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    write(tmp_path, "registries.d/a.yaml", HELM.format(name="a"))
    os.symlink(".", tmp_path / "registries.d/loop")
    result = load_and_validate(tmp_path)
    assert result.ok and [r.name for r in result.desired.registries] == ["a"]


# ------------------------------------------------------------------ git


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_git_work_tree_commit_and_dirty(repo: Path) -> None:
    write(repo, "registries.d/a.yaml", HELM.format(name="a"))
    result = load_and_validate(repo)
    assert result.desired.commit is None and result.desired.dirty  # no commit yet, untracked file
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a")
    sha = git(repo, "rev-parse", "HEAD")
    result = load_and_validate(repo)
    assert (result.desired.commit, result.desired.dirty) == (sha, False)
    write(repo, "README.md", "changes outside registries.d do not count")
    assert load_and_validate(repo).desired.dirty is False
    write(repo, "registries.d/a.yaml", HELM.format(name="a2"))
    assert load_and_validate(repo).desired.dirty is True


def test_git_is_asked_where_the_files_come_from_only_when_it_is_read(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan shown as text or JSON shows no commit: its load runs no `git status` (a
    subprocess over every definition); the first read asks once, for both answers."""
    write(repo, "registries.d/a.yaml", HELM.format(name="a"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a")
    asked: list[Path] = []
    real = loader.git_info
    monkeypatch.setattr(loader, "git_info", lambda root: asked.append(root) or real(root))
    result = load_and_validate(repo)
    assert result.ok and asked == []
    assert (result.desired.commit, result.desired.dirty) == (git(repo, "rev-parse", "HEAD"), False)
    assert asked == [repo]


def test_outside_git(tmp_path: Path) -> None:
    write(tmp_path, "registries.d/a.yaml", HELM.format(name="a"))
    result = load_and_validate(tmp_path)
    assert (result.desired.commit, result.desired.dirty) == (None, False)


def test_ref_reads_blobs_not_the_work_tree(repo: Path) -> None:
    write(repo, "registries.d/a.yaml", HELM.format(name="a"))
    write(repo, "registries.d/sub/b.yaml", HELM.format(name="b"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    write(repo, "registries.d/a.yaml", HELM.format(name="renamed"))
    write(repo, "registries.d/c.yaml", "kind: [broken\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "two")
    write(repo, "registries.d/d.yaml", "not even committed: [\n")
    before = sorted(p.name for p in (repo / "registries.d").iterdir())

    result = load_and_validate(repo, ref=first)
    assert result.ok, result.problems
    assert sorted(r.name for r in result.desired.registries) == ["a", "b"]
    assert result.desired.commit == first and result.desired.dirty is False
    assert result.files == ["registries.d/a.yaml", "registries.d/sub/b.yaml"]

    result = load_and_validate(repo, ref="main")
    assert [p.file for p in result.errors] == ["registries.d/c.yaml"]
    assert sorted(p.name for p in (repo / "registries.d").iterdir()) == before  # no checkout


def test_ref_errors(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    write(repo, "x", "")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "x")
    with pytest.raises(InputError, match="no such commit"):
        load_and_validate(repo, ref="does-not-exist")
    with pytest.raises(InputError, match="not in a git repository"):
        load_and_validate(tmp_path_factory.mktemp("plain"), ref="HEAD")
    assert load_and_validate(repo, ref="HEAD").files == []  # no registries.d in that commit


def test_ref_symlink_leaving_the_repository(repo: Path) -> None:
    (repo / "registries.d").mkdir()
    os.symlink("../../outside.yaml", repo / "registries.d/evil.yaml")
    write(repo, "shared/ok.yaml", HELM.format(name="ok"))
    os.symlink("../shared/ok.yaml", repo / "registries.d/ok.yaml")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "links")
    result = load_and_validate(repo, ref="HEAD")
    assert [(p.file, p.rule) for p in result.errors] == [("registries.d/evil.yaml", "symlink")]
    assert [r.name for r in result.desired.registries] == ["ok"]


def test_ref_oversized_blob(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo, "registries.d/a.yaml", HELM.format(name="a") + "# padding\n" * 20)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a")
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 64)
    result = load_and_validate(repo, ref="HEAD")
    assert [p.rule for p in result.errors] == ["file-size"]


# ------------------------------------------------------------------ lazy positions (issue 11.3)


def _all_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _all_paths(v, (*prefix, k))
            yield (*prefix, k, "missing")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _all_paths(v, (*prefix, i))
        yield (*prefix, len(value))


LAZY_CASES = [
    "a: 1\nb:\n  c: [x, {d: true}]\n  e: ~\n",
    "# c\n---\nkind: X\nmetadata: {name: 'n', 1: 2, true: x}\nspec:\n  - - a\n    - {b: [1, 2.5]}\n  -\n",
    "---\na: &x hello\nb: *x\n---\nc: 2001-01-01\n",
    "apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata:\n  name: h\nspec:\n  endpoint: https://h\n"
    "  requiredCharts:\n    - name: a\n      version: '1'\n",
]


@pytest.mark.parametrize("text", LAZY_CASES)
def test_fast_documents_locate_exactly_as_the_full_builder(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, hinted = parse(text), parse(text)
    assert all(d.strings is not None for d in fast.documents)  # the fast path took them
    monkeypatch.setattr(loader, "_fast", lambda *a: (_ for _ in ()).throw(loader._Slow()))
    full = parse(text)
    assert [d.value for d in fast.documents] == [d.value for d in full.documents]
    assert not fast.problems and not full.problems
    for f, g in zip(hinted.documents, full.documents, strict=True):  # the hints, before any lookup
        assert [f.position(h) for h in loader.HINTS] == [g.position(h) for h in loader.HINTS]
        assert f._positions is None  # answered from the hints: the file was not parsed again
    for f, g in zip(fast.documents, full.documents, strict=True):
        for path in _all_paths(g.value):
            for key in (False, True):
                assert f.position(path, key=key) == g.position(path, key=key), (path, key)
        assert f.positions == g.positions and f.key_positions == g.key_positions


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n", "a: &x {b: 1}\nc: *x\n", "<<: {a: 1}\nb: 2\n", "a: !!binary aGk=\n", "!!set {a}\n",
    "a: !custom 1\n", "? [a]\n: 1\n",
])
def test_anything_unusual_takes_the_reporting_builder(text: str) -> None:
    f = parse(text)
    for d in f.documents:
        assert d.strings is None


def test_values_equal_libyamls_on_a_varied_corpus(tmp_path: Path) -> None:
    import sys

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from corpus import generate

    paths = generate(tmp_path, 300, seed=3)
    tricky = write(tmp_path, "registries.d/tricky.yaml", "a: [yes, No, ~, 0x1F, 1_000, .5, -.inf, '1', 2001-12-14]\n"
                   "b: {1: x, true: y, null: z}\n---\na: yes\n")
    for p in [*paths, tricky]:
        f = load_file(SourceFile(p.name, path=p, size=p.stat().st_size))
        assert not f.problems
        expected = [d for d in yaml.load_all(p.read_bytes(), Loader=yaml.CSafeLoader) if d is not None]
        if p == tricky:  # timestamps stay text; keys are their text
            expected[0]["a"][-1] = "2001-12-14"
            expected[0]["b"] = {"1": "x", "true": "y", "null": "z"}
        assert [d.value for d in f.documents] == expected


@pytest.mark.parametrize("claimed", [0, 10, 70_000, loader.MAX_FILE_BYTES])
def test_reads_are_bounded_whatever_stat_said(tmp_path: Path, claimed: int) -> None:
    big = write(tmp_path, "big.yaml", b"a: " + b"x" * (loader.MAX_FILE_BYTES + 10))
    data, problem = loader.read_source(SourceFile("big.yaml", path=big, size=claimed))
    assert data is None and problem is not None and problem.rule == "file-size"
    small = write(tmp_path, "small.yaml", b"a: " + b"y" * 100_000)
    data, problem = loader.read_source(SourceFile("small.yaml", path=small, size=min(claimed, 1000)))
    assert problem is None and data == small.read_bytes()  # a file longer than stat said: all of it


def test_a_file_is_parsed_again_at_most_once_for_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions beyond the hints come from parsing the file again: once for all its
    documents, not once per document (a file of many bad documents stays linear)."""
    text = "".join(f"---\nkind: K\nmetadata: {{name: n{i}}}\nspec: {{a: {i}}}\n" for i in range(50))
    f = parse(text)
    assert len(f.documents) == 50 and all(d.strings is not None for d in f.documents)
    calls = []
    real = loader.compose_all
    monkeypatch.setattr(loader, "compose_all", lambda t: calls.append(1) or real(t))
    for i, d in enumerate(f.documents):
        assert d.position(("spec", "a")) == (4 * i + 4, 11)
    assert len(calls) == 1


def test_discovery_leaves_no_reference_cycle(tmp_path: Path) -> None:
    """The files discovery lists are freed when their list is: nothing waits for the cyclic
    collector, which is paused while a plan loads (runner.paused_gc)."""
    import gc

    write(tmp_path, "registries.d/a.yaml", HELM.format(name="a"))
    write(tmp_path, "registries.d/sub/b.yaml", HELM.format(name="b"))
    gc.collect()
    gc.disable()
    try:
        files, problems = discover(tmp_path)
        assert len(files) == 2 and not problems
        assert sum(type(o) is SourceFile for o in gc.get_objects()) == 2  # they are tracked, so counted
        del files
        assert sum(type(o) is SourceFile for o in gc.get_objects()) == 0  # freed by their count alone
    finally:
        gc.enable()
