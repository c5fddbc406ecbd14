"""``model.fingerprint``: its digest input is frozen (recorded fingerprints in users' states
must keep matching), whatever shortcut computes it; ``Registry.fingerprint`` is the same value."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from typing import Any

import pytest

from reconciler.model import Registry, fingerprint, target_spec


def reference(spec: Any) -> str:
    """The digest as every state so far recorded it."""
    data = json.dumps(target_spec(spec), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


SPECS: list[dict[str, Any]] = [
    {},
    {"endpoint": "https://charts.example.com", "sync": True, "auth": {"type": "noAuth"},
     "tls": {"insecureSkipVerify": False}, "fips": False},
    {"z": 1, "a": {"y": [3, 2, {"b": None, "a": 1.5}], "x": "é ü \u2028 \x00 \"q\" \\"}, "m": -0.0},
    {"auth": {"type": "basic", "password": {"fromEnv": "PW"}}, "requiredCharts": ["a", "b"]},
    {"requiredCharts": []},
    {"when": datetime.date(2024, 1, 2), "big": 10**30, "f": 1e-7, "inf": float("inf"), "t": (1, 2)},
    {"nested": {"deep": {"deeper": {"deepest": [[], {}, [{}]]}}}},
]


@pytest.mark.parametrize("spec", SPECS)
def test_fingerprint_is_the_recorded_digest(spec: dict[str, Any]) -> None:
    assert fingerprint(spec) == reference(spec)


def test_fingerprint_of_a_known_spec_never_changes() -> None:
    spec = {"endpoint": "https://charts.example.com", "sync": True, "auth": {"type": "noAuth"}}
    assert fingerprint(spec) == "sha256:" + hashlib.sha256(
        b'{"auth":{"type":"noAuth"},"endpoint":"https://charts.example.com","sync":true}').hexdigest()


def test_fingerprint_errors_are_those_of_json_dumps() -> None:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular reference"):
        fingerprint(loop)
    with pytest.raises(TypeError):
        fingerprint({1: "a", "b": 2})  # keys that cannot be sorted
    # a failed call leaves nothing behind for the next one
    assert fingerprint({"a": {"b": 1}}) == reference({"a": {"b": 1}})


def test_non_dict_mapping_is_encoded_as_json_dumps_does() -> None:
    from types import MappingProxyType

    spec = MappingProxyType({"b": 1, "a": {"c": 2}})
    assert fingerprint(spec) == reference(spec)


def test_registry_fingerprint_is_cached_and_not_a_field() -> None:
    spec = SPECS[1]
    a = Registry(kind="HelmRegistry", name="a", scope="tenant", spec=dict(spec))
    b = Registry(kind="HelmRegistry", name="a", scope="tenant", spec=dict(spec))
    assert a.fingerprint == fingerprint(spec) == a.fingerprint
    assert a == b and repr(a) == repr(b)  # computed on a, not on b: equality and repr ignore it
    assert "fingerprint" not in {f.name for f in dataclasses.fields(Registry)}
    other = dataclasses.replace(a, spec={**spec, "endpoint": "https://other.example.com"})
    assert other.fingerprint == fingerprint(other.spec) != a.fingerprint


def test_registry_key_is_cached_and_follows_replace() -> None:
    a = Registry(kind="HelmRegistry", name="a", scope="tenant", spec={})
    assert a.key == ("tenant", "HelmRegistry", "a") and a.key is a.key
    assert dataclasses.replace(a, name="b").key == ("tenant", "HelmRegistry", "b")
    assert dataclasses.replace(a, scope="system", kind="OciRegistry").key == ("system", "OciRegistry", "a")
    assert a == Registry(kind="HelmRegistry", name="a", scope="tenant", spec={})  # cached or not
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "c"  # type: ignore[misc]


def test_fingerprint_from_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    specs = [{"n": i, "when": datetime.date(2024, 1, 1 + i % 28), "nested": {"a": [i, {"b": str(i)}]}}
             for i in range(400)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(fingerprint, specs * 3))
    assert got == [reference(s) for s in specs * 3]


def test_deep_specs_and_their_errors_are_those_of_json_dumps() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["d"] = {}
        node = node["d"]
    assert fingerprint(deep) == reference(deep)
    for _ in range(5000):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(RecursionError):
        reference(deep)
    with pytest.raises(RecursionError):
        fingerprint(deep)


def test_the_fast_constructors_build_what_the_dataclasses_build() -> None:
    """Validation builds a Registry and a Span per definition without the frozen dataclass's
    per-field ``object.__setattr__``: the same objects, fields in order, still frozen."""
    from reconciler.model import Span, declared_registry, span

    where = span("registries.d/a.yaml", 3, 7)
    assert where == Span("registries.d/a.yaml", 3, 7) and dataclasses.astuple(where) == ("registries.d/a.yaml", 3, 7)
    assert Span.__slots__ == tuple(f.name for f in dataclasses.fields(Span))  # type: ignore[attr-defined]
    assert str(where) == "registries.d/a.yaml:3:7" and hash(where) == hash(Span("registries.d/a.yaml", 3, 7))
    for protect, source in ((False, None), (True, where)):
        fast = declared_registry("HelmRegistry", "a", "tenant", dict(SPECS[1]), protect, source)
        plain = Registry(kind="HelmRegistry", name="a", scope="tenant", spec=dict(SPECS[1]), protect=protect,
                         source=source)
        assert fast == plain and repr(fast) == repr(plain) and vars(fast) == vars(plain)
        assert list(vars(fast)) == [f.name for f in dataclasses.fields(Registry)]  # a new field: add it there
        assert fast.fingerprint == plain.fingerprint and fast.key == plain.key
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.name = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        where.line = 1  # type: ignore[misc]
