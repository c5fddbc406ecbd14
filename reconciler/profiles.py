"""Installation profiles and the default registries each one ships with.

The defaults come from the Palette docs' "Default Registries" table: all six on SaaS and
non-airgap self-hosted Palette, none in an airgap install, only the FIPS registry in VerteX.
They are read-only in Palette, so they are returned with ``scope="system"`` (Palette makes them
available to every tenant) and ``protect=True``; a definition that reuses one's kind and name
is an error. Their specs are canonical (see ``validation.canonical_spec``).
"""

from __future__ import annotations

from typing import Any

from .model import Registry, Span

PROFILES = ("saas", "self-hosted", "airgap", "vertex")
DEFAULT_PROFILE = "saas"
DEFAULT_SCOPE = "system"
# Profiles with a system console, where registries may be system scope (DOCS registries.md:
# "If you are using a self-hosted Palette instance, or Palette VerteX, you can add registries
# through the system console"). An airgap install is a self-hosted Palette or VerteX too.
SYSTEM_SCOPE_PROFILES = ("self-hosted", "airgap", "vertex")

_ECR_EAST = "415789037893.dkr.ecr.us-east-1.amazonaws.com"
_ECR_WEST = "415789037893.dkr.ecr.us-west-2.amazonaws.com"


def _tls() -> dict[str, Any]:
    return {"insecureSkipVerify": False}


def _helm(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": _tls(),
        "fips": False,
    }


def _oci(endpoint: str, base: str, *, fips: bool = False) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "provider": "pack",
        "baseContentPath": base,
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": _tls(),
        "fips": fips,
    }


# (kind, name, canonical spec builder)
_TABLE: tuple[tuple[str, str, Any], ...] = (
    ("HelmRegistry", "Bitnami", lambda: _helm("https://charts.bitnami.com/bitnami")),
    (
        "HelmRegistry",
        "Public Spectro Helm Repo",
        lambda: _helm("https://spectrocloud.github.io/helm-charts"),
    ),
    (
        "PackRegistry",
        "Public Repo",
        lambda: {
            "endpoint": "https://registry.spectrocloud.com",
            "auth": {"type": "noAuth"},
            "tls": _tls(),
            "fips": False,
        },
    ),
    ("OciRegistry", "Palette Registry", lambda: _oci(_ECR_EAST, "production")),
    ("OciRegistry", "Palette Registry FIPS", lambda: _oci(_ECR_WEST, "production-fips", fips=True)),
    ("OciRegistry", "Palette Community Registry", lambda: _oci(_ECR_EAST, "community")),
)

_NAMES_BY_PROFILE: dict[str, tuple[str, ...]] = {
    "saas": tuple(name for _, name, _ in _TABLE),
    "self-hosted": tuple(name for _, name, _ in _TABLE),
    "airgap": (),
    "vertex": ("Palette Registry FIPS",),
}


def default_registries(profile: str) -> list[Registry]:
    """The built-in registries of ``profile`` (fresh objects; callers may not share specs)."""
    if profile not in _NAMES_BY_PROFILE:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    wanted = set(_NAMES_BY_PROFILE[profile])
    return [
        Registry(
            kind=kind,
            name=name,
            scope=DEFAULT_SCOPE,
            spec=build(),
            protect=True,
            source=Span(f"(built-in {profile} default)"),
        )
        for kind, name, build in _TABLE
        if name in wanted
    ]


def default_keys(profile: str) -> dict[tuple[str, str], Registry]:
    """(kind, name) -> default registry, for collision checks."""
    return {(r.kind, r.name): r for r in default_registries(profile)}
