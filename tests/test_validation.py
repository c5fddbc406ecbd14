from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler.commands.validate import run_validate
from reconciler.errors import InputError
from reconciler.model import SECRET_FIELDS, Registry, Span
from reconciler.validation import (
    Problem,
    canonical_spec,
    load_and_validate,
    load_schema,
    parse_duration,
    schema_text,
)

REPO = Path(__file__).parent.parent
HDR = "apiVersion: reconciler/v1\n"


def repo_with(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        p = tmp_path / "registries.d" / name.replace("__", "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def check(tmp_path: Path, text: str, *, profile: str | None = None):
    return load_and_validate(repo_with(tmp_path, **{"r.yaml": text}), profile=profile)


def errors(result) -> list[tuple[int, int, str, str]]:
    return [(p.line, p.col, p.rule, p.message) for p in result.errors]


def oci(spec: str, meta: str = "{name: r}") -> str:
    return (
        HDR
        + f"kind: OciRegistry\nmetadata: {meta}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec), "  ")
    )


# ------------------------------------------------------------------ values


def test_problem_str() -> None:
    assert str(Problem("registries.d/x.yaml", 12, 5, "bad")) == "registries.d/x.yaml:12:5: bad"
    w = Problem("registries.d/x.yaml", 3, 1, "legacy", "warning", "legacy-pack")
    assert str(w) == "registries.d/x.yaml:3:1: warning: legacy"
    assert str(Problem("f.yaml", 0, 0, "gone")) == "f.yaml: gone"
    assert w.as_dict() == {
        "file": "registries.d/x.yaml",
        "line": 3,
        "col": 1,
        "severity": "warning",
        "rule": "legacy-pack",
        "message": "legacy",
    }


def test_canonical_spec_defaults() -> None:
    assert canonical_spec("OciRegistry", {"endpoint": "o.example.com"}) == {
        "endpoint": "o.example.com",
        "provider": "helm",
        "baseContentPath": "",
        "sync": False,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False},
        "fips": False,
    }
    assert canonical_spec(
        "HelmRegistry", {"endpoint": "https://h", "tls": {"caFile": "ca.pem"}}
    ) == {
        "endpoint": "https://h",
        "sync": True,
        "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False, "caFile": "ca.pem"},
        "fips": False,
    }
    charts = [{"name": "nginx"}]
    helm = canonical_spec("HelmRegistry", {"endpoint": "https://h", "requiredCharts": charts})
    assert helm["requiredCharts"] == charts and helm["requiredCharts"] is not charts
    secret = {"type": "basic", "username": "u", "password": {"fromEnv": "P"}}
    assert canonical_spec(
        "PackRegistry", {"endpoint": "https://p", "auth": secret, "fips": True}
    ) == {
        "endpoint": "https://p",
        "auth": secret,
        "tls": {"insecureSkipVerify": False},
        "fips": True,
    }
    spec = canonical_spec(
        "OciRegistry", {"endpoint": "e", "provider": "pack", "sync": True, "baseContentPath": "b"}
    )
    assert canonical_spec("OciRegistry", spec) == spec  # idempotent
    with pytest.raises(ValueError):
        canonical_spec("Settings", {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("1d", 86400)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1 day", "h", "24", "-1h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# ------------------------------------------------------------------ schema


def test_schema_is_valid_2020_12_with_id_and_docs() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    for name in ("ociSpec", "helmSpec", "packSpec", "settingsSpec"):
        for field, sub in schema["$defs"][name]["properties"].items():
            described = sub.get("description") or schema["$defs"].get(
                sub.get("$ref", "").rsplit("/", 1)[-1], {}
            ).get("description")
            assert described or field == "requiredCharts", (name, field)
    assert set(schema["$defs"]["ociAuth"]["properties"]["type"]["enum"]) == {
        "noAuth",
        "basic",
        "ecr",
    }
    assert set(schema["$defs"]["repoAuth"]["properties"]["type"]["enum"]) == {
        "noAuth",
        "basic",
        "token",
    }


def test_schema_ships_as_package_data() -> None:
    shipped = REPO / "reconciler" / "schema" / "registry.schema.json"
    assert (
        shipped.read_text()
        == (REPO / "schema" / "registry.schema.json").read_text()
        == schema_text()
    )


def test_schema_messages_are_human_and_located(tmp_path: Path) -> None:
    r = check(tmp_path, oci("endpoint: o.example.com\nauth: {type: bsic}\nsync: 'yes'\n"))
    assert errors(r) == [
        (
            6,
            16,
            "schema",
            "spec.auth.type: 'bsic' is not one of noAuth, basic, ecr (did you mean 'basic'?)",
        ),
        (7, 9, "schema", "spec.sync: expected true or false, got a string 'yes'"),
    ]


def test_unknown_fields_with_did_you_mean(tmp_path: Path) -> None:
    r = check(
        tmp_path, oci("endpoint: o\nprovdier: helm\nwhatever: 1\n", meta="{name: r, proect: true}")
    )
    assert errors(r) == [
        (3, 21, "unknown-field", "metadata.proect: unknown field (did you mean 'protect'?)"),
        (6, 3, "unknown-field", "spec.provdier: unknown field (did you mean 'provider'?)"),
        (7, 3, "unknown-field", "spec.whatever: unknown field"),
    ]


def test_missing_fields_point_at_the_parent_key(tmp_path: Path) -> None:
    r = check(
        tmp_path, HDR + "kind: HelmRegistry\nmetadata:\n  scope: tenant\nspec:\n  sync: true\n"
    )
    assert errors(r) == [
        (3, 1, "schema", "metadata: missing required field 'name'"),
        (5, 1, "schema", "spec: missing required field 'endpoint'"),
    ]


def test_shape_cache_does_not_hide_errors(tmp_path: Path) -> None:
    good = (
        HDR
        + "kind: HelmRegistry\nmetadata: {{name: {n}}}\nspec:\n  endpoint: {e}\n  requiredCharts: {c}\n"
    )
    r = load_and_validate(
        repo_with(
            tmp_path,
            **{
                "a.yaml": good.format(n="a", e="https://a", c="[{name: x}, {name: y}]"),
                "b.yaml": good.format(n="b", e="ftp://b", c="[{name: x}, {name: y}]"),
                "c.yaml": good.format(n="c", e="https://c", c="[{name: x}, {name: x}]"),
                "d.yaml": good.format(n="d", e="https://d", c="[{name: x}, {name: y}]"),
            },
        )
    )
    assert [(p.file, p.message) for p in r.errors] == [
        (
            "registries.d/b.yaml",
            "spec.endpoint: must be an http:// or https:// URL without spaces or control "
            "characters, not 'ftp://b'",
        ),
        ("registries.d/c.yaml", "spec.requiredCharts: items must be unique"),
    ]
    assert sorted(x.name for x in r.desired.registries) == ["a", "d"]


def test_document_must_be_a_mapping(tmp_path: Path) -> None:
    r = check(tmp_path, "- a\n- b\n")
    assert errors(r) == [
        (
            1,
            1,
            "schema",
            "a document must be a mapping (apiVersion, kind, metadata, spec), not a list",
        )
    ]


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize("field", sorted(SECRET_FIELDS))
def test_literal_secret_is_an_error_wherever_it_is(tmp_path: Path, field: str) -> None:
    password = "" if field == "password" else "  password: {fromEnv: P}\n"
    r = check(
        tmp_path,
        oci(f"endpoint: o\nauth:\n  type: basic\n  username: u\n{password}  {field}: s3cret\n"),
    )
    lit = [e for e in errors(r) if e[2] == "literal-secret"]
    assert lit == [
        (
            9 + bool(password),
            5 + len(field) + 2,
            "literal-secret",
            f"spec.auth.{field}: literal secret; write {{fromEnv: NAME}} or {{fromFile: PATH}} instead",
        )
    ]
    assert "s3cret" not in "".join(map(str, r.problems))


@pytest.mark.parametrize("password", [
    "\n    s3cret-Hunter2: x\n",  # a secret pasted as a key, under password:
    " {fromEnv: P, s3cret-Hunter2: x}\n",  # beside a reference
])
def test_a_secret_pasted_as_a_key_under_a_secret_field_is_not_shown(tmp_path: Path, password: str) -> None:
    r = check(tmp_path, oci(f"endpoint: o\nauth:\n  type: basic\n  username: u\n  password:{password}"))
    assert "spec.auth.password: unknown field (not shown, in case it is a pasted secret); a secret is " \
           "{fromEnv: NAME} or {fromFile: PATH}" in [e[3] for e in errors(r)], errors(r)
    assert "s3cret" not in "".join(map(str, r.problems))
    # a near miss of fromFile is no secret: it keeps its hint
    r = check(tmp_path, oci("endpoint: o\nauth: {type: basic, username: u, password: {fromFil: p}}\n"))
    assert [e[3] for e in errors(r)] == ["spec.auth.password.fromFil: unknown field (did you mean 'fromFile'?)"]
    r = check(tmp_path, oci("endpoint: o\nauth: {type: basic, username: u, password: {fromVault: p}}\n"))
    assert "spec.auth.password.fromVault: unknown field" in [e[3] for e in errors(r)], errors(r)


def test_secret_references(tmp_path: Path) -> None:
    r = check(
        tmp_path,
        oci("endpoint: o\nauth: {type: basic, username: u, password: {fromFile: secrets/p}}\n"),
    )
    assert r.ok
    assert r.desired.registries[0].spec["auth"]["password"] == {"fromFile": "secrets/p"}
    r = check(
        tmp_path, oci("endpoint: o\nauth: {type: basic, username: u, password: {fromEnv: 9X}}\n")
    )
    assert [e[3] for e in errors(r)] == [
        "spec.auth.password.fromEnv: must be an environment variable name (letters, digits, _; not starting "
        "with a digit) (the value is not shown: it may be a pasted secret)"
    ]


# ------------------------------------------------------------------ Palette rules


def test_zarf_only_on_basic_oci(tmp_path: Path) -> None:
    ecr = "auth: {type: ecr, credentials: {credentialType: sts, arn: 'arn:aws:iam::123456789012:role/r', externalId: e}}\n"
    r = check(
        tmp_path,
        oci("endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com\nprovider: zarf\n" + ecr),
    )
    assert [(e[0], e[1], e[2]) for e in errors(r)] == [(6, 13, "zarf-auth")]
    for auth in ("{type: noAuth}", "{type: basic, username: u, password: {fromEnv: P}}"):
        assert check(tmp_path, oci(f"endpoint: o\nprovider: zarf\nauth: {auth}\n")).ok


def test_pack_requires_sync(tmp_path: Path) -> None:
    r = check(tmp_path, oci("endpoint: o\nprovider: pack\nbaseContentPath: p\n"))
    assert errors(r) == [(6, 13, "pack-sync", "spec.provider: 'pack' requires sync: true")]
    r = check(tmp_path, oci("endpoint: o\nprovider: pack\nbaseContentPath: p\nsync: false\n"))
    assert [(e[0], e[1]) for e in errors(r)] == [(8, 9)]
    assert check(tmp_path, oci("endpoint: o\nprovider: pack\nbaseContentPath: p\nsync: true\n")).ok


def test_base_content_path_required_with_sync(tmp_path: Path) -> None:
    r = check(tmp_path, oci("endpoint: o\nsync: true\n"))
    assert errors(r) == [
        (6, 9, "base-content-path", "spec.baseContentPath: required when sync is on")
    ]
    r = check(tmp_path, oci("endpoint: o\nsync: true\nbaseContentPath: '  '\n"))
    assert [(e[0], e[1], e[2]) for e in errors(r)] == [(7, 20, "whitespace")]
    assert check(tmp_path, oci("endpoint: o\nbaseContentPath: ''\n")).ok


def test_ecr_endpoint_without_scheme(tmp_path: Path) -> None:
    r = check(tmp_path, oci("endpoint: https://123456789012.dkr.ecr.us-east-1.amazonaws.com\n"))
    assert errors(r) == [
        (
            5,
            13,
            "ecr-endpoint",
            "spec.endpoint: ECR endpoints carry no scheme; write '123456789012.dkr.ecr.us-east-1.amazonaws.com'",
        )
    ]
    assert check(tmp_path, oci("endpoint: https://registry.example.com\n")).ok


@pytest.mark.parametrize(
    ("creds", "expected"),
    [
        (
            "{credentialType: secret, accessKey: AK}",
            "spec.auth.credentials: missing required field 'secretKey'",
        ),
        (
            "{credentialType: secret, secretKey: {fromEnv: S}}",
            "spec.auth.credentials: missing required field 'accessKey'",
        ),
        (
            "{credentialType: sts, arn: 'arn:aws:iam::123456789012:role/r'}",
            "spec.auth.credentials: missing required field 'externalId'",
        ),
        (
            "{credentialType: sts, externalId: x}",
            "spec.auth.credentials: missing required field 'arn'",
        ),
        (
            "{credentialType: sts, arn: 'role/r', externalId: x}",
            "spec.auth.credentials.arn: must be an IAM role ARN",
        ),
    ],
)
def test_ecr_credentials(tmp_path: Path, creds: str, expected: str) -> None:
    r = check(
        tmp_path,
        oci(
            f"endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com\nauth: {{type: ecr, credentials: {creds}}}\n"
        ),
    )
    (e,) = errors(r)
    assert e[3].startswith(expected)
    assert e[2] == "ecr-credentials" or "arn" in expected


# ------------------------------------------------------------------ across documents


def test_duplicate_names_across_files_name_both_places(tmp_path: Path) -> None:
    helm = HDR + "kind: HelmRegistry\nmetadata:\n  name: same\nspec:\n  endpoint: https://x\n"
    r = load_and_validate(
        repo_with(
            tmp_path,
            **{"a.yaml": helm, "team__b.yaml": "# b\n" + oci("endpoint: o", meta="{name: same}")},
        )
    )
    (p,) = r.errors
    assert (p.file, p.line, p.col, p.rule) == ("registries.d/team/b.yaml", 4, 18, "duplicate-name")
    assert "registries.d/a.yaml:4" in p.message
    assert [x.name for x in r.desired.registries] == ["same"]
    assert r.failed_files == {"registries.d/team/b.yaml"}


def test_same_name_in_other_scope_is_fine(tmp_path: Path) -> None:
    r = check(
        tmp_path,
        HDR
        + "kind: Settings\nspec: {profile: self-hosted}\n---\n"
        + oci("endpoint: o\n", meta="{name: n}")
        + "---\n"
        + oci("endpoint: o\n", meta="{name: n, scope: system}"),
    )
    assert r.ok and sorted(x.scope for x in r.desired.registries) == ["system", "tenant"]


def test_at_most_one_settings(tmp_path: Path) -> None:
    s = HDR + "kind: Settings\nspec: {profile: self-hosted}\n"
    r = load_and_validate(repo_with(tmp_path, **{"a.yaml": s, "b.yaml": s}))
    (p,) = r.errors
    assert (p.file, p.line, p.col, p.rule) == ("registries.d/b.yaml", 2, 7, "settings-count")
    assert "registries.d/a.yaml:1" in p.message
    assert r.desired.settings.profile == "self-hosted"


def test_settings_values(tmp_path: Path) -> None:
    r = check(
        tmp_path,
        HDR
        + "kind: Settings\nspec: {profile: airgap, allowNonFips: true, syncInterval: 30m, maxDeletions: 0}\n",
    )
    s = r.desired.settings
    assert (s.profile, s.allow_non_fips, s.sync_interval_seconds, s.max_deletions) == (
        "airgap",
        True,
        1800,
        0,
    )
    assert s.source == Span("registries.d/r.yaml", 1, 1)
    assert r.profile == "airgap"


def test_legacy_pack_is_a_warning_only(tmp_path: Path) -> None:
    r = check(
        tmp_path, HDR + "kind: PackRegistry\nmetadata: {name: p}\nspec: {endpoint: 'https://p'}\n"
    )
    assert r.ok and not r.failed_files
    (w,) = r.warnings
    assert (w.line, w.col, w.rule, w.severity) == (2, 7, "legacy-pack", "warning")


def test_registry_values(tmp_path: Path) -> None:
    r = check(tmp_path, "# c\n" + oci("endpoint: o\n", meta="{name: r, protect: true}"))
    assert r.desired.registries == [
        Registry(
            kind="OciRegistry",
            name="r",
            scope="tenant",
            spec=canonical_spec("OciRegistry", {"endpoint": "o"}),
            protect=True,
            source=Span("registries.d/r.yaml", 2, 1),
        )
    ]


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    root = repo_with(
        tmp_path,
        **{
            "a.yaml": "a: [\n",
            "b.yaml": oci("endpoint: o\n", meta="{name: b}"),
            "c.yaml": oci("endpoint: o\nauth: {type: nope}\n", meta="{name: c}")
            + "---\n"
            + oci("endpoint: o\n", meta="{name: c2}"),
        },
    )
    (root / "registries.d" / "d.yaml").write_bytes(b"\x80")
    r = load_and_validate(root)
    assert sorted({p.file for p in r.errors}) == [
        "registries.d/a.yaml",
        "registries.d/c.yaml",
        "registries.d/d.yaml",
    ]
    assert r.failed_files == {"registries.d/a.yaml", "registries.d/c.yaml", "registries.d/d.yaml"}
    assert sorted(x.name for x in r.desired.registries) == ["b", "c2"]
    assert r.problems == sorted(r.problems, key=lambda p: (p.file, p.line, p.col))


# ------------------------------------------------------------------ profiles and VerteX


def test_collision_with_a_default(tmp_path: Path) -> None:
    helm = HDR + "kind: HelmRegistry\nmetadata: {name: Bitnami}\nspec: {endpoint: 'https://b'}\n"
    (e,) = errors(check(tmp_path, helm))
    assert (e[0], e[1], e[2]) == (3, 18, "default-collision")
    assert check(tmp_path, helm, profile="airgap").ok
    assert check(
        tmp_path, helm.replace("HelmRegistry", "OciRegistry").replace("'https://b'", "b")
    ).ok  # other kind


def test_profile_argument_overrides_settings(tmp_path: Path) -> None:
    text = HDR + "kind: Settings\nspec: {profile: vertex}\n---\n" + oci("endpoint: o\n")
    assert [e[2] for e in errors(check(tmp_path, text))] == ["vertex-fips"]
    r = check(tmp_path, text, profile="saas")
    assert r.ok and r.profile == "saas" and r.desired.settings.profile == "saas"
    with pytest.raises(InputError, match="unknown profile"):
        check(tmp_path, text, profile="cloud")


def test_vertex_rules(tmp_path: Path) -> None:
    fips = oci("endpoint: https://o\nfips: true\n", meta="{name: a}")
    assert check(tmp_path, fips, profile="vertex").ok
    r = check(
        tmp_path,
        oci("endpoint: http://o\nfips: false\ntls: {insecureSkipVerify: true}\n"),
        profile="vertex",
    )
    assert [(e[0], e[1], e[2]) for e in errors(r)] == [
        (5, 13, "vertex-http"),
        (6, 9, "vertex-fips"),
        (7, 29, "vertex-insecure"),
    ]


def test_vertex_allow_non_fips(tmp_path: Path) -> None:
    # DOCS (vertex add-registry): with "Allow non-FIPS packs" on, non-FIPS registries may be
    # added at tenant or system level, whatever their kind
    settings = HDR + "kind: Settings\nspec: {profile: vertex, allowNonFips: true}\n---\n"
    ok = settings + oci("endpoint: o\n", meta="{name: a, scope: system}")
    assert check(tmp_path, ok).ok
    tenant = settings + oci("endpoint: o\n", meta="{name: a}")
    assert check(tmp_path, tenant).ok
    helm = (
        settings
        + HDR
        + "kind: HelmRegistry\nmetadata: {name: h, scope: system}\nspec: {endpoint: 'https://h'}\n"
    )
    assert check(tmp_path, helm).ok
    strict = HDR + "kind: Settings\nspec: {profile: vertex}\n---\n" + oci("endpoint: o\n", meta="{name: a}")
    assert [e[2] for e in errors(check(tmp_path, strict))] == ["vertex-fips"]


def test_vertex_default_registry_name_collides(tmp_path: Path) -> None:
    r = check(
        tmp_path,
        oci("endpoint: o\nfips: true\n", meta="{name: Palette Registry FIPS}"),
        profile="vertex",
    )
    assert [e[2] for e in errors(r)] == ["default-collision"]
    assert check(
        tmp_path, oci("endpoint: o\nfips: true\n", meta="{name: Bitnami}"), profile="vertex"
    ).ok


# ------------------------------------------------------------------ run_validate


def test_run_validate_text(tmp_path: Path) -> None:
    root = repo_with(
        tmp_path,
        **{
            "a.yaml": oci("endpoint: o\nsync: true\n"),
            "b.yaml": HDR
            + "kind: PackRegistry\nmetadata: {name: p}\nspec: {endpoint: 'https://p'}\n",
        },
    )
    out = io.StringIO()
    assert run_validate(None, root, None, "text", out) == 1
    assert out.getvalue().splitlines() == [
        "registries.d/a.yaml:6:9: spec.baseContentPath: required when sync is on",
        "registries.d/b.yaml:2:7: warning: PackRegistry is legacy; an OciRegistry with provider: pack is recommended",
        "2 files, 2 registries: 1 error, 1 warning",
    ]
    out = io.StringIO()
    assert (
        run_validate([root / "registries.d" / "b.yaml"], root, None, "text", out) == 0
    )  # warnings don't fail
    assert out.getvalue().splitlines()[-1] == "1 file, 1 registry: 0 errors, 1 warning"


def test_run_validate_json(tmp_path: Path) -> None:
    root = repo_with(tmp_path, **{"a.yaml": oci("endpoint: o\nsync: true\n")})
    out = io.StringIO()
    assert run_validate(None, root, None, "json", out) == 1
    assert json.loads(out.getvalue()) == {
        "problems": [
            {
                "file": "registries.d/a.yaml",
                "line": 6,
                "col": 9,
                "severity": "error",
                "rule": "base-content-path",
                "message": "spec.baseContentPath: required when sync is on",
            }
        ],
        "files": 1,
        "registries": 1,
    }


def test_run_validate_markdown_and_errors(tmp_path: Path) -> None:
    root = repo_with(tmp_path, **{"a.yaml": oci("endpoint: o\nsync: true\n")})
    out = io.StringIO()
    assert run_validate(None, root, None, "markdown", out) == 1
    assert "| `registries.d/a.yaml:6:9` | error | base-content-path |" in out.getvalue()
    out = io.StringIO()
    assert run_validate(None, root, "nope", "text", out) == 1
    assert out.getvalue().startswith("error: unknown profile 'nope'")


def test_run_validate_on_the_repository() -> None:
    out = io.StringIO()
    assert run_validate(None, REPO, None, "json", out) == 0
    doc = json.loads(out.getvalue())
    assert doc["files"] >= 3 and doc["registries"] >= 6
    assert all(p["severity"] == "warning" for p in doc["problems"])


def test_broken_settings_keep_their_profile(tmp_path: Path) -> None:
    text = (
        HDR
        + "kind: Settings\nspec: {profile: vertex, syncInterval: soon}\n---\n"
        + oci("endpoint: o\n")
    )
    assert sorted(e[2] for e in errors(check(tmp_path, text))) == ["schema", "vertex-fips"]


def test_a_document_with_a_duplicate_key_is_not_desired(tmp_path: Path) -> None:
    r = check(
        tmp_path,
        oci("endpoint: o\nendpoint: p\n") + "---\n" + oci("endpoint: o\n", meta="{name: ok}"),
    )
    assert [e[2] for e in errors(r)] == ["duplicate-key"]
    assert [x.name for x in r.desired.registries] == ["ok"]
    assert r.failed_files == {"registries.d/r.yaml"}


# ------------------------------------------------------------------ input hygiene (#9.30, #9.39, #9.42, #9.10)


def test_endpoint_credentials_reported_once_and_never_echoed(tmp_path: Path) -> None:
    docs = [
        ("HelmRegistry", "https://admin:hunter2@charts.example.com"),
        ("PackRegistry", "http://admin:hunter2@packs.example.com"),  # also not https
        ("OciRegistry", "admin:hunter2@123456789012.dkr.ecr.us-east-1.amazonaws.com/x"),
        ("OciRegistry", "oci://admin:hunter2@o.example.com"),
        ("HelmRegistry", "https://admin:pa/ss@charts.example.com"),  # '/' in the password
    ]
    text = "---\n".join(
        HDR + f"kind: {k}\nmetadata: {{name: r{i}}}\nspec: {{endpoint: '{e}'}}\n"
        for i, (k, e) in enumerate(docs)
    )
    r = check(tmp_path, text)
    assert [(p.rule, p.message) for p in r.errors] == [
        (
            "literal-secret",
            "spec.endpoint: credentials in an endpoint URL are a literal secret; use auth with fromEnv",
        )
    ] * len(docs)
    assert not any("hunter2" in str(p) or "pa/ss" in str(p) for p in r.problems)


def test_a_credential_in_the_endpoints_query_is_refused_by_name_and_never_echoed(tmp_path: Path) -> None:
    """Adversarial pass 4, item 8: ``?access_token=ghp_...`` passed validation (only
    ``user:pw@`` counted); so did an Azure SAS ``sig``. Other query parameters are fine."""
    docs = [
        ("HelmRegistry", "https://charts.example.com/r?access_token=ghp_s3cret", "access_token"),
        ("HelmRegistry", "https://acct.blob.core.windows.net/charts?sv=2022-11-02&sig=s3cret%3D", "sig"),
        ("PackRegistry", "https://packs.example.com?API_KEY=s3cret", "API_KEY"),
        ("HelmRegistry", "https://charts.example.com/r?token", "token"),
        # pass 5: as a server decodes them (percent-encoded names, ';' separators, any prefix)
        ("HelmRegistry", "https://charts.example.com/r?%74oken=s3cret", "%74oken"),
        ("HelmRegistry", "https://charts.example.com/r?access%5Ftoken=s3cret", "access%5Ftoken"),
        ("HelmRegistry", "https://charts.example.com/r?x=1;private_token=s3cret", "private_token"),
        ("PackRegistry", "https://packs.example.com?Refresh-Token=s3cret", "Refresh-Token"),
    ]
    text = "---\n".join(HDR + f"kind: {k}\nmetadata: {{name: r{i}}}\nspec: {{endpoint: '{e}'}}\n"
                        for i, (k, e, _) in enumerate(docs))
    r = check(tmp_path, text)
    assert [(p.rule, p.message) for p in r.errors] == [
        ("literal-secret", f"spec.endpoint: the query parameter '{n}' of the endpoint URL carries a credential, "
                           "a literal secret in git; use auth with fromEnv") for _, _, n in docs]
    assert not any("s3cret" in str(p) for p in r.problems)
    fine = check(tmp_path, HDR + "kind: HelmRegistry\nmetadata: {name: q}\n"
                 "spec: {endpoint: 'https://charts.example.com/r?channel=stable&monkey=1'}\n")
    assert not fine.errors, fine.errors


def test_control_characters_refused_and_shown_escaped(tmp_path: Path) -> None:
    bad = {
        "\x1b[8m": "ESC",
        "\x07": "BEL",
        "\r": "CR",
        "\u202e": "right-to-left override",
        "\u2066": "left-to-right isolate",
        "\x00": "NUL",
        "\u200b": "zero-width space",
    }
    for ch, name in bad.items():
        for field, doc in (
            ("metadata.name", oci("endpoint: o\n", meta='{name: "a%sb"}')),
            ("spec.endpoint", oci('endpoint: "o%s.example.com"\n')),
            ("spec.auth.username", oci('endpoint: o\nauth: {type: basic, username: "u%s", password: {fromEnv: P}}\n')),
        ):
            quoted = json.dumps(ch)[1:-1]  # a YAML double-quoted escape of the character
            r = check(tmp_path, doc.replace("%s", quoted))
            assert [p.rule for p in r.errors] == ["control-character"], (field, name, r.problems)
            msg = str(r.errors[0])
            assert msg.split(": ", 1)[1].startswith(f"{field}: control character {name}")
            assert ch not in msg and not any(c in msg for c in "\x1b\x07\r\x00\u202e\u2066\u200b")


def test_trailing_newline_in_a_name_is_refused(tmp_path: Path) -> None:
    # the schema pattern alone lets it through: Python's '$' matches before a final newline
    r = check(tmp_path, oci("endpoint: o\n", meta='{name: "name\\n"}'))
    assert [(p.rule, p.message.split(";")[0]) for p in r.errors] == [
        ("control-character", "metadata.name: control character newline (\\x0a) at character 5")
    ]


def test_whitespace_in_token_fields(tmp_path: Path) -> None:
    r = check(tmp_path, oci("endpoint: 'o.example.com /x'\nauth: {type: basic, username: 'a b', password: {fromEnv: P}}\n"))
    assert [(p.rule, p.message) for p in r.errors] == [
        ("whitespace", "spec.endpoint: must not contain spaces"),
        ("whitespace", "spec.auth.username: must not contain spaces"),
    ]
    assert check(tmp_path, oci("endpoint: o\n", meta="{name: 'Team Packs'}")).ok  # names may


def test_every_string_field_is_bounded(tmp_path: Path) -> None:
    huge = "x" * 900_000
    r = check(tmp_path, oci(f"endpoint: {huge}.example.com\n"))
    assert [(p.line, p.col, p.message) for p in r.errors] == [
        (5, 13, "spec.endpoint: too long (900012 characters; at most 2048)")
    ]
    assert len(str(r.errors[0])) < 200  # the value is named, not printed

    def unbounded(node, path=()):
        if isinstance(node, dict):
            if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
                yield "/".join(map(str, path))
            for k, v in node.items():
                yield from unbounded(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from unbounded(v, (*path, i))

    assert list(unbounded(load_schema())) == []


@pytest.mark.parametrize(("raw", "name"), [("\x00", "NUL"), ("\x1b", "ESC"), ("\ufffe", "U+FFFE")])
def test_a_character_yaml_refuses_is_reported_once_at_its_position(tmp_path: Path, raw: str, name: str) -> None:
    # #9.33: it used to be "1:1" with libyaml's "in <unicode string>, position N" on a second line
    text = HDR + "kind: OciRegistry\nmetadata: {name: ok}\nspec:\n  endpoint: o" + raw + "x\n"
    r = check(tmp_path, text)
    assert [(p.line, p.col, p.rule) for p in r.problems] == [(5, 14, "yaml-syntax")]
    msg = str(r.problems[0])
    assert f"the control character {name}" in msg
    assert "\n" not in msg and "position" not in msg and "<unicode string>" not in msg
    assert r.failed_files == {"registries.d/r.yaml"}


# ------------------------------------------------------------------ special files (#9.34)


def _validate_cli(root: Path, *paths: str):
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "validate", *paths],
        cwd=root, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_fifo_in_registries_d_is_an_error_not_skipped(tmp_path: Path) -> None:
    root = repo_with(tmp_path, **{"ok.yaml": oci("endpoint: o\n")})
    os.mkfifo(root / "registries.d" / "pipe.yaml")
    os.mkfifo(root / "elsewhere.yaml")
    os.symlink("../elsewhere.yaml", root / "registries.d" / "link.yaml")
    r = load_and_validate(root)
    assert [(p.file, p.line, p.col, p.message) for p in r.errors] == [
        ("registries.d/link.yaml", 1, 1, "not a regular file (a FIFO)"),
        ("registries.d/pipe.yaml", 1, 1, "not a regular file (a FIFO)"),
    ]
    assert {"registries.d/link.yaml", "registries.d/pipe.yaml"} <= r.failed_files
    res = _validate_cli(root)  # and the command neither hangs nor passes
    assert res.returncode == 1 and "registries.d/pipe.yaml:1:1: not a regular file (a FIFO)" in res.stdout


def test_a_fifo_or_device_given_by_path_is_not_a_regular_file(tmp_path: Path) -> None:
    root = repo_with(tmp_path, **{"ok.yaml": oci("endpoint: o\n")})
    os.mkfifo(root / "pipe.yaml")
    res = _validate_cli(root, "pipe.yaml", "/dev/null", "/dev/zero")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "pipe.yaml:1:1: not a regular file (a FIFO)" in res.stdout
    assert res.stdout.count("not a regular file (a character device)") == 2
    assert "no such file" not in res.stdout


def test_a_fifo_swapped_in_after_discovery_is_not_opened_for_ever(tmp_path: Path) -> None:
    import threading

    from reconciler import loader

    fifo = tmp_path / "late.yaml"
    os.mkfifo(fifo)
    out: list = []
    t = threading.Thread(target=lambda: out.append(loader.read_source(loader.SourceFile("late.yaml", path=fifo, size=0))))
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("read_source blocked on a FIFO")
    data, problem = out[0]
    assert data is None and problem is not None and problem.message == "not a regular file (a FIFO)"


# ------------------------------------------------------------------ file names (#9.29)


def _commit_all(root: Path) -> None:
    """A repository at a commit holding the work tree (``load_and_validate(ref="HEAD")`` reads it)."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x"],
                   cwd=root, check=True)


def test_file_names_with_control_characters_are_refused_and_printed_escaped(tmp_path: Path) -> None:
    root = repo_with(tmp_path, **{"ok.yaml": oci("endpoint: o\n")})
    d = root / "registries.d"
    (d / "a\n::error file=x::owned.yaml").write_text(oci("endpoint: o\n", meta="{name: a}"))
    (d / "b\x1b[8m.yaml").write_text(oci("endpoint: o\n", meta="{name: b}"))
    (d / "dir\r").mkdir()
    (d / "dir\r" / "c.yaml").write_text(oci("endpoint: o\n", meta="{name: c}"))
    (d / "Icon\r").write_text("not a definition")  # macOS litter: ignored like any non-YAML file
    expected = [
        "registries.d/a\\x0a::error file=x::owned.yaml",
        "registries.d/b\\x1b[8m.yaml",
        "registries.d/dir\\x0d",
    ]
    _commit_all(root)
    for ref in (None, "HEAD"):
        r = load_and_validate(root, ref=ref)
        assert [(p.file, p.rule) for p in r.errors] == [(f, "file-name") for f in expected], ref
        assert all("rename it" in p.message for p in r.errors)
        assert [x.name for x in r.desired.registries] == ["r"]  # nothing read from those files
        assert set(expected) <= r.failed_files  # so the prune guard refuses deletions
    res = _validate_cli(root)
    assert res.returncode == 1
    assert "\x1b" not in res.stdout and "\r" not in res.stdout
    assert not any(line.startswith("::") for line in res.stdout.splitlines())


@pytest.mark.parametrize("name", ["a.YAML", "a.Yml", "a.yaML", "a.yaml ", "a.yml.", "a.YAML. "])
def test_a_definition_file_with_an_upper_case_suffix_is_an_error_not_skipped(tmp_path: Path, name: str) -> None:
    """Adversarial pass: ``a.YAML`` was skipped without a word ("0 errors"), and the plan then
    deleted its registries. It is an error now, in the work tree and at a commit, so the
    prune guard refuses deletions."""
    root = repo_with(tmp_path, **{"ok.yaml": oci("endpoint: o\n")})
    (root / "registries.d" / name).write_text(oci("endpoint: o\n", meta="{name: a}"))
    (root / "registries.d" / "notes.txt").write_text("not a definition")  # other suffixes stay ignored
    (root / "registries.d" / "old.YAML.bak").write_text("a backup")
    _commit_all(root)
    for ref in (None, "HEAD"):
        r = load_and_validate(root, ref=ref)
        assert [(p.file, p.rule) for p in r.errors] == [(f"registries.d/{name}", "file-name")], ref
        assert "lower case" in r.errors[0].message and "rename it" in r.errors[0].message
        assert f"registries.d/{name}" in r.failed_files
    res = _validate_cli(root)
    assert res.returncode == 1 and f"registries.d/{name}:1:1: " in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["a.json", "a.JSON", "a.json "])
def test_a_json_definition_file_is_an_error_not_skipped(tmp_path: Path, name: str) -> None:
    """Adversarial pass 6, item 5: ``registries.d/*.json`` was skipped without a word (0 files,
    exit 0), so a user could believe its registries applied. It is an error, as ``a.YAML`` is,
    in the work tree and at a commit (the prune guard then refuses deletions)."""
    root = repo_with(tmp_path, **{"ok.yaml": oci("endpoint: o\n")})
    (root / "registries.d" / name).write_text(json.dumps(
        {"apiVersion": "reconciler/v1", "kind": "HelmRegistry", "metadata": {"name": "j"},
         "spec": {"endpoint": "https://j.example.com"}}))
    (root / "registries.d" / "a.json.bak").write_text("a backup")  # other suffixes stay ignored
    _commit_all(root)
    for ref in (None, "HEAD"):
        r = load_and_validate(root, ref=ref)
        assert [(p.file, p.rule) for p in r.errors] == [(f"registries.d/{name}", "file-name")], ref
        assert "not read" in r.errors[0].message and "rename it to .yaml" in r.errors[0].message
        assert f"registries.d/{name}" in r.failed_files
    res = _validate_cli(root)
    assert res.returncode == 1 and f"registries.d/{name}:1:1: a .json file is not read" in res.stdout + res.stderr


def test_schema_descriptions_agree_with_the_client_and_the_docs() -> None:
    from reconciler.model import LOCAL_ONLY_FIELDS

    schema = load_schema()
    helm = schema["$defs"]["helmSpec"]["properties"]
    # the client sends Helm sync as isPrivate = not sync (model.py; TF PRs #990, #986)
    assert "isPrivate" in helm["sync"]["description"]
    assert "skipSync" not in json.dumps(schema)
    # requiredCharts are reconciler-only
    assert "requiredCharts" in LOCAL_ONLY_FIELDS
    assert "never sent to Palette" in helm["requiredCharts"]["description"]
    assert "createOption" not in helm["requiredCharts"]["description"]
    assert "on or off replaces" in schema["$defs"]["ociSpec"]["properties"]["sync"]["description"]
    mapping = (REPO / "docs" / "field-mapping.md").read_text(encoding="utf-8")
    assert "`isPrivate` = `not sync`" in mapping and "never sent" in mapping
    assert "on → off and off → on are a replace" in mapping
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Helm: sync off = `isPrivate: true`" in readme and "never sent to Palette" in readme


def test_a_key_with_a_control_character_is_reported_once(tmp_path: Path) -> None:
    r = check(tmp_path, oci('endpoint: o\n"x\\e[2J": 1\n'))
    assert [(p.line, p.col, p.rule, p.message) for p in r.errors] == [
        (6, 3, "control-character", "spec.x\\x1b[2J: a key with the control character ESC (\\x1b)")
    ]


def test_the_shape_cache_does_not_hide_hygiene_or_credentials(tmp_path: Path) -> None:
    # a clean document first, so that its shape is known good, then look-alikes that are not
    docs = [
        HDR + "kind: HelmRegistry\nmetadata: {name: a}\nspec: {endpoint: 'https://h.example.com/x?y=@'}\n",
        HDR + "kind: HelmRegistry\nmetadata: {name: b}\nspec: {endpoint: 'https://u:p@h.example.com/x?y'}\n",
        HDR + "kind: HelmRegistry\nmetadata: {name: cc}\nspec: {endpoint: 'https://h.example.com'}\n",
        HDR + 'kind: HelmRegistry\nmetadata: {name: "d\\n"}\nspec: {endpoint: \'https://h.example.com\'}\n',
        HDR + "kind: HelmRegistry\nmetadata: {name: e}\nspec: {endpoint: 'https://h', tls: {caFile: ab.pem}}\n",
        HDR + 'kind: HelmRegistry\nmetadata: {name: f}\nspec: {endpoint: \'https://h\', tls: {caFile: "b\\e.pem"}}\n',
    ]
    r = load_and_validate(repo_with(tmp_path, **{f"{i}.yaml": d for i, d in enumerate(docs)}))
    assert [(p.file, p.rule) for p in r.errors] == [
        ("registries.d/1.yaml", "literal-secret"),
        ("registries.d/3.yaml", "control-character"),
        ("registries.d/5.yaml", "control-character"),
    ]


def test_base_paths_for_content_code() -> None:
    from reconciler.model import base_paths

    assert base_paths({"baseContentPath": "team-a,/team-b/charts/"}) == ["team-a", "team-b/charts"]
    assert base_paths({"baseContentPath": "production"}) == ["production"]
    assert base_paths({"baseContentPath": ""}) == base_paths({}) == [""]


# ------------------------------------------------------------------ adversarial pass 6, item 7: names


def _helm_named(name: str) -> str:
    return f"{HDR}kind: HelmRegistry\nmetadata: {{name: {json.dumps(name, ensure_ascii=False)}}}\nspec: {{endpoint: 'https://h.example.com'}}\n"


@pytest.mark.parametrize("name", ["Bit\u00adnami", "pr\u034fod", "prod\U000e0041", "pro\u2061d", "Palette Registry\u180e",
                                  "pro\u206ad", "\u3164prod", "prod\ufe0f", "pro\U000e0101d", "pro\u115fd",
                                  "Bitnami\u2800"])
def test_an_invisible_character_in_a_name_is_refused(tmp_path: Path, name: str) -> None:
    """"Bit\\u00adnami" passed validation and printed exactly like the built-in Bitnami; every
    Default_Ignorable_Code_Point of Unicode (soft hyphen, grapheme joiner, Hangul fillers,
    variation selectors, invisible operators, tags) is refused now, wherever it is."""
    res = check(tmp_path, _helm_named(name))
    assert len(res.errors) == 1 and res.errors[0].rule in ("control-character", "schema"), errors(res)
    assert res.errors[0].line == 3, errors(res)
    assert name not in str(res.errors[0]), str(res.errors[0])  # shown escaped


def test_a_decomposed_name_is_refused_and_case_only_differences_are_warned(tmp_path: Path) -> None:
    """"café" in NFD (e + U+0301) looks like the NFC one but is another name: a file re-saved by
    another editor was planned as a delete and an identical-looking create. Names that differ
    only in letter case (or compatibility forms) are warned about: Palette may take them for one."""
    nfd = "cafe\u0301"
    res = check(tmp_path, _helm_named(nfd))
    assert [(e.rule, "U+0301" in e.message) for e in res.errors] == [("name-form", True)], errors(res)
    res = check(tmp_path, _helm_named("café") + "---\n" + _helm_named("prod") + "---\n" + _helm_named("Prod")
                + "---\n" + _helm_named("ｐｒｏｄ2") + "---\n" + _helm_named("prod2"))
    assert res.errors == [], errors(res)
    similar = [p for p in res.warnings if p.rule == "similar-name"]
    assert len(similar) == 2 and "'Prod'" in str(similar[0]) and "'prod'" in str(similar[0]), [str(p) for p in similar]
    assert len(res.desired.registries) == 5


@pytest.mark.parametrize("name", ["bitnami", "BITNAMI", "\uff22itnami", "Bitnami"])
def test_a_name_that_reads_like_a_built_in_registry_is_refused(tmp_path: Path, name: str) -> None:
    """Adversarial pass 7, item 2: 'Bitnami' itself was refused (a built-in default of the SaaS
    profile) but 'bitnami' and 'Ｂitnami' (fullwidth B, NFKC 'Bitnami') were created, pointing
    anywhere, and read like the built-in in a plan."""
    res = check(tmp_path, _helm_named(name))
    assert [e.rule for e in res.errors] == ["default-collision"], errors(res)
    ok = check(tmp_path / "other-kind", _helm_named(name).replace("kind: HelmRegistry", "kind: OciRegistry")
               .replace("spec: {endpoint: 'https://h.example.com'}",
                        "spec: {endpoint: 'h.example.com', provider: helm, sync: false}"))
    assert [e.rule for e in ok.errors if e.rule == "default-collision"] == [], errors(ok)  # another kind


def test_a_clean_file_is_parsed_once_whatever_its_endpoints(tmp_path: Path, monkeypatch) -> None:
    """Issue #11: positions are kept lazy (asking one parses the file again), so a check must ask
    one only for a problem it reports. The endpoint host check of adversarial pass 9 asked for
    the endpoint's position first, for every endpoint its quick pattern did not take (ECR hosts,
    IP addresses): a cold plan of 5,000 varied definitions took 18% longer. Each clean file, of
    every kind and endpoint style, is composed exactly once."""
    from reconciler import loader

    root = repo_with(tmp_path, **{"a.yaml": (REPO / "tests/data/clean-endpoints.yaml").read_text()})
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[int] = []
    real = loader.compose_all
    monkeypatch.setattr(loader, "compose_all", lambda t: calls.append(1) or real(t))
    result = load_and_validate(root)
    assert not result.errors and len(result.desired.registries) == 5, result.problems
    assert [p.rule for p in result.problems] == ["legacy-pack"]  # its position is a hint
    assert len(calls) == 1
