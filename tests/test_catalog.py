"""`reconcile catalog`: query what the last syncs stored, against a real Helm repository and
Debian's docker-registry on loopback."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from reconciler.content.query import matcher, version_key
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.helm_repo import HelmRepo, index_for
from tests.support.oci_registry import PASSWORD, USER, oci_basic  # noqa: F401

ENV = {"OCI_PW": PASSWORD}


@pytest.fixture
def helm(tmp_path: Path):
    root = tmp_path / "helm"
    root.mkdir()
    repo = HelmRepo(root)
    repo.write_index(index_for(root, [("nginx", "1.2.3", "1.25.0"), ("nginx", "1.10.0", "1.27.0"),
                                      ("nginx-ingress", "4.0.0", "1.9"), ("redis", "7.0.0", "7.0")]))
    yield repo
    repo.close()


@pytest.fixture
def repo(tmp_path: Path, helm, oci_basic) -> Path:  # noqa: F811
    for name in ("team-a/app", "team-a/nginx"):
        oci_basic.push(name, "v1")
    oci_basic.tag("team-a/app", "v1", "v2")
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"r.yaml": "---\n".join([
        registry_doc("HelmRegistry", "charts", f"endpoint: {helm.url}\nauth: {{type: noAuth}}"),
        registry_doc("HelmRegistry", "mirror", f"endpoint: {helm.url}/\nauth: {{type: noAuth}}"),
        registry_doc("OciRegistry", "team-a", f"""
            endpoint: http://{oci_basic.host}
            provider: helm
            baseContentPath: team-a
            sync: true
            auth: {{type: basic, username: {USER}, password: {{fromEnv: OCI_PW}}}}
        """),
    ])})
    commit_all(root)
    res = run(root, env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def catalog(root: Path, *args: str):
    return run(root, "catalog", *args, env=ENV)


def test_before_any_sync_the_catalog_is_empty_with_a_clear_message(repo: Path):
    res = catalog(repo, "nginx")
    assert res.returncode == 1
    assert "the catalog is empty" in res.stderr and "reconcile sync" in res.stderr
    assert "Traceback" not in res.stderr


def test_which_registry_offers_chart_x_at_version_y(repo: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    res = catalog(repo, "nginx", "--version", "1.2.3", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["catalog_format_version"] == 1
    offers = {(e["registry"], e["kind"], e["name"]) for e in doc["entries"]}
    # both Helm registries serve the chart at that version; the OCI repository "nginx" has no tag 1.2.3
    assert offers == {("charts", "helm", "nginx"), ("mirror", "helm", "nginx")}
    entry = next(e for e in doc["entries"] if e["registry"] == "charts")
    assert entry["versions"] == [{"version": "1.2.3", "appVersion": "1.25.0", "created": entry["versions"][0]["created"],
                                  "deprecated": False}]
    regs = {r["name"]: r for r in doc["registries"]}
    assert regs["charts"]["status"] == "Completed" and regs["charts"]["failed"] is False
    assert regs["charts"]["last_synced"]


def test_query_lists_versions_newest_first_and_oci_tags(repo: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    doc = json.loads(catalog(repo, "nginx", "--registry", "charts", "--format", "json").stdout)
    by_name = {e["name"]: e for e in doc["entries"]}
    assert set(by_name) == {"nginx", "nginx-ingress"}  # substring match
    assert [v["version"] for v in by_name["nginx"]["versions"]] == ["1.10.0", "1.2.3"]  # numeric, not lexical
    oci = json.loads(catalog(repo, "--kind", "oci", "--format", "json").stdout)
    tags = {e["name"]: [v["version"] for v in e["versions"]] for e in oci["entries"]}
    assert tags == {"team-a/app": ["v2", "v1"], "team-a/nginx": ["v1"]}
    glob = json.loads(catalog(repo, "nginx", "--kind", "helm", "--format", "json").stdout)
    assert {e["name"] for e in glob["entries"]} == {"nginx", "nginx-ingress"}
    exact = json.loads(catalog(repo, "ngin?", "--kind", "helm", "--format", "json").stdout)
    assert {e["name"] for e in exact["entries"]} == {"nginx"}  # a glob matches the whole name


def test_text_output_names_each_registry_and_when_it_synced(repo: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    res = catalog(repo, "redis")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["REGISTRY", "KIND", "NAME", "VERSIONS"]
    assert {tuple(line.split()[:3]) for line in lines[1:3]} == {("charts", "helm", "redis"), ("mirror", "helm", "redis")}
    assert any(line.startswith("charts: synced 20") for line in lines)


def test_a_failed_sync_is_said_and_the_earlier_content_still_shown(repo: Path, helm):
    assert run(repo, "sync", env=ENV).returncode == 0
    helm.close()  # the repository goes away: the next sync fails, the catalog keeps what it had
    assert run(repo, "sync", "--force", "--registry", "charts", env=ENV).returncode == 1
    res = catalog(repo, "redis", "--registry", "charts")
    assert res.returncode == 0
    assert "charts: last sync FAILED" in res.stdout
    doc = json.loads(catalog(repo, "redis", "--registry", "charts", "--format", "json").stdout)
    assert doc["registries"][0]["failed"] is True and doc["entries"][0]["name"] == "redis"


def test_unknown_registry_no_match_and_no_database_are_clear_errors(repo: Path, tmp_path: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    res = catalog(repo, "--registry", "nope")
    assert res.returncode == 1 and "unknown registry nope" in res.stderr and "charts" in res.stderr
    res = catalog(repo, "no-such-chart")
    assert res.returncode == 1 and "no content matching 'no-such-chart'" in res.stderr
    res = catalog(repo, "nginx", "--version", "9.9.9")
    assert res.returncode == 1 and "at version '9.9.9'" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(empty, "catalog")
    assert res.returncode == 1 and "no local catalog" in res.stderr
    assert not (empty / ".reconciler").exists()  # a query creates nothing
    res = catalog(repo, "--target", "palette")
    assert res.returncode == 1 and "local target" in res.stderr
    for r in (res,):
        assert "Traceback" not in r.stderr
    # a JSON caller reads why from stdout too: one document of the catalog's shape
    for args, why in ((("--registry", "nope"), "unknown registry nope"), (("--target", "palette"), "local target")):
        res = catalog(repo, *args, "--format", "json")
        doc = json.loads(res.stdout)
        assert res.returncode == 1 and why in doc["error"] and doc["entries"] == [], doc
    res = run(empty, "catalog", "--format", "json")
    assert res.returncode == 1 and "no local catalog" in json.loads(res.stdout)["error"]


def test_catalog_opens_the_database_read_only(repo: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    db = repo / ".reconciler/local.db"
    for side in (".reconciler/local.db-wal", ".reconciler/local.db-shm"):  # as a finished sync leaves it
        (repo / side).unlink(missing_ok=True)
    files = sorted(p.name for p in (repo / ".reconciler").iterdir())
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert catalog(repo, "nginx").returncode == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in (repo / ".reconciler").iterdir()) == files  # no -wal/-shm created


def test_hostile_names_from_an_index_are_escaped(repo: Path):
    assert run(repo, "sync", env=ENV).returncode == 0
    db = repo / ".reconciler/local.db"
    with sqlite3.connect(db) as conn:
        uid = conn.execute("SELECT uid FROM registries WHERE name = 'charts'").fetchone()[0]
        conn.execute("INSERT INTO content_helm_versions (uid, chart, version) VALUES (?, ?, ?)",
                     (uid, "evil\n::error::pwned\x1b[8m", "1.0.0"))
    res = catalog(repo, "evil")
    assert res.returncode == 0
    assert "\x1b" not in res.stdout and "\n::error" not in res.stdout
    assert "evil\\x0a::error::pwned\\x1b[8m" in res.stdout


@pytest.mark.parametrize("pattern,name,hit", [
    (None, "x", True), ("ngi", "nginx", True), ("NGI", "nginx", True), ("ngi", "redis", False),
    ("ngin?", "nginx", True), ("ngin?", "nginx-ingress", False), ("*ingress", "nginx-ingress", True),
])
def test_matcher(pattern, name, hit):
    assert matcher(pattern)(name) is hit


def test_version_order():
    vs = ["1.2.3", "1.10.0", "1.10.0-rc1", "v2.0.0", "0.9"]
    assert sorted(vs, key=version_key, reverse=True) == ["v2.0.0", "1.10.0", "1.10.0-rc1", "1.2.3", "0.9"]
