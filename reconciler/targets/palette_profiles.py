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
* for each profile, ``GET /v1/clusterprofiles/{uid}`` in the context of its own scope (the
  listed ``metadata.annotations["scope"]``: the provider reads a profile in its scope's context,
  ``resourceClusterProfileRead``, and its mock server sets the annotation,
  ``getClusterProfileResponse`` in ``tests/mockApiServer/routes/mockClusterProfile.go``), then, on
  a 404, in every other context that listed it: ``spec.published.packs[].registryUid``,
  ``spec.draft.packs[].registryUid``, and ``status.inUseClusters`` for the clusters using it. The
  summary list has no registry uid (``v1PackRefSummary``); ``GET /v1/clusterprofiles/{uid}/packs``
  would cost the same one request per profile but its spec does not say whether it lists the
  draft's packs or the published ones, so we read the profile itself.
* every other version in ``spec.versions`` (each version is a profile with its own uid) is read
  too: a cluster may run an older version that still uses the registry. Whether the dashboard
  list shows every version or only the latest is unverified, so we read both ways and dedupe.

Whether the tenant context also lists project profiles is unverified either way, and so is
whether a project profile can be read without its ``ProjectUid``: the answer must not depend on
either. A profile seen in several listings is reported once, with the project of the context
that read it. A profile that no context can read (404 everywhere: deleted since it was listed,
or hidden from us) may use any registry: it is an "unknown" user of every uid asked about
(``ProfileRef.unread``), which blocks a delete as a known user does. Fail closed, never open.
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


def obj_of(value: Any) -> Mapping[str, Any]:
    """A field of an answer that should be an object; any other shape (a string, a list, null)
    reads as absent, never as a crash."""
    return value if isinstance(value, dict) else {}


def _list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def items_of(data: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """A list answer's ``items`` (every Palette list, registries too); anything but a list of
    objects is an error, never an empty list ("no profile uses it")."""
    items = data.get("items")
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ServerError(f"palette: {what}: 'items' is not a list of objects")
    return items


def check_count(listmeta: Mapping[str, Any], got: int, what: str, noun: str) -> None:
    """At a list's last page: the spec's ``listmeta.count`` is the total ("might change during
    pagination"); a list that ends short of it is an error, never read as complete (a rerun
    reads it afresh). Every Palette list we page: registries and cluster profiles."""
    count = listmeta.get("count")
    if type(count) is int and count > got:
        raise ServerError(f"palette: {what}: the list ended after {got} of the {count} {noun} its listmeta "
                          "counts; the list cannot be read to its end")


def _projects(request: Request) -> list[_Context]:
    data = request("GET", PROJECTS_PATH)
    out = []
    for item in items_of(data, f"GET {PROJECTS_PATH}"):
        meta = obj_of(item.get("metadata"))
        uid = str(meta.get("uid") or "")
        if uid:
            out.append(_Context(uid, str(meta.get("name") or uid)))
    return out


def _listed_profiles(request: Request, ctx: _Context) -> Iterator[dict[str, Any]]:
    """Every item of the profile list in one context, page by page."""
    token = ""
    seen_tokens: set[str] = set()
    got = 0
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if token:
            params["continue"] = token
        data = request("POST", PROFILES_PATH, params=params, json=PROFILES_QUERY, headers=ctx.headers)
        items = items_of(data, f"POST {PROFILES_PATH}{_where(ctx)}")
        got += len(items)
        yield from items
        listmeta = obj_of(data.get("listmeta"))
        token = str(listmeta.get("continue") or "")
        if not token:
            # a list short of its count may have left out a profile that uses a registry to
            # delete: the look-up fails (closed) rather than answer "unused"
            check_count(listmeta, got, f"POST {PROFILES_PATH}{_where(ctx)}", "profiles")
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
        for pack in _list_of(obj_of(spec.get(template)).get("packs")):
            uid = obj_of(pack).get("registryUid")
            if uid:
                out.add(str(uid))
    return out


def _clusters(status: Mapping[str, Any]) -> int:
    in_use = status.get("inUseClusters")
    if isinstance(in_use, list):
        return len({str(obj_of(c).get("uid") or i) for i, c in enumerate(in_use)})
    return len(_list_of(status.get("inUseClusterUids")))  # deprecated by inUseClusters (spec)


def find_references(request: Request, uids: Collection[str], *, workers: int = 1,
                    project_uid: str | None = None) -> References:
    """Registry uid -> the cluster profiles (any scope, any project) whose packs use it, and
    those whose packs could not be read (``ProfileRef.unread``), under every uid.
    ``project_uid`` (``--project-uid``): a project looked in too when the project list does not
    name it (an API key that can read a project's profiles but not list the tenant's projects)."""
    try:
        return _find_references(request, uids, workers, project_uid)
    except TargetError as exc:
        raise _context(exc, "cannot tell which cluster profiles use the registries to delete or replace") from exc


def _context(exc: TargetError, what: str) -> TargetError:
    return type(exc)(f"{what}: {exc}", status=exc.status, code=exc.code)


@dataclass
class _Listed:
    """A profile as the lists showed it: its name and its metadata, and every context that
    listed it, in listing order (tenant first)."""

    name: str
    meta: Mapping[str, Any]
    contexts: list[_Context]


def _read_order(meta: Mapping[str, Any], listed: Sequence[_Context],
                projects: Mapping[str, _Context]) -> list[_Context]:
    """The contexts to read a profile's details in, its own scope's first, then every other
    context that listed it: a profile is never given up after one 404.

    ``annotations.scope`` says ``tenant`` or ``project`` (the provider reads a profile in the
    context of that scope, ``resourceClusterProfileRead``; its mock sets it). Which project is
    not in any source we have: ``annotations.projectUid`` is tried first when it names a project
    (unverified), else the project contexts that listed it.
    """
    ann = obj_of(meta.get("annotations"))
    scope = str(ann.get("scope") or "")
    own = [projects[u] for u in (str(ann.get("projectUid") or ""),) if u in projects]
    if scope in ("tenant", "project"):
        own += [c for c in listed if bool(c.project_uid) == (scope == "project")]
    return list(dict.fromkeys([*own, *listed]))


def _where_all(contexts: Sequence[_Context]) -> str:
    return ", ".join(f"project {c.project_name}" if c.project_uid else "tenant" for c in contexts)


def _find_references(request: Request, uids: Collection[str], workers: int, project_uid: str | None = None
                     ) -> References:
    wanted = {u for u in uids if u}
    out: References = {u: [] for u in wanted}
    if not wanted:
        return out  # look-ups only when there is something to look for
    projects = _projects(request)
    if project_uid and all(c.project_uid != project_uid for c in projects):
        projects.append(_Context(project_uid, project_uid))  # named by its uid: the list did not name it
    contexts = [_Context(None, None), *projects]
    listed: dict[str, _Listed] = {}  # profile uid -> what the lists said of it
    nameless: list[ProfileRef] = []  # listed without a uid: never readable, so never known unused
    for ctx in contexts:
        for item in _listed_profiles(request, ctx):
            meta = obj_of(item.get("metadata"))
            uid = meta.get("uid")
            name = _profile_name(meta, obj_of(item.get("specSummary")))
            if isinstance(uid, str) and uid:
                listed.setdefault(uid, _Listed(name, meta, [])).contexts.append(ctx)
            else:
                nameless.append(ProfileRef("", name or "(no name)", None, unread=f"listed in {_where_all([ctx])} without a "
                                                                  "metadata.uid, so its packs cannot be read"))
    by_uid = {c.project_uid: c for c in projects if c.project_uid}
    order = {uid: _read_order(it.meta, it.contexts, by_uid) for uid, it in listed.items()}
    names = {uid: it.name for uid, it in listed.items()}

    def read(uid: str, tries: Sequence[_Context]) -> tuple[dict[str, Any] | None, _Context]:
        for ctx in tries:
            try:
                return request("GET", f"/v1/clusterprofiles/{uid}", headers=ctx.headers), ctx
            except NotFound:
                continue  # not readable here (another scope's, or deleted since listed): the next
        return None, tries[0]

    details: dict[str, tuple[dict[str, Any], _Context]] = {}
    unread: dict[str, str] = {}  # profile uid -> why its packs are unknown
    pending = list(order)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8))) as pool:
        while pending:
            if len(details) + len(unread) + len(pending) > MAX_PROFILES:
                raise ServerError(f"palette: more than {MAX_PROFILES} cluster profiles to read; giving up")
            batch, pending = pending, []
            tries = [order[uid] for uid in batch]  # read here: workers never touch ``order``
            for uid, (obj, ctx) in zip(batch, pool.map(read, batch, tries), strict=True):
                if obj is None:
                    unread[uid] = f"GET /v1/clusterprofiles/{uid} answered 404 in {_where_all(order[uid])}"
                    continue
                odd = _odd_packs(obj)
                if odd:  # packs we cannot read are unknown packs, never "no packs"
                    unread[uid] = f"GET /v1/clusterprofiles/{uid} answered {odd}"
                    continue
                details[uid] = (obj, ctx)
                for version in _list_of(obj_of(obj.get("spec")).get("versions")):
                    vuid = str(obj_of(version).get("uid") or "")
                    if vuid and vuid not in order:
                        # a version lives where its profile does: there first, then where it was listed
                        order[vuid] = list(dict.fromkeys([ctx, *order[uid]]))
                        names[vuid] = _profile_name({**obj_of(obj.get("metadata")), "uid": vuid}, obj_of(version))
                        pending.append(vuid)

    for uid, (obj, ctx) in details.items():
        spec = obj_of(obj.get("spec"))
        hits = _packs_registry_uids(spec) & wanted
        if not hits:
            continue
        meta = obj_of(obj.get("metadata"))
        ref = ProfileRef(profile_uid=uid, profile_name=_profile_name(meta, spec),
                         project=_project_of(meta, ctx), clusters=_clusters(obj_of(obj.get("status"))))
        for registry_uid in hits:
            out[registry_uid].append(ref)
    # a profile whose packs are unknown may use any of them: the answer is "unknown", never "unused"
    unknown = [ProfileRef(uid, names[uid], None, unread=why) for uid, why in unread.items()] + nameless
    for refs in out.values():
        refs.extend(unknown)
        refs.sort(key=lambda r: (bool(r.unread), r.project or "", r.profile_name, r.profile_uid))
    log.debug("references: %d profile(s) read in %d context(s), %d unreadable", len(details), len(contexts),
              len(unread))
    return out


def _odd_packs(obj: Mapping[str, Any]) -> str:
    """What makes a profile's packs unreadable ("" when nothing does): a wrong shape where the
    registry uids are must not read as a profile that uses none."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return "a spec that is not an object"
    for template in ("published", "draft"):
        part = spec.get(template)
        if part is None:
            continue
        if not isinstance(part, dict):
            return f"a spec.{template} that is not an object"
        packs = part.get("packs")
        if packs is not None and not (isinstance(packs, list) and all(isinstance(p, dict) for p in packs)):
            return f"a spec.{template}.packs that is not a list of objects"
    return ""


def _project_of(meta: Mapping[str, Any], ctx: _Context) -> str | None:
    """The project a profile read in ``ctx`` belongs to; None for a tenant one (a project
    context lists the tenant's profiles too, unverified)."""
    scope = str(obj_of(meta.get("annotations")).get("scope") or "")
    if scope not in ("", "project"):
        return None
    if ctx.project_uid:
        return ctx.project_name
    return "(not known)" if scope == "project" else None  # a project profile the tenant context read


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
    mode = str(obj_of(prefs.get("fipsPackConfig")).get("mode") or NON_FIPS_DISABLED)
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
