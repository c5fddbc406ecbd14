"""Adversarial pass 8: what a state can make a plan believe (one not signed with
RECONCILER_STATE_KEY, one emptied on another target). Each test failed before its fix (see the
commit messages)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

KEY = "adv8-state-key-0123456789"
OCI = """
    endpoint: reg.example.com
    provider: helm
    baseContentPath: charts
    sync: true
    auth: {type: basic, username: u, password: {fromEnv: PW_1}}
"""


def test_a_planted_record_spec_never_stands_in_for_what_palette_reports(tmp_path: Path,  # noqa: F811
                                                                        palette_emulator_factory):
    """A record edited by someone who can write the state (its spec says sync: false, its
    fingerprint and the target's modification stamp left as they were) must not turn the
    declared, unchanged registry into a replace: the plan reads the registry from Palette,
    not from the record no signature vouches for."""
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    emu.behaviour.summary_timestamps = True  # unverified (PB "Unknown"): the path that trusts the stamp
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"o.yaml": registry_doc("OciRegistry", "o", OCI)})
    commit_all(root, "oci")
    env = {"PW_1": "pw-one-secret", "PALETTE_API_KEY": API_KEY, "RECONCILER_STATE_KEY": KEY}
    args = ["--target", "palette", "--endpoint", emu.url]
    assert run(root, *args, env=env).returncode == 0
    path = root / ".reconciler/state-palette.json"
    doc = json.loads(path.read_text())
    [rec] = doc["registries"]
    uid = rec["uid"]
    assert rec["version"], "the emulator's summary carries the stamp the record keeps"
    rec["spec"]["sync"] = False  # fingerprint, version and uid untouched
    path.write_text(json.dumps(doc))
    plan = run(root, *args, "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    assert "-/+" not in plan.stdout and "replace" not in plan.stdout.split("Plan:")[0], plan.stdout
    assert "~ OciRegistry/o" in plan.stdout, plan.stdout
    res = run(root, *args, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    with emu.store.lock:
        assert uid in emu.store.records, "the registry was deleted and created again"


def test_an_emptied_state_takes_the_target_it_is_next_applied_to(tmp_path: Path,  # noqa: F811
                                                                 palette_emulator_factory):
    """A state that recorded the local target, emptied (every registry deleted, --allow-empty),
    then used for Palette: the apply recorded Palette's registries under target 'local', so every
    later Palette run was refused ('records registries of local'), and a local run took Palette's
    records for its own, gone from its database: dropped or created again there."""
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(root, "h")
    state = ["--state", ".reconciler/shared.json"]
    assert run(root, *state).returncode == 0  # a trial on the local target
    write_defs(root, {})
    commit_all(root, "none")
    assert run(root, *state, "--allow-empty").returncode == 0
    assert json.loads((root / ".reconciler/shared.json").read_text())["registries"] == []
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(root, "h again")
    env = {"PALETTE_API_KEY": API_KEY}
    args = [*state, "--target", "palette", "--endpoint", emu.url]
    applied = run(root, *args, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads((root / ".reconciler/shared.json").read_text())["target"] == f"palette ({emu.url})"
    again = run(root, *args, "--dry-run", "--detailed-exitcode", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    local = run(root, *state, "--dry-run")
    assert local.returncode == 1 and "records registries of palette" in local.stderr, local.stdout + local.stderr


def test_an_emptied_state_takes_the_target_it_imports_from(tmp_path: Path) -> None:
    """The same for ``reconcile import``: its records went under the emptied state's old target."""
    from reconciler.model import Registry
    from reconciler.targets.local import LocalTarget

    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(root, "h")
    tenant = LocalTarget(root / ".reconciler/local.db", base_dir=root)
    tenant.create(Registry("HelmRegistry", "h", "tenant", {"endpoint": "https://h.example.com",
                                                         "auth": {"type": "noAuth"}}), {})
    tenant.close()
    (root / ".reconciler/state.json").write_text(json.dumps({
        "version": 1, "lineage": "l-1", "serial": 3, "salt": "00", "target": "palette (https://api.example.com)",
        "registries": []}))
    res = run(root, "import", "h")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((root / ".reconciler/state.json").read_text())["target"] == "local"
    assert run(root, "--dry-run").returncode == 0
