"""Adversarial pass 10: a review of pass 9's input checks. Valid input is never refused, and
bad input is a located error, never a crash."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from reconciler.targets.palette import PaletteTarget
from tests.support.gitops_repo import registry_doc, run
from tests.test_cli_errors import _repo  # one seeded repository for the input tests

# valid IDNA 2008 (RFC 5893's bidi rule lets a right-to-left label end in a digit) and taken by
# httpx, but refused by Python's "idna" codec, which is IDNA 2003
IDNA2008_ONLY = ["https://\u05d01.example/charts", "https://\u05e9\u05dc\u05d5\u05dd1.example/"]


@pytest.mark.parametrize("kind, endpoint", [("HelmRegistry", e) for e in IDNA2008_ONLY]
                         + [("OciRegistry", "\u05d01.example:5000"), ("PackRegistry", "https://\u05d01.example/")])
def test_a_host_valid_in_idna_2008_is_not_refused(tmp_path: Path, kind: str, endpoint: str):
    """Pass 9's host check ran Python's IDNA 2003 codec on every host before the IDNA 2008 check:
    a valid name httpx takes was refused as 'an empty label or one longer than 63 characters'."""
    root = _repo(tmp_path / "repo")
    spec = f"endpoint: '{endpoint}'\nsync: false" + ("\nprovider: helm" if kind == "OciRegistry" else "")
    if kind == "PackRegistry":
        spec = f"endpoint: '{endpoint}'"
    (root / "registries.d" / "ok.yaml").write_text(registry_doc(kind, "ok", spec), encoding="utf-8")
    res = run(root, "validate")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("endpoint", ["https://" + "\u00fc" * 60 + ".example/", "https://\u00fc..example/"])
def test_a_non_ascii_host_with_a_bad_label_is_still_refused(tmp_path: Path, endpoint: str):
    _refused_at_the_endpoint(tmp_path, endpoint)


@pytest.mark.parametrize("endpoint", [e.removesuffix("/charts").removesuffix("/") for e in IDNA2008_ONLY])
def test_a_palette_endpoint_valid_in_idna_2008_is_taken(endpoint: str):
    """Pass 9 encoded httpx's decoded host with Python's IDNA 2003 codec: a valid
    internationalised --endpoint was refused as 'not an http:// or https:// URL with a host'."""
    PaletteTarget(endpoint=endpoint, api_key="k" * 20).close()


@pytest.mark.parametrize("url, sent", [
    ("https://fu\u00dfball.example/index.yaml", "xn--fuball-cta.example"),
    ("https://\u05d01.example/x", "xn--1-zhc.example"),
    ("https://Charts.Example.com:8443/x", "charts.example.com"),
])
def test_preflight_resolves_the_host_httpx_connects_to(monkeypatch, url: str, sent: str):
    """The preflight resolved urlsplit's host, which socket.getaddrinfo encodes with IDNA 2003:
    'fußball.example' was looked up as 'fussball.example' (another domain than the one httpx
    connects to, xn--fuball-cta), and a name only IDNA 2008 takes was said not to resolve."""
    from reconciler.content import http

    seen: list[str] = []

    def fake(host, port, *a, **k):
        seen.append(host)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    http.check_resolves(url)
    assert seen == [sent]


@pytest.mark.parametrize("text", [
    "? " * 30_000 + "x\n",
    "? - " * 15_000 + "x\n",
], ids=["explicit-keys", "keys-and-sequences"])
def test_yaml_nested_by_explicit_keys_is_a_located_error_not_a_crash(tmp_path: Path, text: str):
    """Pass 9 read the nesting from libyaml's events only for a file with more than 1,000 '[',
    '{' or '-': a 60 KB file of '? ? ? ...' (explicit mapping keys, each a level) still
    crashed validate with a segmentation fault (exit -11/139, no message)."""
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "deep.yaml").write_text(text)
    res = run(root, "validate")
    assert res.returncode == 1, (res.returncode, res.stdout[-500:], res.stderr[-500:])
    assert "registries.d/deep.yaml:1:" in res.stdout and "nesting deeper than 64 levels" in res.stdout


IPV4_ENDPOINTS = [("OciRegistry", "10.0.0.5:5000"), ("OciRegistry", "192.168.255.250"),
                  ("OciRegistry", "http://172.16.0.1:65535/v2"), ("HelmRegistry", "http://10.0.0.5:8080/charts"),
                  ("HelmRegistry", "https://0.0.0.0/x?y#z"), ("PackRegistry", "https://198.51.100.7:8443/")]


def test_a_valid_ipv4_endpoint_is_taken_by_the_quick_pattern(tmp_path: Path, monkeypatch):
    """Pass 9's quick pattern sent every four-number host to the full check (urlsplit, uncached
    for distinct URLs, .port, .hostname, ipaddress): ~12 us an endpoint, and a cold validation
    of the benchmark corpus with its hosts made IP addresses took ~15% longer. A valid IPv4
    address with a port in range is now taken by the pattern, and no URL is parsed."""
    from reconciler import validation
    from reconciler.validation import load_and_validate

    docs = []
    for i, (kind, endpoint) in enumerate(IPV4_ENDPOINTS):
        spec = f"endpoint: '{endpoint}'" + ("" if kind == "PackRegistry" else "\nsync: false")
        docs.append(registry_doc(kind, f"r{i}", spec + ("\nprovider: helm" if kind == "OciRegistry" else "")))
    (tmp_path / "registries.d").mkdir()
    (tmp_path / "registries.d" / "ips.yaml").write_text("---\n".join(docs))
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []
    real = validation._host_problem
    monkeypatch.setattr(validation, "_host_problem", lambda url: calls.append(url) or real(url))
    result = load_and_validate(tmp_path)
    assert not result.errors and len(result.desired.registries) == len(IPV4_ENDPOINTS), result.problems
    assert calls == []


@pytest.mark.parametrize("endpoint", ["http://1.2.3.256/x", "http://01.2.3.4/x", "http://1.2.3.4:65536/x",
                                      "http://300.1.1.1:80/x", "http://1.2.3.04/x"])
def test_an_ipv4_address_out_of_range_is_still_refused(tmp_path: Path, endpoint: str):
    _refused_at_the_endpoint(tmp_path, endpoint)


def _refused_at_the_endpoint(tmp_path: Path, endpoint: str) -> None:
    """``reconcile validate`` of a Helm registry with ``endpoint``: exit 1, located at the endpoint."""
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "bad.yaml").write_text(
        registry_doc("HelmRegistry", "bad", f"endpoint: '{endpoint}'\nsync: false"), encoding="utf-8")
    res = run(root, "validate")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "registries.d/bad.yaml:6:13: spec.endpoint:" in res.stdout, res.stdout
