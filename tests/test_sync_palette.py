"""`reconcile sync` against the Palette emulator: completed, failed, never-ending (deadline),
not due, and force-sync only where Palette allows it."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

ENV = {"PALETTE_API_KEY": API_KEY, "OCI_PW": "sync-secret-value-9"}


@pytest.fixture
def setup(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"r.yaml": "---\n".join([
        registry_doc("HelmRegistry", "charts", "endpoint: https://charts.example.com"),
        registry_doc("OciRegistry", "packs", """
            endpoint: reg.example.com
            provider: pack
            baseContentPath: prod
            sync: true
            auth: {type: basic, username: u, password: {fromEnv: OCI_PW}}
        """),
        registry_doc("PackRegistry", "legacy", "endpoint: https://packs.example.com"),
    ])})
    commit_all(root)
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    emu.faults.sync_polls = 1
    args = ["--target", "palette", "--endpoint", emu.url]
    assert run(root, *args, env=ENV).returncode == 0
    return root, emu, args


def state_of(root: Path) -> dict:
    return {r["name"]: r for r in json.loads((root / ".reconciler/state-palette.json").read_text())["registries"]}


def test_sync_all_completed_then_not_due(setup):
    root, emu, args = setup
    res = run(root, *args, "sync", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.split()[:1] in (["charts"], ["packs"], ["legacy"])]
    assert len(lines) == 3 and all("Completed" in line for line in lines), res.stdout
    st = state_of(root)
    assert all(st[n]["last_sync"]["status"] == "Completed" for n in ("charts", "packs", "legacy"))
    again = run(root, *args, "sync", "--format", "json", env=ENV)
    data = json.loads(again.stdout)
    assert again.returncode == 0 and {r["status"] for r in data["registries"]} == {"skipped"}
    assert len(emu.calls("POST", "/v1/registries/helm/")) == 1  # not triggered twice


def test_failed_sync_is_a_failure_naming_the_registry(setup):
    root, emu, args = setup
    emu.faults.sync_mode_by_name = {"packs": "fail"}
    res = run(root, *args, "sync", env=ENV)
    assert res.returncode == 1
    assert "packs (Failed)" in res.stderr
    row = [line for line in res.stdout.splitlines() if line.startswith("packs")][0]
    assert "Failed" in row and "401 Unauthorized" in row
    assert state_of(root)["packs"]["last_sync"]["status"] == "Failed"
    assert "sync-secret-value-9" not in res.stdout + res.stderr


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_a_sync_message_that_echoes_a_secret_is_redacted_without_waiting_too(setup, fmt):
    """``sync --no-wait`` reports the message of a sync still running: redacted like every
    other message, in every format and in the recorded state (the state branch is shared)."""
    root, emu, args = setup
    emu.faults.sync_progress_message = "logging in as u:sync-secret-value-9"
    emu.faults.sync_polls = 5
    res = run(root, *args, "sync", "--no-wait", "--format", fmt, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "logging in as u:(sensitive)" in res.stdout
    assert "sync-secret-value-9" not in res.stdout + res.stderr
    assert "sync-secret-value-9" not in (root / ".reconciler/state-palette.json").read_text()
    assert state_of(root)["packs"]["last_sync"]["message"] == "logging in as u:(sensitive)"


def _applied_basic_helm(tmp_path: Path, factory, env: dict[str, str]):
    """A repository declaring HelmRegistry h (basic auth, password from H_PW), applied to a new
    emulator: (root, emulator, the CLI's target arguments)."""
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"r.yaml": registry_doc("HelmRegistry", "h", """
        endpoint: https://h.example.com
        auth: {type: basic, username: bob, password: {fromEnv: H_PW}}
    """)})
    commit_all(root)
    emu = factory(seed_defaults=True, rate=50.0, burst=10.0)
    args = ["--target", "palette", "--endpoint", emu.url]
    assert run(root, *args, env=env).returncode == 0
    return root, emu, args


def test_a_sync_message_never_carries_the_api_key_nor_a_go_escaped_password(tmp_path: Path,
                                                                           palette_emulator_factory):  # noqa: F811
    """Adversarial pass 4: a sync message was redacted of the registries' secrets only, so the
    API key in it was printed and recorded in the state (which git:BRANCH pushes), and a
    password as Go's encoding/json writes it (& as \\u0026, < as \\u003c) was not found."""
    env = {"PALETTE_API_KEY": API_KEY, "H_PW": "Sup3r&Secret<pw>", "RECONCILER_STATE_KEY": "state-key-4b9c0d1e"}
    root, emu, args = _applied_basic_helm(tmp_path, palette_emulator_factory, env)
    emu.faults.sync_mode = "fail"
    emu.faults.sync_fail_message = ('upstream said {"password":"Sup3r\\u0026Secret\\u003cpw\\u003e"} apikey=' + API_KEY
                                    + " key=state-key-4b9c0d1e")
    for fmt in ("text", "json"):
        res = run(root, *args, "sync", "--format", fmt, env=env)  # due: no successful sync yet
        assert res.returncode == 1 and "h (Failed)" in res.stderr, res.stdout + res.stderr
        assert 'upstream said {"password":"(sensitive)"} apikey=(sensitive) key=(sensitive)' in (
            res.stdout if fmt == "text" else json.loads(res.stdout)["registries"][0]["message"]), res.stdout
        for leaked in (API_KEY, "state-key-4b9c0d1e", "Sup3r", "\\u003cpw"):
            assert leaked not in res.stdout + res.stderr
    stored = (root / ".reconciler/state-palette.json").read_text()
    assert state_of(root)["h"]["last_sync"]["message"] == ('upstream said {"password":"(sensitive)"} '
                                                           "apikey=(sensitive) key=(sensitive)")
    assert API_KEY not in stored and "state-key-4b9c0d1e" not in stored and "Sup3r" not in stored


def test_a_sync_message_never_carries_a_secret_in_the_encodings_other_servers_write(tmp_path: Path,
                                                                                    palette_emulator_factory):  # noqa: F811
    """Adversarial pass 6: a proxy or a server that echoes the API key in base64url or hex, or
    a password as an HTML page's character references or encoded twice, had it printed and
    recorded in the state."""
    env = {"PALETTE_API_KEY": API_KEY, "H_PW": "Sup3r&Secret<pw>???"}  # its base64 holds / (base64url: _)
    root, emu, args = _applied_basic_helm(tmp_path, palette_emulator_factory, env)
    encoded = {
        "b64url": base64.urlsafe_b64encode(b"bob:Sup3r&Secret<pw>???").decode().rstrip("="),
        "hex": API_KEY.encode().hex(),
        "page": "Sup3r&#x26;Secret&#60;pw&gt;&#63;&#x3F;?",
        "twice": "Sup3r%2526Secret%253Cpw%253E%253F%253F%253F",
    }
    assert "_" in encoded["b64url"]
    emu.faults.sync_mode = "fail"
    emu.faults.sync_fail_message = " ".join(f"{k}={v}" for k, v in encoded.items())
    res = run(root, *args, "sync", "--format", "json", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    message = "b64url=(sensitive) hex=(sensitive) page=(sensitive) twice=(sensitive)"
    assert json.loads(res.stdout)["registries"][0]["message"] == message, res.stdout
    stored = (root / ".reconciler/state-palette.json").read_text()
    assert json.loads(stored)["registries"][0]["last_sync"]["message"] == message
    for leaked in encoded.values():
        assert leaked not in res.stdout + res.stderr + stored


def _sync_status_with(emu, **fields) -> None:
    """Make every /sync/status answer of ``emu`` carry ``fields`` (a server's own words)."""
    body = emu.sync_status_body
    emu.sync_status_body = lambda rec: {**body(rec), **fields}


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_a_sync_time_never_carries_the_api_key_nor_a_password(setup, fmt):
    """Adversarial pass 8, item 2: the time a sync status gives (``lastSyncedTime``) is the
    server's text as much as its message, but only the message was redacted: a server that
    echoed the API key or a password there had it printed in the sync table (the nightly log,
    the job summary) and in its JSON."""
    root, emu, args = setup
    _sync_status_with(emu, lastSyncedTime=f"2026-01-01T00:00:00Z {API_KEY} u:sync-secret-value-9")
    res = run(root, *args, "sync", "--force", "--format", fmt, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2026-01-01T00:00:00Z (sensitive) u:(sensitive)" in res.stdout, res.stdout
    stored = (root / ".reconciler/state-palette.json").read_text()
    for leaked in (API_KEY, "sync-secret-value-9"):
        assert leaked not in res.stdout + res.stderr + stored


@pytest.mark.parametrize("synced", [1767225600, {"seconds": 1}, ["2026-01-01T00:00:00Z"], True])
def test_a_sync_time_of_another_shape_does_not_make_the_state_unreadable(setup, synced):
    """Adversarial pass 8, item 3: a ``lastSyncedTime`` that is not a string (a number of
    seconds, an object: a broken server or proxy) was recorded as it came, and the state then
    refused itself at every later run ("'last_sync.last_synced' must be a string"): no plan,
    apply or sync until it was edited by hand. It reads as absent, as every field of an answer
    in an unexpected shape does."""
    root, emu, args = setup
    _sync_status_with(emu, lastSyncedTime=synced)
    res = run(root, *args, "sync", "--force", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    again = run(root, *args, "--dry-run", env=ENV)
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
    assert all(r["last_sync"]["status"] == "Completed" for r in state_of(root).values())


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_a_sync_message_with_control_characters_is_shown_escaped(setup, fmt):
    """What Palette says of a sync is shown with its control characters escaped: ESC, BEL or
    a newline in it must not rewrite the terminal or split a row of the pull request's table."""
    root, emu, args = setup
    emu.faults.sync_mode_by_name = {"packs": "fail"}
    emu.faults.sync_fail_message = "\x1b]0;pwned\x07\x1b[2J\nX\r|done"
    res = run(root, *args, "sync", "--format", fmt, env=ENV)
    assert res.returncode == 1
    assert not any(ch in res.stdout for ch in "\x1b\x07\r"), repr(res.stdout)
    row = [line for line in res.stdout.splitlines() if "packs" in line]
    if fmt == "markdown":  # what GitHub shows: the cell's text (its markdown escapes rendered)
        from tests.support.gfm import tables, to_html

        [table] = tables(to_html(res.stdout))
        row = [" ".join(r) for r in table if r[0] == "packs"] if len(row) == 1 else row
    assert len(row) == 1 and "\\x1b]0;pwned\\x07\\x1b[2J\\x0aX\\x0d" in row[0], res.stdout


def test_a_sync_message_cannot_close_the_summary_table_nor_fold_rows_away(setup):
    """Adversarial pass 6, item 1: ``sync --format markdown`` (what action.yml tees into the job
    summary) put the message raw into the table: HTML in it closed the table, faked a second
    one and opened a ``<details>`` that hid the rows after it."""
    from tests.support.gfm import tables, to_html

    root, emu, args = setup
    emu.faults.sync_mode_by_name = {"charts": "fail"}
    emu.faults.sync_fail_message = ("401 <br></td></tr></tbody></table>\n\n## reconcile sync: 3 ok, 0 failed\n\n"
                                    "<details><summary>more</summary><table><tr><td>")
    res = run(root, *args, "sync", "--format", "markdown", env=ENV)
    assert res.returncode == 1
    html = to_html(res.stdout)
    assert html.count("<table>") == 1 and "<details" not in html and "<h2" not in html, html
    [table] = tables(html)
    assert sorted(r[0] for r in table[1:]) == ["charts", "legacy", "packs"], table  # every row in sight
    charts = next(r for r in table if r[0] == "charts")
    assert charts[2] == "Failed" and charts[-1].startswith("401 <br></td></tr></tbody></table>\\x0a"), charts


def test_sync_that_never_finishes_hits_the_deadline(setup):
    root, emu, args = setup
    emu.faults.sync_mode_by_name = {"charts": "hang"}
    res = run(root, *args, "sync", "--registry", "charts", "--timeout", "2", env=ENV)
    assert res.returncode == 1
    assert "Timeout" in res.stdout and "deadline" in res.stdout


def test_sync_timeout_bounds_a_server_that_drips_its_answers(setup):
    # issue 9 item 15: one byte every 2 s never trips a per-read timeout; --timeout 5 must hold
    root, emu, args = setup
    before = (root / ".reconciler/state-palette.json").read_text()
    emu.faults.drip = 2.0
    start = time.monotonic()
    res = run(root, *args, "sync", "--registry", "charts", "--timeout", "5", env=ENV, timeout=60)
    took = time.monotonic() - start
    emu.faults.drip = 0.0
    print(f"sync --timeout 5 against a dripping server: {took:.1f} s")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert took < 12, f"sync --timeout 5 took {took:.1f} s"
    assert "charts" in res.stdout and ("within" in res.stdout or "deadline" in res.stdout), res.stdout
    assert json.loads(before)["serial"] <= json.loads((root / ".reconciler/state-palette.json").read_text())["serial"]


def test_oci_registry_with_sync_off_is_never_triggered(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"r.yaml": registry_doc("OciRegistry", "nosync", """
        endpoint: reg.example.com
        provider: helm
        sync: false
    """)})
    commit_all(root)
    emu = palette_emulator_factory(seed_defaults=True, rate=50.0, burst=10.0)
    args = ["--target", "palette", "--endpoint", emu.url]
    assert run(root, *args, env=ENV).returncode == 0
    res = run(root, *args, "sync", "--force", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sync is off" in res.stdout
    assert not emu.calls("POST", "/v1/registries/oci/") or not [c for c in emu.calls("POST") if "/sync" in c["path"]]


def test_force_sync_only_where_palette_allows_it(setup):
    root, emu, args = setup
    assert run(root, *args, "sync", env=ENV).returncode == 0
    # within the hour: we do not send forceSync (Palette would refuse it), we say so
    res = run(root, *args, "sync", "--force", "--registry", "charts", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "forceSync skipped" in res.stdout
    assert not [c for c in emu.calls("POST") if "forceSync=true" in json.dumps(c)]
    # two hours later (both clocks): forceSync is sent and accepted
    state_file = root / ".reconciler/state-palette.json"
    data = json.loads(state_file.read_text())
    for r in data["registries"]:
        if r["last_sync"]:
            r["last_sync"]["last_run"] = "2000-01-01T00:00:00Z"
    state_file.write_text(json.dumps(data))
    emu.clock.offset = 2 * 3600
    res = run(root, *args, "sync", "--force", "--registry", "charts", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [c for c in emu.calls("POST") if "forceSync" in json.dumps(c)]


def test_unknown_registry_name_is_an_error(setup):
    root, emu, args = setup
    res = run(root, *args, "sync", "--registry", "nope", env=ENV)
    assert res.returncode == 1 and "not a managed registry: nope" in res.stderr
