"""Adversarial pass 9: bad input gets a clear error with its location and exit 1, and
changes nothing; never a crash or an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

HELM = registry_doc("HelmRegistry", "h", "endpoint: http://127.0.0.1:9/charts")


def _repo(root: Path) -> Path:
    init_repo(root)
    write_defs(root, {"h.yaml": HELM})
    commit_all(root)
    return root


@pytest.mark.parametrize("text", [
    "a: " + "[" * 30_000 + "]" * 30_000 + "\n",
    "a: " + "{b: " * 30_000 + "x" + "}" * 30_000 + "\n",
    "- " * 30_000 + "x\n",
], ids=["flow-sequences", "flow-mappings", "block-sequences"])
@pytest.mark.parametrize("args", [["validate"], ["--dry-run"], []], ids=["validate", "plan", "apply"])
def test_yaml_nested_tens_of_thousands_deep_is_a_located_error_not_a_crash(tmp_path: Path, text: str, args):
    """A 60 KB file of ``[[[...`` (or ``{b: {b: ...``, or ``- - - ...``) crashed the process
    with a segmentation fault (exit -11/139, no message): libyaml's composer recurses once per
    level in C, past the stack, before the builder's 64-level bound could say anything."""
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "deep.yaml").write_text(text)
    res = run(root, *args)
    assert res.returncode == 1, (res.returncode, res.stdout[-500:], res.stderr[-500:])
    assert "registries.d/deep.yaml:1:" in res.stdout + res.stderr
    assert "nesting deeper than 64 levels" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert not (root / ".reconciler").exists()
