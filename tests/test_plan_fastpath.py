"""``make_plan``'s shortcut for the unchanged registry gives the plan the detailed path gives,
in every situation around it (drift, secrets, protect, renames, built-ins, stale uids)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from reconciler import plan as planmod
from reconciler.model import ObservedRegistry, Registry, fingerprint, secret_hash, target_spec
from reconciler.plan import Change, PlanOptions, SecretValues, make_plan
from reconciler.state.base import Record, State

HELM = {"endpoint": "https://charts.example.com", "sync": True, "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False}, "fips": False}
OCI = {"endpoint": "reg.example.com", "provider": "helm", "baseContentPath": "charts", "sync": True,
       "auth": {"type": "basic", "username": "bot", "password": {"fromEnv": "PW"}},
       "tls": {"insecureSkipVerify": False, "caFile": "ca.pem"}, "fips": False}
CHARTS = {**HELM, "requiredCharts": ["nginx"]}
KINDS = {"helm": ("HelmRegistry", HELM), "oci": ("OciRegistry", OCI), "charts": ("HelmRegistry", CHARTS)}

RECORDED = ["none", "same", "old-spec", "protect-differs", "stale-uid", "no-spec", "secret-hash", "old-fingerprint"]
OBSERVED = ["same", "drift", "unobservable", "extra-field", "renamed", "builtin", "absent", "other-uid",
            "secret-ref-shown", "equal-but-int"]
SECRETS = ["none", "unknown", "same", "rotated"]


def _observed(reg: Registry, how: str) -> list[ObservedRegistry]:
    spec = copy.deepcopy(target_spec(reg.spec))
    uid, name, builtin = "u1", reg.name, False
    if how == "absent":
        return []
    if how == "drift":
        spec["endpoint"] = "https://edited-in-the-ui.example.com"
    elif how == "unobservable":
        spec.get("tls", {}).pop("caFile", None)
        spec.get("auth", {}).pop("password", None)
        spec.pop("fips")
    elif how == "extra-field":
        spec["colour"] = "red"
    elif how == "renamed":
        name = reg.name + "-renamed"
    elif how == "builtin":
        builtin = True
    elif how == "other-uid":
        uid = "u2"
    elif how == "equal-but-int":
        spec["sync"] = 1  # == True, but not what the fingerprint says
    if how != "secret-ref-shown":
        spec.get("auth", {}).pop("password", None)
    return [ObservedRegistry(uid=uid, kind=reg.kind, name=name, scope=reg.scope, spec=spec, builtin=builtin)]


def _state(reg: Registry, how: str, salt: str = "salt") -> State:
    state = State(salt=salt)
    if how == "none":
        return state
    spec: dict[str, Any] | None = target_spec(reg.spec)
    fp = fingerprint(reg.spec)
    uid, protect, hashes = "u1", reg.protect, {}
    if how == "old-spec":
        spec = {**target_spec(reg.spec), "endpoint": "https://old.example.com"}
        fp = fingerprint(spec)
    elif how == "old-fingerprint":
        fp = "sha256:computed-by-an-older-canonical-form"
    elif how == "protect-differs":
        protect = not protect
    elif how == "stale-uid":
        uid = "gone"
    elif how == "no-spec":
        spec = None
    elif how == "secret-hash":
        hashes = {"auth.password": secret_hash(salt, "auth.password", "s3cret-value")}
    state.records[reg.key] = Record(uid=uid, kind=reg.kind, name=reg.name, scope=reg.scope, fingerprint=fp,
                                    secret_hashes=hashes, protect=protect, spec=spec)
    return state


def _secrets(reg: Registry, how: str) -> SecretValues:
    if how == "none":
        return SecretValues()
    value = {"unknown": None, "same": "s3cret-value", "rotated": "n3w-secret-value"}[how]
    return SecretValues({reg.key: {"auth.password": value}})


def _both(*args: Any, **kw: Any) -> tuple[Any, Any]:
    fast = make_plan(*args, **kw)
    try:
        planmod._FAST_NOOP = False
        detailed = make_plan(*args, **kw)
    finally:
        planmod._FAST_NOOP = True
    return fast, detailed


def _same(fast: Any, detailed: Any) -> None:
    assert fast == detailed
    assert [list(vars(c).items()) for c in fast.changes] == [list(vars(c).items()) for c in detailed.changes]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("protect", [False, True])
def test_fast_path_gives_the_detailed_plan(kind: str, protect: bool) -> None:
    k, spec = KINDS[kind]
    taken = 0
    for recorded, observed, secrets in itertools.product(RECORDED, OBSERVED, SECRETS):
        reg = Registry(kind=k, name="a", scope="tenant", spec=copy.deepcopy(spec), protect=protect)
        state = _state(reg, recorded)
        obs = _observed(reg, observed)
        other = Registry(kind=k, name="b", scope="tenant", spec=copy.deepcopy(spec))  # an unchanged neighbour
        state.records[other.key] = Record(uid="ub", kind=k, name="b", scope="tenant", fingerprint=fingerprint(other.spec),
                                          spec=target_spec(other.spec))
        obs.append(ObservedRegistry(uid="ub", kind=k, name="b", scope="tenant", spec=target_spec(other.spec)))
        for_sv = _secrets(reg, secrets)
        opts = PlanOptions(allow_empty=True)
        fast, detailed = _both([reg, other], state, obs, for_sv, opts)
        _same(fast, detailed)
        taken += fast.changes[0].action == "noop"
        # fresh objects (nothing cached on them yet), one registry alone
        reg2 = Registry(kind=k, name="a", scope="tenant", spec=copy.deepcopy(spec), protect=protect)
        _same(*_both([reg2], _state(reg2, recorded), _observed(reg2, observed), _secrets(reg2, secrets), opts))
    assert taken  # the shortcut's situation is among them


def test_ui_edit_of_an_unchanged_registry_still_shows_drift() -> None:
    reg = Registry(kind="HelmRegistry", name="a", scope="tenant", spec=dict(HELM))
    state = _state(reg, "same")
    fast, detailed = _both([reg], state, _observed(reg, "drift"))
    _same(fast, detailed)
    (c,) = fast.changes
    assert c.action == "update" and c.reason.startswith("drift")
    assert [(f.path, f.old, f.new) for f in c.fields] == [
        ("endpoint", "https://edited-in-the-ui.example.com", "https://charts.example.com")]


def test_rotated_secret_of_an_unchanged_registry_is_still_an_update() -> None:
    reg = Registry(kind="OciRegistry", name="a", scope="tenant", spec=copy.deepcopy(OCI))
    state = _state(reg, "secret-hash")
    fast, _ = _both([reg], state, _observed(reg, "same"), _secrets(reg, "rotated"))
    assert [(c.action, [f.path for f in c.fields]) for c in fast.changes] == [("update", ["auth.password"])]
    fast, _ = _both([reg], state, _observed(reg, "same"), _secrets(reg, "same"))
    assert [c.action for c in fast.changes] == ["noop"]


def test_noop_is_the_dataclass() -> None:
    reg = Registry(kind="HelmRegistry", name="a", scope="tenant", spec=dict(HELM))
    fast = planmod._noop(reg.key, "u1", reg)
    plain = Change("noop", reg.key, uid="u1", registry=reg)
    assert fast == plain and repr(fast) == repr(plain)
    assert list(vars(fast).items()) == list(vars(plain).items())
    import dataclasses

    assert [f.name for f in dataclasses.fields(Change)] == list(vars(fast))  # a new field: add it to _noop
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.uid = "u2"  # type: ignore[misc]
