"""The ``Target`` interface: one Palette tenant (or something that behaves like one).

Implementations: ``local.LocalTarget`` (SQLite, the default) and ``palette.PaletteTarget``
(the REST API). Both run the contract suite in ``tests/test_target_contract.py``.

Specs crossing this interface are *canonical* (``reconciler.model``): our field names,
defaults filled, secrets as references. Secret *values* travel separately, as a mapping
from dotted field path (``"auth.password"``, ``"auth.credentials.secretKey"``) to value,
and a target never returns them. ``list``/``get``/``find`` return what the target can
observe: a target may omit fields it cannot report back (e.g. ``tls.caFile``); the planner
compares only the fields present.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.model import Key, ObservedRegistry, Registry, Settings

Secrets = Mapping[str, str]
ObservedList = list[ObservedRegistry]


# Sync status words as Spectro's Terraform provider maps them
# (terraform-provider-spectrocloud, resource_registry_oci_ecr.go, resourceOciRegistrySyncRefreshFunc):
# Success/Completed are done, Failed/Error failed, anything else ("", InProgress, Pending,
# Unknown, ...) still pending; ``isSyncSupported: false`` means there is nothing to wait for.
SYNC_DONE = frozenset({"success", "completed"})
SYNC_FAILED = frozenset({"failed", "error"})


@dataclass(frozen=True)
class SyncStatus:
    """Status of a registry's content sync as Palette reports it (v1RegistrySyncStatus)."""

    status: str  # "", "InProgress", "Completed"/"Success", "Failed", "Error", "Unknown", ...
    message: str = ""
    last_synced: str | None = None  # RFC 3339
    last_run: str | None = None  # RFC 3339
    sync_supported: bool = True
    detail: Mapping[str, object] | None = None  # e.g. local catalog counts, added/removed

    @property
    def done(self) -> bool:
        if not self.sync_supported:
            return True  # nothing to wait for (resourceOciRegistrySyncRefreshFunc: "Success")
        return self.status.lower() in SYNC_DONE or self.failed

    @property
    def failed(self) -> bool:
        return self.sync_supported and self.status.lower() in SYNC_FAILED


@dataclass(frozen=True)
class Known:
    """What the state recorded of a managed registry, so a target can skip re-reading it."""

    version: str | None  # the target's modification stamp right after our last write
    spec: Mapping[str, Any]  # canonical spec as applied (secret references only)
    kind: str = ""


def make_known(version: str | None, spec: Mapping[str, Any], kind: str = "") -> Known:
    """``Known(version, spec, kind)``, the same object (same ``__dict__``, in field order), built
    without the frozen dataclass's ``object.__setattr__`` per field: a plan makes one per record."""
    known: Known = object.__new__(Known)
    known.__dict__.update(version=version, spec=spec, kind=kind)
    return known


@dataclass(frozen=True)
class ProfileRef:
    """A cluster profile that references a registry by uid (impact of a delete or replace)."""

    profile_uid: str
    profile_name: str
    project: str | None  # project name; None for a tenant-scope profile
    clusters: int = 0  # clusters using the profile (``status.inUseClusters``)
    #: why the profile's packs could not be read ("" when they were): it may use any registry,
    #: so it is listed under every uid asked about and blocks as a user does
    unread: str = ""


#: registry uid -> the profiles that reference it (or may: ``ProfileRef.unread``)
References = dict[str, list[ProfileRef]]


class Target(ABC):
    """A place registries live. Methods raise ``reconciler.errors.TargetError`` subclasses."""

    #: how many independent requests the apply engine may run at once
    max_concurrency: int = 1
    #: whether create/update need secret values (the local target stores none)
    needs_secrets: bool = True
    #: whether ``observe`` looks at ``known`` (what the state recorded) to skip re-reading; a
    #: target that reads everything at once anyway (local) is given none to build
    observe_reads_known: bool = True

    @property
    @abstractmethod
    def description(self) -> str:
        """Human name, e.g. ``local (.reconciler/local.db)`` or ``palette (https://...)``."""

    @property
    def identity(self) -> str:
        """What the state records as its target; a state of another target is refused."""
        return self.description

    @abstractmethod
    def list(self) -> list[ObservedRegistry]:
        """Every registry of every kind and scope, built-in defaults included (``builtin``)."""

    def observe(self, wanted: Collection[Key], known: Mapping[str, Known]) -> ObservedList:
        """``list()`` for a plan, told what it needs in full.

        ``wanted``: the declared keys; ``known``: recorded uids with what was applied. A target
        may leave out details of registries neither names, and skip re-reading a registry whose
        stamp matches ``Known.version`` (Palette: one GET per OCI registry otherwise).
        """
        return self.list()

    def version(self, kind: str, uid: str) -> str | None:
        """The target's modification stamp of a registry this run just wrote (None: unknown)."""
        return None

    def set_deadline(self, seconds: float) -> None:  # noqa: B027
        """Bound every later request of this run to end within ``seconds`` from now."""

    @abstractmethod
    def get(self, kind: str, uid: str) -> ObservedRegistry:
        """One registry by uid; ``NotFound`` if it is gone."""

    def find(self, scope: str, kind: str, name: str) -> ObservedRegistry | None:
        """One registry by (scope, kind, name), or None. Used before re-trying a create."""
        for reg in self.list():
            if reg.key == (scope, kind, name):
                return reg
        return None

    @abstractmethod
    def create(self, registry: Registry, secrets: Secrets) -> str:
        """Create and return the new uid; ``Conflict`` if the name is taken."""

    @abstractmethod
    def update(self, uid: str, registry: Registry, secrets: Secrets) -> None:
        """Replace the whole object (Palette: PUT of the full object)."""

    @abstractmethod
    def delete(self, kind: str, uid: str) -> None:
        """Delete; ``NotFound`` if it is already gone."""

    def references(self, uids: Collection[str]) -> References | None:
        """The cluster profiles that reference each of ``uids``; None when the target cannot tell.

        Called by the runner only when a plan holds a delete or a replace. The local target
        knows no profiles (None: the plan says so); Palette looks them up.
        """
        return None

    def check_tenant_policy(self, settings: Settings, registries: Sequence[Registry]) -> str | None:
        """Why the target's own policy refuses these definitions, or None (the default: no policy).

        Called by the runner before planning. Palette with the ``vertex`` profile compares the
        tenant's FIPS setting with ``Settings.allowNonFips`` and the non-FIPS registries.
        """
        return None

    def catalog(self, uid: str) -> Mapping[str, object] | None:
        """What the last content sync of ``uid`` stored (counts such as ``charts``,
        ``versions``, ``repositories``, ``tags``, ``packs``); None when the target keeps no
        catalog of its own (Palette shows content in its UI, not through this interface)."""
        return None

    def validate(self, registry: Registry, secrets: Secrets) -> None:  # noqa: B027
        """Ask the target whether it would accept this registry (Palette ``/validate``)."""

    @abstractmethod
    def sync(self, kind: str, uid: str, *, force: bool = False, secrets: Secrets | None = None) -> None:
        """Trigger a content sync (the local target runs it at once, for real)."""

    @abstractmethod
    def sync_status(self, kind: str, uid: str) -> SyncStatus:
        """The last/current sync's status."""

    def close(self) -> None:  # noqa: B027
        """Release connections."""
