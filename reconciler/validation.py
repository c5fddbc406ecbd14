"""JSON Schema + policy over the loaded documents -> problems located at file:line:col.

Every file is read and every document checked even when others are broken; the result keeps
all problems (sorted), the valid registries in canonical form, and the set of files that
failed (the plan's prune guard refuses deletions while it is non-empty).

Checks, in order: reading (size, UTF-8, symlinks, YAML syntax, duplicate keys, alias bounds),
the JSON Schema (compiled once; its errors are mapped to the offending node and rewritten into
plain sentences, unknown fields get a "did you mean"), literal secrets, Palette's rules
(provider/auth/sync/baseContentPath/ECR), then the cross-document rules (duplicate names, one
Settings, built-in defaults of the profile, VerteX FIPS policy) and the legacy-Pack warning.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import loader
from .cache import ValidationCache
from .errors import InputError
from .fastschema import compile_schema
from .loader import Document, RawProblem
from .model import (KINDS, SCOPES, SECRET_FIELDS, Desired, Registry, Settings, Span, declared_registry,
                    query_credentials, span, split_userinfo)
from .profiles import DEFAULT_PROFILE, PROFILES, SYSTEM_SCOPE_PROFILES, default_keys
from .secrets import (MAX_CA_FILE, MAX_SECRET_FILE, PASTED_LENGTHS, RESERVED_ENV, path_problem, pasted_credential,
                      root_problem)
from .text import CONTROL, describe, escape, lazy_pattern

API_VERSION = "reconciler/v1"
SCHEMA_FILE = Path(__file__).parent / "schema" / "registry.schema.json"

_ECR_HOST = re.compile(r"(^|://)[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?(/|:|$)")
_SPACE = re.compile(r"\s")
# the usual endpoint, said good at once: a valid IPv4 address (octets 0-255, no leading zero, as
# ipaddress and httpx read them: the full check of one costs ~12 us), or an ASCII host name (not
# one of four numbers otherwise, which the full check says) that does not start with xn--, labels
# of 1-63 characters; a port of 0-65535; ECR's 123456789012.dkr.ecr... hosts included
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PLAIN_HOST = re.compile(
    rf"(?:https?://)?(?:(?:{_OCTET}\.){{3}}{_OCTET}(?=[:/?#]|$)"  # IPv4
    r"|(?![Xx][Nn]--)(?!(?:[0-9]+\.){3}[0-9]+\.?(?:[:/?#]|$))"  # not xn--, not four numbers
    r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?)"
    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:[/?#]|$)"
)
_plain_host = _PLAIN_HOST.match
_IPV4_STYLE = lazy_pattern(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
# fields that are one token: no whitespace anywhere (names may hold inner spaces)
_TOKEN_FIELDS = frozenset(
    {"endpoint", "username", "baseContentPath", "accessKey", "arn", "externalId", "fromEnv"}
)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class Problem:
    """One problem in the definitions, located (file:line:col), with its rule and severity."""

    file: str
    line: int
    col: int
    message: str
    severity: str = "error"
    rule: str = ""

    def __post_init__(self) -> None:
        # a file name or a value quoted in a message never reaches a terminal raw
        if CONTROL.search(self.file) or CONTROL.search(self.message):
            object.__setattr__(self, "file", escape(self.file))
            object.__setattr__(self, "message", escape(self.message))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        level = "warning: " if self.severity == "warning" else ""
        return f"{where}: {level}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "rule": self.rule,
            "message": self.message,
        }


@dataclass
class LoadResult:
    """What loading and validating give: the desired registries and settings, and every problem."""

    desired: Desired
    problems: list[Problem] = field(default_factory=list)
    failed_files: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)  # every file read, display names
    declared: int = 0  # registry documents found (valid or not)
    profile: str = DEFAULT_PROFILE  # the effective profile

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- schema


def schema_text() -> str:
    """The JSON Schema as shipped (for ``reconcile schema``)."""
    return SCHEMA_FILE.read_text(encoding="utf-8")


def schema_digest() -> str:
    """The SHA-256 of the schema file's bytes: what the shipped compiled schema was made from."""
    import hashlib

    return hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(schema_text())  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


@lru_cache(maxsize=1)
def _compiled() -> Callable[[Any], bool] | None:
    """The schema as a plain predicate; None if it uses other keywords. The package ships it
    compiled (``_schema_check.py``, whose bytecode Python caches as for any module: compiling
    the source took a cold run about 10 ms), used when it was compiled from this very schema
    text; any other schema is compiled here, once per process."""
    from . import _schema_check

    if _schema_check.SCHEMA_SHA256 == schema_digest():
        check: Callable[[Any], bool] = _schema_check.check
        return check
    return compile_schema(load_schema())


# --------------------------------------------------------------------------- canonical form


def _tls(spec: Mapping[str, Any]) -> dict[str, Any]:
    given = spec.get("tls") or {}
    if (type(given) is dict and list(given) in (["insecureSkipVerify"], ["insecureSkipVerify", "caFile"])
            and type(given["insecureSkipVerify"]) is bool and given.get("caFile", True)):
        return given  # already what is built below: the document's own dict (see canonical_spec)
    tls: dict[str, Any] = {"insecureSkipVerify": bool(given.get("insecureSkipVerify", False))}
    if given.get("caFile"):
        tls["caFile"] = given["caFile"]
    return tls


def canonical_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Our spec with defaults filled and a fixed key order; secrets stay references."""
    # the document's own values, not copies: this run built them for this registry alone, and a
    # spec is never changed in place (see Registry.fingerprint); a copy of each costs a cold plan
    # of 5,000 definitions 1.7 MB (and the page faults of it)
    auth = spec.get("auth") or {"type": "noAuth"}
    if kind == "OciRegistry":
        return {
            "endpoint": spec["endpoint"],
            "provider": spec.get("provider", "helm"),
            "baseContentPath": spec.get("baseContentPath", ""),
            "sync": bool(spec.get("sync", False)),
            "auth": auth,
            "tls": _tls(spec),
            "fips": bool(spec.get("fips", False)),
            **({"basePath": spec["basePath"]} if spec.get("basePath") else {}),
        }
    if kind == "HelmRegistry":
        out: dict[str, Any] = {
            "endpoint": spec["endpoint"],
            "sync": bool(spec.get("sync", True)),
            "auth": auth,
            "tls": _tls(spec),
            "fips": bool(spec.get("fips", False)),
        }
        if "requiredCharts" in spec:
            out["requiredCharts"] = list(spec["requiredCharts"])
        return out
    if kind == "PackRegistry":
        return {
            "endpoint": spec["endpoint"],
            "auth": auth,
            "tls": _tls(spec),
            "fips": bool(spec.get("fips", False)),
        }
    raise ValueError(f"unknown kind {kind!r}")


_REF_LIKE = lazy_pattern(r"from[A-Z][A-Za-z]{1,20}")  # a kind of reference (fromVault), not a secret


def parse_duration(text: str) -> int:
    """'24h' -> 86400; '1h30m' -> 5400; '90s' -> 90. Raises ValueError."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    total = ((d * 24 + h) * 60 + mi) * 60 + s
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


def settings_from_spec(spec: Mapping[str, Any], source: Span | None = None) -> Settings:
    return Settings(
        profile=spec.get("profile", DEFAULT_PROFILE),
        allow_non_fips=bool(spec.get("allowNonFips", False)),
        sync_interval_seconds=parse_duration(spec.get("syncInterval", "24h")),
        max_deletions=int(spec.get("maxDeletions", 5)),
        source=source,
        secret_roots=tuple(str(r) for r in spec.get("secretRoots", ())),
    )


# --------------------------------------------------------------------------- messages


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + escape(str(part))
    return out


_SHOW_MAX = 80
# the user-info part of a URL ("admin:pw@"): a password, never shown in a message
_USERINFO = lazy_pattern(r"(?<=://)[^/?#@\s]*@|^[^/?#@:\s]+:[^/?#@\s]*@")


def show(value: Any) -> str:
    if isinstance(value, str):
        value = _USERINFO.sub("(credentials)@", value)
        if len(value) > _SHOW_MAX:  # a 900 KB value is named, not printed
            return repr(value[: _SHOW_MAX - 20]) + f"... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        text = _USERINFO.sub("(credentials)@", json.dumps(value, default=str))
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


_TYPE_NAMES = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null (empty)"
    return type(value).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    pool = list(candidates)
    import difflib  # only for a misspelt name: not imported by every run

    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f" (did you mean '{close[0]}'?)" if close else ""


# --------------------------------------------------------------------------- per document


@dataclass(slots=True)  # one per document of thousands, kept to the end of a run
class _Checked:
    """One document after the per-document checks: its kind, its problems, whether it passed."""

    doc: Document
    kind: str | None
    problems: list[Problem]
    ok: bool  # no errors in this document


class _Checker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def add(
        self,
        path: Sequence[str | int],
        message: str,
        rule: str,
        *,
        key: bool = False,
        severity: str = "error",
    ) -> None:
        line, col = self.doc.position(path, key=key)
        self.problems.append(Problem(self.doc.file, line, col, message, severity, rule))

    def run(self) -> _Checked:
        value = self.doc.value
        if not isinstance(value, dict):
            self.add(
                (),
                "a document must be a mapping (apiVersion, kind, metadata, spec), "
                f"not {_type_of(value)}",
                "schema",
            )
            return _Checked(self.doc, None, self.problems, False)
        spec = value.get("spec")
        if self.quick(value):
            literal = self.endpoint_credentials(spec) if isinstance(spec, dict) else set()
            kind = value.get("kind") if isinstance(value.get("kind"), str) else None
            if isinstance(spec, dict):
                endpoint = spec.get("endpoint")
                if type(endpoint) is not str or not _plain_host(endpoint):  # most are: no call
                    self.endpoint_host(spec, kind, literal)
            if isinstance(spec, dict) and kind == "OciRegistry":
                self.oci_rules(spec, literal)
            ok = not any(p.severity == "error" for p in self.problems)
            return _Checked(self.doc, kind, self.problems, ok)
        literal = self.literal_secrets(value)
        literal |= self.hygiene(value)
        if isinstance(spec, dict):
            literal |= self.endpoint_credentials(spec)
        self.schema(value, literal)
        kind = value.get("kind") if isinstance(value.get("kind"), str) else None
        if isinstance(spec, dict):
            self.endpoint_host(spec, kind, literal)
        if isinstance(spec, dict) and kind == "OciRegistry":
            self.oci_rules(spec, literal)
        ok = not self.doc.load_errors and not any(p.severity == "error" for p in self.problems)
        return _Checked(self.doc, kind, self.problems, ok)

    def quick(self, value: dict[str, Any]) -> bool:
        """Whether the walks below can find nothing, tested at once: the document came from
        the loader's fast path (its strings are known), none of them holds a control character
        or any whitespace (so ``hygiene`` finds nothing), none is a reserved variable's name,
        and the compiled schema accepts it (then no secret field holds a literal:
        ``test_the_schema_refuses_every_literal_secret``). One scan of the joined strings and
        one schema call, instead of three walks over the values."""
        strings = self.doc.strings
        if strings is None:
            return False
        joined = "|".join(strings)
        if not joined.isprintable() or " " in joined or not RESERVED_ENV.isdisjoint(strings):
            return False
        if not joined.isascii() and CONTROL.search(joined):  # printable yet invisible: U+034F, U+3164
            return False
        if ("gh" in joined or "hub_pat_" in joined or "IA" in joined) and any(  # one search each; most lack all
                len(s) in PASTED_LENGTHS and pasted_credential(s) for s in strings):
            return False  # a credential pasted as a fromEnv name (or anywhere): the walk below looks
        valid = _compiled()
        return valid is not None and valid(value)

    # -- input hygiene: nothing a terminal or a CI log would interpret
    def hygiene(self, value: dict[str, Any]) -> set[tuple[str | int, ...]]:
        """Refuse control characters in every string (and key) of the document, and any
        whitespace in the fields that are single tokens. Returns the paths reported, so that
        the schema's patterns do not report them a second time."""
        found: set[tuple[str | int, ...]] = set()

        def walk(node: Any, path: tuple[str | int, ...]) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    p = (*path, k)
                    if isinstance(k, str) and CONTROL.search(k):
                        found.add(p)
                        m = CONTROL.search(k)
                        assert m is not None
                        self.add(
                            p,
                            f"{dotted(p)}: a key with the control character {describe(m.group())}",
                            "control-character",
                            key=True,
                        )
                        continue
                    walk(v, p)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, (*path, i))
            elif isinstance(node, str):
                m = CONTROL.search(node)
                if m is not None:
                    found.add(path)
                    self.add(
                        path,
                        f"{dotted(path)}: control character {describe(m.group())} at character "
                        f"{m.start() + 1}; control and invisible formatting characters "
                        "(newline, ESC, BEL, CR, bidirectional overrides) are not allowed",
                        "control-character",
                    )
                elif path and path[-1] in _TOKEN_FIELDS and _SPACE.search(node):
                    found.add(path)
                    self.add(path, f"{dotted(path)}: must not contain spaces", "whitespace")

        walk(value, ())
        return found

    def endpoint_credentials(self, spec: dict[str, Any]) -> set[tuple[str | int, ...]]:
        """``https://user:pass@host``: the one place that checks endpoints for userinfo. The
        endpoint is never quoted back (it holds a password)."""
        endpoint = spec.get("endpoint")
        if not isinstance(endpoint, str):
            return set()
        if _has_userinfo(endpoint):
            self.add(
                ("spec", "endpoint"),
                "spec.endpoint: credentials in an endpoint URL are a literal secret; "
                "use auth with fromEnv",
                "literal-secret",
            )
            return {("spec", "endpoint")}
        named = query_credentials(endpoint)
        if named:  # ?access_token=..., a SAS signature: named, never quoted
            self.add(
                ("spec", "endpoint"),
                f"spec.endpoint: the query parameter '{named[0]}' of the endpoint URL carries a credential, "
                "a literal secret in git; use auth with fromEnv",
                "literal-secret",
            )
            return {("spec", "endpoint")}
        return set()

    # -- secrets
    def literal_secrets(self, value: dict[str, Any]) -> set[tuple[str | int, ...]]:
        found: set[tuple[str | int, ...]] = set()

        def walk(node: Any, path: tuple[str | int, ...]) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    p = (*path, k)
                    if k in SECRET_FIELDS and not isinstance(v, dict) and v is not None:
                        found.add(p)
                        self.add(
                            p,
                            f"{dotted(p)}: literal secret; write {{fromEnv: NAME}} or "
                            "{fromFile: PATH} instead",
                            "literal-secret",
                        )
                    elif k in SECRET_FIELDS and isinstance(v, dict) and isinstance(v.get("fromEnv"), str) \
                            and v["fromEnv"] in RESERVED_ENV:
                        self.add(
                            (*p, "fromEnv"),
                            f"{dotted(p)}: {v['fromEnv']} is reserved for reconcile and CI; "
                            "it is never sent as a registry secret",
                            "reserved-secret",
                        )
                    elif k in SECRET_FIELDS and isinstance(v, dict) and isinstance(v.get("fromEnv"), str) \
                            and (what := pasted_credential(v["fromEnv"])):
                        found.add((*p, "fromEnv"))
                        self.add(
                            (*p, "fromEnv"),
                            f"{dotted(p)}.fromEnv: this is {what}, not the name of an "
                            "environment variable (the value is not shown): revoke it, put the new one in a "
                            "variable (a CI secret) and name that",
                            "pasted-secret",
                        )
                    else:
                        walk(v, p)
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, (*path, i))

        walk(value.get("spec"), ("spec",))
        return found

    # -- JSON Schema
    def schema(self, value: dict[str, Any], literal: set[tuple[str | int, ...]]) -> None:
        valid = _compiled()
        if valid is not None and valid(value):
            return  # the compiled schema accepts it: so would jsonschema (test_fastschema.py)
        errors = list(_validator().iter_errors(value))  # jsonschema words the errors
        if not errors:
            return
        self.suppressed = literal
        self.suggested: set[tuple[tuple[str | int, ...], str]] = set()
        self.reported: set[tuple[tuple[str | int, ...], str]] = set()
        # unknown fields first: a near miss ('pasword') explains a missing 'password'
        errors.sort(key=lambda e: e.validator != "additionalProperties")
        for error in errors:
            path = tuple(error.absolute_path)
            if any(path[: len(lp)] == lp for lp in literal):
                continue  # already reported as a literal secret
            self.schema_error(error, path)

    def schema_error(self, error: Any, path: tuple[str | int, ...]) -> None:
        v = error.validator
        inst = error.instance
        sch = error.schema if isinstance(error.schema, dict) else {}
        rule = sch.get("x-rule", "schema")
        where = dotted(path) or "document"
        if v == "additionalProperties" and isinstance(inst, dict):
            allowed = list(sch.get("properties", {}))
            for extra in inst:
                if extra in allowed:
                    continue
                hint = did_you_mean(str(extra), allowed)
                if hint:
                    self.suggested.add((path, hint.split("'")[1]))
                p = (*path, extra)
                if p in self.suppressed:  # a key already refused for its characters
                    continue
                if path and path[-1] in SECRET_FIELDS and not hint and not _REF_LIKE.fullmatch(str(extra)):
                    # it may be a secret pasted as a key ('fromFil' or 'fromVault' is not)
                    self.add(p, f"{dotted(path)}: unknown field (not shown, in case it is a pasted secret); "
                                "a secret is {fromEnv: NAME} or {fromFile: PATH}", "unknown-field", key=True)
                    continue
                self.add(p, f"{dotted(p)}: unknown field{hint}", "unknown-field", key=True)
            return
        if v == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            if (path, missing) not in self.suggested:
                self.add(path, f"{where}: missing required field '{missing}'", rule, key=bool(path))
            return
        if v == "enum":
            options = ", ".join(str(o) for o in error.validator_value)
            hint = did_you_mean(inst, error.validator_value) if isinstance(inst, str) else ""
            self.add(path, f"{where}: {show(inst)} is not one of {options}{hint}", rule)
            return
        if v == "const":
            self.add(
                path, f"{where}: must be {show(error.validator_value)}, not {show(inst)}", rule
            )
            return
        if v == "type":
            expected = error.validator_value
            names = " or ".join(
                _TYPE_NAMES.get(t, t)
                for t in ([expected] if isinstance(expected, str) else expected)
            )
            self.add(
                path,
                f"{where}: expected {names}, got {_type_of(inst)}"
                + (
                    f" {show(inst)}"
                    if isinstance(inst, (str, int, float)) and not isinstance(inst, bool)
                    and not any(x in SECRET_FIELDS for x in path if isinstance(x, str))  # may be a secret
                    else ""
                ),
                rule,
            )
            return
        if v == "maxLength" and isinstance(inst, str):
            self.add(
                path,
                f"{where}: too long ({len(inst)} characters; at most {error.validator_value})",
                rule,
            )
            return
        custom = sch.get("x-message")
        if custom and v in ("pattern", "minLength", "maxLength", "minProperties", "maxProperties"):
            if (path, custom) in self.reported:
                return
            self.reported.add((path, custom))
            shown = f", not {show(inst)}" if v == "pattern" else ""
            if shown and path[-1:] == ("fromEnv",):
                # a secret pasted where its variable's name belongs: never echo it
                shown = " (the value is not shown: it may be a pasted secret)"
            self.add(path, f"{where}: {custom}{shown}", rule)
            return
        if v == "minLength" and error.validator_value == 1:
            self.add(path, f"{where}: must not be empty", rule)
            return
        if v == "minimum":
            self.add(
                path, f"{where}: must be at least {error.validator_value}, not {show(inst)}", rule
            )
            return
        if v == "uniqueItems":
            self.add(path, f"{where}: items must be unique", rule)
            return
        self.add(path, f"{where}: {error.message}", rule)

    # -- Palette's OCI rules (the API, the Terraform provider and the docs state these)
    def oci_rules(self, spec: dict[str, Any], reported: set[tuple[str | int, ...]]) -> None:
        auth: dict[str, Any] = spec["auth"] if isinstance(spec.get("auth"), dict) else {}
        auth_type = auth.get("type", "noAuth")
        provider = spec.get("provider", "helm")
        sync = spec.get("sync", False)
        endpoint = spec.get("endpoint")
        base = spec.get("baseContentPath")
        base = base if isinstance(base, str) and ("spec", "baseContentPath") not in reported else None
        if provider == "zarf" and auth_type == "ecr":
            self.add(
                ("spec", "provider"),
                "spec.provider: 'zarf' is only allowed on basic OCI registries "
                "(auth.type noAuth or basic), not with ecr",
                "zarf-auth",
            )
        if provider == "pack" and sync is not True:
            at = ("spec", "sync") if "sync" in spec else ("spec", "provider")
            self.add(at, "spec.provider: 'pack' requires sync: true", "pack-sync")
        if auth_type == "ecr" and "basePath" in spec:
            # spec v1EcrRegistrySpec has no basePath (only v1BasicOciRegistrySpec; TF
            # endpoint_suffix exists for basic registries only): it would be dropped silently
            self.add(("spec", "basePath"), "spec.basePath: only basic OCI registries have a basePath; an ECR "
                     "registry's repository goes in baseContentPath", "ecr-base-path", key=True)
        # DOCS (oci-registry, packs): for provider pack an empty base path means
        # <endpoint>/spectro-packs, so only the other providers need one to sync
        if sync is True and provider != "pack" and not (base or "").strip() and (
            ("spec", "baseContentPath") not in reported
        ):
            at = ("spec", "baseContentPath") if "baseContentPath" in spec else ("spec", "sync")
            self.add(
                at,
                "spec.baseContentPath: required when sync is on",
                "base-content-path",
            )
        if base:
            paths = base.split(",")
            if any(not p.strip("/") for p in paths):
                self.add(
                    ("spec", "baseContentPath"),
                    "spec.baseContentPath: an empty item in the comma-separated list of base paths",
                    "base-content-path",
                )
            elif provider == "pack" and any("spectro-packs" in p.split("/") for p in paths):
                self.add(
                    ("spec", "baseContentPath"),
                    "spec.baseContentPath: Palette adds 'spectro-packs' itself for provider: pack "
                    "(an empty baseContentPath means <endpoint>/spectro-packs); do not include it",
                    "pack-base-path",
                    severity="warning",
                )
        if not isinstance(endpoint, str) or ("spec", "endpoint") in reported:
            return
        scheme, sep, rest = endpoint.partition("://")
        if not sep:
            scheme, rest = "", endpoint
        if scheme.lower() == "oci":
            # DOCS (oci-registry): the endpoint is a registry host, never an oci:// reference
            self.add(
                ("spec", "endpoint"),
                f"spec.endpoint: an OCI endpoint is a host (and optional path), not an oci:// "
                f"URL; write {rest!r}",
                "oci-endpoint",
            )
            return
        if auth_type == "ecr" or _ECR_HOST.search(endpoint):
            # DOCS (add OCI packs, ECR): "Exclude the https:// prefix"; the repository goes
            # in the base content path. TF toRegistryEcr sends endpoint as given.
            host, _, path = rest.partition("/")
            path = path.strip("/")
            if path:
                what = "no scheme and no repository path" if scheme else "no repository path"
                self.add(
                    ("spec", "endpoint"),
                    f"spec.endpoint: ECR endpoints carry {what}; write {host!r} and put "
                    f"{path!r} in baseContentPath",
                    "ecr-endpoint",
                )
            elif scheme:
                self.add(
                    ("spec", "endpoint"),
                    f"spec.endpoint: ECR endpoints carry no scheme; write {host!r}",
                    "ecr-endpoint",
                )


    def endpoint_host(self, spec: dict[str, Any], kind: str | None, reported: set[tuple[str | int, ...]]) -> None:
        """A host and port that a URL parser, and then the resolver, can read: a port out of
        range, an unclosed ``[`` or a host label that is empty (``a..b``) or over 63
        characters is said here, not met by the sync or the preflight as an exception."""
        endpoint = spec.get("endpoint")
        if not isinstance(endpoint, str) or ("spec", "endpoint") in reported:
            return
        if _plain_host(endpoint):
            return
        scheme, sep, _ = endpoint.partition("://")
        if (sep and scheme.lower() not in ("http", "https")) or (not sep and kind != "OciRegistry"):
            return  # oci:// or no scheme where one is needed: the schema and oci_rules say it
        problem = _host_problem(endpoint if sep else f"https://{endpoint}")
        if problem is None:
            return
        # positions only now: asking one parses the file again (they are kept lazy, issue #11)
        at = self.doc.position(("spec", "endpoint"))
        if any((p.line, p.col) == at for p in self.problems):
            return  # the schema said it already (too long, a space, ...)
        self.add(("spec", "endpoint"), f"spec.endpoint: {problem}", "endpoint-host")


def _host_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the host in [brackets] is not a valid IPv6 address"
    try:
        _ = parts.port  # reading it raises ValueError for a port out of range or not a number
    except ValueError:
        port = parts.netloc.rpartition("]")[2].rpartition(":")[2]
        return f"the port {escape(port)!r} is not a number from 0 to 65535"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if ":" in host:  # an IPv6 address, checked by urlsplit
        return None
    if _IPV4_STYLE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{escape(host)!r} is not a valid IPv4 address"
        return None
    if host.isascii():
        try:
            host.encode("idna")  # what the resolver does with it: labels of 1-63 characters
        except UnicodeError:
            return f"the host name {escape(host)!r} has an empty label or one longer than 63 characters"
        if not host.lower().startswith("xn--"):
            return None
    # and what the HTTP client does (httpx: IDNA 2008 for a name that is not ASCII, which checks
    # the lengths of its labels too, and a leading xn-- label decoded): a host it refuses could
    # never be synced or probed. Not Python's "idna" codec for such a name: it is IDNA 2003 and
    # refuses names IDNA 2008 takes (a right-to-left label ending in a digit)
    import idna  # only for such a name: 1.4 ms of tables

    try:
        if not host.isascii():
            idna.encode(host.lower())
        elif host.lower().startswith("xn--"):
            idna.decode(host)
    except (idna.IDNAError, UnicodeError):
        return f"the host name {escape(host)!r} is not a valid internationalised domain name (IDNA 2008)"
    return None


def _has_userinfo(endpoint: str) -> bool:
    """Whether the authority of ``endpoint`` (scheme optional) holds ``user[:pass]@``."""
    return split_userinfo(endpoint)[1] is not None


# --------------------------------------------------------------------------- the whole run


def _raw(p: RawProblem) -> Problem:
    return Problem(p.file, p.line, p.col, p.message, p.severity, p.rule)


def _where(doc: Document, path: Sequence[str | int] = ()) -> str:
    line, _ = doc.position(path)
    return f"{doc.file}:{line}"


def discover_sources(
    root: Path, paths: Sequence[Path] | None, ref: str | None
) -> tuple[list[loader.SourceFile], list[Problem], Callable[[], tuple[str | None, bool]]]:
    """The files to read, the problems met finding them, and where they come from: a
    function giving (commit, dirty), which asks git of a work tree only when called."""
    if ref is not None:
        sources, raw, commit = loader.discover_git(root, ref, paths)
        return sources, [_raw(p) for p in raw], lambda: (commit, False)
    sources, raw = loader.discover(root, paths)
    return sources, [_raw(p) for p in raw], lambda: loader.git_info(root)


def check_file(src: loader.SourceFile) -> tuple[list[Problem], list[_Checked]]:
    """One file through the pipeline: the loader yields its documents (positions on demand),
    and each is checked, schema and policy in one pass. Knows nothing of any cache."""
    loaded = loader.load_file(src)
    problems = [_raw(p) for p in loaded.problems]
    checked = [_Checker(doc).run() for doc in loaded.documents]
    for c in checked:
        problems.extend(c.problems)
    return problems, checked


def _restore(src: loader.SourceFile, entry: list[Any], text: Callable[[], str]) -> list[_Checked]:
    checked = []
    source = loader.Reparse(text)
    for index, value, hints in entry:
        doc = Document.from_source(src.name, index, value, hints, source)
        kind = value.get("kind") if isinstance(value.get("kind"), str) else None
        checked.append(_Checked(doc, kind, [], True))
    return checked


def _cached_check_file(
    src: loader.SourceFile, cache: ValidationCache
) -> tuple[list[Problem], list[_Checked]]:
    """``check_file`` wrapped by the validation cache: the one place the cache is consulted.

    Keyed by content (a digest of the bytes and the display name); a work-tree file whose
    (size, mtime, inode, ctime) match is not even read (git's index does the same). Only
    files with no problem at all are stored, and a hit gives documents whose positions are
    found by parsing the file again, if ever asked for."""
    if src.pending_stat and not cache.empty:  # a cold cache compares no stat
        problem = loader.stat_source(src)
        if problem is not None:
            return [_raw(problem)], []
    stat_key = cache.stat_key(src.name, src.size, src.stamp) if src.stamp and src.path else None
    if stat_key is not None:
        entry = cache.get_by_stat(stat_key)
        if entry is not None:
            path = src.path

            def reread() -> str:
                data, _ = loader.read_source(loader.SourceFile(src.name, path=path, size=src.size))
                return (loader.decode(src.name, data)[0] or "") if data else ""

            return [], _restore(src, entry, reread)
    data, problem = loader.read_source(src)
    if problem is not None or data is None:
        return [_raw(problem)] if problem else [], []
    key = cache.key(src.name, data)
    entry = cache.get(key)
    if entry is not None:
        cache.alias(stat_key, key, src.stamp)
        return [], _restore(src, entry, lambda: loader.decode(src.name, data)[0] or "")
    problems, checked = check_file(loader.SourceFile(src.name, data=data, size=len(data)))
    if not problems and all(c.ok for c in checked):
        cache.put(key, lambda: [(c.doc.index, c.doc.value, c.doc.flat_hints()) for c in checked])
        cache.alias(stat_key, key, src.stamp)
    return problems, checked


def load_and_validate(
    root: Path,
    *,
    paths: Sequence[Path] | None = None,
    ref: str | None = None,
    profile: str | None = None,
    keep: list[Any] | None = None,
) -> LoadResult:
    """Read, validate and return every problem; ``desired`` holds the valid registries only.

    ``keep``: a list the checked documents are added to instead of being freed on return,
    for a process that ends without freeing anything (``lifetime.hold_until_exit``).
    Raises ``InputError`` only for an unusable request (unknown profile, bad ``ref``).
    """
    if profile is not None and profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    root = Path(root)
    sources, problems, origin = discover_sources(root, paths, ref)
    failed: set[str] = {p.file for p in problems if p.severity == "error"}
    checked: list[_Checked] = []
    cache = ValidationCache.for_root(root, tracked=loader.tracked_by_git)
    problems.extend(Problem(where, 0, 0, w, "warning", "cache") for where, w in cache.warnings)
    for src in sources:
        file_problems, file_checked = _cached_check_file(src, cache)
        problems.extend(file_problems)
        if any(p.severity == "error" for p in file_problems):
            failed.add(src.name)
        checked.extend(file_checked)
    cache.save()

    def fail(
        c: _Checked, path: Sequence[str | int], message: str, rule: str, *, key: bool = False
    ) -> None:
        line, col = c.doc.position(path, key=key)
        problems.append(Problem(c.doc.file, line, col, message, "error", rule))
        c.ok = False

    # Settings: at most one
    settings = Settings()
    first_settings: _Checked | None = None
    for c in checked:
        if c.kind != "Settings":
            continue
        if first_settings is not None:
            fail(
                c,
                ("kind",),
                f"a second Settings document (the first is at {_where(first_settings.doc)}); "
                "at most one is allowed",
                "settings-count",
            )
            continue
        first_settings = c
        line, col = c.doc.start
        spec = c.doc.value.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        if c.ok:
            try:
                settings = settings_from_spec(spec, Span(c.doc.file, line, col))
            except ValueError as exc:
                fail(c, ("spec",), f"spec: {exc}", "schema", key=True)
            for i, secret_root in enumerate(settings.secret_roots):
                why = root_problem(secret_root)
                if why:  # "/" spelled "//", "/." or "/tmp/..", or a link to it: every file
                    fail(c, ("spec", "secretRoots", i), f"spec.secretRoots[{i}]: {show(secret_root)} {why}; list the "
                         "directory that holds the files (e.g. /run/secrets)", "secret-roots")
        if not c.ok and spec.get("profile") in PROFILES:
            # keep the profile of a broken Settings so its policy still applies
            settings = Settings(profile=spec["profile"], source=Span(c.doc.file, line, col))
    effective = profile or settings.profile
    if profile is not None and profile != settings.profile:
        settings = Settings(
            profile,
            settings.allow_non_fips,
            settings.sync_interval_seconds,
            settings.max_deletions,
            settings.source,
            settings.secret_roots,
        )

    defaults = default_keys(effective)
    defaults_folded = {(k, unicodedata.normalize("NFKC", n).casefold()): n for k, n in defaults}
    registries: list[Registry] = []
    seen: dict[tuple[str, str], _Checked] = {}
    similar: dict[tuple[str, str], _Checked] = {}  # (scope, name folded: case, NFKC) -> first
    declared = 0
    for c in checked:
        if c.kind not in KINDS:
            continue
        declared += 1
        value = c.doc.value
        meta = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
        spec = value.get("spec") if isinstance(value.get("spec"), dict) else {}
        name = meta.get("name")
        scope = meta.get("scope", "tenant")
        if c.kind == "PackRegistry":
            line, col = c.doc.position(("kind",))
            problems.append(
                Problem(
                    c.doc.file,
                    line,
                    col,
                    "PackRegistry is legacy; an OciRegistry with provider: pack is recommended",
                    "warning",
                    "legacy-pack",
                )
            )
        if isinstance(name, str) and not name.isascii() and not unicodedata.is_normalized("NFC", name):
            # adversarial pass 6, item 7: the same-looking name in decomposed form is another name
            # (a file saved by another editor would be planned as a delete and a create)
            marks = ", ".join(dict.fromkeys(f"U+{ord(ch):04X}" for ch in name if unicodedata.combining(ch)))
            fail(c, ("metadata", "name"),
                 f"metadata.name: not in Unicode NFC form (combining {marks or 'characters'}): "
                 "it looks like its composed form but is another name; write it composed (NFC)", "name-form")
        if isinstance(name, str) and scope in SCOPES:
            folded = name.lower() if name.isascii() else unicodedata.normalize("NFKC", name).casefold()
            alike = similar.setdefault((scope, folded), c)
            if alike is not c and alike.doc.value.get("metadata", {}).get("name") != name:
                line, col = c.doc.position(("metadata", "name"))
                problems.append(Problem(
                    c.doc.file, line, col,
                    f"metadata.name {show(name)} differs from {show(alike.doc.value['metadata']['name'])} (at "
                    f"{_where(alike.doc, ('metadata', 'name'))}) only in letter case or character forms: a reviewer "
                    "cannot tell them apart, and Palette may take them for one name", "warning", "similar-name"))
            other = seen.get((scope, name))
            if other is not None:
                fail(
                    c,
                    ("metadata", "name"),
                    f"duplicate registry name {name!r} in scope {scope} "
                    f"(also defined at {_where(other.doc, ('metadata', 'name'))})",
                    "duplicate-name",
                )
            else:
                seen[(scope, name)] = c
            if (c.kind, name) in defaults:
                fail(
                    c,
                    ("metadata", "name"),
                    f"{c.kind} {name!r} collides with a built-in default registry "
                    f"of profile {effective} (defaults are read-only)",
                    "default-collision",
                )
            elif defaults_folded.get((c.kind, folded), name) != name:
                # adversarial pass 7, item 2: 'bitnami', 'Ｂitnami' (fullwidth) read like the
                # built-in 'Bitnami' in a plan; a create under such a name is a spoof
                fail(
                    c,
                    ("metadata", "name"),
                    f"metadata.name {show(name)} differs from the built-in default registry "
                    f"{defaults_folded[(c.kind, folded)]!r} of profile {effective} only in letter case or "
                    "character forms; choose a name a reviewer can tell apart",
                    "default-collision",
                )
        if scope == "system" and effective not in SYSTEM_SCOPE_PROFILES:
            # DOCS (registries.md): system-level registries are added through the system
            # console of self-hosted Palette or VerteX; on SaaS every registry is tenant scope
            fail(
                c,
                ("metadata", "scope"),
                f"metadata.scope: system scope exists only on self-hosted Palette and VerteX "
                f"(profile {effective}: every registry is tenant scope)",
                "system-scope",
            )
        if effective == "vertex":
            _vertex_rules(c, spec, scope, settings.allow_non_fips, fail)
        _secret_rules(c, spec, root, settings.secret_roots, fail)
        if c.ok:
            line, col = c.doc.start
            strings = c.doc.strings  # every key and string of the document, when the loader kept them
            registries.append(declared_registry(
                c.kind, str(name), scope, canonical_spec(c.kind, spec), bool(meta.get("protect", False)),
                span(c.doc.file, line, col),
                no_secrets=strings is not None and "fromEnv" not in strings and "fromFile" not in strings))

    for c in checked:
        if not c.ok:
            failed.add(c.doc.file)
    if keep is not None:
        keep.append((sources, checked, cache))
    problems.sort(key=lambda p: (p.file, p.line, p.col, p.severity, p.message))
    problems = list(dict.fromkeys(problems))  # same problem twice (e.g. via an alias): once
    return LoadResult(
        desired=Desired(registries=registries, settings=settings, origin=origin),
        problems=problems,
        failed_files=failed,
        files=[s.name for s in sources],
        declared=declared,
        profile=effective,
    )


def _vertex_rules(
    c: _Checked, spec: dict[str, Any], scope: Any, allow_non_fips: bool, fail: Any
) -> None:
    # DOCS (vertex add-registry): once the tenant allows non-FIPS packs ("Allow non-FIPS
    # packs", fipsPackConfig), non-FIPS registries may be added at tenant or system level
    if spec.get("fips", False) is not True and not allow_non_fips:
        at = ("spec", "fips") if "fips" in spec else ("spec",)
        fail(
            c,
            at,
            "vertex: registries must be fips: true (or set allowNonFips: true in Settings)",
            "vertex-fips",
            key=at == ("spec",),
        )
    tls = spec.get("tls")
    if isinstance(tls, dict) and tls.get("insecureSkipVerify") is True:
        fail(
            c,
            ("spec", "tls", "insecureSkipVerify"),
            "vertex: insecureSkipVerify is not allowed",
            "vertex-insecure",
        )
    endpoint = spec.get("endpoint")
    if (
        c.kind != "PackRegistry"  # the schema already refuses http:// for legacy Pack
        and isinstance(endpoint, str)
        and endpoint.lower().startswith("http://")
    ):
        fail(
            c,
            ("spec", "endpoint"),
            "vertex: plain http:// endpoints are not allowed; use https://",
            "vertex-http",
        )


def _secret_rules(c: _Checked, spec: dict[str, Any], root: Path, roots: Sequence[str], fail: Any) -> None:
    """Files a definition names (issue 9: items 6, 12); credentials inside endpoints (item 10)
    are checked in one place, ``_DocChecker.endpoint_credentials``.

    Not cached with the document: whether a path is a FIFO or leaves the repository through a
    symbolic link depends on the file system now, not on the file's bytes."""

    strings = c.doc.strings
    if strings is not None and "fromFile" not in strings and "caFile" not in strings:
        return  # every key of the document is in its strings: it names no file

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if not isinstance(node, dict):
            return
        for k, v in node.items():
            p = (*path, k)
            if k in SECRET_FIELDS and isinstance(v, dict) and isinstance(v.get("fromFile"), str):
                check((*p, "fromFile"), v["fromFile"], MAX_SECRET_FILE)
            elif k == "caFile" and path[-1:] == ("tls",) and isinstance(v, str):
                check(p, v, MAX_CA_FILE)
            elif isinstance(v, dict):
                walk(v, p)

    def check(p: tuple[str | int, ...], ref: str, limit: int) -> None:
        problem = path_problem(ref, root, roots, limit=limit)
        if problem:
            fail(c, p, f"{dotted(p)}: {show(ref)} {problem}", "file-reference")

    walk(spec, ("spec",))
