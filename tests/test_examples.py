"""One test per example under tests/examples/{valid,invalid}/ (a file, or a directory of files).

A sidecar ``NAME.expected`` lists every expected problem, one per line:
``[FILE:]LINE:COL SEVERITY: MESSAGE SUBSTRING`` (FILE relative to a directory example), plus
optional directives ``profile: NAME`` and ``limit: MAX_FILE_BYTES=N`` (loader bounds). Invalid
examples must produce exactly the listed problems; valid ones no errors, and only the listed
warnings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler import loader
from reconciler.validation import load_and_validate

EXAMPLES = Path(__file__).parent / "examples"
_LINE = re.compile(
    r"^(?:(?P<file>[^:\s]+):)?(?P<line>\d+):(?P<col>\d+) (?P<sev>error|warning): (?P<msg>.+)$"
)


def _cases(kind: str) -> list[Path]:
    d = EXAMPLES / kind
    return sorted(
        p
        for p in d.iterdir()
        if p.suffix in (".yaml", ".yml") or (p.is_dir() and not p.is_symlink())
    )


def _sidecar(example: Path) -> tuple[dict[str, str], list[tuple[str, int, int, str, str]]]:
    side = (
        example.with_name(example.stem + ".expected")
        if example.is_file() or example.is_symlink()
        else example.with_name(example.name + ".expected")
    )
    directives: dict[str, str] = {}
    expected = []
    if not side.exists():
        return directives, expected
    for raw in side.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            if m["file"]:
                shown = (example / m["file"]).relative_to(EXAMPLES).as_posix()
            else:
                shown = example.relative_to(EXAMPLES).as_posix()
            expected.append((shown, int(m["line"]), int(m["col"]), m["sev"], m["msg"]))
        else:
            key, _, value = line.partition(":")
            directives[key.strip()] = value.strip()
    return directives, expected


def _run(example: Path, monkeypatch: pytest.MonkeyPatch):
    directives, expected = _sidecar(example)
    if "limit" in directives:
        name, _, value = directives["limit"].partition("=")
        monkeypatch.setattr(loader, name.strip(), int(value))
    result = load_and_validate(EXAMPLES, paths=[example], profile=directives.get("profile"))
    return result, expected


def _matches(problem, exp) -> bool:
    file, line, col, sev, msg = exp
    return (problem.file, problem.line, problem.col, problem.severity) == (
        file,
        line,
        col,
        sev,
    ) and msg in problem.message


@pytest.mark.parametrize("example", _cases("invalid"), ids=lambda p: p.name)
def test_invalid_example(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, expected = _run(example, monkeypatch)
    assert expected, f"{example.name}: no sidecar with expected problems"
    assert not result.ok
    unmatched = [e for e in expected if not any(_matches(p, e) for p in result.problems)]
    unexpected = [str(p) for p in result.problems if not any(_matches(p, e) for e in expected)]
    assert not unmatched and not unexpected, f"missing: {unmatched}\nunexpected: {unexpected}"
    assert result.failed_files, "an invalid example must mark its file as failed"


@pytest.mark.parametrize("example", _cases("valid"), ids=lambda p: p.name)
def test_valid_example(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, expected = _run(example, monkeypatch)
    assert result.errors == [], "\n".join(map(str, result.errors))
    assert all(e[3] == "warning" for e in expected)
    unexpected = [str(p) for p in result.warnings if not any(_matches(p, e) for e in expected)]
    unmatched = [e for e in expected if not any(_matches(p, e) for p in result.warnings)]
    assert not unexpected and not unmatched, f"missing: {unmatched}\nunexpected: {unexpected}"
    assert not result.failed_files


def test_every_invalid_example_has_a_sidecar() -> None:
    for example in _cases("invalid"):
        assert _sidecar(example)[1], example.name


def test_repository_definitions_are_valid() -> None:
    root = Path(__file__).parent.parent
    result = load_and_validate(root)
    assert result.errors == [], "\n".join(map(str, result.errors))
    assert result.desired.registries
    for f in sorted((root / "registries.d").rglob("*.y*ml")):
        first = f.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schema/registry.schema.json", f
