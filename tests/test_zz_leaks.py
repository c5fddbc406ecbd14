"""Suite-wide leak scan (runs last): no secret value handed to ``reconcile`` anywhere in the
suite appears in its output, in a Palette request log line, in a state file or in a local
target database. It first produces a scenario of its own, so it never scans nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import leaks
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

OWN = {"LEAK_PW": "leak-canary-pw-5f1e", "LEAK_TOKEN": "leak-canary-token-77ab"}


@pytest.fixture
def scenario(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    root = tmp_path / "leakrepo"
    init_repo(root)
    write_defs(root, {"x.yaml": "---\n".join([
        registry_doc("OciRegistry", "o", """
            endpoint: o.example.com
            auth: {type: basic, username: u, password: {fromEnv: LEAK_PW}}
        """),
        registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com\nauth: {type: token, token: {fromEnv: LEAK_TOKEN}}"),
    ])})
    commit_all(root)
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    env = dict(OWN, PALETTE_API_KEY=API_KEY)
    for extra in ([], ["--dry-run"], ["--dry-run", "--format", "json"], ["--dry-run", "--format", "markdown"],
                  ["status"]):
        run(root, *extra, env=env)
        run(root, "--target", "palette", "--endpoint", emu.url, *extra, env=env)
    run(root, "--target", "palette", "--endpoint", emu.url, env=dict(env, LEAK_PW="leak-canary-rotated-99"))
    leaks.note_output(*emu.request_lines())
    return root


def test_no_secret_in_anything_the_suite_produced(scenario: Path, tmp_path_factory: pytest.TempPathFactory):
    assert set(OWN.values()) <= leaks.secrets
    # the canaries really were sent to the target (the scan would be vacuous otherwise)
    base = tmp_path_factory.getbasetemp()
    produced = list(leaks.outputs)
    files = [p for p in base.rglob("*") if p.is_file() and (
        (p.name.startswith("state") and p.suffix == ".json") or p.suffix in (".db", ".log"))]
    assert any(p.name.startswith("state") for p in files)
    for p in files:
        produced.append(p.read_bytes().decode("utf-8", "replace"))
    blob = "\n".join(produced)
    leaked = sorted(s for s in leaks.secrets if s in blob)
    assert not leaked, f"{len(leaked)} secret value(s) leaked into output, request logs or state"
    assert len(leaks.outputs) >= 10
