from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from reconciler.content import catalog_summary, ensure_schema, sync_registry
from tests.support.helm_repo import HelmRepo


@pytest.fixture
def conn(tmp_path: Path):
    c = sqlite3.connect(tmp_path / "local.db", isolation_level=None)
    ensure_schema(c)
    yield c
    c.close()


def spec(url: str, **extra):
    s = {
        "endpoint": url,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False},
        "fips": False,
    }
    s.update(extra)
    return s


def test_lists_packs_from_v1_packs(conn, tmp_path):
    with HelmRepo(tmp_path / "r", basic=("u", "pw-123")) as srv:
        (srv.root / "v1").mkdir()
        (srv.root / "v1" / "packs").write_text(
            json.dumps(
                {
                    "items": [
                        {"name": "cni-calico", "versions": ["3.26.0", "3.27.0"]},
                        {"name": "csi-aws", "version": "1.20.0"},
                    ]
                }
            )
        )
        s = spec(srv.url, auth={"type": "basic", "username": "u", "password": {"fromEnv": "X"}})
        r = sync_registry(
            conn, "p1", "PackRegistry", s, {"auth.password": "pw-123"}, base_dir=tmp_path
        )
        assert r.status == "Completed", r.message
        assert r.counts == {"packs": 2, "versions": 3}
        assert "cni-calico@3.27.0" in r.added
        bad = sync_registry(
            conn, "p1", "PackRegistry", s, {"auth.password": "nope-999"}, base_dir=tmp_path
        )
        assert bad.status == "Failed" and "401" in bad.message and "nope-999" not in bad.message
        assert catalog_summary(conn, "p1")["status"] == "Failed"


def test_no_listing_is_not_a_failure(conn, tmp_path):
    with HelmRepo(tmp_path / "r") as srv:
        r = sync_registry(conn, "p2", "PackRegistry", spec(srv.url), {}, base_dir=tmp_path)
        assert r.status == "Completed" and r.counts == {"packs": None}
        assert "no pack listing" in r.message


def test_unreachable(conn, tmp_path):
    srv = HelmRepo(tmp_path / "r")
    url = srv.url
    srv.close()
    r = sync_registry(conn, "p3", "PackRegistry", spec(url), {}, base_dir=tmp_path)
    assert r.status == "Failed" and "cannot connect" in r.message


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError escaped list_packs' (HTTPError, OSError, ValueError)
    b'{"items": [{"name": "a", "version": ' + b"9" * 5000 + b"}]}",  # Python 3.11's int limit: ValueError
], ids=["deep", "long-integer"])
def test_a_hostile_pack_listing_is_no_listing_not_a_crash(conn, tmp_path, body):
    with HelmRepo(tmp_path / "r") as srv:
        (srv.root / "v1").mkdir()
        (srv.root / "v1" / "packs").write_bytes(body)
        r = sync_registry(conn, "p4", "PackRegistry", spec(srv.url), {}, base_dir=tmp_path)
    assert r.status == "Completed" and "no pack listing" in r.message, r.message


def test_pack_names_and_versions_that_are_no_text_are_skipped(conn, tmp_path):
    deep = [[[]]]
    for _ in range(900):  # str() of this raised RecursionError
        deep = [deep]
    with HelmRepo(tmp_path / "r") as srv:
        (srv.root / "v1").mkdir()
        (srv.root / "v1" / "packs").write_text(json.dumps({"items": [
            {"name": "ok", "versions": ["1.0", 2, deep, {"version": {"x": 1}}, None, True]},
            {"name": deep, "version": "1"}, {"name": ["a"]}, "stray",
        ]}))
        r = sync_registry(conn, "p5", "PackRegistry", spec(srv.url), {}, base_dir=tmp_path)
    assert r.status == "Completed", r.message
    assert sorted(r.added) == ["ok@1.0", "ok@2"]


def test_a_pack_listing_over_the_answer_limit_fails_and_keeps_the_catalog(conn, tmp_path, monkeypatch):
    """list_packs read a listing of any size into memory (``resp.content``)."""
    from reconciler.content import http as content_http

    with HelmRepo(tmp_path / "r") as srv:
        (srv.root / "v1").mkdir()
        (srv.root / "v1" / "packs").write_text(json.dumps({"items": [{"name": "a", "version": "1"}]}))
        first = sync_registry(conn, "p6", "PackRegistry", spec(srv.url), {}, base_dir=tmp_path)
        assert first.status == "Completed" and first.added == ["a@1"], first.message
        monkeypatch.setattr(content_http, "MAX_ANSWER_BYTES", 64 * 1024)
        (srv.root / "v1" / "packs").write_text(json.dumps({"items": [{"name": f"p{i}", "version": "1"}
                                                                     for i in range(10_000)]}))
        r = sync_registry(conn, "p6", "PackRegistry", spec(srv.url), {}, base_dir=tmp_path)
    assert r.status == "Failed" and "65536-byte limit" in r.message, r.message
    assert catalog_summary(conn, "p6")["packs"] == 1  # the last good listing is kept
