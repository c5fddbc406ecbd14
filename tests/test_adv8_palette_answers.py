"""Adversarial pass 8, item 5: a Palette answer is bounded in size as every answer a registry
sends is (``content/http.py``): a hostile or broken server (or a proxy before it) must not
exhaust the runner's memory. A gzip answer of 400 KB became 4 GB resident in one
``PaletteTarget.list()`` (httpx decodes a whole body, every layer of it, before anyone counts)."""

from __future__ import annotations

import gzip

import pytest

from reconciler.errors import TargetError
from reconciler.targets import palette
from reconciler.targets.palette import PaletteTarget
from tests.support.scripted_server import ScriptedServer

KEY = "k-secret-key-0123456789"


def _page(pad: int) -> bytes:
    return b'{"items": [], "pad": "' + b" " * pad + b'"}'


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(palette, "MAX_ANSWER_BYTES", 1 << 20, raising=False)


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip", "identity"])
def test_an_answer_over_the_limit_is_refused_before_it_is_whole(small_limit, encoding):
    body = _page(8 << 20)
    if encoding.startswith("gzip"):
        for _ in encoding.split(","):
            body = gzip.compress(body)
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    srv = ScriptedServer(lambda path, h: (200, headers, body))
    try:
        target = PaletteTarget(srv.url, KEY, sleep=lambda s: None)
        with pytest.raises(TargetError) as err:
            target.list()
        assert "limit" in str(err.value) or "Content-Encoding" in str(err.value), str(err.value)
        assert KEY not in str(err.value)
    finally:
        srv.close()


def test_an_answer_within_the_limit_is_read_as_before(small_limit):
    body = gzip.compress(_page(900_000))
    srv = ScriptedServer(lambda path, h: (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, body))
    try:
        assert PaletteTarget(srv.url, KEY, sleep=lambda s: None).list() == []
    finally:
        srv.close()


def test_the_limit_leaves_room_for_real_answers():
    assert palette.MAX_ANSWER_BYTES >= 64 << 20
