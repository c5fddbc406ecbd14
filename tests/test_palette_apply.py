"""End to end against the Palette API emulator: the installed CLI plans and applies 50
changes through random faults, converges within 3 runs, survives SIGKILL, never leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from reconciler.state.file import FileStateStore
from tests.support.gitops_repo import commit_all, init_repo, reconcile_cmd, registry_doc, run, write_defs
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

SECRET_ENV = {f"PW_{i}": f"palette-secret-{i:03d}-xQ" for i in range(50)}


def defs(n: int = 50) -> dict[str, str]:
    docs = []
    for i in range(n):
        if i % 3 == 0:
            docs.append(registry_doc("HelmRegistry", f"helm-{i}", f"""
                endpoint: https://charts-{i}.example.com
                sync: {'true' if i % 2 else 'false'}
                auth: {{type: basic, username: u{i}, password: {{fromEnv: PW_{i}}}}}
            """))
        elif i % 3 == 1:
            docs.append(registry_doc("OciRegistry", f"oci-{i}", f"""
                endpoint: oci-{i}.example.com
                provider: helm
                baseContentPath: charts
                sync: true
                auth: {{type: basic, username: u{i}, password: {{fromEnv: PW_{i}}}}}
            """))
        else:
            docs.append(registry_doc("PackRegistry", f"pack-{i}", f"""
                endpoint: https://packs-{i}.example.com
                auth: {{type: token, token: {{fromEnv: PW_{i}}}}}
            """))
    return {"all.yaml": "---\n".join(docs)}


CREATE_PATHS = ("/v1/registries/helm", "/v1/registries/pack", "/v1/registries/oci/basic", "/v1/registries/oci/ecr")


def env_for(emu) -> dict[str, str]:
    return dict(SECRET_ENV, PALETTE_API_KEY=API_KEY)


def args(emu) -> list[str]:
    return ["--target", "palette", "--endpoint", emu.url]


def managed(emu) -> list[tuple[str, str]]:
    with emu.store.lock:
        return [(r.flavour, r.name) for r in emu.store.records.values() if not r.builtin]


def assert_converged(root: Path, emu) -> None:
    regs = managed(emu)
    dupes = [k for k, n in Counter(regs).items() if n > 1]
    assert not dupes, f"duplicate registries on the target: {dupes}"
    state = FileStateStore(root / ".reconciler/state-palette.json").read()
    with emu.store.lock:
        target_uids = {r.uid for r in emu.store.records.values() if not r.builtin}
    assert {r.uid for r in state.records.values()} == target_uids
    plan = run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env_for(emu))
    assert plan.returncode == 0, plan.stdout + plan.stderr


def scan_for_leaks(texts: list[str]) -> None:
    blob = "\n".join(texts)
    for value in [*SECRET_ENV.values(), API_KEY]:
        assert value not in blob, "a secret value leaked"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, defs())
    commit_all(root, "50 registries")
    return root


@pytest.mark.slow
def test_fifty_changes_converge_through_random_faults(repo: Path, palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0, seed=7)
    f = emu.faults
    f.p500, f.p503, f.p429, f.p_timeout, f.p_drop = 0.05, 0.05, 0.04, 0.02, 0.04  # 20 %
    f.timeout_sleep = 1.0
    # issue 10 item 5: creates that land and then lose their answer (a dropped connection)
    f.after_effect, f.after_effect_count = "drop", 6
    outputs: list[str] = []
    for attempt in range(1, 4):
        res = run(repo, *args(emu), env=env_for(emu), timeout=300)
        outputs += [res.stdout, res.stderr]
        assert "Traceback" not in res.stderr
        if res.returncode == 0:
            break
    else:
        pytest.fail("did not converge within 3 runs:\n" + outputs[-1][-3000:])
    f.clear()
    assert len(managed(emu)) == 50
    assert_converged(repo, emu)
    # each landed-but-unanswered create was found by name, not sent again: one POST per name,
    # no 409, and the state holds the uid the target has (assert_converged)
    lost = [e for e in emu.requests if e["fault"] == "after_effect_drop"]
    assert len(lost) == 6 and emu.injected["after_effect"] == 6
    posts = Counter(e["body"]["metadata"]["name"] for e in emu.requests
                    if e["method"] == "POST" and e["path"] in CREATE_PATHS
                    and (e["status"] in (201, 409) or e["fault"].startswith("after_effect")))
    for e in lost:
        assert posts[e["body"]["metadata"]["name"]] == 1, e["body"]["metadata"]["name"]
    assert not [e for e in emu.requests if e["status"] == 409]
    state_text = (repo / ".reconciler/state-palette.json").read_text()
    scan_for_leaks(outputs + [state_text])
    assert emu.misplaced_secrets(SECRET_ENV.values()) == []  # raw requests: each secret in its own field only
    # The state document is rewritten once per apply (changes go to its journal), so the
    # serial counts applies, not changes (issue #11.1); every change is recorded.
    assert len(json.loads(state_text)["registries"]) == 50


def test_sigkill_mid_apply_then_rerun_converges(repo: Path, palette_emulator_factory):  # noqa: F811
    write_defs(repo, dict(defs(8)))
    commit_all(repo, "8 registries")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    for point in (2, 7, 11, 14):
        res = run(repo, *args(emu), env=dict(env_for(emu), RECONCILER_CRASH_AT=str(point)))
        assert res.returncode == -signal.SIGKILL, res.stderr
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(managed(emu)) == 8
    assert_converged(repo, emu)


def test_a_kill_after_the_create_answered_leaves_the_registry_recorded(repo: Path,
                                                                       palette_emulator_factory):  # noqa: F811
    """Adversarial pass 4, item 4: after the POST answered, apply read the modification stamp
    (a rate-limited, retried GET) before it journaled the uid. A kill -9 in that GET left a
    registry the state never knew: once its definition went, the plan said "No changes" and
    it stayed on Palette for good. The uid is recorded first: the process here is killed while
    the target answers that GET, and the next run still knows the registry and deletes it."""
    helm, oci = defs(2)["all.yaml"].split("---\n")  # helm-0 stays (a plan never deletes all), oci-1 goes
    write_defs(repo, {"all.yaml": helm, "oci.yaml": oci})
    commit_all(repo, "helm-0, oci-1")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    env = {**os.environ, **env_for(emu)}
    proc = subprocess.Popen([*reconcile_cmd(), *args(emu)], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    orig = emu.handle

    def kill_in_the_stamp_get(method, op, route_args, query, body):  # the first GET of the new registry
        if method == "GET" and op.template.startswith("/v1/registries/oci/{uid}") and ("basic", "oci-1") in managed(emu):
            proc.kill()
            proc.wait(10)
        return orig(method, op, route_args, query, body)

    emu.handle = kill_in_the_stamp_get
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        emu.handle = orig
    assert proc.returncode == -signal.SIGKILL, err
    assert ("basic", "oci-1") in managed(emu)
    (repo / "registries.d/oci.yaml").unlink()
    commit_all(repo, "oci-1 goes")
    plan = run(repo, *args(emu), "--dry-run", env=env_for(emu))
    assert "- OciRegistry/oci-1" in plan.stdout, plan.stdout + plan.stderr
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("basic", "oci-1") not in managed(emu)


@pytest.mark.parametrize("state", [[], ["--state", "git:reconciler-state"]], ids=["file", "git"])
def test_a_create_answered_with_a_recorded_uid_is_refused_and_the_state_stays_readable(
        repo: Path, palette_emulator_factory, state: list[str]):  # noqa: F811
    """Adversarial pass 4, item 5: a create answered with a uid the state records under another
    name was journaled, and every later run refused the state as corrupt, with no command to
    repair it. That change fails, naming both; the others are recorded; the state reads back."""
    helm = 'endpoint: https://{}.example.com'
    write_defs(repo, {"a.yaml": registry_doc("HelmRegistry", "a", helm.format("a"))})
    commit_all(repo, "a")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    assert run(repo, *args(emu), *state, env=env_for(emu)).returncode == 0
    with emu.store.lock:
        uid_a = next(r.uid for r in emu.store.records.values() if r.name == "a")
    orig = emu.handle

    def answer_b_with_uid_a(method, op, route_args, query, body):
        if method == "POST" and op.template == "/v1/registries/helm" and body["metadata"]["name"] == "b":
            return 201, {"uid": uid_a}  # a server bug, or a name lookup that found a renamed registry
        return orig(method, op, route_args, query, body)

    emu.handle = answer_b_with_uid_a
    write_defs(repo, {name + ".yaml": registry_doc("HelmRegistry", name, helm.format(name)) for name in "abc"})
    commit_all(repo, "b, c")
    res = run(repo, *args(emu), *state, env=env_for(emu))
    emu.handle = orig
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "could not be written" not in res.stderr, res.stderr
    assert (f"create HelmRegistry/b: FAILED: the target gave uid '{uid_a}', which the state records for "
            "HelmRegistry/a (scope tenant): not recorded for HelmRegistry/b") in res.stdout, res.stdout
    assert "create HelmRegistry/c: done" in res.stdout
    plan = run(repo, *args(emu), *state, "--dry-run", env=env_for(emu))
    assert plan.returncode == 0, plan.stdout + plan.stderr  # readable; c recorded, b still to create
    assert "+ HelmRegistry/b" in plan.stdout and "HelmRegistry/c" not in plan.stdout, plan.stdout


def test_a_replace_whose_old_registry_someone_else_deleted_does_not_claim_it_deleted_it(
        repo: Path, palette_emulator_factory):  # noqa: F811
    """The old registry of a replace answered 404 to its DELETE (deleted outside reconcile
    since the plan read it) and then the create failed: the message must not say this apply
    deleted it (it says so only when its own DELETE did)."""
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    oci, uid = _applied_basic_oci(repo, emu, sync=False)
    write_defs(repo, {"o.yaml": registry_doc("OciRegistry", "o", oci.replace("sync: false", "sync: true"))})
    orig = emu.handle

    def deleted_a_moment_before(method, op, route_args, query, body):
        if method == "DELETE":
            orig(method, op, route_args, query, body)  # someone else's DELETE, just before ours
        return orig(method, op, route_args, query, body)  # ours: 404

    emu.handle = deleted_a_moment_before
    emu.answers["/v1/registries/oci/basic"] = (400, "application/json",
                                               json.dumps({"code": "InvalidRegistrySpec", "message": "no"}).encode())
    res = run(repo, *args(emu), env=env_for(emu))
    emu.handle = orig
    del emu.answers["/v1/registries/oci/basic"]
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"the old registry (uid {uid}) was already gone from the target and the new one could not be created" \
        in out and "WAS DELETED" not in out and "the next apply creates it" in out, out
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0 and "create OciRegistry/o: done" in res.stdout, res.stdout + res.stderr
    assert_converged(repo, emu)


def test_plan_after_apply_is_empty_and_drift_shows(repo: Path, palette_emulator_factory):  # noqa: F811
    write_defs(repo, dict(defs(6)))
    commit_all(repo, "6")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    first = run(repo, *args(emu), env=env_for(emu))
    assert first.returncode == 0, first.stderr
    assert_converged(repo, emu)
    # someone edits a registry in the Palette UI
    with emu.store.lock:
        rec = next(r for r in emu.store.records.values() if r.name == "helm-0")
        rec.obj["spec"]["endpoint"] = "https://hand-edited.example.com"
    drift = run(repo, *args(emu), "--dry-run", "--detailed-exitcode", env=env_for(emu))
    assert drift.returncode == 2
    assert "~ HelmRegistry/helm-0" in drift.stdout and "drift" in drift.stdout
    assert "https://hand-edited.example.com -> https://charts-0.example.com" in drift.stdout
    fix = run(repo, *args(emu), env=env_for(emu))
    assert fix.returncode == 0
    assert_converged(repo, emu)


def test_a_drifted_value_with_control_characters_is_shown_escaped(repo: Path, palette_emulator_factory):  # noqa: F811
    """A value the target reports (edited outside reconcile) is shown in the text plan with
    its control characters escaped: ESC or a newline from there must not rewrite the
    terminal or the CI log."""
    write_defs(repo, dict(defs(1)))
    commit_all(repo, "1")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    assert run(repo, *args(emu), env=env_for(emu)).returncode == 0
    with emu.store.lock:
        rec = next(r for r in emu.store.records.values() if r.name == "helm-0")
        rec.obj["spec"]["endpoint"] = "https://x.example.com/\x1b[2J\nNo changes."
    drift = run(repo, *args(emu), "--dry-run", "--detailed-exitcode", env=env_for(emu))
    assert drift.returncode == 2, drift.stdout + drift.stderr
    assert "\x1b" not in drift.stdout and "\nNo changes." not in drift.stdout
    assert "https://x.example.com/\\x1b[2J\\x0aNo changes. -> https://charts-0.example.com" in drift.stdout


def test_missing_secret_on_palette_is_an_error_before_any_call(repo: Path, palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    env = {"PALETTE_API_KEY": API_KEY}
    res = run(repo, *args(emu), env=env)
    assert res.returncode == 1 and "environment variable PW_0 is not set" in res.stderr
    assert not [c for c in emu.calls() if c["method"] != "GET"]
    assert not (repo / ".reconciler/state-palette.json").exists()
    no_key = run(repo, *args(emu), env=SECRET_ENV | {"PALETTE_API_KEY": ""})
    assert no_key.returncode == 1 and "PALETTE_API_KEY" in no_key.stderr


def test_verbose_logs_requests_without_secrets(repo: Path, palette_emulator_factory):  # noqa: F811
    write_defs(repo, dict(defs(3)))
    commit_all(repo, "3")
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    res = run(repo, *args(emu), "-vv", env=env_for(emu))
    assert res.returncode == 0, res.stderr
    assert "DEBUG reconciler.palette: POST /v1/registries/helm -> 201" in res.stderr
    scan_for_leaks([res.stdout, res.stderr])


def _applied_basic_oci(repo: Path, emu, *, sync: bool) -> tuple[str, str]:
    """OciRegistry o (basic auth, Helm provider) declared and applied: its spec text, its uid."""
    oci = f"""
        endpoint: reg.example.com
        provider: helm
        baseContentPath: charts
        sync: {'true' if sync else 'false'}
        auth: {{type: basic, username: u, password: {{fromEnv: PW_1}}}}
    """
    write_defs(repo, {"o.yaml": registry_doc("OciRegistry", "o", oci)})
    commit_all(repo, "oci")
    assert run(repo, *args(emu), env=env_for(emu)).returncode == 0
    return oci, FileStateStore(repo / ".reconciler/state-palette.json").read().records[("tenant", "OciRegistry", "o")].uid


def test_replace_on_palette_for_sync_off_and_auth_family_change(repo: Path, palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    oci, uid_before = _applied_basic_oci(repo, emu, sync=True)
    write_defs(repo, {"o.yaml": registry_doc("OciRegistry", "o", oci.replace("sync: true", "sync: false"))})
    plan = run(repo, *args(emu), "--dry-run", env=env_for(emu))
    assert "-/+ OciRegistry/o  (sync cannot be turned off in place)" in plan.stdout, plan.stdout
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0, res.stderr
    rec = FileStateStore(repo / ".reconciler/state-palette.json").read().records[("tenant", "OciRegistry", "o")]
    assert rec.uid != uid_before
    assert_converged(repo, emu)
    # basic -> ECR moves the registry to the other endpoint family: a replace too
    ecr = """
        endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com
        provider: helm
        baseContentPath: charts
        sync: false
        auth: {type: ecr, credentials: {credentialType: sts, arn: "arn:aws:iam::123456789012:role/r", externalId: x}}
    """
    write_defs(repo, {"o.yaml": registry_doc("OciRegistry", "o", ecr)})
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0 and "replace OciRegistry/o: done" in res.stdout, res.stdout + res.stderr
    assert [f for f, n in managed(emu) if n == "o"] == ["ecr"]
    assert_converged(repo, emu)


def test_a_replace_asks_the_target_first_and_says_when_the_old_registry_is_gone(repo: Path,  # noqa: F811
                                                                                palette_emulator_factory):
    """A replace deletes the old registry before it creates the new one (a name is unique):
    a definition the target's /validate refuses deletes nothing (asked where Spectro's
    provider asks it: OCI with sync on); a create that fails after the delete says so
    plainly, and the next apply creates it."""
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    oci, uid = _applied_basic_oci(repo, emu, sync=False)
    write_defs(repo, {"o.yaml": registry_doc("OciRegistry", "o", oci.replace("sync: false", "sync: true"))})
    res = run(repo, *args(emu), env=dict(env_for(emu), PW_1="wrong"))  # the emulator's /validate refuses it
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"the old registry (uid {uid}) was not deleted" in res.stdout + res.stderr, res.stdout + res.stderr
    assert ("basic", "o") in managed(emu)
    with emu.store.lock:
        assert uid in emu.store.records
    emu.answers["/v1/registries/oci/basic"] = (400, "application/json",
                                               json.dumps({"code": "InvalidRegistrySpec", "message": "no"}).encode())
    res = run(repo, *args(emu), env=env_for(emu))
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"the old registry (uid {uid}) WAS DELETED and the new one could not be created" \
        in out and "the next apply creates it" in out, out
    assert "palette-secret" not in out
    del emu.answers["/v1/registries/oci/basic"]
    res = run(repo, *args(emu), env=env_for(emu))
    assert res.returncode == 0 and "create OciRegistry/o: done" in res.stdout, res.stdout + res.stderr
    assert_converged(repo, emu)


# ---------------------------------------------------------------- Palette as it really is (issue 13)

JFROG_BASE = "artifactory/api/oci/oci-local"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBrealisticCA\n-----END CERTIFICATE-----\n"


def realistic_defs() -> dict[str, str]:
    return {"r.yaml": "---\n".join([
        registry_doc("OciRegistry", "jfrog", f"""
            endpoint: acme.jfrog.io
            basePath: {JFROG_BASE}
            provider: helm
            baseContentPath: charts
            sync: true
            auth: {{type: basic, username: ci-bot, password: {{fromEnv: PW_1}}}}
        """),
        registry_doc("OciRegistry", "private-ca", """
            endpoint: oci.internal.example.com
            provider: helm
            baseContentPath: charts
            sync: true
            auth: {type: basic, username: u, password: {fromEnv: PW_2}}
            tls: {caFile: certs/ca.pem}
        """),
        registry_doc("OciRegistry", "ecr", """
            endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com
            provider: pack
            baseContentPath: packs
            sync: true
            auth: {type: ecr, credentials: {credentialType: secret, accessKey: AKIAEXAMPLE, secretKey: {fromEnv: PW_3}}}
            tls: {caFile: certs/ca.pem}
        """),
        registry_doc("HelmRegistry", "charts", """
            endpoint: https://charts.example.com
            auth: {type: token, token: {fromEnv: PW_4}}
        """),
        registry_doc("PackRegistry", "legacy", "endpoint: https://packs.example.com"),
    ])}


def test_realistic_palette_apply_then_empty_plan_then_rotation(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    """The issue-13 bar: UI-made registry with a basePath, built-ins that refuse detail reads,
    sync flag only in the status, masked secrets, PUTs that replace the whole object."""
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, realistic_defs())
    (root / "certs").mkdir()
    (root / "certs/ca.pem").write_text(CA_PEM)
    commit_all(root, "realistic")
    emu = palette_emulator_factory(seed_defaults=True, realistic=True, rate=50.0, burst=10.0)
    ui = emu.add("basic", "jfrog", {"endpoint": "acme.jfrog.io", "basePath": JFROG_BASE, "providerType": "helm",
                                    "baseContentPath": "charts", "isSyncSupported": True,
                                    "containsSpectroManifest": True,
                                    "auth": {"type": "basic", "username": "ci-bot", "password": "made-in-the-ui"}})
    env = dict(env_for(emu), PALETTE_PROJECT_UID="0123456789abcdef01234567")
    first = run(root, *args(emu), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "adopt OciRegistry/jfrog" in first.stdout
    plan = run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # the same with every OCI registry read in full (a summary without stamps): still empty
    emu.behaviour.summary_timestamps = False
    plan = run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert len([e for e in emu.requests if e["path"].endswith(("/basic", "/ecr"))]) >= 3
    emu.behaviour.summary_timestamps = True
    # a rotated secret is an update whose PUT keeps basePath
    env["PW_1"] = "rotated-secret-value-1"
    rotated = run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env)
    assert rotated.returncode == 2 and "~ OciRegistry/jfrog" in rotated.stdout, rotated.stdout
    assert "auth.password: (sensitive) -> (sensitive)" in rotated.stdout, rotated.stdout
    before_puts = len([e for e in emu.raw if e["method"] == "PUT"])
    applied = run(root, *args(emu), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    puts = [json.loads(e["body"]) for e in emu.raw if e["method"] == "PUT"][before_puts:]
    assert len(puts) == 1 and puts[0]["spec"]["basePath"] == JFROG_BASE
    assert puts[0]["spec"]["auth"]["password"] == "rotated-secret-value-1"
    spec = emu.store.records[ui.uid].obj["spec"]
    assert spec["basePath"] == JFROG_BASE and spec["containsSpectroManifest"] is True and emu.lost == []
    assert run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env).returncode == 0
    # no registry request carries ProjectUid; the CA is in tls.certificate for OCI
    assert emu.headers_sent("ProjectUid") == []
    with emu.store.lock:
        by_name = {r.name: r.obj["spec"] for r in emu.store.records.values()}
    assert by_name["private-ca"]["auth"]["tls"]["certificate"] == CA_PEM
    assert by_name["ecr"]["tls"]["certificate"] == CA_PEM
    # built-ins were never read in detail, and nothing answered 403
    assert not [e for e in emu.requests if e["status"] == 403]
    assert emu.misplaced_secrets([*SECRET_ENV.values(), "rotated-secret-value-1"]) == []


def unusable(tmp_path: Path, factory, setup):
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, dict(defs(6)))
    commit_all(root, "6")
    emu = factory(seed_defaults=True, rate=0)
    for i in range(4):
        emu.add("helm", f"pre-{i}", {"endpoint": f"https://pre-{i}.example.com", "auth": {"type": "noAuth"}})
    state = root / ".reconciler/state-palette.json"
    assert run(root, *args(emu), env=env_for(emu)).returncode == 0
    before = state.read_text()
    setup(emu)
    start = time.monotonic()
    res = run(root, *args(emu), env=env_for(emu), timeout=60)
    took = time.monotonic() - start
    return res, took, emu, state, before


@pytest.mark.parametrize("case", ["stuck-continue", "301-other-origin", "301-loop"])
def test_an_unusable_list_ends_the_run_in_seconds(tmp_path: Path, palette_emulator_factory, case):  # noqa: F811
    def setup(emu):
        emu.behaviour.page_limit = 3
        if case == "stuck-continue":
            emu.behaviour.stuck_continue = True
        elif case == "301-other-origin":
            emu.redirects["/v1/registries/helm"] = [301, "https://login.example.com/sso", -1]
        else:
            emu.redirects["/v1/registries/helm"] = [301, "/v1/registries/helm?limit=50&scope=all", -1]
        emu.calls_before = len(emu.requests)

    res, took, emu, state, before = unusable(tmp_path, palette_emulator_factory, setup)
    print(f"{case}: run ended in {took:.1f} s")
    assert took < 20, took
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    expected = {"stuck-continue": "paging does not end", "301-other-origin": "301 redirect to another origin",
                "301-loop": "after 5 redirects"}[case]
    assert expected in res.stderr, res.stderr
    assert not [e for e in emu.requests[emu.calls_before:] if e["method"] != "GET"], "something was changed"
    assert state.read_text() == before


@pytest.mark.parametrize("body, ctype, words", [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html", "answered an HTML page"),
    (b'{"items": [', "application/json", "answered not JSON"),
    (b"[1, 2, 3]", "application/json", "answered a JSON list"),
])
def test_a_list_answered_with_something_else_is_a_clear_error(tmp_path: Path, palette_emulator_factory,  # noqa: F811
                                                             body, ctype, words):
    def setup(emu):
        emu.answers["/v1/registries/oci/summary"] = (200, ctype, body)
        emu.calls_before = len(emu.requests)

    res, took, emu, state, before = unusable(tmp_path, palette_emulator_factory, setup)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert words in res.stderr and "/v1/registries/oci/summary" in res.stderr, res.stderr
    assert not [e for e in emu.requests[emu.calls_before:] if e["method"] != "GET"]
    assert state.read_text() == before


def test_endpoint_with_credentials_is_refused_and_never_printed(repo: Path, palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, rate=0)
    url = emu.url.replace("http://", "http://admin:pw-in-the-url-42@")
    for extra, env in ((["--endpoint", url], env_for(emu)), ([], dict(env_for(emu), PALETTE_ENDPOINT=url))):
        res = run(repo, "--target", "palette", *extra, "--dry-run", env=env)
        assert res.returncode == 1 and "must not carry credentials" in res.stderr, res.stderr
        assert "pw-in-the-url-42" not in res.stdout + res.stderr
    assert not emu.requests


def test_no_change_plan_of_240_registries_sends_at_most_20_requests(tmp_path: Path,  # noqa: F811
                                                                     palette_emulator_factory):
    """Issue 11 item 2: a plan costs what changed, not one GET per OCI registry."""
    docs = []
    for i in range(240):
        if i % 2:
            docs.append(registry_doc("OciRegistry", f"oci-{i}", f"""
                endpoint: oci-{i}.example.com
                baseContentPath: charts
                sync: true
                auth: {{type: basic, username: u{i}, password: {{fromEnv: PW_{i % 50}}}}}
            """))
        elif i % 4 == 0:
            docs.append(registry_doc("HelmRegistry", f"helm-{i}", f"endpoint: https://charts-{i}.example.com"))
        else:
            docs.append(registry_doc("PackRegistry", f"pack-{i}", f"endpoint: https://packs-{i}.example.com"))
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"all.yaml": "---\n".join(docs)})
    commit_all(root, "240")
    emu = palette_emulator_factory(seed_defaults=True, realistic=True, rate=0)
    emu.behaviour.summary_timestamps = True  # unverified (PB "Unknown"): the cheaper path under test
    fast = ["--rate-limit", "500", "--burst", "50"]
    applied = run(root, *args(emu), *fast, env=env_for(emu), timeout=300)
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    before = len(emu.requests)
    plan = run(root, *args(emu), *fast, "--dry-run", "--detailed-exitcode", env=env_for(emu))
    sent = emu.requests[before:]
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr
    print(f"no-change plan of 240 registries (120 OCI): {len(sent)} requests")
    assert len(sent) <= 20, [e["path"] for e in sent]
    # a UI edit is still drift
    emu.edit("oci-7", lambda spec: spec["auth"].update(username="changed-in-ui"))
    before = len(emu.requests)
    drift = run(root, *args(emu), *fast, "--dry-run", "--detailed-exitcode", env=env_for(emu))
    assert drift.returncode == 2 and "~ OciRegistry/oci-7" in drift.stdout, drift.stdout[-2000:]
    assert "auth.username: changed-in-ui -> u7" in drift.stdout
    assert len(emu.requests) - before <= 21


CA_ROTATED = "-----BEGIN CERTIFICATE-----\nMIIBrotatedCA\n-----END CERTIFICATE-----\n"
CA_UI = "-----BEGIN CERTIFICATE-----\nMIIBmadeInTheUI\n-----END CERTIFICATE-----\n"


def test_a_ca_file_rotated_in_the_repository_or_changed_in_the_ui_is_a_change(tmp_path: Path,
                                                                              palette_emulator_factory):  # noqa: F811
    """Adversarial pass: the plan compared only the path ``tls.caFile``, so a rotated CA
    planned as "No changes" (exit 0) and never reached Palette, and a CA changed in the UI was
    never drift. Now the contents are recorded at apply and compared with the file, and with
    the PEM Palette reports (Spectro's provider reads it back: ``ociBasicTLSConfigForRead``)."""
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"all.yaml": "---\n".join([
        registry_doc("OciRegistry", "internal", """
            endpoint: oci.internal.example.com
            provider: helm
            baseContentPath: charts
            sync: true
            auth: {type: basic, username: u, password: {fromEnv: PW_1}}
            tls: {caFile: certs/ca.pem}
        """),
        registry_doc("HelmRegistry", "charts", """
            endpoint: https://charts.example.com
            tls: {caFile: certs/ca.pem}
        """),
        registry_doc("OciRegistry", "ui-made", """
            endpoint: ui.example.com
            provider: helm
            baseContentPath: charts
            sync: true
            tls: {caFile: certs/ca.pem}
        """),
    ])})
    (root / "certs").mkdir()
    (root / "certs/ca.pem").write_text(CA_PEM)
    commit_all(root, "three registries, one CA")
    emu = palette_emulator_factory(realistic=True, rate=50.0, burst=10.0)
    emu.add("basic", "ui-made", {"endpoint": "ui.example.com", "providerType": "helm", "baseContentPath": "charts",
                                 "isSyncSupported": True, "auth": {"type": "noAuth", "tls": {"certificate": CA_UI}}})
    env = env_for(emu)
    adopting = run(root, *args(emu), "--dry-run", env=env)
    assert "= OciRegistry/ui-made" in adopting.stdout, adopting.stdout + adopting.stderr
    assert "tls.caFile: (contents sha256:" in adopting.stdout.split("= OciRegistry/ui-made")[1], adopting.stdout

    def stored() -> dict[str, str]:
        with emu.store.lock:
            return {r.name: (r.obj["spec"].get("auth") or {}).get("tls", {}).get("certificate" if r.flavour == "basic" else "ca")
                    for r in emu.store.records.values() if not r.builtin}

    def plan() -> str:
        res = run(root, *args(emu), "--dry-run", "--detailed-exitcode", env=env)
        assert res.returncode in (0, 2), res.stdout + res.stderr
        return res.stdout if res.returncode == 2 else ""

    first = run(root, *args(emu), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert stored() == {"internal": CA_PEM, "charts": CA_PEM, "ui-made": CA_PEM}
    assert plan() == ""
    # rotated in the repository: both registries are updated, and the PUTs carry the new CA
    (root / "certs/ca.pem").write_text(CA_ROTATED)
    commit_all(root, "rotate the CA")
    rotated = plan()
    assert rotated.count("tls.caFile: certs/ca.pem (contents sha256:") == 3, rotated
    assert "3 to update" in rotated and "drift" not in rotated, rotated
    applied = run(root, *args(emu), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert stored() == {"internal": CA_ROTATED, "charts": CA_ROTATED, "ui-made": CA_ROTATED}
    assert plan() == ""
    # changed in the Palette UI: drift, put back by the next apply
    emu.edit("internal", lambda spec: spec["auth"]["tls"].update(certificate=CA_UI), flavour="basic")
    drift = plan()
    assert "~ OciRegistry/internal  (drift: changed on the target outside reconcile)" in drift, drift
    assert "on the target) -> certs/ca.pem (contents sha256:" in drift and "1 to update" in drift, drift
    applied = run(root, *args(emu), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert stored()["internal"] == CA_ROTATED
    assert plan() == ""
