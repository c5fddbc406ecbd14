"""`reconcile sync`, `status` and `--dry-run --preflight` on the local target against real
content: a Helm repository and Debian's docker-registry on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.helm_repo import HelmRepo, index_for
from tests.support.oci_registry import PASSWORD, USER, oci_basic  # noqa: F401
from tests.support.scripted_server import scripted  # noqa: F401 - a fixture

HELM_USER, HELM_PW = "helm-user", "helm-pw-c0ffee"
ENV = {"HELM_PW": HELM_PW, "OCI_PW": PASSWORD}


@pytest.fixture
def helm(tmp_path: Path):
    root = tmp_path / "helm"
    root.mkdir()
    repo = HelmRepo(root, basic=(HELM_USER, HELM_PW))
    repo.write_index(index_for(root, [("nginx", "1.2.3", "1.25.0"), ("nginx", "1.2.4", "1.25.1"),
                                      ("redis", "7.0.0", "7.0")]))
    yield repo
    repo.close()


@pytest.fixture
def oci(oci_basic):  # noqa: F811
    for repo in ("team-a/app", "team-a/db"):
        oci_basic.push(repo, "v1")
    oci_basic.tag("team-a/app", "v1", "v2")
    return oci_basic


def defs(helm_url: str, oci_host: str, required: str = "{name: nginx, version: 1.2.3}") -> dict[str, str]:
    return {"r.yaml": "---\n".join([
        registry_doc("HelmRegistry", "charts", f"""
            endpoint: {helm_url}
            auth: {{type: basic, username: {HELM_USER}, password: {{fromEnv: HELM_PW}}}}
            requiredCharts: [{required}]
        """),
        registry_doc("OciRegistry", "team-a", f"""
            endpoint: http://{oci_host}
            provider: helm
            baseContentPath: team-a
            sync: true
            auth: {{type: basic, username: {USER}, password: {{fromEnv: OCI_PW}}}}
        """),
    ])}


@pytest.fixture
def repo(tmp_path: Path, helm, oci) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, defs(helm.url, oci.host))
    commit_all(root)
    res = run(root, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def rows(res) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:] if line.strip()}


def test_sync_stores_the_catalog_and_status_shows_it(repo: Path, helm):
    res = run(repo, "sync", env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    table = rows(res)
    assert table["charts"][2] == "Completed" and table["team-a"][2] == "Completed"
    st = run(repo, "status", "--format", "json", env=ENV)
    by_name = {r["name"]: r for r in json.loads(st.stdout)["registries"]}
    assert by_name["charts"]["content"] == "2 charts, 3 versions"
    assert by_name["team-a"]["content"] == "2 repositories, 3 tags"
    assert by_name["charts"]["sync"] == "Completed"
    for value in ENV.values():
        assert value not in res.stdout + res.stderr + st.stdout + (repo / ".reconciler/state.json").read_text()


@pytest.mark.parametrize("bad", ["9" * 5000, "{not json", "[1]"], ids=["integer-of-5000-digits", "syntax", "array"])
def test_a_hand_edited_catalog_row_is_shown_without_its_counts_not_an_internal_error(repo: Path, bad: str):
    """Adversarial pass 3: json.loads of the local database's counts and sync detail caught
    nothing (an integer of 5,000 digits, or any invalid JSON, was an exit 3); they only inform."""
    import sqlite3

    assert run(repo, "sync", env=ENV).returncode == 0
    conn = sqlite3.connect(repo / ".reconciler" / "local.db")
    with conn:
        conn.execute("UPDATE content_sync SET counts = ?", (bad,))
        conn.execute("UPDATE sync_status SET detail = ?", (bad,))
    conn.close()
    st = run(repo, "status", "--format", "json", env=ENV)
    assert st.returncode == 0 and "internal error" not in st.stderr, st.stdout + st.stderr
    by_name = {r["name"]: r for r in json.loads(st.stdout)["registries"]}
    assert by_name["charts"]["sync"] == "Completed"
    assert run(repo, "sync", "--force", env=ENV).returncode == 0  # a sync reads the stored counts too


def test_forced_resync_of_an_unchanged_index_costs_one_304(repo: Path, helm):
    assert run(repo, "sync", env=ENV).returncode == 0
    before = helm.statuses()
    res = run(repo, "sync", "--force", "--registry", "charts", env=ENV)
    assert res.returncode == 0, res.stderr
    assert helm.statuses()[len(before):] == [304]


def test_wrong_credentials_fail_loudly(repo: Path):
    res = run(repo, "sync", env=dict(ENV, HELM_PW="not-the-password", OCI_PW="nope-nope"))
    assert res.returncode == 1
    assert "sync failed for: HelmRegistry/charts (Failed), OciRegistry/team-a (Failed)" in res.stderr
    assert "not-the-password" not in res.stdout + res.stderr


def test_unreachable_registry_is_a_failure(tmp_path: Path, helm, oci):
    root = tmp_path / "repo2"
    init_repo(root)
    write_defs(root, defs("http://127.0.0.1:9", oci.host))
    commit_all(root)
    assert run(root, env=ENV).returncode == 0
    res = run(root, "sync", "--registry", "charts", env=ENV)
    assert res.returncode == 1 and "charts (Failed)" in res.stderr


def test_preflight_passes_then_reports_each_failed_check(tmp_path: Path, helm, oci):
    root = tmp_path / "pre"
    init_repo(root)
    write_defs(root, defs(helm.url, oci.host))
    commit_all(root)
    ok = run(root, "--dry-run", "--preflight", env=ENV)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    write_defs(root, defs(helm.url, oci.host, required="{name: nginx, version: 9.9.9}"))
    bad = run(root, "--dry-run", "--preflight", env=dict(ENV, OCI_PW="wrong-pw-123"))
    assert bad.returncode == 1
    lines = [line for line in bad.stdout.splitlines() if line.startswith("preflight:")]
    assert any("HelmRegistry/charts" in line and "nginx@9.9.9" in line for line in lines), bad.stdout
    assert any("OciRegistry/team-a" in line and ("credential" in line.lower() or "401" in line) for line in lines)
    assert "wrong-pw-123" not in bad.stdout + bad.stderr
    js = run(root, "--dry-run", "--preflight", "--format", "json", env=dict(ENV, OCI_PW="wrong-pw-123"))
    assert js.returncode == 1 and len(json.loads(js.stdout)["preflight"]) == len(lines)


def test_progress_on_a_terminal_only(repo: Path):
    """Progress lines go to stderr when it is a terminal (a pty here), and nowhere otherwise."""
    import os
    import pty
    import subprocess

    from tests.support.gitops_repo import reconcile_cmd

    quiet = run(repo, "sync", "--force", env=ENV)
    assert "downloading" not in quiet.stderr and "\r" not in quiet.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([*reconcile_cmd(), "sync", "--force"], cwd=repo, stdout=subprocess.PIPE,
                              stderr=slave, env={**os.environ, **ENV}, timeout=60)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "\x1b[K" in text and "listing tags" in text
    assert HELM_PW not in text


@pytest.mark.parametrize("token", ["Tokvalü99", "tok with space", "tok\x01ctl"], ids=["non-ascii", "space", "control"])
def test_a_token_no_header_can_carry_fails_that_registry_only(tmp_path: Path, helm, token):
    """A bearer token that cannot go in a header (outside printable ASCII, or a space) is
    that registry's failure, said without its value; the other registries still sync, and a
    preflight says the same (before: UnicodeEncodeError, an internal error for the run)."""
    root = tmp_path / "tok"
    init_repo(root)
    write_defs(root, {"r.yaml": "---\n".join([
        registry_doc("HelmRegistry", "charts", f"""
            endpoint: {helm.url}
            auth: {{type: basic, username: {HELM_USER}, password: {{fromEnv: HELM_PW}}}}
        """),
        registry_doc("HelmRegistry", "tok", f"""
            endpoint: {helm.url}
            auth: {{type: token, token: {{fromEnv: TOK}}}}
        """),
    ])})
    commit_all(root)
    env = dict(ENV, TOK=token)
    pre = run(root, "--dry-run", "--preflight", env=env)
    assert pre.returncode == 1 and "internal error" not in pre.stderr, pre.stdout + pre.stderr
    assert any(line.startswith("preflight:") and "HelmRegistry/tok" in line and "bearer token" in line
               for line in pre.stdout.splitlines()), pre.stdout
    assert run(root, env=env).returncode == 0
    res = run(root, "sync", env=env)
    assert res.returncode == 1 and "internal error" not in res.stderr, res.stdout + res.stderr
    table = rows(res)
    assert table["charts"][2] == "Completed" and table["tok"][2] == "Failed"
    assert "bearer token cannot" in res.stdout and token not in res.stdout + res.stderr


# --------------------------------------------------------------------------- hostile registries


def _with_hostile_oci(tmp_path: Path, helm, url: str) -> Path:
    """A repository declaring the good Helm registry and an OCI registry at ``url``, applied."""
    root = tmp_path / "hostile"
    init_repo(root)
    write_defs(root, {"r.yaml": "---\n".join([
        registry_doc("HelmRegistry", "charts", f"""
            endpoint: {helm.url}
            auth: {{type: basic, username: {HELM_USER}, password: {{fromEnv: HELM_PW}}}}
        """),
        registry_doc("OciRegistry", "evil", f"""
            endpoint: {url}
            provider: helm
            baseContentPath: t
            sync: true
            auth: {{type: basic, username: robot, password: {{fromEnv: OCI_PW}}}}
        """),
    ])})
    commit_all(root)
    res = run(root, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def test_sync_timeout_bounds_the_local_content_sync(tmp_path: Path, helm, scripted):
    """Adversarial pass 3, item 6: `sync --timeout` did not bound the local content sync, so a
    registry whose tags/list pages never end kept the run (and the state lock) for ever. Its
    pages here are slow and end after 300, which bounds the test if the deadline is broken."""
    import time

    count = {"n": 0}

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 200, {}, {"repositories": ["t/a"]}
        count["n"] += 1
        time.sleep(0.05)
        link = {"Link": f'</v2/t/a/tags/list?last={count["n"]}>; rel="next"'} if count["n"] < 300 else {}
        return 200, link, {"tags": [f"v{count['n']}"]}

    srv = scripted(route)
    root = _with_hostile_oci(tmp_path, helm, srv.url)
    t0 = time.monotonic()
    res = run(root, "sync", "--timeout", "2", env=ENV)
    took = time.monotonic() - t0
    assert res.returncode == 1, res.stdout + res.stderr
    assert "internal error" not in res.stderr
    table = rows(res)
    # between two pages the deadline says so; within one (a loaded machine) the answer's own
    # bound, which the deadline shortens, says it: either way --timeout ended it
    assert table["evil"][2] == "Failed" and ("deadline (--timeout) passed" in res.stdout or
                                             "or the sync's --timeout): refused" in res.stdout), res.stdout
    assert took < 12, took
    assert count["n"] < 100
    assert PASSWORD not in res.stdout + res.stderr


def _helm_bomb(kind: str) -> bytes:
    if kind == "aliases":  # adversarial pass 3, item 7 (its 20,000 x 2,000: 62 s and 4 GB)
        head = [b"apiVersion: v1", b"x: &e {version: 1.0.0, name: c}",
                b"l: &L [" + b", ".join([b"*e"] * 1000) + b"]", b"entries:"]
        return b"\n".join(head + [b"  c%d: *L" % i for i in range(4000)]) + b"\n"
    return b"apiVersion: v1\nentries:\n  c: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"  # crashed libyaml


@pytest.mark.parametrize("kind", ["aliases", "nesting"])
def test_a_hostile_helm_index_fails_that_registry_only(tmp_path: Path, helm, kind):
    bomb_root = tmp_path / "bomb"
    bomb_root.mkdir()
    with HelmRepo(bomb_root) as bomb:
        bomb.write_index(_helm_bomb(kind))
        root = tmp_path / "repo"
        init_repo(root)
        write_defs(root, {"r.yaml": "---\n".join([
            registry_doc("HelmRegistry", "charts", f"""
                endpoint: {helm.url}
                auth: {{type: basic, username: {HELM_USER}, password: {{fromEnv: HELM_PW}}}}
            """),
            registry_doc("HelmRegistry", "bomb", f"endpoint: {bomb.url}"),
        ])})
        commit_all(root)
        assert run(root, env=ENV).returncode == 0
        res = run(root, "sync", "--timeout", "20", env=ENV, timeout=40)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "internal error" not in res.stderr
    table = rows(res)
    assert table["charts"][2] == "Completed" and table["bomb"][2] == "Failed", res.stdout
    assert ("uses YAML aliases" if kind == "aliases" else "nests collections") in res.stdout


@pytest.mark.parametrize("mode", ["catalog-deep", "tags-deep", "catalog-nonstr", "tags-nonstr", "tags-otherhost"])
def test_a_hostile_oci_registry_fails_that_registry_only(tmp_path: Path, helm, scripted, mode):
    """Adversarial pass 3, items 3 and 8 end to end (its evil_oci.py): each of these was an
    internal error for the whole run (exit 3), or sent the registry's credentials elsewhere."""
    deep = b"[" * 100_000 + b"]" * 100_000
    other = scripted(lambda path, headers: (200, {}, {"tags": ["stolen"]}))

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            body = {"catalog-deep": deep, "catalog-nonstr": {"repositories": [{"a": 1}, 5, None]}}
            return 200, {}, body.get(mode, {"repositories": ["t/app"]})
        if mode == "tags-otherhost" and "x=1" not in path:
            return 200, {"Link": f'<{other.url}/v2/t/app/tags/list?x=1>; rel="next"'}, {"tags": ["v1"]}
        body = {"tags-deep": b'{"tags":' + deep + b"}", "tags-nonstr": {"tags": [1, {"x": 2}, None, ["l"]]}}
        return 200, {}, body.get(mode, {"tags": ["v1"]})

    srv = scripted(route)
    root = _with_hostile_oci(tmp_path, helm, srv.url)
    res = run(root, "sync", env=ENV)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "internal error" not in res.stderr, res.stderr
    table = rows(res)
    assert table["charts"][2] == "Completed" and table["evil"][2] == "Failed", res.stdout
    assert "sync failed for: OciRegistry/evil (Failed)" in res.stderr
    assert other.requests == [] and other.connections == 0
    assert PASSWORD not in res.stdout + res.stderr
    status = run(root, "status", "--format", "json", env=ENV)
    evil = next(r for r in json.loads(status.stdout)["registries"] if r["name"] == "evil")
    assert "stolen" not in json.dumps(evil)
