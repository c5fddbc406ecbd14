"""One contract for every ``Target``: the local SQLite target and the Palette API target
(against the emulator of the official spec, every evidenced behaviour switched on:
``PaletteEmulator(realistic=True)``). Specs round-trip with no spurious diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ClientError, Conflict, NotFound
from reconciler.model import Registry, Settings, target_spec
from reconciler.plan import _observable_view
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

TLS = {"insecureSkipVerify": False}
SPECS = {
    "oci-basic": ("OciRegistry", {"endpoint": "registry.example.com", "provider": "pack", "baseContentPath": "prod",
                                  "sync": True, "auth": {"type": "basic", "username": "bot",
                                                         "password": {"fromEnv": "OCI_PW"}},
                                  "tls": TLS, "fips": False}, {"auth.password": "oci-pw-value"}),
    "oci-ecr-secret": ("OciRegistry", {"endpoint": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "provider": "helm",
                                       "baseContentPath": "charts", "sync": True,
                                       "auth": {"type": "ecr", "credentials": {"credentialType": "secret",
                                                                               "accessKey": "AKIAEXAMPLE",
                                                                               "secretKey": {"fromEnv": "AWS_SK"}}},
                                       "tls": TLS, "fips": False}, {"auth.credentials.secretKey": "aws-sk-value"}),
    "oci-ecr-sts": ("OciRegistry", {"endpoint": "123456789012.dkr.ecr.us-west-2.amazonaws.com", "provider": "helm",
                                    "baseContentPath": "", "sync": False,
                                    "auth": {"type": "ecr", "credentials": {"credentialType": "sts",
                                                                            "arn": "arn:aws:iam::123456789012:role/p",
                                                                            "externalId": "ext-1"}},
                                    "tls": TLS, "fips": False}, {}),
    "helm-token": ("HelmRegistry", {"endpoint": "https://charts.example.com", "sync": False,
                                    "auth": {"type": "token", "token": {"fromEnv": "HELM_TOKEN"}}, "tls": TLS,
                                    "fips": False}, {"auth.token": "helm-token-value"}),
    "helm-noauth": ("HelmRegistry", {"endpoint": "https://open.example.com/charts", "sync": True,
                                     "auth": {"type": "noAuth"}, "tls": TLS, "fips": False}, {}),
    "pack-basic": ("PackRegistry", {"endpoint": "https://packs.example.com", "auth": {"type": "basic",
                                    "username": "ops", "password": {"fromEnv": "PACK_PW"}}, "tls": TLS,
                                    "fips": False}, {"auth.password": "pack-pw-value"}),
}


@pytest.fixture(params=["local", "palette"])
def target(request, tmp_path: Path):
    if request.param == "local":
        from reconciler.targets.local import LocalTarget

        t = LocalTarget(tmp_path / "local.db", profile="saas", base_dir=tmp_path)
    else:
        from reconciler.targets.palette import PaletteTarget  # a missing client is a failure, not a skip

        # the emulator in its most realistic configuration (every evidenced behaviour on)
        emu = request.getfixturevalue("palette_emulator_factory")(seed_defaults=True, realistic=True)
        t = PaletteTarget.from_options(endpoint=emu.url, api_key=API_KEY, base_dir=tmp_path)
    yield t
    t.close()


def make(name: str, case: str, scope: str = "tenant") -> tuple[Registry, dict[str, str]]:
    kind, spec, secrets = SPECS[case]
    return Registry(kind=kind, name=name, scope=scope, spec=spec), secrets


def same(observed_spec, desired_spec) -> bool:
    return dict(observed_spec) == _observable_view(target_spec(desired_spec), observed_spec)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_create_list_update_delete_round_trip(target, case):
    reg, secrets = make(f"c-{case}", case)
    uid = target.create(reg, secrets)
    listed = {o.key: o for o in target.list()}
    obs = listed[reg.key]
    assert obs.uid == uid and not obs.builtin
    assert same(obs.spec, reg.spec), (obs.spec, reg.spec)
    assert target.find(*reg.key).uid == uid
    assert target.get(reg.kind, uid).uid == uid

    spec2 = dict(reg.spec)
    spec2["endpoint"] = spec2["endpoint"].replace("example.com", "example.org").replace("us-", "eu-")
    reg2 = Registry(kind=reg.kind, name=reg.name, scope=reg.scope, spec=spec2)
    target.update(uid, reg2, secrets)
    obs2 = target.get(reg.kind, uid)
    assert same(obs2.spec, spec2) and obs2.spec["endpoint"] == spec2["endpoint"] != reg.spec["endpoint"]

    target.delete(reg.kind, uid)
    assert reg.key not in {o.key for o in target.list()}
    with pytest.raises(NotFound):
        target.get(reg.kind, uid)
    with pytest.raises(NotFound):
        target.delete(reg.kind, uid)


def test_duplicate_name_is_refused(target):
    reg, secrets = make("dup", "helm-noauth")
    target.create(reg, secrets)
    with pytest.raises(Conflict):
        target.create(reg, secrets)
    assert [o.name for o in target.list()].count("dup") == 1


def test_builtin_defaults_are_read_only(target):
    builtins = [o for o in target.list() if o.builtin]
    assert builtins, "the saas profile brings built-in default registries"
    b = builtins[0]
    with pytest.raises(ClientError):
        target.delete(b.kind, b.uid)
    reg = Registry(kind=b.kind, name=b.name, scope=b.scope, spec=dict(b.spec))
    with pytest.raises(ClientError):
        target.update(b.uid, reg, {})
    assert b.key in {o.key for o in target.list()}


def test_secret_values_never_come_back(target):
    reg, secrets = make("s", "oci-basic")
    uid = target.create(reg, secrets)
    text = repr(target.get(reg.kind, uid)) + repr(target.list())
    assert "oci-pw-value" not in text


def test_unknown_uid_is_not_found(target):
    with pytest.raises(NotFound):
        target.get("HelmRegistry", "0123456789abcdef01234567")


def test_references_answer_each_uid_asked_or_none(target):
    # None: the target cannot tell (local); otherwise every uid asked, unused ones with no profiles
    reg, secrets = make("r-unused", "helm-noauth")
    uid = target.create(reg, secrets)
    assert target.references([uid]) in (None, {uid: []})
    assert target.check_tenant_policy(Settings("saas"), [reg]) is None
