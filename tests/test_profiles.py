from __future__ import annotations

import pytest

from reconciler.model import KINDS
from reconciler.profiles import PROFILES, default_keys, default_registries
from reconciler.validation import canonical_spec

SIX = {
    ("HelmRegistry", "Bitnami"),
    ("HelmRegistry", "Public Spectro Helm Repo"),
    ("PackRegistry", "Public Repo"),
    ("OciRegistry", "Palette Registry"),
    ("OciRegistry", "Palette Registry FIPS"),
    ("OciRegistry", "Palette Community Registry"),
}


def test_profiles() -> None:
    assert PROFILES == ("saas", "self-hosted", "airgap", "vertex")


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("saas", SIX),
        ("self-hosted", SIX),
        ("airgap", set()),
        ("vertex", {("OciRegistry", "Palette Registry FIPS")}),
    ],
)
def test_defaults_per_profile(profile: str, expected: set[tuple[str, str]]) -> None:
    regs = default_registries(profile)
    assert {(r.kind, r.name) for r in regs} == expected
    assert set(default_keys(profile)) == expected


@pytest.mark.parametrize("profile", PROFILES)
def test_defaults_are_canonical_system_and_protected(profile: str) -> None:
    for r in default_registries(profile):
        assert r.kind in KINDS
        assert r.scope == "system" and r.protect
        assert dict(r.spec) == canonical_spec(r.kind, r.spec)


def test_default_specs_follow_the_docs_table() -> None:
    regs = {r.name: r.spec for r in default_registries("saas")}
    assert regs["Bitnami"]["endpoint"] == "https://charts.bitnami.com/bitnami"
    assert (
        regs["Public Spectro Helm Repo"]["endpoint"] == "https://spectrocloud.github.io/helm-charts"
    )
    assert regs["Public Repo"]["endpoint"] == "https://registry.spectrocloud.com"
    fips = regs["Palette Registry FIPS"]
    assert (fips["endpoint"], fips["baseContentPath"], fips["fips"]) == (
        "415789037893.dkr.ecr.us-west-2.amazonaws.com",
        "production-fips",
        True,
    )
    assert (
        regs["Palette Registry"]["baseContentPath"],
        regs["Palette Community Registry"]["baseContentPath"],
    ) == ("production", "community")
    assert all(not regs[n]["fips"] for n in regs if n != "Palette Registry FIPS")


def test_defaults_are_fresh_objects() -> None:
    a = default_registries("saas")[0]
    a.spec["endpoint"] = "changed"  # type: ignore[index]
    assert default_registries("saas")[0].spec["endpoint"] != "changed"


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        default_registries("cloud")


@pytest.mark.parametrize(
    ("profile", "allowed"),
    [("saas", False), ("self-hosted", True), ("airgap", True), ("vertex", True)],
)
def test_system_scope_only_where_there_is_a_system_console(tmp_path, profile, allowed) -> None:
    from reconciler.profiles import SYSTEM_SCOPE_PROFILES
    from reconciler.validation import load_and_validate

    assert (profile in SYSTEM_SCOPE_PROFILES) is allowed
    d = tmp_path / "registries.d"
    d.mkdir()
    (d / "r.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: OciRegistry\nmetadata: {name: r, scope: system}\n"
        "spec: {endpoint: o.example.com, fips: true}\n"
    )
    r = load_and_validate(tmp_path, profile=profile)
    assert [p.rule for p in r.errors] == ([] if allowed else ["system-scope"])
    if not allowed:
        assert (r.errors[0].line, r.errors[0].col) == (3, 28)
