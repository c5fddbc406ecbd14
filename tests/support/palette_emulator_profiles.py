"""The Palette emulator's cluster profiles, projects, user info and tenant FIPS preferences.

``PaletteEmulator`` routes the paths in ``PATHS`` here after checking each request against the
vendored spec like every other request (``tests/palette_spec/palette-registries-openapi.json``).
Answers follow the spec's definitions (``v1ProjectsMetadata``, ``v1ClusterProfilesSummary``,
``v1ClusterProfile``, ``v1ClusterProfilePacksEntities``, ``v1UserInfo``, ``v1FipsSettings``).
What each behaviour beyond the spec rests on:

* project context is the ``ProjectUid`` header (SDK ``ContextForScope``, client/client.go);
* a profile's ``metadata.annotations["scope"]`` is ``project``/``tenant`` (provider mock
  ``getClusterProfileResponse``, tests/mockApiServer/routes/mockClusterProfile.go);
* the tenant FIPS preference defaults to ``nonFipsDisabled`` for all three settings (the spec's
  default, and the provider mock ``PlatformSettingRoutes``, mockPlatformSetting.go);
* UNVERIFIED, modelled conservatively: the tenant context lists tenant-scope profiles only; a
  project context lists that project's profiles *and* the tenant's (so a client must dedupe);
  a project profile read without its ``ProjectUid`` is 404; the list shows only the latest
  version of each profile, older versions appear only in ``spec.versions`` (each version is a
  profile with its own uid); an unknown ``ProjectUid`` or tenant uid is 403.
* ``tenant_lists_all`` (off by default): the tenant context lists every project's profiles
  too. UNVERIFIED either way, like the default it replaces: a switch so that tests can hold
  the client to an answer that does not depend on which one Palette does;
* switches for tests: ``stuck_continue`` (the list repeats its ``continue`` token forever),
  ``page_limit`` (a server page smaller than 50), ``forbidden`` (path templates that answer 403,
  as for an API key without the permission; the code Palette sends then is unverified).
"""

from __future__ import annotations

import base64
import secrets as _secrets
import threading
from dataclasses import dataclass, field
from typing import Any

PATHS = frozenset({
    "/v1/dashboard/projects/metadata",
    "/v1/dashboard/clusterprofiles",
    "/v1/clusterprofiles/{uid}",
    "/v1/clusterprofiles/{uid}/packs",
    "/v1/users/info",
    "/v1/tenants/{tenantUid}/preferences/fips",
})

Answer = tuple[int, Any]


def _uid() -> str:
    return _secrets.token_hex(12)


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"code": code, "message": message}


@dataclass
class Profile:
    uid: str
    name: str
    project_uid: str | None  # None: tenant scope
    version: str = "1.0.0"
    published: list[str] = field(default_factory=list)  # registry uids of the published packs
    draft: list[str] | None = None  # registry uids of the draft's packs, None: no draft
    clusters: int = 0
    family: str = ""  # uid of the first version: versions of one profile share it

    @property
    def scope(self) -> str:
        return "project" if self.project_uid else "tenant"


def _pack(i: int, registry_uid: str) -> dict[str, Any]:
    # v1PackRef: ``layer`` and ``name`` are required
    return {"name": f"pack-{i}", "tag": "1.0.0", "layer": "addon", "type": "spectro",
            "registryUid": registry_uid, "packUid": f"pack{i:020d}"}


class ProfilesData:
    """Projects, cluster profiles and the tenant's settings; thread-safe through ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tenant_uid = _uid()
        self.user_uid = _uid()
        self.org_name = "emulated-org"
        self.fips_pack_mode = "nonFipsDisabled"
        self.projects: dict[str, str] = {}  # uid -> name
        self.profiles: dict[str, Profile] = {}  # uid -> profile, in creation order
        self.page_limit = 50
        self.stuck_continue = False
        self.tenant_lists_all = False  # unverified either way (module docstring)
        self.forbidden: set[str] = set()
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path template, ProjectUid)

    # ---- seeding

    def add_project(self, name: str) -> str:
        with self.lock:
            uid = _uid()
            self.projects[uid] = name
            return uid

    def add_profile(self, name: str, registry_uids: list[str] | tuple[str, ...] = (), *,
                    project: str | None = None, draft: list[str] | None = None, clusters: int = 0,
                    version: str = "1.0.0", version_of: Profile | None = None) -> Profile:
        """A profile whose published packs use ``registry_uids``; ``project``: a project name or uid."""
        with self.lock:
            project_uid = None
            if project is not None:
                project_uid = project if project in self.projects else next(
                    u for u, n in self.projects.items() if n == project)
            uid = _uid()
            prof = Profile(uid, name, project_uid, version, list(registry_uids), draft, clusters,
                           family=version_of.family if version_of else uid)
            self.profiles[uid] = prof
            return prof

    # ---- views

    def _versions(self, prof: Profile) -> list[Profile]:
        return [p for p in self.profiles.values() if p.family == prof.family]

    def _latest(self) -> list[Profile]:
        latest: dict[str, Profile] = {}
        for p in self.profiles.values():
            latest[p.family] = p  # creation order: the last version wins
        return list(latest.values())

    def _metadata(self, prof: Profile) -> dict[str, Any]:
        return {"name": prof.name, "uid": prof.uid, "annotations": {"scope": prof.scope}}

    def _in_use(self, prof: Profile, full: bool) -> list[dict[str, Any]]:
        out = []
        for i in range(prof.clusters):
            entry: dict[str, Any] = {"name": f"{prof.name}-cluster-{i}", "uid": f"{prof.uid[:16]}{i:08d}"}
            if full:
                entry.update(kind="spectrocluster", projectUid=prof.project_uid or "", tenantUid=self.tenant_uid)
            out.append(entry)
        return out

    def summary(self, prof: Profile) -> dict[str, Any]:
        """v1ClusterProfileSummary: the summary packs carry no registry uid."""
        return {
            "metadata": self._metadata(prof),
            "specSummary": {
                "published": {"type": "add-on", "packs": [{"name": f"pack-{i}", "tag": "1.0.0", "layer": "addon"}
                                                          for i, _ in enumerate(prof.published)]},
                "version": prof.version,
                "versions": [{"uid": p.uid, "version": p.version} for p in self._versions(prof)],
            },
            "status": {"inUseClusters": self._in_use(prof, full=False), "isPublished": True},
        }

    def detail(self, prof: Profile) -> dict[str, Any]:
        """v1ClusterProfile."""
        spec: dict[str, Any] = {
            "published": {"name": prof.name, "type": "add-on", "profileVersion": prof.version,
                          "packs": [_pack(i, r) for i, r in enumerate(prof.published)]},
            "version": prof.version,
            "versions": [{"uid": p.uid, "version": p.version} for p in self._versions(prof)],
        }
        if prof.draft is not None:
            spec["draft"] = {"name": prof.name, "type": "add-on",
                             "packs": [_pack(i, r) for i, r in enumerate(prof.draft)]}
        return {"kind": "ClusterProfile", "metadata": self._metadata(prof), "spec": spec,
                "status": {"inUseClusters": self._in_use(prof, full=True), "isPublished": True}}

    def _visible(self, prof: Profile, project_uid: str | None) -> bool:
        return prof.project_uid is None or prof.project_uid == project_uid

    # ---- handler

    def handle(self, method: str, template: str, args: list[str], query: dict[str, str], body: Any,
               project_uid: str | None) -> Answer:
        with self.lock:
            self.calls.append((method, template, project_uid))
            if template in self.forbidden:
                return _error(403, "Forbidden", "permission denied")  # unverified code
            if project_uid and project_uid not in self.projects:
                return _error(403, "Forbidden", f"project '{project_uid}' is not accessible")  # unverified
            if template == "/v1/dashboard/projects/metadata":
                name = query.get("name")
                return 200, {"items": [{"metadata": {"name": n, "uid": u}} for u, n in self.projects.items()
                                       if name is None or n == name]}
            if template == "/v1/dashboard/clusterprofiles":
                return self._list(query, project_uid)
            if template in ("/v1/clusterprofiles/{uid}", "/v1/clusterprofiles/{uid}/packs"):
                prof = self.profiles.get(args[0])
                if prof is None or not self._visible(prof, project_uid):
                    return _error(404, "ResourceNotFound", f"cluster profile '{args[0]}' not found")
                if template.endswith("/packs"):
                    return 200, {"items": [{"metadata": {"name": f"pack-{i}", "uid": f"pack{i:020d}"},
                                            "spec": {"name": f"pack-{i}", "registryUid": r, "version": "1.0.0",
                                                     "layer": "addon"}}
                                           for i, r in enumerate(prof.published)]}
                return 200, self.detail(prof)
            if template == "/v1/users/info":
                return 200, {"tenantUid": self.tenant_uid, "userUid": self.user_uid, "orgName": self.org_name}
            if template == "/v1/tenants/{tenantUid}/preferences/fips":
                if args[0] != self.tenant_uid:
                    return _error(403, "Forbidden", f"tenant '{args[0]}' is not accessible")  # unverified
                return 200, {"fipsPackConfig": {"mode": self.fips_pack_mode},
                             "fipsClusterFeatureConfig": {"mode": "nonFipsDisabled"},
                             "fipsClusterImportConfig": {"mode": "nonFipsDisabled"}}
        return _error(405, "MethodNotAllowed", f"{method} {template} not emulated")  # pragma: no cover

    def _list(self, query: dict[str, str], project_uid: str | None) -> Answer:
        listed = (lambda p: True) if self.tenant_lists_all and project_uid is None else (
            lambda p: self._visible(p, project_uid))
        profiles = sorted((p for p in self._latest() if listed(p)),
                          key=lambda p: (p.name, p.uid))
        limit = min(int(query.get("limit", "50")), self.page_limit)
        if limit <= 0:
            limit = self.page_limit
        offset = int(query.get("offset", "0"))
        token = query.get("continue")
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
            except (ValueError, IndexError):
                return _error(400, "InvalidContinueToken", "continue token is invalid")
        page = profiles[offset: offset + limit]
        nxt = offset + len(page)
        cont = base64.urlsafe_b64encode(f"off:{nxt}".encode()).decode() if nxt < len(profiles) else ""
        if self.stuck_continue:
            cont = base64.urlsafe_b64encode(b"off:0").decode()
        return 200, {"items": [self.summary(p) for p in page],
                     "listmeta": {"continue": cont, "count": len(profiles), "limit": limit, "offset": nxt}}
