"""``reconcile export``: definitions for the registries a tenant already has.

Most teams start with registries clicked together in the Palette UI. ``export`` writes a
definition for every registry on the target that is neither built-in nor already declared,
so the next plan only adopts them. Secrets are never read back (Palette masks them): each
secret field becomes ``{fromEnv: REG_<NAME>_<FIELD>}`` under a deterministic name, and the
names are printed at the end. Credentials typed into an endpoint URL (``https://user:pw@host``)
are never written: the endpoint is exported without them, and the user name becomes basic
auth whose password is such a reference, where the registry has no other auth. A CA
certificate the target reports is written to a file beside the output and referenced by
``tls.caFile``.

The pure part (``export_docs``) turns observed registries into documents; the command
wires loading, the target and the writes, and never overwrites a file without ``--force``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

import yaml

from reconciler.errors import InputError
from reconciler.model import (
    SECRET_FIELDS,
    Key,
    ObservedRegistry,
    is_secret_ref,
    key_str,
    query_credentials,
    split_userinfo,
    without_query_credentials,
)
from reconciler.text import CONTROL, escape

DEFAULT_OUT = Path("registries.d") / "exported.yaml"
HEADER = (
    "# yaml-language-server: $schema={schema}\n"
    "# Written by `reconcile export` from {target}.\n"
    "# Secrets are references: set {count} before applying.\n"
)
# The secret fields each auth type carries, by dotted path under spec.auth.
_SECRET_PATHS = {
    "basic": ("password",),
    "token": ("token",),
}
_FIELD_SUFFIX = {"password": "PASSWORD", "token": "TOKEN", "secretKey": "SECRET_KEY"}
# The order fields are written in (as in the README's examples); others follow, sorted.
_ORDER = ("endpoint", "provider", "baseContentPath", "basePath", "sync", "type", "username", "password", "token",
          "credentials", "credentialType", "accessKey", "secretKey", "arn", "externalId", "auth", "tls", "caFile",
          "insecureSkipVerify", "fips")


def _ordered(value: Any) -> Any:
    if isinstance(value, Mapping):
        rank = {k: i for i, k in enumerate(_ORDER)}
        return {k: _ordered(value[k]) for k in sorted(value, key=lambda k: (rank.get(k, len(rank)), k))}
    return value


@dataclass
class ExportResult:
    docs: list[dict[str, Any]] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)  # (variable, "Kind/name spec.auth.field")
    ca_files: dict[str, str] = field(default_factory=dict)  # repo-relative path -> PEM
    warnings: list[str] = field(default_factory=list)  # for the terminal: target names escaped, no secret


def env_base(scope: str, name: str) -> str:
    """``REG_<NAME>`` (``REG_SYSTEM_<NAME>`` at system scope): upper case, runs of other
    characters as one ``_``."""
    stem = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "REGISTRY"
    return f"REG_SYSTEM_{stem}" if scope == "system" else f"REG_{stem}"


def _clean_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The observed canonical spec without defaults the format fills anyway and without any
    secret field (a target never returns values; a masked ``abc***def`` must never be kept)."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k in SECRET_FIELDS or is_secret_ref(v):
            continue
        if isinstance(v, Mapping):
            v = _clean_spec(v)
        out[k] = v
    tls = out.get("tls")
    if isinstance(tls, dict):
        if tls.get("insecureSkipVerify") is False:
            tls.pop("insecureSkipVerify")
        tls.pop("ca", None)
        if not tls:
            out.pop("tls")
    if out.get("fips") is False:
        out.pop("fips")
    return out


def _endpoint_credentials(o: ObservedRegistry, spec: dict[str, Any], auth: dict[str, Any], base: str,
                          result: ExportResult) -> dict[str, Any]:
    """``spec.endpoint`` without the credentials typed into it (``https://user:pw@host``), and
    the auth to export: basic for that user where the registry has none (all three kinds take
    basic auth; its password is then named like any other), else ``auth`` unchanged. The
    password is never kept, and a warning says what to set."""
    endpoint = spec.get("endpoint")
    if not isinstance(endpoint, str):
        return auth
    title = escape(key_str(o.key))
    named = query_credentials(endpoint)
    if named:  # ?token=...: no auth of ours carries it, so it is left out and said so
        endpoint = spec["endpoint"] = without_query_credentials(endpoint)
        result.warnings.append(f"{title}: the credentials in its endpoint URL's query ({escape(', '.join(named))}) "
                               "were left out; the registry may need them: check spec before applying")
    bare, userinfo = split_userinfo(endpoint)
    if userinfo is None:
        return auth
    spec["endpoint"] = bare
    user = unquote(userinfo.split(":", 1)[0])
    usable = 0 < len(user) <= 255 and not CONTROL.search(user) and not any(c.isspace() or c == "/" for c in user)
    atype = auth.get("type", "noAuth")
    if atype != "noAuth" or not usable:
        why = f"it has {escape(str(atype))} auth" if atype != "noAuth" else "no usable user name in it"
        result.warnings.append(f"{title}: the credentials in its endpoint URL were left out ({why}); "
                               "check spec.auth before applying")
        return auth
    result.warnings.append(f"{title}: the credentials in its endpoint URL became basic auth for user {user!r}; "
                           f"set {base}_{_FIELD_SUFFIX['password']} to the password (it was not written)")
    return {"type": "basic", "username": user}


_CA_STEM_MAX = 96  # of a file name's 255 bytes: room for "-system", "-N" and ".pem", and more


def _ca_stem(name: str) -> str:
    """A CA file's name for a registry: its name cleaned to ``[A-Za-z0-9._-]``, and a long one
    (a name may have 253 characters, a file name at most 255 bytes) cut, with a digest of the
    whole name so that two long names sharing a beginning keep two files."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    if len(clean) <= _CA_STEM_MAX:
        return clean
    return f"{clean[:_CA_STEM_MAX - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def export_docs(observed: Iterable[ObservedRegistry], declared: Iterable[Key], *, ca_dir: str) -> ExportResult:
    """Documents for every observed registry that is neither built-in nor declared.

    A CA PEM the target reported (``ca_pem``) is written under ``ca_dir`` (repo-relative)."""
    skip = set(declared)
    todo = sorted((o for o in observed if not o.builtin and o.key not in skip),
                  key=lambda o: (o.kind, o.scope, o.name))
    result = ExportResult()
    used: set[str] = set()
    used_ca: set[str] = set()  # CA file names given, case-folded
    for o in todo:
        base = env_base(o.scope, o.name)
        if base in used:  # e.g. "a-b" and "a_b": deterministic, in sorted order
            n = 2
            while f"{base}_{n}" in used:
                n += 1
            base = f"{base}_{n}"
        used.add(base)
        spec = _clean_spec(o.spec)
        auth = _endpoint_credentials(o, spec, dict(spec.get("auth") or {"type": "noAuth"}), base, result)
        atype = auth.get("type", "noAuth")
        for fname in _SECRET_PATHS.get(atype, ()):
            var = f"{base}_{_FIELD_SUFFIX[fname]}"
            auth[fname] = {"fromEnv": var}
            result.env.append((var, f"{key_str(o.key)} spec.auth.{fname}"))
        if atype == "ecr":
            creds = dict(auth.get("credentials") or {})
            if creds.get("credentialType") == "secret":
                var = f"{base}_SECRET_KEY"
                creds["secretKey"] = {"fromEnv": var}
                result.env.append((var, f"{key_str(o.key)} spec.auth.credentials.secretKey"))
            if creds:  # a public ECR has none
                auth["credentials"] = creds
            else:
                auth.pop("credentials", None)
        spec["auth"] = auth
        pem = o.ca_pem
        if pem:
            stem = f"{ca_dir}/{_ca_stem(o.name)}{'-system' if o.scope == 'system' else ''}"
            rel, n = f"{stem}.pem", 2
            # one file per registry: names that clean to the same file ("team a", "team-a";
            # "Team", "team" on a file system that ignores case) get -2, -3, in sorted order
            while rel.casefold() in used_ca:
                rel, n = f"{stem}-{n}.pem", n + 1
            used_ca.add(rel.casefold())
            result.ca_files[rel] = pem
            tls = dict(spec.get("tls") or {})
            tls["caFile"] = rel
            spec["tls"] = tls
        meta: dict[str, Any] = {"name": o.name}
        if o.scope != "tenant":
            meta["scope"] = o.scope
        result.docs.append({"apiVersion": "reconciler/v1", "kind": o.kind, "metadata": meta, "spec": _ordered(spec)})
    return result


def dump(result: ExportResult, *, schema: str, target: str) -> str:
    names = ", ".join(v for v, _ in result.env) if result.env else "none"
    head = HEADER.format(schema=schema, target=target.replace("\n", " "),
                         count=f"{len(result.env)} variable(s) ({names})" if result.env else "no variables")
    body = yaml.safe_dump_all(result.docs, sort_keys=False, default_flow_style=False, allow_unicode=False,
                              explicit_start=True, width=1000)
    return head + body


def _write_new(path: Path, text: str, force: bool) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # a new file of a name nobody could guess (O_CREAT | O_EXCL): a fixed ".name.tmp-PID" was
    # written through a symbolic link planted at that name (review, this round)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a file written directly would be (mkstemp makes it 0600)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not force:
        try:
            os.link(tmp, path)  # atomic "create if absent": never clobbers a file made meanwhile
        except FileExistsError:
            raise InputError(f"{path} exists; pass --force to overwrite it") from None
        finally:
            tmp.unlink()
        return
    os.replace(tmp, path)


def run_export(opts: Any, out_path: Path | None, force: bool, out: TextIO, err: TextIO) -> int:
    from reconciler.runner import _load, _print_problems, _target

    root = Path(opts.root)
    rel = out_path or DEFAULT_OUT
    path = rel if rel.is_absolute() else root / rel
    if path.suffix not in (".yaml", ".yml"):
        raise InputError(f"--out {rel}: the file must end in .yaml or .yml to be read as definitions")
    if path.exists() and not force:
        raise InputError(f"{rel} exists; pass --force to overwrite it")
    result = _load(opts)
    _print_problems(result, err, opts.quiet)
    if result.errors:
        err.write("fix the definitions first (export must know what is already declared); nothing was written\n")
        return 1
    resolved = path.resolve()
    declared = [r.key for r in result.desired.registries
                if not (r.source and (root / r.source.file).resolve() == resolved)]
    skip = set(declared)
    # read only: export changes nothing on the target (a local database is not even created)
    with _target(opts, result.desired.settings.profile, err, read_only=True) as target:
        # the full object of each (a list may carry a summary only); export_docs filters again
        observed = [target.get(o.kind, o.uid) for o in target.list() if not (o.builtin or o.key in skip)]
        description = target.description
    try:
        ca_dir = str(path.parent.resolve().relative_to(root.resolve()) / f"{path.stem}-ca")
    except ValueError:
        ca_dir = str(path.parent / f"{path.stem}-ca")
    exported = export_docs(observed, declared, ca_dir=ca_dir)
    if not exported.docs:
        out.write(f"nothing to export: every registry on {description} is built-in or declared\n")
        return 0
    schema = os.path.relpath(root.resolve() / "schema" / "registry.schema.json", path.parent.resolve())
    for rel_ca, pem in exported.ca_files.items():
        _write_new(root / rel_ca, pem, force)
    _write_new(path, dump(exported, schema=schema, target=description), force)
    for warning in exported.warnings:
        err.write(f"warning: {warning}\n")
    for doc in exported.docs:
        ca = (doc["spec"].get("tls") or {}).get("caFile")
        if ca and ca not in exported.ca_files and not (root / ca).is_file():
            err.write(f"warning: {escape(doc['kind'] + '/' + doc['metadata']['name'])}: tls.caFile {escape(ca)} is not "
                      "in this repository; copy the CA certificate there before applying\n")
    out.write(f"exported {len(exported.docs)} registr{'y' if len(exported.docs) == 1 else 'ies'} to {rel}\n")
    if exported.env:
        out.write("set these secrets (environment variables) before applying:\n")
        for var, what in exported.env:
            out.write(f"  {var}  ({escape(what)})\n")
    return 0


__all__ = ["DEFAULT_OUT", "ExportResult", "env_base", "export_docs", "run_export"]
