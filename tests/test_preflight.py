from __future__ import annotations

import socket
from pathlib import Path

import pytest

from reconciler.content import preflight
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.helm_repo import HelmRepo, index_for, make_tls
from tests.support.oci_registry import PASSWORD, USER, oci_basic  # noqa: F401


@pytest.fixture
def repo(tmp_path: Path):
    with HelmRepo(tmp_path / "repo", basic=("alice", "pw-1")) as r:
        r.write_index(index_for(r.root, [("nginx", "1.2.3", "1.25"), ("redis", "v17.0.0", "7")]))
        yield r


def helm_spec(url: str, required=None, **extra):
    s = {
        "endpoint": url,
        "sync": True,
        "tls": {"insecureSkipVerify": False},
        "fips": False,
        "auth": {"type": "basic", "username": "alice", "password": {"fromEnv": "PW"}},
    }
    if required is not None:
        s["requiredCharts"] = required
    s.update(extra)
    return s


GOOD = {"auth.password": "pw-1"}


def test_helm_all_checks_pass(repo):
    req = [{"name": "nginx", "version": "1.2.3"}, {"name": "redis", "version": "17.0.0"}]
    assert preflight("HelmRegistry", helm_spec(repo.url, req), GOOD, base_dir=Path(".")) == []


def test_helm_required_charts_missing(repo):
    req = [
        {"name": "nginx", "version": "9.9.9"},
        {"name": "nginx", "version": "1.2.3"},
        {"name": "absent", "version": "1.0.0"},
    ]
    lines = preflight(
        "HelmRegistry",
        helm_spec(repo.url, req),
        GOOD,
        base_dir=Path("."),
        label="HelmRegistry/charts",
    )
    assert lines == [
        f"HelmRegistry/charts: required chart nginx@9.9.9 not found in {repo.url}/index.yaml",
        f"HelmRegistry/charts: required chart absent@1.0.0 not found in {repo.url}/index.yaml",
    ]


def test_helm_credentials_rejected(repo):
    lines = preflight(
        "HelmRegistry", helm_spec(repo.url), {"auth.password": "wrong-pw-2"}, base_dir=Path(".")
    )
    assert len(lines) == 1 and "credentials rejected (HTTP 401)" in lines[0]
    assert "wrong-pw-2" not in lines[0]
    missing = preflight("HelmRegistry", helm_spec(repo.url), {}, base_dir=Path("."))
    assert missing == ["auth.password has no value (secret not provided)"]


def test_helm_tls_and_unreachable(tmp_path):
    tls = make_tls(tmp_path / "pki")
    with HelmRepo(tmp_path / "r", tls=tls) as srv:
        srv.write_index(index_for(srv.root, [("a", "1.0.0", "1")]))
        s = {"endpoint": srv.url, "auth": {"type": "noAuth"}, "tls": {}}
        lines = preflight("HelmRegistry", s, {}, base_dir=tmp_path)
        assert len(lines) == 1 and lines[0].startswith("TLS verification failed")
        s["tls"] = {"caFile": "pki/ca.crt"}
        assert preflight("HelmRegistry", s, {}, base_dir=tmp_path) == []
        url = srv.url
    lines = preflight("HelmRegistry", s, {}, base_dir=tmp_path)
    assert len(lines) == 1 and "cannot connect" in lines[0] and url in lines[0]


def test_unresolvable_host(monkeypatch):
    def fail(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    lines = preflight(
        "HelmRegistry",
        {"endpoint": "https://charts.invalid", "auth": {"type": "noAuth"}},
        {},
        base_dir=Path("."),
    )
    assert lines == ["host 'charts.invalid' does not resolve (Name or service not known)"]


@pytest.mark.registry
def test_oci_checks(oci_basic):  # noqa: F811
    oci_basic.push("pf/app", "1")
    auth = {"type": "basic", "username": USER, "password": {"fromEnv": "P"}}
    s = {
        "endpoint": oci_basic.url,
        "provider": "helm",
        "baseContentPath": "pf",
        "auth": auth,
        "tls": {},
    }
    assert preflight("OciRegistry", s, {"auth.password": PASSWORD}, base_dir=Path(".")) == []
    lines = preflight(
        "OciRegistry",
        dict(s, baseContentPath="empty"),
        {"auth.password": PASSWORD},
        base_dir=Path("."),
    )
    assert lines == [f"no content under baseContentPath 'empty' at {oci_basic.url}"]
    lines = preflight("OciRegistry", s, {"auth.password": "bad-pw-3"}, base_dir=Path("."))
    assert len(lines) == 1 and "401" in lines[0] and "bad-pw-3" not in lines[0]


@pytest.mark.registry
def test_oci_several_base_paths_one_line_per_missing_path(oci_basic):  # noqa: F811
    oci_basic.push("pf-m-a/app", "1")
    oci_basic.push("pf-m-b/deep/app", "1")
    auth = {"type": "basic", "username": USER, "password": {"fromEnv": "P"}}
    s = {"endpoint": oci_basic.url, "provider": "helm", "auth": auth, "tls": {}}
    good = {"auth.password": PASSWORD}
    assert preflight("OciRegistry", dict(s, baseContentPath="pf-m-a,pf-m-b"), good, base_dir=Path(".")) == []
    lines = preflight(
        "OciRegistry",
        dict(s, baseContentPath="pf-m-x,pf-m-a,pf-m-y,pf-m-x/"),
        good,
        base_dir=Path("."),
        label="OciRegistry/multi",
    )
    assert lines == [
        f"OciRegistry/multi: no content under baseContentPath 'pf-m-x' at {oci_basic.url}",
        f"OciRegistry/multi: no content under baseContentPath 'pf-m-y' at {oci_basic.url}",
    ]


@pytest.mark.registry
def test_oci_pack_with_empty_base_path_checks_spectro_packs(oci_basic):  # noqa: F811
    auth = {"type": "basic", "username": USER, "password": {"fromEnv": "P"}}
    oci_basic.push("pf-pk/other", "1")  # content elsewhere under the endpoint does not count
    s = {"endpoint": f"{oci_basic.url}/pf-pk", "provider": "pack", "baseContentPath": "", "auth": auth, "tls": {}}
    good = {"auth.password": PASSWORD}
    assert preflight("OciRegistry", s, good, base_dir=Path(".")) == [
        f"no content under 'spectro-packs' (provider: pack with an empty baseContentPath) at {oci_basic.url}"
    ]
    oci_basic.push("pf-pk/spectro-packs/p", "1.0.0")
    assert preflight("OciRegistry", s, good, base_dir=Path(".")) == []


@pytest.mark.registry
def test_dry_run_preflight_names_each_missing_base_path(tmp_path: Path, oci_basic):  # noqa: F811
    oci_basic.push("pf-e2e-a/app", "1")
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"r.yaml": registry_doc("OciRegistry", "teams", f"""
        endpoint: http://{oci_basic.host}
        provider: helm
        baseContentPath: pf-e2e-x,pf-e2e-a,pf-e2e-y
        sync: true
        auth: {{type: basic, username: {USER}, password: {{fromEnv: OCI_PW}}}}
    """)})
    commit_all(root)
    res = run(root, "--dry-run", "--preflight", env={"OCI_PW": PASSWORD})
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("preflight:")]
    assert lines == [
        f"preflight: OciRegistry/teams: no content under baseContentPath 'pf-e2e-x' at http://{oci_basic.host}",
        f"preflight: OciRegistry/teams: no content under baseContentPath 'pf-e2e-y' at http://{oci_basic.host}",
    ], res.stdout
    assert "Traceback" not in res.stderr and not (root / ".reconciler/state.json").exists()


def test_pack_checks(tmp_path):
    with HelmRepo(tmp_path / "r", token="t-1") as srv:
        s = {"endpoint": srv.url, "auth": {"type": "token", "token": {"fromEnv": "T"}}, "tls": {}}
        assert preflight("PackRegistry", s, {"auth.token": "t-1"}, base_dir=tmp_path) == []
        lines = preflight("PackRegistry", s, {"auth.token": "t-2"}, base_dir=tmp_path)
        assert len(lines) == 1 and "401" in lines[0]
