"""Preflight probes for one registry: one line per failed check, nothing on success.

Checks, in order (a failed check stops the ones that depend on it):
1. the configuration is usable (secret values present, ``tls.caFile`` readable);
2. the endpoint's host resolves;
3. it answers, TLS verifies with the given CA, the credentials are accepted (a real
   request: ``index.yaml`` for Helm, ``/v2/`` for OCI, the endpoint for Pack);
4. content: OCI repositories exist under each path of ``baseContentPath`` (several comma
   separated; ``spectro-packs`` for ``provider: pack`` with an empty one), one line per
   path with none; Helm ``requiredCharts`` exist at the given versions (``v1.2.3`` and
   ``1.2.3`` are taken as the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.content import helm, oci, pack
from reconciler.content.http import ProbeError, build_access, check_resolves, make_client
from reconciler.errors import redact


def run(
    kind: str, spec: Mapping[str, Any], secrets: Mapping[str, str], *, base_dir: Path
) -> list[str]:
    values = tuple(v for v in secrets.values() if v)
    try:
        if kind == "HelmRegistry":
            return _helm(spec, secrets, base_dir)
        if kind == "OciRegistry":
            return _oci(spec, secrets, base_dir)
        if kind == "PackRegistry":
            return _pack(spec, secrets, base_dir)
    except ProbeError as exc:
        return [redact(str(exc), values)]
    raise ValueError(f"unknown registry kind {kind!r}")


def _helm(spec: Mapping[str, Any], secrets: Mapping[str, str], base_dir: Path) -> list[str]:
    url = helm.index_url(spec)
    access = build_access(spec, secrets, base_dir, https=url.startswith("https://"))
    check_resolves(url)
    charts = helm.probe(spec, secrets, base_dir=base_dir, access=access)
    lines = []
    for req in spec.get("requiredCharts") or []:
        name = str(req.get("name", ""))
        version = req.get("version")
        have = {e.version for e in charts.get(name, ())}
        if version in (None, ""):
            if not have:
                lines.append(f"required chart {name} not found in {url}")
            continue
        wanted = {
            str(version),
            str(version).removeprefix("v"),
            "v" + str(version).removeprefix("v"),
        }
        if not have & wanted:
            lines.append(f"required chart {name}@{version} not found in {url}")
    return lines


def _oci(spec: Mapping[str, Any], secrets: Mapping[str, str], base_dir: Path) -> list[str]:
    endpoint = oci.parse_endpoint(str(spec.get("endpoint") or ""))
    check_resolves(endpoint.base)
    if (spec.get("auth") or {}).get("type") == "ecr":
        return []  # ECR credentials need AWS: only the resolution is probed locally
    access = build_access(spec, secrets, base_dir, https=endpoint.https)
    paths = oci.base_prefixes(endpoint, spec)
    prefixes = [prefix for _, prefix in paths]
    with oci.Distribution(endpoint, access, workers=1) as dist:
        dist.ping()
        try:
            repos = dist.catalog(prefixes)  # one paging of the catalog for every path
        except ProbeError as exc:
            if exc.status not in (401, 403, 404) or not all(prefixes):
                raise
            repos = [prefix for prefix in prefixes if dist.tags(prefix)]
    return [
        f"no content under {oci.describe_path(path, spec)} at {endpoint.base}"
        for path, _ in oci.missing_prefixes(paths, repos)
    ]


def _pack(spec: Mapping[str, Any], secrets: Mapping[str, str], base_dir: Path) -> list[str]:
    url = pack.base_url(spec)
    access = build_access(spec, secrets, base_dir, https=url.startswith("https://"))
    check_resolves(url)
    with make_client(access, pool=1) as client:
        pack.check(client, url, access.secrets)
    return []
