"""#9.13: every numeric option is finite and bounded. ``--lock-timeout nan`` used to wait for
ever and ``sync --timeout nan`` to poll for ever; now each is a usage error (exit 1) before any
work: no state, no database, no request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

BAD = ["nan", "NaN", "inf", "-inf", "1e999", "+Infinity"]


def _repo(root: Path) -> Path:
    init_repo(root)
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://charts.example.com")})
    commit_all(root)
    return root


def _refused(root: Path, res, option: str, why: str) -> None:
    both = res.stdout + res.stderr
    assert res.returncode == 1, both
    assert "Traceback" not in both and "internal error" not in both, both
    assert f"Invalid value for '{option}'" in both and why in both, both
    assert not (root / ".reconciler").exists(), "a refused command wrote state"


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--dry-run", "--lock-timeout"], "--lock-timeout"),
        (["--dry-run", "--rate-limit"], "--rate-limit"),
        (["sync", "--timeout"], "--timeout"),
    ],
    ids=["lock-timeout", "rate-limit", "sync-timeout"],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, args: list[str], option: str, value: str) -> None:
    root = _repo(tmp_path)
    res = run(root, *args, value, timeout=30)
    _refused(root, res, option, "is not a finite number")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--dry-run", "--lock-timeout", "86401"], "--lock-timeout"),
        (["--dry-run", "--lock-timeout", "-1"], "--lock-timeout"),
        (["--dry-run", "--rate-limit", "0"], "--rate-limit"),
        (["--dry-run", "--rate-limit", "1000000"], "--rate-limit"),
        (["--dry-run", "--burst", "0"], "--burst"),
        (["--dry-run", "--burst", "10000000000000000000000"], "--burst"),
        (["--dry-run", "--max-deletions", "-1"], "--max-deletions"),
        (["--dry-run", "--max-deletions", "99999999999999999999"], "--max-deletions"),
        (["sync", "--timeout", "0.5"], "--timeout"),
        (["sync", "--timeout", "1e9"], "--timeout"),
    ],
)
def test_out_of_range_numbers_are_refused(tmp_path: Path, args: list[str], option: str) -> None:
    root = _repo(tmp_path)
    _refused(root, run(root, *args, timeout=30), option, "is not between")


@pytest.mark.parametrize("args", [["--burst", "nan"], ["--max-deletions", "inf"], ["--burst", "1.5"]])
def test_integers_are_integers(tmp_path: Path, args: list[str]) -> None:
    root = _repo(tmp_path)
    _refused(root, run(root, "--dry-run", *args, timeout=30), args[0], "is not a valid integer")


def test_in_range_numbers_still_work(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    res = run(root, "--dry-run", "--lock-timeout", "0.5", "--rate-limit", "20", "--burst", "3",
              "--max-deletions", "0", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
