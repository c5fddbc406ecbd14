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
# the shortest value still redacted in free text (errors.MIN_REDACT_LEN): ordinary-length
# secrets stay covered although shorter ones are no longer searched for
SHORT = {"LEAK_SHORT": "Qz#7"}
# a value whose JSON-escaped (Python's and Go's) and URL-encoded forms differ from it
SPECIAL = {"LEAK_SPECIAL": 'leak "sp\u20accial"/canary+pw&<x>'}


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
        registry_doc("HelmRegistry", "s", "endpoint: https://s.example.com\n"
                     "auth: {type: basic, username: u, password: {fromEnv: LEAK_SHORT}}"),
        registry_doc("HelmRegistry", "x", "endpoint: https://x.example.com\n"
                     "auth: {type: basic, username: u, password: {fromEnv: LEAK_SPECIAL}}"),
    ])})
    commit_all(root)
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    env = dict(OWN, **SHORT, **SPECIAL, PALETTE_API_KEY=API_KEY)
    for value in SHORT.values():
        leaks.note_secret(value)
    for extra in ([], ["--dry-run"], ["--dry-run", "--format", "json"], ["--dry-run", "--format", "markdown"],
                  ["status"]):
        run(root, *extra, env=env)
        run(root, "--target", "palette", "--endpoint", emu.url, *extra, env=env)
    run(root, "--target", "palette", "--endpoint", emu.url, env=dict(env, LEAK_PW="leak-canary-rotated-99"))
    # a server that echoes credentials back in its messages, in every form, the API key too
    echoed = [f for v in (*SHORT.values(), *SPECIAL.values(), API_KEY) for f in sorted(leaks.forms(v))]
    emu.faults.sync_mode = "fail"
    emu.faults.sync_polls = 0
    emu.faults.sync_fail_message = "pull failed: " + " | ".join(echoed)
    synced = run(root, "--target", "palette", "--endpoint", emu.url, "sync", "--force", "--wait", env=env)
    assert synced.returncode == 1 and "pull failed: " in synced.stdout + synced.stderr, synced
    run(root, "--target", "palette", "--endpoint", emu.url, "status", env=env)
    leaks.note_output(*emu.request_lines())
    return root


def test_no_secret_in_anything_the_suite_produced(scenario: Path, tmp_path_factory: pytest.TempPathFactory):
    assert set(OWN.values()) | set(SHORT.values()) | set(SPECIAL.values()) <= leaks.secrets
    # the canaries really were sent to the target (the scan would be vacuous otherwise)
    base = tmp_path_factory.getbasetemp()
    produced = list(leaks.outputs)
    files = [p for p in base.rglob("*") if p.is_file() and (
        (p.name.startswith("state") and p.suffix == ".json") or p.suffix in (".db", ".log"))]
    assert any(p.name.startswith("state") for p in files)
    for p in files:
        produced.append(p.read_bytes().decode("utf-8", "replace"))
    blob = "\n".join(produced)
    leaked = sorted(s for s in leaks.secrets if any(f in blob for f in leaks.forms(s)))
    assert not leaked, f"{len(leaked)} secret value(s) leaked into output, request logs or state"
    assert len(leaks.outputs) >= 10
