from __future__ import annotations

import gzip
import os
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from reconciler.content import catalog_summary, ensure_schema, helm, sync_registry
from tests.support.helm_repo import DATA, SHARED_HELM, HelmRepo, index_for, make_tls
from tests.support.scripted_server import scripted  # noqa: F401 - a fixture

UID = "helm-1"


@pytest.fixture(params=["autocommit", "default"])
def conn(tmp_path: Path, request):
    if request.param == "autocommit":  # as the local target opens it
        c = sqlite3.connect(tmp_path / "local.db", isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
    else:
        c = sqlite3.connect(tmp_path / "local.db")
    ensure_schema(c)
    yield c
    c.close()


@pytest.fixture
def repo(tmp_path: Path):
    with HelmRepo(tmp_path / "repo") as r:
        yield r


def spec(url: str, **extra):
    s = {
        "endpoint": url,
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False},
        "fips": False,
    }
    s.update(extra)
    return s


def sync(conn, url, secrets=None, base_dir=Path("."), **kw):
    return sync_registry(
        conn,
        UID,
        "HelmRegistry",
        kw.pop("spec", None) or spec(url),
        secrets or {},
        base_dir=base_dir,
        **kw,
    )


def test_cold_then_304_then_incremental(conn, repo):
    repo.write_index(
        index_for(
            repo.root,
            [("nginx", "1.2.3", "1.25"), ("nginx", "1.2.2", "1.24"), ("redis", "17.0.0", None)],
        )
    )
    seen: list[str] = []
    r1 = sync(conn, repo.url, progress=seen.append)
    assert r1.status == "Completed", r1.message
    assert sorted(r1.added) == ["nginx@1.2.2", "nginx@1.2.3", "redis@17.0.0"]
    assert r1.removed == [] and not r1.not_modified
    assert r1.counts == {"charts": 2, "versions": 3}
    assert seen, "progress was never called"
    rows = conn.execute(
        "SELECT chart, version, app_version, digest FROM content_helm_versions "
        "ORDER BY chart, version"
    ).fetchall()
    assert rows[2][:3] == ("redis", "17.0.0", None) and len(rows[2][3]) == 64

    r2 = sync(conn, repo.url)
    assert r2.status == "Completed" and r2.not_modified and r2.added == [] == r2.removed
    assert repo.statuses() == [200, 304]
    assert r2.counts == {"charts": 2, "versions": 3}

    repo.write_index(
        index_for(
            repo.root,
            [
                ("nginx", "1.2.4", "1.25"),
                ("nginx", "1.2.3", "1.25"),
                ("nginx", "1.2.2", "1.24"),
                ("postgresql", "12.0.0", "15"),
            ],
        )
    )
    r3 = sync(conn, repo.url)
    assert r3.status == "Completed", r3.message
    assert sorted(r3.added) == ["nginx@1.2.4", "postgresql@12.0.0"]
    assert r3.removed == ["redis@17.0.0"]
    assert conn.execute("SELECT COUNT(*) FROM content_helm_versions").fetchone()[0] == 4
    summary = catalog_summary(conn, UID)
    assert summary["charts"] == 2 and summary["versions"] == 4
    assert summary["status"] == "Completed" and summary["last_synced"]


def test_unchanged_charts_are_not_reparsed(conn, repo, monkeypatch):
    repo.write_index(index_for(repo.root, [("a", "1.0.0", "1"), ("b", "1.0.0", "1")]))
    assert sync(conn, repo.url).status == "Completed"
    repo.write_index(
        index_for(repo.root, [("a", "1.0.0", "1"), ("b", "1.1.0", "1"), ("b", "1.0.0", "1")])
    )
    parsed: list[str] = []
    real = helm.parse_block
    monkeypatch.setattr(
        helm, "parse_block", lambda d, s, e, n: parsed.append(n) or real(d, s, e, n)
    )
    r = sync(conn, repo.url)
    assert r.added == ["b@1.1.0"] and parsed == ["b"]


def test_force_skips_conditional_request(conn, repo):
    repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
    sync(conn, repo.url)
    r = sync(conn, repo.url, force=True)
    assert r.status == "Completed" and not r.not_modified and r.added == []
    assert repo.statuses() == [200, 200]


def test_basic_auth(conn, tmp_path):
    with HelmRepo(tmp_path / "r", basic=("alice", "s3cret-pw")) as repo:
        repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
        s = spec(
            repo.url,
            auth={"type": "basic", "username": "alice", "password": {"fromEnv": "HELM_PW"}},
        )
        ok = sync(conn, repo.url, {"auth.password": "s3cret-pw"}, spec=s)
        assert ok.status == "Completed", ok.message
        bad = sync(conn, repo.url, {"auth.password": "wrong-pw"}, spec=s, force=True)
        assert bad.status == "Failed"
        assert "401" in bad.message and "credentials" in bad.message
        assert "wrong-pw" not in bad.message
        assert catalog_summary(conn, UID)["status"] == "Failed"
        missing = sync(conn, repo.url, {}, spec=s)
        assert missing.status == "Failed" and "auth.password" in missing.message


def test_token_auth(conn, tmp_path):
    with HelmRepo(tmp_path / "r", token="tok-123") as repo:
        repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
        s = spec(repo.url, auth={"type": "token", "token": {"fromEnv": "T"}})
        assert sync(conn, repo.url, {"auth.token": "tok-123"}, spec=s).status == "Completed"
        bad = sync(conn, repo.url, {"auth.token": "nope-456"}, spec=s, force=True)
        assert bad.status == "Failed" and "nope-456" not in bad.message


def test_tls_with_custom_ca(conn, tmp_path):
    tls = make_tls(tmp_path / "pki")
    with HelmRepo(tmp_path / "r", tls=tls) as repo:
        repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
        no_ca = sync(conn, repo.url)
        assert no_ca.status == "Failed" and "TLS" in no_ca.message, no_ca.message
        s = spec(repo.url, tls={"insecureSkipVerify": False, "caFile": "pki/ca.crt"})
        ok = sync(conn, repo.url, spec=s, base_dir=tmp_path)
        assert ok.status == "Completed", ok.message
        insecure = spec(repo.url, tls={"insecureSkipVerify": True})
        assert sync(conn, repo.url, spec=insecure, force=True).status == "Completed"
        missing = spec(repo.url, tls={"caFile": "pki/nope.crt"})
        r = sync(conn, repo.url, spec=missing, base_dir=tmp_path)
        assert r.status == "Failed" and "caFile" in r.message


def test_unreachable_and_missing_index(conn, repo):
    port = repo.port
    r = sync(conn, repo.url)  # no index.yaml yet
    assert r.status == "Failed" and "404" in r.message
    repo.close()
    r = sync(conn, f"http://127.0.0.1:{port}")
    assert r.status == "Failed" and "cannot connect" in r.message


def test_invalid_yaml_fails_cleanly(conn, repo):
    repo.write_index(b"entries: [unclosed\n")
    r = sync(conn, repo.url)
    assert r.status == "Failed" and "not valid YAML" in r.message
    repo.write_index(b"- just\n- a list\n")
    r = sync(conn, repo.url, force=True)
    assert r.status == "Failed" and "not a Helm repository index" in r.message


def test_size_limit(repo):
    repo.write_index(b"apiVersion: v1\nentries: {}\n" + b"#" * 5000 + b"\n")
    import httpx

    with httpx.Client() as client, pytest.raises(helm.ProbeError, match="limit"):
        helm.fetch_index(client, repo.url + "/index.yaml", max_bytes=1000)


FLOW = b"""{apiVersion: v1, entries: {nginx: [{name: nginx, version: 1.2.3, appVersion: "1.25",
 digest: abc, created: "2024-01-01T00:00:00Z"}, {name: nginx, version: 1.2.2}],
 redis: [{name: redis, version: "17.0.0", deprecated: true}]}, generated: x}
"""

TRICKY = [
    # comments, blank lines, quoted values, trailing comment, appVersion null
    b"apiVersion: v1\n# top comment\nentries:\n\n  # chart comment\n  a:\n  - name: a\n"
    b"    version: '1.0.0'\n    appVersion: null\n    description: |-\n      line one\n\n"
    b'      # not a comment\n    digest: "d1" \n  - version: 0.9.0 # old\n    name: a\n'
    b'generated: "2024"\n',
    # multi-line plain version (continuation) and escaped quotes -> per-block libyaml
    b"apiVersion: v1\nentries:\n  a:\n  - name: a\n    version: 1.0.0\n      -beta\n"
    b'    appVersion: "x\\"y"\n',
    # chartmuseum-style indentation: entries at indent 4
    b"apiVersion: v1\nentries:\n  a:\n    - name: a\n      version: 2.0.0\n      appVersion: 2\n"
    b"    - name: a\n      version: 1.0.0\nserverInfo:\n  contextPath: /v3\n",
    # entries mapping indented by 4 (valid YAML, not our layout)
    b"apiVersion: v1\nentries:\n    a:\n    - name: a\n      version: 1.0.0\n",
    # document marker + an anchor no alias uses (an alias is refused: test_yaml_aliases_are_refused)
    b"---\napiVersion: v1\nentries:\n  a:\n  - &e\n    name: a\n    version: 1.0.0\n  b:\n  - name: b\n"
    b"    version: 2.0.0\n",
    # quoted chart name and flow entry
    b'apiVersion: v1\nentries:\n  "c":\n  - {name: c, version: 3.0.0}\n'
    b"  d:\n  - {name: d, version: 4.0.0}\n",
    # empty entries, and quoted key inside an entry
    b"apiVersion: v1\nentries:\n",
    b'apiVersion: v1\nentries:\n  a:\n  - name: a\n    "version": 5.0.0\n',
    # a multi-line quoted description whose continuation looks like a key
    b'apiVersion: v1\nentries:\n  a:\n  - description: "foo\n      version: 9.9.9"\n'
    b"    version: 1.0.0\n",
]


@pytest.mark.parametrize("doc", [FLOW, *TRICKY], ids=lambda d: str(hash(d) % 1000))
def test_irregular_layouts_match_libyaml(doc):
    assert helm.parse_index(doc) == helm.parse_full(doc)


def _alias_bomb(charts: int, aliases: int) -> bytes:
    """Adversarial pass 3, item 7: each chart aliases one list of ``aliases`` aliases of one
    entry (the reproduction's 20,000 x 2,000 was 257 KB, 62 s and 4 GB)."""
    head = [b"apiVersion: v1", b"x: &e {version: 1.0.0, name: c}",
            b"l: &L [" + b", ".join([b"*e"] * aliases) + b"]", b"entries:"]
    return b"\n".join(head + [b"  c%d: *L" % i for i in range(charts)]) + b"\n"


ALIASED = {
    "bomb": _alias_bomb(2000, 200),
    "across charts": b"---\napiVersion: v1\nentries:\n  a:\n  - &e\n    name: a\n    version: 1.0.0\n"
                     b"  b:\n  - *e\n",
    "merge key in a block": b"apiVersion: v1\nentries:\n  a:\n  - &e\n    name: a\n    version: 1.0.0\n"
                            b"  - <<: *e\n    version: 1.0.1\n",
}


@pytest.mark.parametrize("name", list(ALIASED))
def test_yaml_aliases_are_refused_and_the_catalog_kept(conn, repo, name):
    repo.write_index(index_for(repo.root, [("kept", "1.0.0", "1")]))
    assert sync(conn, repo.url).status == "Completed"
    repo.write_index(ALIASED[name])
    with pytest.raises(helm.ProbeError, match="uses YAML aliases"):
        helm.parse_index(ALIASED[name])
    r = sync(conn, repo.url)
    assert r.status == "Failed" and "index.yaml uses YAML aliases" in r.message, r.message
    assert conn.execute("SELECT chart, version FROM content_helm_versions").fetchall() == [("kept", "1.0.0")]
    assert catalog_summary(conn, UID)["status"] == "Failed"


@pytest.mark.parametrize("nest", [b"[" * 2000 + b"]" * 2000, b"{a: " * 2000 + b"}" * 2000, b"\n  - " + b"- " * 2000 + b"x"],
                         ids=["flow sequences", "flow mappings", "block sequences"])
def test_deep_nesting_is_refused_not_a_crash(conn, repo, nest):
    """2,000 levels raised RecursionError (exit 3); 100,000 crashed the process in libyaml's
    composer (test_sync_local runs that one in its own process)."""
    repo.write_index(b"apiVersion: v1\nentries:\n  c: " + nest + b"\n")
    r = sync(conn, repo.url)
    assert r.status == "Failed" and f"nests collections more than {helm.MAX_DEPTH} deep" in r.message, r.message
    # what Helm writes is far from the bound
    repo.write_index(b"apiVersion: v1\nentries:\n  c:\n  - name: c\n    version: 1.0.0\n"
                     b"    maintainers: [{name: a, email: [x, {y: [z]}]}]\n")
    assert sync(conn, repo.url).status == "Completed"


def test_flow_style_index_syncs_via_full_parse(conn, repo):
    repo.write_index(FLOW)
    r = sync(conn, repo.url)
    assert r.status == "Completed", r.message
    assert sorted(r.added) == ["nginx@1.2.2", "nginx@1.2.3", "redis@17.0.0"]
    assert conn.execute("SELECT layout FROM content_sync").fetchone()[0] == "full"
    assert (
        conn.execute("SELECT deprecated FROM content_helm_versions WHERE chart='redis'").fetchone()[
            0
        ]
        == 1
    )
    # the same content in Helm's layout: nothing added or removed
    repo.write_index(
        index_for(
            repo.root,
            [("nginx", "1.2.3", "1.25"), ("nginx", "1.2.2", None), ("redis", "17.0.0", None)],
        )
    )
    r2 = sync(conn, repo.url)
    assert r2.added == [] and r2.removed == [] and r2.counts["versions"] == 3


@pytest.mark.parametrize(
    "name",
    [
        "spectrocloud-helm-charts-index-2022-10-20.yaml.gz",
        "prometheus-community-index-2020-09-27.yaml.gz",
    ],
)
def test_vendored_real_indexes(name):
    data = gzip.open(DATA / name, "rb").read()
    assert helm.split_index(data) is not None
    fast = helm.parse_index(data)
    assert fast == helm.parse_full(data)
    ref = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert sum(map(len, fast.values())) == sum(map(len, ref["entries"].values()))
    if name.startswith("prometheus"):
        versions = {e.version for es in fast.values() for e in es}
        assert "v0.5.0" in versions or any(v.startswith("v") for v in versions)
        assert sum(e.app_version is None for es in fast.values() for e in es) == 61
        assert [e.version for e in fast["prometheus-operator"] if e.deprecated] == ["9.3.2"]
        assert len(fast["prometheus-operator"]) == 302


def test_real_bitnami_incremental(conn, repo):
    prev = SHARED_HELM / "bitnami-index-2023-03-01-prev.yaml.gz"
    cur = SHARED_HELM / "bitnami-index-2023-03-01.yaml.gz"
    if not (prev.exists() and cur.exists()):
        pytest.skip(f"real Helm indexes not found under {SHARED_HELM}")
    repo.write_index(gzip.open(prev, "rb").read())
    r1 = sync(conn, repo.url)
    assert r1.status == "Completed" and r1.counts == {"charts": 108, "versions": 3447}
    repo.write_index(gzip.open(cur, "rb").read())
    r2 = sync(conn, repo.url)
    assert r2.added == ["contour-operator@4.0.1"] and r2.removed == []
    assert r2.counts == {"charts": 108, "versions": 3448}


@pytest.mark.parametrize("etag,last_modified,second", [(True, False, 304), (False, True, 304), (False, False, 200)],
                         ids=["etag-only", "last-modified-only", "no-validators"])
def test_each_validator_alone_gives_a_304(conn, tmp_path, etag, last_modified, second):
    """A server that sends only an ETag (or only Last-Modified): the second sync must send
    that validator (If-None-Match, If-Modified-Since); no other one can answer for it. With
    neither, the same body (by its digest) is still "not modified"."""
    with HelmRepo(tmp_path / "r", etag=etag, last_modified=last_modified) as repo:
        repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
        assert not sync(conn, repo.url).not_modified
        r = sync(conn, repo.url)
        assert r.not_modified and r.status == "Completed" and repo.statuses() == [200, second]


def test_a_change_within_the_same_second_is_seen_through_the_etag(conn, repo):
    """Last-Modified has a resolution of one second; the ETag changes with the bytes."""
    repo.write_index(index_for(repo.root, [("a", "1.0.0", "1")]))
    assert sync(conn, repo.url).status == "Completed"
    index = repo.root / "index.yaml"
    before = index.stat().st_mtime
    repo.write_index(index_for(repo.root, [("a", "1.0.0", "1"), ("a", "1.1.0", "1")]))
    os.utime(index, (before, before))  # same Last-Modified as the first answer
    r = sync(conn, repo.url)
    assert r.added == ["a@1.1.0"] and repo.statuses() == [200, 200]


def test_a_gzip_bomb_of_an_index_is_decoded_in_bounded_pieces():
    """Adversarial pass 5, item 2: httpx decoded each whole chunk (and every layer of
    ``Content-Encoding: gzip, gzip``) before the size check; the index is now decoded here, 64
    KiB at a time, so the limit holds in memory too."""
    import tracemalloc
    import zlib

    import httpx

    from tests.support.scripted_server import ScriptedServer

    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(z.compress(b"#" * (1 << 20)) for _ in range(64)) + z.flush()
    double = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bombs = {"/one.yaml": ("gzip", bomb), "/two.yaml": ("gzip, gzip", double.compress(bomb) + double.flush())}
    srv = ScriptedServer(lambda path, headers: (200, {"Content-Encoding": bombs[path][0]}, bombs[path][1]))
    try:
        with httpx.Client() as client:
            tracemalloc.start()
            try:
                with pytest.raises(helm.ProbeError, match="1000000-byte limit"):
                    helm.fetch_index(client, srv.url + "/one.yaml", max_bytes=1_000_000)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 16 << 20, peak  # 64 MB with httpx's own decoding
            with pytest.raises(helm.ProbeError, match="which reconcile does not read"):
                helm.fetch_index(client, srv.url + "/two.yaml")
    finally:
        srv.close()


# --------------------------------------------------------------------------- redirects
# Adversarial pass: httpx followed the index's redirects itself and read each 3xx body whole
# (300 MiB 302 bodies: 6.6 GiB resident, 30 s past an 8 s deadline). An index may redirect to
# another origin (a CDN, GitHub releases, an object store): that keeps working, with httpx's
# rule for credentials (the Authorization header dropped once a redirect leaves the origin).

INDEX = b"apiVersion: v1\nentries:\n  a:\n  - name: a\n    version: 1.0.0\n"
BASIC_SPEC = {"type": "basic", "username": "alice", "password": {"fromEnv": "HELM_PW"}}
TOKEN_SPEC = {"type": "token", "token": {"fromEnv": "HELM_TOKEN"}}
AUTH_SECRETS = {"auth.password": "s3cret-pw", "auth.token": "tok-123"}


def _flood(total: int):
    def write(wfile):
        sent = 0
        while sent < total:  # bounded: the client hangs up, or this ends
            wfile.write(b"x" * 65536)
            sent += 65536

    return write


def _slow(wfile):
    for _ in range(60):  # 6 s at most: the test ends even when the bound is broken
        time.sleep(0.1)
        wfile.write(b"x")
        wfile.flush()


def _redirecting(body):
    """/index.yaml answers 302 to /moved/index.yaml with ``body``; that one is the index."""
    return lambda path, headers: ((200, {}, INDEX) if path == "/moved/index.yaml" else
                                  (302, {"Location": "/moved/index.yaml"}, body))


def test_the_body_of_a_redirect_is_never_read(conn, scripted):
    import tracemalloc

    srv = scripted(_redirecting(_flood(48 << 20)))
    tracemalloc.start()
    try:
        r = sync(conn, srv.url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status == "Completed" and r.counts == {"charts": 1, "versions": 1}, r.message
    assert peak < 16 << 20, peak  # the whole body (48 MiB and more) when httpx followed


def test_a_trickling_redirect_costs_no_time_and_its_hops_keep_the_deadline(conn, scripted):
    srv = scripted(_redirecting(_slow))
    t0 = time.monotonic()
    r = sync(conn, srv.url, deadline=time.monotonic() + 2.0)
    assert r.status == "Completed", r.message
    assert time.monotonic() - t0 < 1.5  # 6 s when httpx read the 302's body

    hang = scripted(lambda path, headers: (0, {}, b"") if path == "/moved/index.yaml" else
                    (302, {"Location": "/moved/index.yaml"}, b""))
    t0 = time.monotonic()
    r = sync(conn, hang.url, deadline=time.monotonic() + 1.0, force=True)
    assert r.status == "Failed" and ("timed out" in r.message or "deadline" in r.message), r.message
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("auth", [BASIC_SPEC, TOKEN_SPEC], ids=["basic", "token"])
def test_a_redirect_to_another_origin_is_followed_without_the_credentials(conn, scripted, auth):
    cdn = scripted(lambda path, headers: (200, {}, INDEX))
    srv = scripted(lambda path, headers: (302, {"Location": f"{cdn.url}/charts/index.yaml"}, b"moved")
                   if path == "/index.yaml" else
                   (302, {"Location": f"http://localhost:{srv.url.rsplit(':', 1)[1]}/moved/index.yaml"}, b"")
                   if path == "/by-name/index.yaml" else (200, {}, INDEX))
    r = sync(conn, srv.url, AUTH_SECRETS, spec=spec(srv.url, auth=auth))
    assert r.status == "Completed" and r.counts == {"charts": 1, "versions": 1}, r.message
    assert srv.requests[0][1] is not None  # the registry itself is sent its credentials
    assert cdn.requests == [("/charts/index.yaml", None)]  # another port: none
    # the same port under another host name is another origin too
    r = sync(conn, srv.url, AUTH_SECRETS, spec=spec(f"{srv.url}/by-name", auth=auth), force=True)
    assert r.status == "Completed", r.message
    assert srv.requests[-2][1] is not None and srv.requests[-1] == ("/moved/index.yaml", None)
    assert srv.hosts[-1].startswith("localhost:")


@pytest.mark.parametrize("auth", [BASIC_SPEC, TOKEN_SPEC], ids=["basic", "token"])
def test_a_redirect_on_the_same_origin_keeps_the_credentials(conn, scripted, auth):
    srv = scripted(_redirecting(b""))
    r = sync(conn, srv.url, AUTH_SECRETS, spec=spec(srv.url, auth=auth))
    assert r.status == "Completed", r.message
    sent = [a for _, a in srv.requests]
    assert [p for p, _ in srv.requests] == ["/index.yaml", "/moved/index.yaml"]
    assert sent[0] is not None and sent[1] == sent[0], sent


def test_redirects_are_followed_a_few_times_at_most(conn, scripted):
    loop = scripted(lambda path, headers: (302, {"Location": path.replace("index.yaml", "x/index.yaml")}, b""))
    r = sync(conn, loop.url)
    assert r.status == "Failed" and "redirected more than 5 times" in r.message, r.message
    assert len(loop.requests) == 6


def test_an_index_still_arriving_after_the_answer_limit_is_refused_without_a_sync_deadline(
        scripted, monkeypatch: pytest.MonkeyPatch):
    """Adversarial pass 7, item 3: a preflight (``helm.probe``, no deadline of its own) read an
    index trickling in a byte at a time to its end, bounded only by each socket wait: a byte
    every 29 s held it for ever. An index, like every answer, is complete within
    MAX_ANSWER_SECONDS (1 s here) or refused; and so are the redirects before it."""
    from reconciler.content import http

    monkeypatch.setattr(http, "MAX_ANSWER_SECONDS", 1.0)
    slow = scripted(lambda path, headers: (200, {}, _slow))
    t0 = time.monotonic()
    with pytest.raises(helm.ProbeError, match="still arriving"):
        helm.probe(spec(slow.url), {}, base_dir=Path("."))
    assert time.monotonic() - t0 < 2.5  # 6 s: read to its end


def test_an_https_hop_after_a_plain_http_endpoint_is_verified(conn, scripted, tmp_path):
    """A plain http:// endpoint whose index redirects to https (a CDN, an object store): the
    https hop is verified as any other (``insecureSkipVerify: false``), as Helm's own getter
    does. It was fetched with verification off (the http endpoint's client had no CA), so a
    certificate nobody trusts was accepted."""
    from reconciler.content import http

    http._verified_on_first_use.cache_clear()
    plain = scripted(lambda path, headers: (200, {}, INDEX))
    assert sync(conn, plain.url).status == "Completed"
    assert http._verified_on_first_use()._real is None  # no handshake: no CA bundle loaded
    tls = make_tls(tmp_path / "pki")
    with HelmRepo(tmp_path / "r", tls=tls) as cdn:
        cdn.write_index(index_for(cdn.root, [("a", "1.0.0", "1")]))
        srv = scripted(lambda path, headers: (302, {"Location": f"{cdn.url}/index.yaml"}, b""))
        r = sync(conn, srv.url, force=True)
        assert r.status == "Failed" and "TLS" in r.message, r.message
        assert cdn.count() == 0  # refused at the handshake: no request reached it
        insecure = spec(srv.url, tls={"insecureSkipVerify": True})  # said so: not verified
        ok = sync(conn, srv.url, spec=insecure, force=True)
        assert ok.status == "Completed" and ok.counts == {"charts": 1, "versions": 1}, ok.message
