"""What the Palette target asks besides registries: cluster profiles that use a registry, and
the tenant's own FIPS policy.

Both take the target's request helper (``PaletteTarget._request``), so every call goes through
its rate limit, retries and deadline, and errors are the target's ``TargetError`` family. No
HTTP library is imported here.

Impact of a delete or a replace (a replace gives the registry a new uid): cluster profiles
reference packs by registry uid (``v1PackRef.registryUid``). We find them as
``../shared/reference/palette-behaviour.md`` ("What references a registry") describes:

* the projects from ``GET /v1/dashboard/projects/metadata`` (SDK ``GetProjects``);
* the profiles listed by ``POST /v1/dashboard/clusterprofiles`` once without a ``ProjectUid``
  header (tenant context) and once with each project's uid (project context: the SDK's
  ``ContextForScope(ctx, "project", uid)`` sets that header), paged with ``continue``;
* for each profile, ``GET /v1/clusterprofiles/{uid}`` in the context it was listed in:
  ``spec.published.packs[].registryUid``, ``spec.draft.packs[].registryUid``, and
  ``status.inUseClusters`` for the clusters using it. The summary list has no registry uid
  (``v1PackRefSummary``); ``GET /v1/clusterprofiles/{uid}/packs`` would cost the same one
  request per profile but its spec does not say whether it lists the draft's packs or the
  published ones, so we read the profile itself.
* every other version in ``spec.versions`` (each version is a profile with its own uid) is read
  too: a cluster may run an older version that still uses the registry. Whether the dashboard
  list shows every version or only the latest is unverified, so we read both ways and dedupe.

A profile seen in several listings (a project context may also list the tenant's profiles,
unverified) is reported once. Its project: the profile's ``metadata.annotations["scope"]``
when the server sets it (the provider's mock server does: ``getClusterProfileResponse`` in
terraform-provider-spectrocloud ``tests/mockApiServer/routes/mockClusterProfile.go``), else
the first listing that showed it, tenant first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.errors import NotFound, ServerError, TargetError
from reconciler.targets.base import ProfileRef, References

log = logging.getLogger("reconciler.palette")

PROJECTS_PATH = "/v1/dashboard/projects/metadata"
PROFILES_PATH = "/v1/dashboard/clusterprofiles"
PAGE_LIMIT = 50  # the spec's maximum for this list
MAX_PAGES = 400  # 20,000 profiles per context: past that, paging is broken, not long
MAX_PROFILES = 20000  # versions included; a bound on the detail reads, never reached in practice
#: a stable order makes offset/continue paging stable while profiles are added
PROFILES_QUERY: dict[str, Any] = {"sort": [{"field": "profileName", "order": "asc"}]}

USER_INFO_PATH = "/v1/users/info"
NON_FIPS_ENABLED = "nonFipsEnabled"
NON_FIPS_DISABLED = "nonFipsDisabled"  # the spec's default for v1NonFipsConfig.mode


class Request(Protocol):
    """``PaletteTarget._request_json``: rate-limited, retried, the answer's JSON object (an answer
    that is not one, HTML or a list, is a ``ServerError``); errors as ``TargetError``."""

    def __call__(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 json: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Context:
    project_uid: str | None  # None: tenant context (no ProjectUid header)
    project_name: str | None

    @property
    def headers(self) -> dict[str, str] | None:
        return {"ProjectUid": self.project_uid} if self.project_uid else None


def items_of(data: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """A list answer's ``items`` (every Palette list, registries too); anything but a list of
    objects is an error, never an empty list ("no profile uses it")."""
    items = data.get("items")
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ServerError(f"palette: {what}: 'items' is not a list of objects")
    return items


def _projects(request: Request) -> list[_Context]:
    data = request("GET", PROJECTS_PATH)
    out = []
    for item in items_of(data, f"GET {PROJECTS_PATH}"):
        meta = item.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if uid:
            out.append(_Context(uid, str(meta.get("name") or uid)))
    return out


def _listed_profiles(request: Request, ctx: _Context) -> Iterator[dict[str, Any]]:
    """Every item of the profile list in one context, page by page."""
    token = ""
    seen_tokens: set[str] = set()
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if token:
            params["continue"] = token
        data = request("POST", PROFILES_PATH, params=params, json=PROFILES_QUERY, headers=ctx.headers)
        yield from items_of(data, f"POST {PROFILES_PATH}{_where(ctx)}")
        token = str((data.get("listmeta") or {}).get("continue") or "")
        if not token:
            return
        if token in seen_tokens:
            raise ServerError(f"palette: POST {PROFILES_PATH}{_where(ctx)}: the server repeated a continue token; "
                              "the profile list cannot be read to its end")
        seen_tokens.add(token)
    raise ServerError(f"palette: POST {PROFILES_PATH}{_where(ctx)}: more than {MAX_PAGES} pages; "
                      "the profile list cannot be read to its end")


def _where(ctx: _Context) -> str:
    return f" (project {ctx.project_name})" if ctx.project_uid else ""


def _packs_registry_uids(spec: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for template in ("published", "draft"):
        for pack in (spec.get(template) or {}).get("packs") or []:
            uid = (pack or {}).get("registryUid")
            if uid:
                out.add(str(uid))
    return out


def _clusters(status: Mapping[str, Any]) -> int:
    in_use = status.get("inUseClusters")
    if isinstance(in_use, list):
        return len({str((c or {}).get("uid") or i) for i, c in enumerate(in_use)})
    return len(status.get("inUseClusterUids") or [])  # deprecated by inUseClusters (spec)


def find_references(request: Request, uids: Collection[str], *, workers: int = 1) -> References:
    """Registry uid -> the cluster profiles (any scope, any project) whose packs use it."""
    try:
        return _find_references(request, uids, workers)
    except TargetError as exc:
        raise _context(exc, "cannot tell which cluster profiles use the registries to delete or replace") from exc


def _context(exc: TargetError, what: str) -> TargetError:
    return type(exc)(f"{what}: {exc}", status=exc.status, code=exc.code)


def _find_references(request: Request, uids: Collection[str], workers: int) -> References:
    wanted = {u for u in uids if u}
    out: References = {u: [] for u in wanted}
    if not wanted:
        return out  # look-ups only when there is something to look for
    contexts = [_Context(None, None), *_projects(request)]
    found: dict[str, _Context] = {}  # profile uid -> the context it was first listed in
    for ctx in contexts:
        for item in _listed_profiles(request, ctx):
            uid = str((item.get("metadata") or {}).get("uid") or "")
            if uid and uid not in found:
                found[uid] = ctx

    def read(uid: str, ctx: _Context) -> dict[str, Any] | None:
        try:
            return request("GET", f"/v1/clusterprofiles/{uid}", headers=ctx.headers)
        except NotFound:
            return None  # deleted since it was listed

    details: dict[str, dict[str, Any]] = {}
    pending = list(found)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8))) as pool:
        while pending:
            if len(details) + len(pending) > MAX_PROFILES:
                raise ServerError(f"palette: more than {MAX_PROFILES} cluster profiles to read; giving up")
            batch, pending = pending, []
            contexts_of = [found[uid] for uid in batch]  # read here: workers never touch ``found``
            for uid, obj in zip(batch, pool.map(read, batch, contexts_of), strict=True):
                if obj is None:
                    continue
                details[uid] = obj
                for version in (obj.get("spec") or {}).get("versions") or []:
                    vuid = str((version or {}).get("uid") or "")
                    if vuid and vuid not in found:
                        found[vuid] = found[uid]  # a version lives where its profile does
                        pending.append(vuid)

    for uid, obj in details.items():
        hits = _packs_registry_uids(obj.get("spec") or {}) & wanted
        if not hits:
            continue
        meta = obj.get("metadata") or {}
        ctx = found[uid]
        scope = str((meta.get("annotations") or {}).get("scope") or "")
        project = ctx.project_name if scope in ("", "project") else None
        ref = ProfileRef(profile_uid=uid, profile_name=_profile_name(meta, obj.get("spec") or {}),
                         project=project, clusters=_clusters(obj.get("status") or {}))
        for registry_uid in hits:
            out[registry_uid].append(ref)
    for refs in out.values():
        refs.sort(key=lambda r: (r.project or "", r.profile_name, r.profile_uid))
    log.debug("references: %d profile(s) read in %d context(s)", len(details), len(contexts))
    return out


def _profile_name(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    name = str(meta.get("name") or meta.get("uid") or "")
    version = str(spec.get("version") or "")
    return f"{name} ({version})" if version else name


# ---------------------------------------------------------------------- tenant FIPS policy


def tenant_fips_pack_mode(request: Request) -> tuple[str, str]:
    """(tenant uid, ``fipsPackConfig.mode``) of the tenant the API key belongs to.

    The provider reads it this way: SDK ``GetTenantUID`` (``GET /v1/users/info``, ``tenantUid``)
    then ``GetFIPSPreference`` (``GET /v1/tenants/{tenantUid}/preferences/fips``), in
    terraform-provider-spectrocloud ``resourcePlatformSettingRead``.
    """
    info = request("GET", USER_INFO_PATH)
    tenant = str(info.get("tenantUid") or "")
    if not tenant:
        raise ServerError(f"palette: GET {USER_INFO_PATH}: the answer names no tenantUid")
    prefs = request("GET", f"/v1/tenants/{tenant}/preferences/fips")
    mode = str((prefs.get("fipsPackConfig") or {}).get("mode") or NON_FIPS_DISABLED)
    return tenant, mode


def check_tenant_fips(request: Request, allow_non_fips: bool, non_fips: Sequence[str]) -> str | None:
    """Why the tenant refuses this plan (a message naming both values), or None.

    ``non_fips``: names of the declared registries that are not FIPS. The tenant allows non-FIPS
    packs only when the mode is ``nonFipsEnabled`` (the provider's ``convertFIPSString``).
    """
    try:
        tenant, mode = tenant_fips_pack_mode(request)
    except TargetError as exc:
        raise _context(exc, "vertex: cannot read the tenant's FIPS setting") from exc
    tenant_allows = mode == NON_FIPS_ENABLED
    said = f"tenant {tenant} has fipsPackConfig.mode {mode}"
    if non_fips and not tenant_allows:
        names = ", ".join(sorted(non_fips)[:10]) + (f" and {len(non_fips) - 10} more" if len(non_fips) > 10 else "")
        return (f"{said} (non-FIPS packs not allowed), but {len(non_fips)} declared registr"
                f"{'y is' if len(non_fips) == 1 else 'ies are'} not FIPS: {names} (Settings allowNonFips is "
                f"{str(allow_non_fips).lower()}); allow non-FIPS packs in the tenant's platform settings or make "
                "them fips: true")
    if allow_non_fips != tenant_allows:
        return (f"Settings allowNonFips is {str(allow_non_fips).lower()}, but {said} (non-FIPS packs "
                f"{'allowed' if tenant_allows else 'not allowed'}); make allowNonFips say what the tenant allows")
    return None
