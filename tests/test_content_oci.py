from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from reconciler.content import catalog_summary, ensure_schema, oci, sync_registry
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.oci_registry import PASSWORD, USER, oci_basic, oci_plain, oci_tls  # noqa: F401
from tests.support.scripted_server import scripted  # noqa: F401 - a fixture

pytestmark = pytest.mark.registry


@pytest.fixture
def conn(tmp_path: Path):
    c = sqlite3.connect(tmp_path / "local.db", isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    ensure_schema(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def seeded(oci_plain):  # noqa: F811
    oci_plain.push("team/app", "1.0")
    oci_plain.tag("team/app", "1.0", "1.1")
    oci_plain.push("team/pack-x", "1.0.0", annotations={"io.spectrocloud.pack.name": "x"})
    oci_plain.push("team/pack-y", "2.0.0", files={"pack.json": b'{"name": "y"}'})
    oci_plain.push("other/thing", "latest")
    return oci_plain


def spec(url: str, base: str = "team", **extra):
    s = {
        "endpoint": url,
        "provider": "helm",
        "baseContentPath": base,
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False},
        "fips": False,
    }
    s.update(extra)
    return s


def test_lists_repositories_and_tags_under_base_path(conn, seeded):
    seen: list[str] = []
    r = sync_registry(
        conn, "o1", "OciRegistry", spec(seeded.url), {}, base_dir=Path("."), progress=seen.append
    )
    assert r.status == "Completed", r.message
    assert r.counts == {"repositories": 3, "tags": 4}
    assert sorted(r.added) == [
        "team/app:1.0",
        "team/app:1.1",
        "team/pack-x:1.0.0",
        "team/pack-y:2.0.0",
    ]
    assert seen
    again = sync_registry(conn, "o1", "OciRegistry", spec(seeded.url), {}, base_dir=Path("."))
    assert again.added == [] == again.removed
    s = catalog_summary(conn, "o1")
    assert s["repositories"] == 3 and s["tags"] == 4 and s["status"] == "Completed"


def test_endpoint_without_scheme_and_with_path(conn, seeded):
    # "host:port/team" + baseContentPath "" lists the same repositories; http via scheme only
    r = sync_registry(
        conn,
        "o2",
        "OciRegistry",
        spec(f"http://{seeded.host}/team", base=""),
        {},
        base_dir=Path("."),
    )
    assert r.counts["repositories"] == 3


def test_incremental_added_and_removed(conn, oci_plain):  # noqa: F811
    oci_plain.push("inc/a", "1")
    oci_plain.push("inc/b", "1")
    s = spec(oci_plain.url, base="inc")
    assert sync_registry(conn, "o3", "OciRegistry", s, {}, base_dir=Path(".")).status == "Completed"
    oci_plain.tag("inc/a", "1", "2")
    with oci_plain.http() as c:
        head = c.head(
            "/v2/inc/b/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        c.delete(f"/v2/inc/b/manifests/{head.headers['Docker-Content-Digest']}").raise_for_status()
    r = sync_registry(conn, "o3", "OciRegistry", s, {}, base_dir=Path("."))
    assert r.added == ["inc/a:2"] and r.removed == ["inc/b:1"]


def test_catalog_paging_follows_link(conn, seeded, monkeypatch):
    monkeypatch.setattr(oci, "PAGE", 1)
    r = sync_registry(conn, "o4", "OciRegistry", spec(seeded.url, base=""), {}, base_dir=Path("."))
    assert r.status == "Completed"
    assert {"team/app", "other/thing"} <= {a.split(":")[0] for a in r.added}


def test_pack_layouts_recognised(conn, seeded, tmp_path):
    r = sync_registry(
        conn, "o5", "OciRegistry", spec(seeded.url, provider="pack"), {}, base_dir=Path(".")
    )
    assert r.status == "Completed", r.message
    assert r.counts["packs"] == 2
    layouts = dict(
        conn.execute(
            "SELECT repository, layout FROM content_oci_repositories WHERE uid = 'o5'"
        ).fetchall()
    )
    assert layouts == {
        "team/app": "other",
        "team/pack-x": "pack:annotation",
        "team/pack-y": "pack:pack.json",
    }
    assert not (Path(os.environ["HOME"]) / ".docker").exists()


def test_missing_base_path_fails(conn, seeded):
    r = sync_registry(
        conn, "o6", "OciRegistry", spec(seeded.url, base="nope"), {}, base_dir=Path(".")
    )
    assert r.status == "Failed" and "baseContentPath 'nope'" in r.message


# --------------------------------------------------------------------------- several base paths
# Palette's rules (palette-behaviour.md, "Rules the docs state"): baseContentPath may hold
# several comma-separated paths; for provider: pack an empty one means <endpoint>/spectro-packs.


@pytest.fixture(scope="module")
def multi(oci_plain):  # noqa: F811
    oci_plain.push("h9-a/app", "1")
    oci_plain.push("h9-b/x/chart", "2")
    oci_plain.tag("h9-b/x/chart", "2", "3")
    oci_plain.push("h9-c/elsewhere", "1")
    oci_plain.push("h9-ab/near-miss", "1")  # shares a string prefix with h9-a: not under it
    oci_plain.push("spectro-packs/pack-z", "1.0.0", files={"pack.json": b'{"name": "z"}'})
    oci_plain.push("h9-nest/spectro-packs/pack-n", "1.0.0", files={"pack.json": b'{"name": "n"}'})
    return oci_plain


def _repos(conn, uid: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (repo,) in conn.execute("SELECT repository FROM content_oci_repositories WHERE uid = ?", (uid,)):
        out[repo] = []
    for repo, tag in conn.execute("SELECT repository, tag FROM content_oci_tags WHERE uid = ?", (uid,)):
        out[repo].append(tag)
    return {k: sorted(v) for k, v in out.items()}


def test_several_base_paths_list_every_repository_by_full_name(conn, multi, monkeypatch):
    pagings: list[object] = []
    real = oci.Distribution.catalog_pages

    def counting(self, prefix="", page=None):
        pagings.append(prefix)
        return real(self, prefix, page)

    monkeypatch.setattr(oci.Distribution, "catalog_pages", counting)
    # a duplicate (h9-a/) and a path inside another (h9-b/x in h9-b) count once
    s = spec(multi.url, base="h9-a,h9-b,h9-a/,h9-b/x")
    r = sync_registry(conn, "m1", "OciRegistry", s, {}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    assert _repos(conn, "m1") == {"h9-a/app": ["1"], "h9-b/x/chart": ["2", "3"]}
    assert r.counts == {"repositories": 2, "tags": 3}
    assert len(pagings) == 1  # the catalog is paged once for every path
    assert catalog_summary(conn, "m1")["repositories"] == 2


def test_a_missing_base_path_among_several_fails_naming_each(conn, multi):
    ok = sync_registry(conn, "m2", "OciRegistry", spec(multi.url, base="h9-a"), {}, base_dir=Path("."))
    assert ok.status == "Completed", ok.message
    r = sync_registry(
        conn, "m2", "OciRegistry", spec(multi.url, base="h9-a,h9-nope,h9-b,h9-gone"), {}, base_dir=Path(".")
    )
    assert r.status == "Failed"
    assert r.message == f"no repositories under baseContentPath 'h9-nope', baseContentPath 'h9-gone' at {multi.url}"
    # a failed sync keeps the earlier catalog: h9-b was not stored half-way
    assert _repos(conn, "m2") == {"h9-a/app": ["1"]}
    assert catalog_summary(conn, "m2")["status"] == "Failed"


def test_pack_with_empty_base_path_lists_spectro_packs(conn, multi):
    r = sync_registry(conn, "m3", "OciRegistry", spec(multi.url, base="", provider="pack"), {}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    assert _repos(conn, "m3") == {"spectro-packs/pack-z": ["1.0.0"]}
    assert r.counts["packs"] == 1
    # under an endpoint with a path, spectro-packs is under that path
    nested = spec(f"{multi.url}/h9-nest", base="", provider="pack")
    r = sync_registry(conn, "m4", "OciRegistry", nested, {}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    assert _repos(conn, "m4") == {"h9-nest/spectro-packs/pack-n": ["1.0.0"]}
    # other providers with an empty base path still list everything (not spectro-packs)
    r = sync_registry(conn, "m5", "OciRegistry", spec(multi.url, base=""), {}, base_dir=Path("."))
    assert {"h9-a/app", "spectro-packs/pack-z"} <= set(_repos(conn, "m5"))


def test_pack_with_empty_base_path_and_no_spectro_packs_fails_clearly(conn, multi):
    s = spec(f"{multi.url}/h9-a", base="", provider="pack")
    r = sync_registry(conn, "m6", "OciRegistry", s, {}, base_dir=Path("."))
    assert r.status == "Failed"
    assert "'spectro-packs' (provider: pack with an empty baseContentPath)" in r.message


def test_catalog_disabled_several_base_paths_are_repositories(scripted):
    # ECR-like: no _catalog; each base path may be a repository itself
    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 404, {}, {"errors": []}
        if path.startswith(("/v2/t/a/", "/v2/t/b/")):
            return 200, {}, {"tags": [path.split("/")[3]]}
        return 404, {}, {"errors": []}

    srv = scripted(route)
    with _dist(srv.url, base="") as dist:
        listing = oci.list_content(dist, ["t/a", "t/none", "t/b"])
        assert listing.tags == {"t/a": ["a"], "t/b": ["b"]}
        # one base path, as before (this path used to end in a zip() ValueError, exit 3)
        assert oci.list_content(dist, "t/a").tags == {"t/a": ["a"]}
        with pytest.raises(oci.ProbeError):
            oci.list_content(dist, ["t/none"])


def test_reconcile_sync_several_base_paths_end_to_end(tmp_path, multi):
    root = tmp_path / "repo"
    init_repo(root)

    def define(base: str) -> None:
        write_defs(root, {"r.yaml": registry_doc("OciRegistry", "teams", f"""
            endpoint: http://{multi.host}
            provider: helm
            baseContentPath: {base}
            sync: true
            auth: {{type: noAuth}}
        """)})
        commit_all(root)
        applied = run(root)
        assert applied.returncode == 0, applied.stdout + applied.stderr

    define("h9-a,h9-b")
    ok = run(root, "sync")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    st = run(root, "status", "--format", "json")
    row = next(r for r in json.loads(st.stdout)["registries"] if r["name"] == "teams")
    assert row["content"] == "2 repositories, 3 tags"
    define("h9-a,h9-b,h9-nope")
    bad = run(root, "sync", "--force")  # a changed definition alone does not make it due
    assert bad.returncode == 1 and "sync failed for: OciRegistry/teams (Failed)" in bad.stderr
    assert "baseContentPath 'h9-nope'" in bad.stdout and "Traceback" not in bad.stderr


def test_basic_auth(conn, oci_basic):  # noqa: F811
    oci_basic.push("sec/app", "1")
    auth = {"type": "basic", "username": USER, "password": {"fromEnv": "P"}}
    ok = sync_registry(
        conn,
        "o7",
        "OciRegistry",
        spec(oci_basic.url, base="sec", auth=auth),
        {"auth.password": PASSWORD},
        base_dir=Path("."),
    )
    assert ok.status == "Completed" and ok.counts["tags"] == 1, ok.message
    bad = sync_registry(
        conn,
        "o7",
        "OciRegistry",
        spec(oci_basic.url, base="sec", auth=auth),
        {"auth.password": "not-the-password"},
        base_dir=Path("."),
    )
    assert bad.status == "Failed" and "401" in bad.message
    assert "not-the-password" not in bad.message
    anon = sync_registry(
        conn, "o8", "OciRegistry", spec(oci_basic.url, base="sec"), {}, base_dir=Path(".")
    )
    assert anon.status == "Failed" and "requires credentials" in anon.message


def test_tls_with_custom_ca(conn, oci_tls):  # noqa: F811
    oci_tls.push("tls/app", "1")
    auth = {"type": "basic", "username": USER, "password": {"fromEnv": "P"}}
    secrets = {"auth.password": PASSWORD}
    base_dir = oci_tls.tls.ca.parent
    ok = sync_registry(
        conn,
        "o9",
        "OciRegistry",
        spec(
            oci_tls.host,
            base="tls",
            auth=auth,
            provider="pack",
            tls={"insecureSkipVerify": False, "caFile": "ca.crt"},
        ),
        secrets,
        base_dir=base_dir,
    )
    assert ok.status == "Completed" and ok.counts["tags"] == 1, ok.message
    no_ca = sync_registry(
        conn,
        "o10",
        "OciRegistry",
        spec(oci_tls.host, base="tls", auth=auth),
        secrets,
        base_dir=base_dir,
    )
    assert no_ca.status == "Failed" and "TLS" in no_ca.message
    skip = sync_registry(
        conn,
        "o11",
        "OciRegistry",
        spec(f"https://{oci_tls.host}", base="tls", auth=auth, tls={"insecureSkipVerify": True}),
        secrets,
        base_dir=base_dir,
    )
    assert skip.status == "Completed", skip.message


def test_unreachable_is_fast_and_clean(conn):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    r = sync_registry(
        conn,
        "o12",
        "OciRegistry",
        spec(f"http://127.0.0.1:{port}", provider="pack"),
        {},
        base_dir=Path("."),
    )
    assert r.status == "Failed" and "cannot connect" in r.message
    assert time.monotonic() - t0 < 5


def test_ecr_auth_is_reported_not_raised(conn):
    r = sync_registry(
        conn,
        "o13",
        "OciRegistry",
        spec("123.dkr.ecr.us-east-1.amazonaws.com", auth={"type": "ecr"}),
        {},
        base_dir=Path("."),
    )
    assert r.status == "Failed" and "ECR" in r.message


@pytest.mark.parametrize(
    "endpoint,expected",
    [
        ("reg.example.com", ("https://reg.example.com", "reg.example.com", "", True)),
        ("http://127.0.0.1:5000", ("http://127.0.0.1:5000", "127.0.0.1:5000", "", False)),
        ("https://h:443/a/b/", ("https://h:443", "h:443", "a/b", True)),
    ],
)
def test_parse_endpoint(endpoint, expected):
    ep = oci.parse_endpoint(endpoint)
    assert (ep.base, ep.host, ep.path, ep.https) == expected


def test_bearer_challenge_flow(scripted):
    def route(path, headers):
        if path.startswith("/token"):
            assert headers["Authorization"].startswith("Basic ")
            assert "scope=registry%3Acatalog%3A%2A" in path
            return 200, {}, {"token": "tok"}
        if headers.get("Authorization") == "Bearer tok":
            return 200, {}, {"repositories": ["a/b"]}
        return 401, {"WWW-Authenticate": f'Bearer realm="{srv.url}/token",service="reg",scope="registry:catalog:*"'}, {}

    srv = scripted(route)
    with _dist(srv.url, base="", auth={"type": "basic", "username": "u", "password": {"fromEnv": "P"}}) as dist:
        assert dist.catalog() == ["a/b"]
        assert dist.catalog() == ["a/b"]
    assert [p.split("?")[0] for p, _ in srv.requests] == ["/v2/_catalog", "/token", "/v2/_catalog", "/v2/_catalog"]


# --------------------------------------------------------------------------- the tags pool
# A scripted registry (tests/support/scripted_server.py).


def _dist(url: str, **spec_extra) -> oci.Distribution:
    from reconciler.content.http import build_access

    ep = oci.parse_endpoint(url)
    s = spec(url, **spec_extra)
    return oci.Distribution(
        ep, build_access(s, {"auth.password": "pw-secret"}, Path("."), https=ep.https)
    )


def test_pool_keeps_connections_and_survives_stale_ones(scripted):
    n = {"count": 0}

    def route(path, headers):
        n["count"] += 1
        drop = {"x-drop": "1"} if n["count"] % 3 == 0 else {}
        return 200, {"Content-Type": "application/json", **drop}, {"tags": [path]}

    srv = scripted(route)
    with _dist(srv.url, base="") as dist:
        dist.pool.size = 1
        got = [dist.tags(f"r/{i}") for i in range(9)]
    assert got == [[f"/v2/r/{i}/tags/list"] for i in range(9)]
    assert srv.connections == 3  # kept alive; a fresh one after each silent close


def test_tags_follow_link_pages_through_the_pool(scripted):
    def route(path, headers):
        if path.endswith("?last=b"):
            return 200, {}, {"tags": ["c"]}
        return 200, {"Link": '</v2/r/x/tags/list?last=b>; rel="next"'}, {"tags": ["a", "b"]}

    srv = scripted(route)
    with _dist(srv.url, base="") as dist:
        assert dist.tags("r/x") == ["a", "b", "c"]
    assert srv.connections == 1


def test_tags_bearer_challenge_falls_back_to_the_token_flow(scripted):
    def route(path, headers):
        if path.startswith("/token"):
            assert headers["Authorization"].startswith("Basic ")
            return 200, {}, {"token": "tok"}
        if headers.get("Authorization") == "Bearer tok":
            return 200, {}, {"tags": ["1"]}
        realm = f'Bearer realm="{srv.url}/token",service="reg",scope="repository:r:pull"'
        return 401, {"WWW-Authenticate": realm}, {"errors": []}

    srv = scripted(route)
    auth = {"type": "basic", "username": "u", "password": {"fromEnv": "P"}}
    with _dist(srv.url, base="", auth=auth) as dist:
        assert dist.tags("r/a") == ["1"]
        assert dist.tags("r/b") == ["1"]
    # the second repository goes straight to the token flow: no wasted pool request
    assert [p for p, _ in srv.requests if "tags" in p].count("/v2/r/b/tags/list") == 2


def test_tags_errors_are_one_clean_line(scripted, monkeypatch):
    import httpx as _httpx

    def route(path, headers):
        if "slow" in path:
            return 0, {}, b""
        if "gone" in path:
            return 404, {}, {"errors": []}
        return 401, {"WWW-Authenticate": 'Basic realm="x"'}, {"errors": []}

    srv = scripted(route)
    monkeypatch.setattr(oci, "TIMEOUT", _httpx.Timeout(0.3, connect=0.3))
    auth = {"type": "basic", "username": "u", "password": {"fromEnv": "P"}}
    with _dist(srv.url, base="", auth=auth) as dist:
        assert dist.tags("r/gone") == []
        with pytest.raises(oci.ProbeError) as denied:
            dist.tags("r/denied")
        t0 = time.monotonic()
        with pytest.raises(oci.ProbeError) as slow:
            dist.tags("r/slow")
        assert time.monotonic() - t0 < 2
    assert "credentials rejected (HTTP 401)" in str(denied.value)
    assert "timed out talking to" in str(slow.value)
    assert "pw-secret" not in str(denied.value) + str(slow.value)


def test_catalog_pages_feed_the_tags_fan_out(scripted):
    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            if "last=" in path:
                return 200, {}, {"repositories": ["t/c"]}
            link = {"Link": '</v2/_catalog?last=t/b&n=2>; rel="next"'}
            return 200, link, {"repositories": ["other/x", "t/a", "t/b"]}
        return 200, {}, {"tags": [path.split("/")[3]]}

    srv = scripted(route)
    with _dist(srv.url, base="") as dist:
        listing = oci.list_content(dist, "t")
    assert listing.tags == {"t/a": ["a"], "t/b": ["b"], "t/c": ["c"]}


@pytest.mark.parametrize("realm", ["http://auth.example.com/token", "ftp://auth.example.com/token", "::not a url"])
def test_credentials_never_follow_a_token_realm_off_https(realm: str):
    """Adversarial pass: the Bearer challenge of a registry reached over https could name an
    http:// realm, and the registry's basic credentials went there in clear."""
    from reconciler.content.http import ProbeError
    from reconciler.content.oci import RegistryAuth

    auth = RegistryAuth("robot", "S3cr3t-PLANT-9f2")
    first = next(auth.auth_flow(httpx.Request("GET", "https://r.example.com/v2/")))
    assert first.url.scheme == "https"
    challenge = httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'}, request=first)
    with pytest.raises(ProbeError, match="token service is not https") as caught:
        auth.token_request(challenge)
    assert "S3cr3t-PLANT" not in str(caught.value)
    # an https realm on another host is how registries work (Docker Hub: auth.docker.io)
    token_req = auth.token_request(httpx.Response(
        401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example.org/t"'}, request=first))
    assert token_req is not None
    assert token_req.url.host == "auth.example.org" and token_req.headers["Authorization"].startswith("Basic ")


# --------------------------------------------------------------------------- hostile registries
# Adversarial pass 3 (items 3, 6 and 8): a registry's answers are the server's word. Its
# ``Link: rel="next"`` may name another origin (the credentials must not follow), point back
# to itself (the listing must end), and its JSON may be nested 100,000 deep or typed wrongly
# (one Failed registry, never an internal error).

BASIC = {"type": "basic", "username": "robot", "password": {"fromEnv": "P"}}
PLANTED = "S3cr3t-LINK-7a1"


def _basic_sync(conn, url: str, uid: str = "h1", **extra):
    return sync_registry(conn, uid, "OciRegistry", spec(url, base="", auth=BASIC, **extra),
                         {"auth.password": PLANTED}, base_dir=Path("."))


def _tags_of(conn, uid: str) -> set[tuple[str, str]]:
    return set(conn.execute("SELECT repository, tag FROM content_oci_tags WHERE uid = ?", (uid,)))


@pytest.mark.parametrize("listing", ["catalog", "tags"])
@pytest.mark.parametrize("where", ["other port", "other host name", "https on another port"])
def test_a_next_link_to_another_origin_is_not_followed(conn, scripted, listing, where):
    other = scripted(lambda path, headers: (200, {}, {"repositories": ["stolen/x"], "tags": ["stolen"]}))
    other_port = other.server.server_address[1]
    state = {"hostile": False}

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        port = srv.server.server_address[1]
        foreign = {"other port": f"http://127.0.0.1:{other_port}",
                   "other host name": f"http://localhost:{port}",
                   "https on another port": f"https://127.0.0.1:{other_port}"}[where]
        if path.startswith("/v2/_catalog"):
            link = {"Link": f'<{foreign}/v2/_catalog?last=a>; rel="next"'} if state["hostile"] and listing == "catalog" and "last=" not in path else {}
            return 200, link, {"repositories": ["t/a"]}
        link = {"Link": f'<{foreign}/v2/t/a/tags/list?last=1>; rel="next"'} if state["hostile"] and listing == "tags" and "last=" not in path else {}
        return 200, link, {"tags": ["1"]}

    srv = scripted(route)
    assert _basic_sync(conn, srv.url).status == "Completed"
    state["hostile"] = True
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed", r.message
    assert "another origin" in r.message and "not followed" in r.message
    host = "localhost" if where == "other host name" else f"127.0.0.1:{other_port}"
    assert host in r.message and PLANTED not in r.message
    assert other.connections == 0 and other.requests == []  # not even a connection
    assert all(h.startswith("127.0.0.1:") for h in srv.hosts)  # nothing asked as another host
    assert _tags_of(conn, "h1") == {("t/a", "1")}  # the earlier catalog is kept
    assert catalog_summary(conn, "h1")["status"] == "Failed"


def test_a_next_link_on_the_same_origin_is_followed_whatever_its_spelling(conn, scripted):
    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 200, {}, {"repositories": ["t/a"]}
        port = srv.server.server_address[1]
        if "last=" in path:
            return 200, {}, {"tags": ["2"]}
        return 200, {"Link": f'<HTTP://127.0.0.1:{port}/v2/t/a/tags/list?last=1>; rel="next"'}, {"tags": ["1"]}

    srv = scripted(route)
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed", r.message
    assert _tags_of(conn, "h1") == {("t/a", "1"), ("t/a", "2")}


def _endless(link_for, *, limit: int = 300, delay: float = 0.0):
    """A registry with one repository ``t/a`` whose answers link on (``link_for(path)``) for
    its first ``limit`` requests: without the guards a sync would loop, so ``limit`` bounds
    the test even when they are broken."""
    count = {"n": 0}

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        count["n"] += 1
        if delay:
            time.sleep(delay)
        link = link_for(path)
        headers = {"Link": f'<{link}>; rel="next"'} if link and count["n"] <= limit else {}
        if path.startswith("/v2/_catalog"):
            return 200, headers, {"repositories": ["t/a"]}
        return 200, headers, {"tags": [f"v{count['n']}"]}

    return route


def _asked(srv, what: str) -> int:
    return sum(what in path for path, _ in srv.requests)


def test_a_tags_list_linking_to_itself_fails_and_ends(conn, scripted):
    """Item 6: ``tags/list`` answering ``Link: </v2/t/a/tags/list?last=v1>`` on every page
    was asked 50,000 times in 30 s and never ended (the state lock held all the while)."""
    srv = scripted(_endless(lambda p: "/v2/t/a/tags/list?last=v1" if "tags" in p else None))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed", r.message
    assert "links back to a page it already served" in r.message and "repository t/a" in r.message
    assert _asked(srv, "tags/list") == 2  # the first page and the linked one, asked once


def test_a_catalog_link_loop_fails_not_counts_twice(conn, scripted):
    def link(path):
        if "_catalog" not in path:
            return None
        return "/v2/_catalog?p=b" if "p=a" in path else "/v2/_catalog?p=a"

    srv = scripted(_endless(link))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed" and "repository catalog" in r.message and "loops" in r.message, r.message
    assert _asked(srv, "_catalog") == 3  # first, a, b; a again is refused


def test_pages_of_one_listing_are_capped(conn, scripted, monkeypatch):
    monkeypatch.setattr(oci, "MAX_PAGES", 5)
    srv = scripted(_endless(lambda p: f"/v2/t/a/tags/list?last={time.monotonic_ns()}" if "tags" in p else None))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed" and "more than 5 pages" in r.message, r.message
    assert _asked(srv, "tags/list") == 5


def test_a_deadline_ends_an_endless_listing(conn, scripted):
    """``reconcile sync --timeout`` on the local target: the deadline is checked before each
    request (test_sync_local checks the command end to end)."""
    srv = scripted(_endless(lambda p: f"/v2/t/a/tags/list?last={time.monotonic_ns()}" if "tags" in p else None,
                            delay=0.05, limit=200))
    t0 = time.monotonic()
    r = sync_registry(conn, "d1", "OciRegistry", spec(srv.url, base=""), {}, base_dir=Path("."),
                      deadline=time.monotonic() + 1.0)
    took = time.monotonic() - t0
    assert r.status == "Failed" and "deadline (--timeout) passed" in r.message, r.message
    assert took < 4, took
    assert _asked(srv, "tags/list") < 40


def test_a_deadline_caps_a_request_that_hangs(conn, scripted):
    srv = scripted(lambda path, headers: (200, {}, {}) if path == "/v2/" else (0, {}, b""))
    t0 = time.monotonic()
    r = sync_registry(conn, "d2", "OciRegistry", spec(srv.url, base=""), {}, base_dir=Path("."),
                      deadline=time.monotonic() + 0.5)
    assert r.status == "Failed" and "deadline" in r.message, r.message
    assert time.monotonic() - t0 < 3  # not the 30 s read timeout


DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE = {  # item 8: each was an internal error (exit 3) or a wrong catalog
    "deep": (DEEP, "did not return JSON"),
    "deep in the field": (b'{"repositories": ' + DEEP + b', "tags": ' + DEEP + b"}", "did not return JSON"),
    "integer of 5,000 digits": (b'{"repositories": [' + b"9" * 5000 + b'], "tags": [' + b"9" * 5000 + b"]}",
                                "did not return JSON"),
    "not UTF-8": (b'{"repositories": ["\xff"], "tags": ["\xff"]}', "did not return JSON"),
    "a list": (b'["t/a"]', "did not return a JSON object"),
    "non-strings": (json.dumps({"repositories": [{"a": 1}, 5, None], "tags": [1, {"x": 2}, None]}).encode(),
                    "is not a list of strings"),
    "a string": (json.dumps({"repositories": "t/a", "tags": "v1"}).encode(), "is not a list of strings"),
}


@pytest.mark.parametrize("listing", ["catalog", "tags"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_json_answer_fails_that_registry(conn, scripted, listing, case):
    body, expected = HOSTILE[case]

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 200, {}, body if listing == "catalog" else {"repositories": ["t/a"]}
        return 200, {}, body if listing == "tags" else {"tags": ["1"]}

    srv = scripted(route)
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed", r.message
    assert expected in r.message and ("tags/list" in r.message) == (listing == "tags"), r.message
    assert PLANTED not in r.message


def test_null_tags_are_no_tags(conn, scripted):
    """docker-registry answers ``"tags": null`` once every tag of a repository is deleted."""
    srv = scripted(lambda path, headers: (200, {}, {"repositories": ["t/a"]} if "_catalog" in path
                                          else {"name": "t/a", "tags": None} if "tags" in path else {}))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed" and r.counts == {"repositories": 1, "tags": 0}, r.message


@pytest.mark.parametrize("answer", [b'["tok"]', b'{"token": 5}', b'{"token": "tok with space"}',
                                    b'{"token": "tok\\u00e9"}', b'{"token": ' + DEEP + b"}", b"not json"],
                         ids=["list", "number", "space", "non-ascii", "deep", "not-json"])
def test_a_token_answer_that_is_no_token_fails_cleanly(conn, scripted, answer):
    """RegistryAuth called ``body.get`` on a token answer that may be a JSON list (an
    AttributeError), and a token no header can carry was httpx's UnicodeEncodeError."""
    def route(path, headers):
        if path.startswith("/token"):
            return 200, {}, answer
        realm = f'Bearer realm="{srv.url}/token",service="reg",scope="registry:catalog:*"'
        return 401, {"WWW-Authenticate": realm}, {"errors": []}

    srv = scripted(route)
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed", r.message
    assert "token service" in r.message and "without a usable token" in r.message, r.message
    assert PLANTED not in r.message and "tok" not in r.message.replace("token", "")


@pytest.mark.parametrize("manifest", [[], {"config": [1]}, {"annotations": ["io.spectrocloud.x", 5]},
                                      {"layers": [5, {"annotations": [1]}, {"annotations": {"org.opencontainers."
                                                                                            "image.title": 7}}]},
                                      {"artifactType": 5, "config": {"mediaType": ["spectrocloud"]}}])
def test_pack_layout_reads_a_malformed_manifest_as_other(manifest):
    assert oci.pack_layout("r", manifest) == "other"


def test_a_next_link_that_is_no_url_is_not_followed(conn, scripted):
    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 200, {}, {"repositories": ["t/a"]}
        return 200, {"Link": '</v2/t/a/tags/list?last=\x1b[2J>; rel="next"'}, {"tags": ["1"]}

    srv = scripted(route)
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed" and "a URL that is not valid: not followed" in r.message, r.message
    assert "\x1b" not in r.message and len(srv.requests) == 2  # the catalog and one tag list


def test_a_listing_sync_asks_no_ping_the_catalog_answered_for_it(conn, scripted):
    def route(path, headers):
        if path.startswith("/v2/_catalog"):
            return 200, {}, {"repositories": ["team/a", "team/b"]}
        if path.endswith("/tags/list"):
            return 200, {}, {"tags": ["1.0.0"]}
        return 200, {}, {}

    srv = scripted(route)
    r = sync_registry(conn, "p1", "OciRegistry", spec(srv.url), {}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    paths = [p for p, _ in srv.requests]
    assert "/v2/" not in paths and sorted(paths) == ["/v2/_catalog?n=1000", "/v2/team/a/tags/list",
                                                     "/v2/team/b/tags/list"]


@pytest.mark.parametrize(("ping", "expected"), [
    (404, "/v2/ is not an OCI distribution API (HTTP 404)"),
    (401, "/v2/ requires credentials (HTTP 401) but auth.type is noAuth"),
])
def test_a_failed_catalog_is_explained_by_the_ping(conn, scripted, ping, expected):
    # not asked before the catalog any more (one round trip less), the ping still says why
    # a registry cannot be listed, before the catalog's own failure or its fallbacks
    def route(path, headers):
        return (ping, {}, {}) if path == "/v2/" else (ping, {}, {"errors": [{"code": "UNSUPPORTED"}]})

    srv = scripted(route)
    r = sync_registry(conn, "p1", "OciRegistry", spec(srv.url), {}, base_dir=Path("."))  # noAuth
    assert r.status == "Failed" and expected in r.message, r.message
    assert [p for p, _ in srv.requests][-1] == "/v2/", srv.requests


# --------------------------------------------------------------------------- bounded answers
# A registry's answer is read up to http.MAX_ANSWER_BYTES and for at most
# http.MAX_ANSWER_SECONDS (or until --timeout's deadline): the httpx client (catalog) and the
# pool (tags/list) alike. Both limits are made small here.

def _streamed(listing: str, body, headers=None):
    def route(path, _headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return (200, headers or {}, body) if listing == "catalog" else (200, {}, {"repositories": ["t/a"]})
        return (200, headers or {}, body) if listing == "tags" else (200, {}, {"tags": ["1"]})

    return route


def _flood(total: int):
    def write(wfile):
        chunk = b'{"tags": ["' + b"x" * 65_000
        sent = 0
        while sent < total:  # bounded: the client hangs up at the limit, or this ends
            wfile.write(chunk)
            sent += len(chunk)

    return write


@pytest.mark.parametrize("listing", ["catalog", "tags"])
@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_an_answer_over_the_size_limit_fails_that_registry(conn, scripted, monkeypatch, listing, declared):
    """A registry (or anything at its address) answering without end filled the runner's
    memory: the catalog through httpx and each tags/list through the pool read every byte."""
    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_BYTES", 256 * 1024)
    monkeypatch.setattr(oci, "MAX_ANSWER_BYTES", 256 * 1024)
    total = 4 * 1024 * 1024
    headers = {"Content-Length": str(total)} if declared else {}
    srv = scripted(_streamed(listing, _flood(total), headers))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed", r.message
    assert "262144-byte limit" in r.message and ("tags/list" in r.message) == (listing == "tags"), r.message


@pytest.mark.parametrize("listing", ["catalog", "tags"])
def test_a_trickling_answer_is_cut_at_its_time_limit(conn, scripted, monkeypatch, listing):
    """A byte every 0.1 s never trips the 30 s read timeout: without a bound on the whole
    answer, a sync with no --timeout never ended (and held the state lock)."""
    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_SECONDS", 1.0)

    def trickle(wfile):
        wfile.write(b'{"repositories": ["t/a"], "tags": ["')
        wfile.flush()
        for _ in range(60):  # 6 s at most: the test ends even when the bound is broken
            time.sleep(0.1)
            wfile.write(b"x")
            wfile.flush()
        wfile.write(b'"]}')

    srv = scripted(_streamed(listing, trickle))
    t0 = time.monotonic()
    r = _basic_sync(conn, srv.url)
    took = time.monotonic() - t0
    assert r.status == "Failed", r.message
    assert "still answering when its time ran out" in r.message or "timed out" in r.message, r.message
    assert took < 3.5, took


def test_a_large_answer_within_the_limit_is_read_whole(conn, scripted, monkeypatch):
    """The limit refuses only what passes it: 20,000 tags in one chunked answer are listed."""
    tags = [f"v{i}" for i in range(20_000)]
    body = json.dumps({"name": "t/a", "tags": tags}).encode()

    def write(wfile):
        for i in range(0, len(body), 4096):
            wfile.write(body[i:i + 4096])

    srv = scripted(_streamed("tags", write))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed" and r.counts == {"repositories": 1, "tags": 20_000}, r.message


def test_many_tag_lists_over_kept_alive_connections(conn, scripted):
    """The pool reads each answer in chunks; a connection it keeps must then be ready for
    the next request (``read1`` does not close a response at the end of its length)."""
    repos = [f"t/r{i:02d}" for i in range(60)]
    srv = scripted(lambda path, headers: (200, {}, {}) if path == "/v2/" else
                   (200, {}, {"repositories": repos}) if "_catalog" in path else
                   (200, {}, {"tags": ["1", "2"]}))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed" and r.counts == {"repositories": 60, "tags": 120}, r.message
    assert srv.connections < 60  # kept alive, not one connection per request


def _gzip_zeros(size: int, layers: int = 1) -> bytes:
    import zlib

    data = b""
    for _ in range(layers):
        z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        if not data:  # the innermost layer: zeros, compressed a MiB at a time (never held whole)
            out = [z.compress(bytes(1 << 20)) for _ in range(size >> 20)]
        else:
            out = [z.compress(data)]
        data = b"".join(out) + z.flush()
    return data


def test_a_gzip_bomb_is_decoded_in_bounded_pieces_and_refused(conn, scripted, monkeypatch):
    """Adversarial pass 5, item 2: httpx decoded a whole chunk before the size check (about
    1,000 times its size): 64 KB of gzip is 64 MB in memory at once. Decoded here, 64 KiB at a
    time, the answer is refused at the limit with little memory used."""
    import tracemalloc

    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_BYTES", 256 * 1024)
    bomb = _gzip_zeros(64 << 20)
    assert len(bomb) < 100_000
    srv = scripted(_streamed("catalog", bomb, {"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        r = _basic_sync(conn, srv.url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status == "Failed" and "262144-byte limit" in r.message, r.message
    assert peak < 16 << 20, peak  # 64 MB with httpx's own decoding


@pytest.mark.parametrize("coding", ["gzip, gzip", "br", "zstd"])
def test_an_encoding_we_do_not_read_is_refused_not_decoded(conn, scripted, coding):
    """``Content-Encoding: gzip, gzip``: httpx applied both layers, 3.5 KB became 4 GB."""
    body = _gzip_zeros(1 << 20, layers=2) if coding == "gzip, gzip" else b"\x00" * 64
    srv = scripted(_streamed("catalog", body, {"Content-Encoding": coding}))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Failed" and "which reconcile does not read" in r.message, r.message


def test_a_gzip_answer_is_read(conn, scripted):
    import gzip

    srv = scripted(_streamed("catalog", gzip.compress(json.dumps({"repositories": ["t/a"]}).encode()),
                             {"Content-Encoding": "gzip"}))
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed" and r.counts == {"repositories": 1, "tags": 1}, r.message


def test_redirects_are_followed_on_the_same_origin_only_and_their_bodies_never_read(conn, scripted):
    """Adversarial pass 5, item 1: httpx reads each redirect's body whole before following it
    (300 MiB bodies used 6.6 GiB), and followed redirects to any origin."""
    other = scripted(lambda path, headers: (200, {}, {"repositories": ["x/leak"]}))

    def flood(wfile):
        for _ in range(2000):  # bounded; the client hangs up without reading it
            wfile.write(b"x" * 65536)

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 302, {"Location": "/v2/moved/_catalog"}, flood
        if path.startswith("/v2/moved/_catalog"):
            return 200, {}, {"repositories": ["t/a"]}
        return 200, {}, {"tags": ["1"]}

    srv = scripted(route)
    r = _basic_sync(conn, srv.url)
    assert r.status == "Completed" and r.counts == {"repositories": 1, "tags": 1}, r.message

    away = scripted(lambda path, headers: (200, {}, {}) if path == "/v2/" else
                    (302, {"Location": f"{other.url}/v2/_catalog"}, b"") if "_catalog" in path else (200, {}, {}))
    r = _basic_sync(conn, away.url, uid="h2")
    assert r.status == "Failed" and "redirects to another origin" in r.message, r.message
    assert other.requests == []  # nothing, credentials least of all, went there

    loop = scripted(lambda path, headers: (200, {}, {}) if path == "/v2/" else
                    (302, {"Location": path + "x"}, b""))
    r = _basic_sync(conn, loop.url, uid="h3")
    assert r.status == "Failed" and "redirected more than 5 times" in r.message, r.message


# --------------------------------------------------------------------------- the token dance, bounded
# Adversarial pass: the Bearer challenge's body (a 638 MiB one was read whole) and the token
# service's answer (a chunked 300 MiB one: 695 MiB resident; a byte a second ran 40 s past an
# 8 s deadline) were read by httpx's auth flow, unbounded. The realm is the registry's word.

def _token_registry(scripted, token_body, challenge_body=b"{}"):
    """A registry whose catalog asks for a token from its own /token."""

    def route(path, headers):
        if path.startswith("/token"):
            return 200, {}, token_body
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            if headers.get("Authorization") == "Bearer tok":
                return 200, {}, {"repositories": ["t/a"]}
            realm = f'Bearer realm="{srv.url}/token",service="reg",scope="registry:catalog:*"'
            return 401, {"WWW-Authenticate": realm}, challenge_body
        return 200, {}, {"tags": ["1"]}

    srv = scripted(route)
    return srv


def _peak(run):
    import tracemalloc

    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _trickle(wfile):
    wfile.write(b'{"token": "')
    wfile.flush()
    for _ in range(60):  # 6 s at most: the test ends even when the bound is broken
        time.sleep(0.1)
        wfile.write(b"x")
        wfile.flush()
    wfile.write(b'"}')


def test_a_token_answer_over_its_limit_fails_that_registry_in_bounded_memory(conn, scripted):
    srv = _token_registry(scripted, _flood(48 << 20))
    r, peak = _peak(lambda: _basic_sync(conn, srv.url))
    assert r.status == "Failed", r.message
    assert f"{oci.MAX_TOKEN_BYTES}-byte limit" in r.message and "/token" in r.message, r.message
    assert PLANTED not in r.message
    assert peak < 16 << 20, peak  # the whole answer (48 MiB and more) when httpx read it


def test_a_trickling_token_answer_is_cut_at_its_time_limit(conn, scripted, monkeypatch):
    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_SECONDS", 1.0)
    srv = _token_registry(scripted, _trickle)
    t0 = time.monotonic()
    r = _basic_sync(conn, srv.url)
    took = time.monotonic() - t0
    assert r.status == "Failed", r.message
    assert "still answering when its time ran out" in r.message and "/token" in r.message, r.message
    assert took < 3.5, took


def test_the_body_of_a_bearer_challenge_is_never_read(conn, scripted):
    """Nothing in a 401's body is needed: the challenge is its header. A huge body costs no
    memory, a trickling one no time; the token dance goes on and the registry is listed."""
    srv = _token_registry(scripted, {"token": "tok"}, challenge_body=_flood(48 << 20))
    r, peak = _peak(lambda: _basic_sync(conn, srv.url))
    assert r.status == "Completed" and r.counts == {"repositories": 1, "tags": 1}, r.message
    assert peak < 16 << 20, peak

    def slow(wfile):
        for _ in range(60):  # 6 s at most
            time.sleep(0.1)
            wfile.write(b"x")
            wfile.flush()

    srv = _token_registry(scripted, {"token": "tok"}, challenge_body=slow)
    t0 = time.monotonic()
    r = _basic_sync(conn, srv.url, uid="h2")
    assert r.status == "Completed", r.message
    assert time.monotonic() - t0 < 3.5


# --------------------------------------------------------------------------- manifests through oras-py
# requests (under oras-py) read a manifest's body whole, gzip decoded whole, each redirect's
# body too, and no bound held a whole answer's time: bounded now as every other answer is.

PACK_MANIFEST = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "config": {"mediaType": "application/vnd.spectrocloud.pack.config.v1+json",
                            "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}


def _pack_registry(scripted, manifest):
    """One pack repository, spectro-packs/p:1, whose manifest is ``manifest(path)``."""
    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            return 200, {}, {"repositories": ["spectro-packs/p"]}
        if "/manifests/" in path:
            return manifest(path)
        return 200, {}, {"tags": ["1"]}

    return scripted(route)


def _layout(conn, uid: str = "h1"):
    return conn.execute("SELECT layout FROM content_oci_repositories WHERE uid = ?", (uid,)).fetchone()[0]


def test_a_manifest_over_the_size_limit_is_unreadable_in_bounded_memory(conn, scripted, monkeypatch):
    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_BYTES", 256 * 1024)
    srv = _pack_registry(scripted, lambda path: (200, {"Content-Type": PACK_MANIFEST["mediaType"]},
                                                 _flood(48 << 20)))
    r, peak = _peak(lambda: _basic_sync(conn, srv.url, provider="pack"))
    assert r.status == "Completed" and r.counts["packs"] == 0, r.message
    assert _layout(conn) == "unreadable"
    assert peak < 16 << 20, peak  # the whole answer (48 MiB and more) when requests read it


def test_a_trickling_manifest_is_cut_at_its_time_limit(conn, scripted, monkeypatch):
    from reconciler.content import http as content_http

    monkeypatch.setattr(content_http, "MAX_ANSWER_SECONDS", 1.0)
    srv = _pack_registry(scripted, lambda path: (200, {}, _trickle))
    t0 = time.monotonic()
    r = _basic_sync(conn, srv.url, provider="pack")
    assert r.status == "Completed" and _layout(conn) == "unreadable", r.message
    assert time.monotonic() - t0 < 3.5


def test_manifest_redirects_stay_on_the_registry_and_their_bodies_are_never_read(conn, scripted):
    other = scripted(lambda path, headers: (200, {}, PACK_MANIFEST))

    def manifest(path):
        if path.startswith("/v2/spectro-packs/p/manifests/1"):
            return 302, {"Location": "/moved" + path}, _flood(48 << 20)
        return 200, {"Content-Type": PACK_MANIFEST["mediaType"]}, PACK_MANIFEST

    srv = _pack_registry(scripted, manifest)
    r, peak = _peak(lambda: _basic_sync(conn, srv.url, provider="pack"))
    assert r.status == "Completed" and _layout(conn) == "pack:mediaType", r.message
    assert peak < 16 << 20, peak  # the 302's body (48 MiB and more) when requests read it

    away = _pack_registry(scripted, lambda path: (302, {"Location": f"{other.url}{path}"}, b""))
    r = _basic_sync(conn, away.url, uid="h2", provider="pack")
    assert r.status == "Completed" and _layout(conn, "h2") == "unreadable", r.message
    assert other.requests == []


def test_a_catalog_that_never_answered_is_not_followed_by_a_ping(conn, scripted):
    # a transport failure (here a body cut short) is the catalog's own error: a ping after it
    # would only wait a second time on a registry that hangs
    def route(path, headers):
        if path.startswith("/v2/_catalog"):
            return 200, {"Content-Length": "100"}, lambda w: w.write(b'{"repositories"')
        return 200, {}, {}

    srv = scripted(route)
    r = sync_registry(conn, "p1", "OciRegistry", spec(srv.url), {}, base_dir=Path("."))
    assert r.status == "Failed", r.message
    assert "/v2/" not in [p for p, _ in srv.requests], srv.requests


# --------------------------------------------------------------------------- names and the environment
# Review (this round): the manifest read through oras-py trusted what the registry names and what
# the environment holds.

PLANTED = "S3cr3t-REVIEW-5c2"
ROBOT = {"type": "basic", "username": "robot", "password": {"fromEnv": "P"}}


@pytest.mark.parametrize("steered_by", ["repository", "tag"])
def test_a_catalog_repository_name_does_not_steer_the_manifest_read_to_another_host(conn, scripted, steered_by):
    """oras-py parses "host/repo:tag" with an unanchored pattern: a repository
    "spectro-packs/evil.example:8443/x" (or a tag "a/evil.example:8443/x:1") from the
    registry's own catalog named another host, which was asked for the manifest and, on its
    401, sent the registry's basic credentials."""
    other = scripted(lambda path, headers: (401, {"WWW-Authenticate": 'Basic realm="x"'}, {}))
    evil = f"127.0.0.1:{other.server.server_address[1]}"

    def route(path, headers):
        if path == "/v2/":
            return 200, {}, {}
        if path.startswith("/v2/_catalog"):
            repo = f"spectro-packs/{evil}/x" if steered_by == "repository" else "spectro-packs/p"
            return 200, {}, {"repositories": [repo]}
        return 200, {}, {"tags": ["1" if steered_by == "repository" else f"a/{evil}/x:1"]}

    srv = scripted(route)
    s = {"endpoint": srv.url, "provider": "pack", "baseContentPath": "", "sync": True, "auth": ROBOT,
         "tls": {"insecureSkipVerify": False}, "fips": False}
    r = sync_registry(conn, "p1", "OciRegistry", s, {"auth.password": PLANTED}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    assert other.requests == [], other.requests  # nothing, least of all the credentials, goes there
    assert PLANTED not in r.message


@pytest.mark.parametrize("source", ["ORAS_USER/ORAS_PASS", "~/.netrc"])
def test_a_no_auth_registry_is_sent_no_credentials_from_the_environment(conn, scripted, monkeypatch, tmp_path,
                                                                        source):
    """oras-py's basic backend reads ORAS_USER/ORAS_PASS, and its requests session ~/.netrc: a
    noAuth registry answering 401 was sent credentials the user never declared for it."""
    if source == "~/.netrc":
        (tmp_path / ".netrc").write_text(f"machine 127.0.0.1 login ci-robot password {PLANTED}\n")
        (tmp_path / ".netrc").chmod(0o600)
        monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    else:
        monkeypatch.setenv("ORAS_USER", "ci-robot")
        monkeypatch.setenv("ORAS_PASS", PLANTED)

    srv = _pack_registry(scripted, lambda path: (401, {"WWW-Authenticate": 'Basic realm="x"'}, {}))
    s = {"endpoint": srv.url, "provider": "pack", "baseContentPath": "", "sync": True,
         "auth": {"type": "noAuth"}, "tls": {"insecureSkipVerify": False}, "fips": False}
    r = sync_registry(conn, "p1", "OciRegistry", s, {}, base_dir=Path("."))
    assert r.status == "Completed", r.message
    assert [a for _, a in srv.requests if a] == []  # noAuth: no Authorization header, ever


def test_each_guard_alone_keeps_the_manifest_read_on_the_registry(scripted):
    """The two guards of the test above, one at a time: a name oras-py would read as another
    host is refused before any request, and any URL oras-py builds off the registry's origin
    is refused before it is sent."""
    other = scripted(lambda path, headers: (200, {}, {}))
    srv = scripted(lambda path, headers: (200, {}, {}))
    evil = f"127.0.0.1:{other.server.server_address[1]}"
    with _dist(srv.url) as dist:
        for repo, tag in ((f"spectro-packs/{evil}/x", "1"), ("spectro-packs/p", f"a/{evil}/x:1"),
                          ("spectro-packs/p", "1@sha256:00")):
            with pytest.raises(oci.ProbeError, match="not an OCI repository and tag name"):
                dist.manifest(repo, tag)
        with pytest.raises(oci.ProbeError, match="not on the registry's origin"):
            dist._oras_request(lambda *a, **k: pytest.fail("sent"), "GET", f"http://{evil}/v2/x/manifests/1")
    assert other.requests == [] and srv.requests == []


@pytest.mark.parametrize(("host", "repo", "ref", "url"), [
    ("127.0.0.1:5000", "spectro-packs/p", "1.0.0", "127.0.0.1:5000/v2/spectro-packs/p/manifests/1.0.0"),
    ("registry", "spectro-packs/p", "1", "registry/v2/spectro-packs/p/manifests/1"),  # was /v2/registry/spectro-packs/…
    ("reg.example.com", "a.b/c", "v1", "reg.example.com/v2/a.b/c/manifests/v1"),
    ("reg.example.com", "spectro-packs/evil.example:8443/x", "1", None),
    ("reg.example.com", "spectro-packs/p", "a/evil.example:8443/x:1", None),
    ("reg.example.com", "spectro-packs/p", "1@sha256:00", None),
    ("registry", "a.b/c", "1", None),  # oras-py would take a.b for the registry: refused, not sent there
])
def test_the_manifest_is_read_on_the_registry_or_not_at_all(host, repo, ref, url):
    target = oci.manifest_target(host, repo, ref)
    assert (target.manifest_url() if target is not None else None) == url
