"""The pure diff: desired registries vs recorded state vs what the target reports.

No I/O. The result is an immutable ``Plan`` of ``Change`` values that the renderers print
and ``apply`` executes. Prune guards are applied here, so a dry-run shows exactly what a
real run would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from reconciler.model import (
    LOCAL_ONLY_FIELDS,
    Key,
    ObservedRegistry,
    Registry,
    Span,
    ca_digest,
    flatten,
    is_secret_ref,
    key_str,
    secret_hash,
    secret_matches,
    split_userinfo,
    target_spec,
    without_query_credentials,
)
from reconciler.state.base import Record, State

if TYPE_CHECKING:
    from reconciler.targets.base import ProfileRef

CREATE, UPDATE, REPLACE, DELETE, ADOPT, NOOP = "create", "update", "replace", "delete", "adopt", "noop"
SYMBOLS = {CREATE: "+", UPDATE: "~", REPLACE: "-/+", DELETE: "-", ADOPT: "=", NOOP: " "}
# Order in which apply runs the actions: free names first, then build.
APPLY_ORDER = {DELETE: 0, REPLACE: 1, CREATE: 2, ADOPT: 3, UPDATE: 4, NOOP: 5}


class Marker(str):
    """The plan's own word in place of a value it does not show: ``(sensitive)``, ``(changed)``,
    ``(unknown)``, what a CA file held. Equal to its text (JSON writes it as a string); a
    renderer shows it bare, and quotes a registry's value that reads like one (``looks_marked``),
    so that a password field literally ``(sensitive)`` cannot pass for a masked one."""

    __slots__ = ()


SENSITIVE = Marker("(sensitive)")


def looks_marked(text: str) -> bool:
    """Whether ``text``, shown bare, would read like one of the plan's markers: ``(changed)``,
    or one that ends a value with a note, as a CA file's does (``PATH (contents sha256:…)``)."""
    return text[-1:] == ")" and (text[:1] == "(" or " (" in text)


@dataclass(frozen=True)
class FieldChange:
    """One field a change sets: its dotted path, the old and new value (``sensitive``: shown masked)."""

    path: str
    old: Any
    new: Any
    sensitive: bool = False


@dataclass(frozen=True)
class Change:
    """What a plan does to one registry: the action, its fields, why, and what blocks it if anything does."""

    action: str
    key: Key
    uid: str | None = None
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    registry: Registry | None = None  # desired (None for delete)
    blocked: str = ""  # non-empty: shown, never executed
    state_only: bool = False  # e.g. protect flag changed: nothing to send to the target
    gone: bool = False  # delete of a registry already gone from the target
    renamed_from: Key | None = None  # update of a registry renamed on the target: the record moves here

    @property
    def kind(self) -> str:
        return self.key[1]

    @property
    def name(self) -> str:
        return self.key[2]

    @property
    def scope(self) -> str:
        return self.key[0]

    @property
    def source(self) -> Span | None:
        return self.registry.source if self.registry else None

    @property
    def title(self) -> str:
        return key_str(self.key)


NO_PROFILES_NOTE = "no cluster profiles known on this target: deletes and replaces were not checked for use"


@dataclass(frozen=True)
class Plan:
    """Every change of a run, the refusals that stop it, its warnings and notes."""

    changes: tuple[Change, ...]
    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # None: no delete or replace, nothing to look up; False: the target cannot tell (local)
    profiles_known: bool | None = None
    # model.ca_digest of each declared CA file, as planned against: apply records them
    ca: Mapping[Key, str] = field(default_factory=dict)

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != NOOP and not c.blocked)

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable)

    @property
    def blocked(self) -> tuple[Change, ...]:
        """Changes the definitions ask for that are not made (shown with ``!``): the target
        still differs from them."""
        return tuple(c for c in self.changes if c.blocked)

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in (CREATE, UPDATE, REPLACE, DELETE, ADOPT, NOOP)}
        for c in self.changes:
            if not c.blocked:
                out[c.action] += 1
        out["blocked"] = sum(1 for c in self.changes if c.blocked)
        return out

    def summary(self) -> str:
        c = self.counts()
        text = (
            f"{c[CREATE]} to create, {c[UPDATE]} to update, {c[REPLACE]} to replace, "
            f"{c[DELETE]} to delete, {c[ADOPT]} to adopt, {c[NOOP]} unchanged"
        )
        if c["blocked"]:
            text += f", {c['blocked']} blocked"
        return text


@dataclass(frozen=True)
class PlanOptions:
    """The guards a plan applies: deletions, an emptied target, failed inputs, registries in use."""

    max_deletions: int = 5
    allow_empty: bool = False
    inputs_failed: bool = False  # some file failed to load or validate: no deletions at all
    # #10.2 impact analysis: what Target.references() answered for impact_uids(plan)
    # (None: the target cannot tell); only looked at when in_use_checked
    in_use_checked: bool = False
    in_use: Mapping[str, Sequence[ProfileRef]] | None = None
    allow_in_use: bool = False


@dataclass
class SecretValues:
    """Resolved secret values per registry key: path -> value (None when unavailable)."""

    values: dict[Key, dict[str, str | None]] = field(default_factory=dict)
    state_key: str | None = None  # RECONCILER_STATE_KEY: keys the recorded hashes (model.secret_hash)

    def for_key(self, key: Key) -> Mapping[str, str | None]:
        return self.values.get(key, {})


def _display(value: Any, path: str = "") -> Any:
    if is_secret_ref(value):
        return SENSITIVE
    if path == "endpoint" and isinstance(value, str):
        # a target may report credentials typed into the URL: never in a plan or a PR comment
        bare, userinfo = split_userinfo(value)
        bare = without_query_credentials(bare, keep_as="(sensitive)")  # ?token=...: named, not shown
        if userinfo is not None:
            scheme, sep, rest = bare.partition("://")
            scheme, rest = (scheme, rest) if sep else ("", bare)
            return f"{scheme}{sep}(credentials)@{rest}"
        return bare
    return value


def _field_diff(old: Mapping[str, Any], new: Mapping[str, Any], *, only_old_keys: bool) -> list[FieldChange]:
    a, b = flatten(old), flatten(new)
    keys = set(a) if only_old_keys else set(a) | set(b)
    out = []
    for k in sorted(keys):
        if a.get(k) != b.get(k):
            sensitive = k.rsplit(".", 1)[-1] in ("password", "token", "secretKey")
            out.append(
                FieldChange(
                    k,
                    SENSITIVE if sensitive else _display(a.get(k), k),
                    SENSITIVE if sensitive else _display(b.get(k), k),
                    sensitive,
                )
            )
    return out


def _observable_view(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """Desired spec cut down to the fields the target reports (recursively)."""
    out: dict[str, Any] = {}
    for k, v in observed.items():
        if k not in desired:
            out[k] = None
        elif type(v) is dict and type(desired[k]) is dict and not is_secret_ref(desired[k]):
            out[k] = _observable_view(desired[k], v)
        else:
            out[k] = desired[k]
    return out


def _immutable_change(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Why ``old`` cannot become ``new`` in place ("" when it can); the plan then replaces.

    Follows terraform-provider-spectrocloud ``resourceRegistryOciEcr``: ``type`` (basic|ecr)
    is ForceNew, while basic <-> noAuth (``credentials.credential_type``) is a PUT on the same
    basic registry (``toRegistryBasic``). ``resourceRegistryEcrUpdate`` refuses sync on -> off
    and Spectro's docs call the OCI synchronization toggle immutable, so both directions are
    replaces (#10.3)."""
    old_auth = (old.get("auth") or {}).get("type")
    new_auth = (new.get("auth") or {}).get("type")
    if old_auth and new_auth and old_auth != new_auth and (old_auth == "ecr" or new_auth == "ecr"):
        return f"auth type {old_auth} -> {new_auth} cannot change in place"
    if kind == "OciRegistry" and "sync" in old and "sync" in new and bool(old["sync"]) != bool(new["sync"]):
        return f"sync cannot be turned {'on' if new['sync'] else 'off'} in place"
    return ""


def secret_hashes(salt: str, registry: Registry, values: Mapping[str, str | None],
                  key: str | None = None) -> dict[str, str]:
    out = {}
    for path, _ref in registry.secret_refs:
        value = values.get(path)
        if value is not None:
            out[path] = secret_hash(salt, path, value, key)
    return out


# The common registry of a large plan: recorded, applied, reported back as it was applied.
# False runs every registry through the detailed path (tests compare the two).
_FAST_NOOP = True


def _unchanged(reg: Registry, rec: Record, obs: ObservedRegistry, obs_of_uid: ObservedRegistry | None,
               values: Mapping[str, str | None]) -> bool:
    """Whether the detailed path of ``make_plan`` is bound to end in a plain NOOP: the recorded
    uid is the registry of this name (not built-in, same name), the fingerprint and protect
    are the recorded ones, the target reports exactly the desired spec (no drift: the
    observable view of equal specs is the observed spec) and no secret value is known to
    compare with the recorded hashes."""
    if obs_of_uid is not obs or obs.builtin or obs.name != reg.name:
        return False
    if reg.fingerprint != rec.fingerprint or reg.protect != rec.protect:
        return False
    spec = reg.spec
    if not obs.reports_json(reg.target_json) and obs.spec != (
            spec if type(spec) is dict and LOCAL_ONLY_FIELDS.isdisjoint(spec) else target_spec(spec)):
        return False  # the same canonical text is the same spec, undecoded (the local target's rows)
    for v in values.values():
        if v is not None:
            return False
    return True


def _noop(key: Key, uid: str, registry: Registry) -> Change:
    """``Change(NOOP, key, uid=uid, registry=registry)``, the same object (same ``__dict__``, in
    field order), without the frozen dataclass's ``object.__setattr__`` per field."""
    change: Change = object.__new__(Change)
    change.__dict__.update(action=NOOP, key=key, uid=uid, fields=(), reason="", registry=registry, blocked="",
                           state_only=False, gone=False, renamed_from=None)
    return change


def make_plan(
    desired: Iterable[Registry],
    state: State,
    observed: Iterable[ObservedRegistry],
    secrets: SecretValues | None = None,
    options: PlanOptions | None = None,
    ca: Mapping[Key, str] | None = None,
) -> Plan:
    """The changes that bring the target to ``desired``, against what ``state`` recorded and
    what the target reports (``observed``).

    ``ca``: ``model.ca_digest`` of each declared CA file's contents, by key (``secrets.ca_digests``);
    compared with the recorded digest (a rotated CA) and with the PEM the target reports (drift)."""
    options = options or PlanOptions()
    ca = ca or {}
    secrets = secrets or SecretValues()
    desired_by_key = {r.key: r for r in desired}
    observed_list = list(observed)
    by_uid = {o.uid: o for o in observed_list}
    by_key = {(o.scope, o.kind, o.name): o for o in observed_list}  # o.key
    recorded_as: dict[str, Key] = {rec.uid: k for k, rec in state.records.items()}  # uids are unique (State)
    renamed: set[Key] = set()  # recorded keys whose registry was renamed on the target and in the file
    changes: list[Change] = []
    warnings: list[str] = []

    records = state.records
    unverified = state.unverified
    for_key = secrets.for_key
    for key in sorted(desired_by_key):
        reg = desired_by_key[key]
        rec = records.get(key)
        obs_same_name = by_key.get(key)
        if _FAST_NOOP and rec is not None and obs_same_name is not None and key not in ca and key not in unverified \
                and _unchanged(
                reg, rec, obs_same_name, by_uid.get(rec.uid), for_key(key)):
            changes.append(_noop(key, obs_same_name.uid, reg))
            continue
        renamed_from: Key | None = None
        stale_uid = ""  # this name's recorded uid, gone, when the record of a renamed registry replaces it
        if obs_same_name is not None and obs_same_name.builtin:
            changes.append(
                Change(CREATE, key, registry=reg, blocked=f"{key_str(key)} is a built-in default registry; it is read-only")
            )
            continue
        if rec is not None and rec.uid not in by_uid and obs_same_name is not None:
            # #9.41: the recorded uid is gone but a registry of this name exists: repair the
            # record by adopting it (the stale uid would otherwise stay recorded for ever)
            holder = recorded_as.get(obs_same_name.uid)
            if holder is not None and holder != key and (holder in desired_by_key or holder[:2] != key[:2]):
                changes.append(Change(ADOPT, key, uid=obs_same_name.uid, registry=reg, blocked=(
                    f"recorded uid {rec.uid} is gone and the registry of this name (uid {obs_same_name.uid}) "
                    f"is recorded as {key_str(holder)}, "
                    f"{'which is still declared' if holder in desired_by_key else 'of another kind or scope'}; "
                    "resolve by hand")))
                continue
            if holder is not None and holder != key:
                # adversarial pass 5, item 8: this name's registry was deleted on the target and
                # the one recorded as ``holder`` (no longer declared) renamed to this name; the file
                # was renamed too. The same registry, as below: the record follows it, and this
                # name's stale record (its uid gone) is replaced; never a delete of its uid
                stale_uid = rec.uid
                rec = state.records[holder]
                renamed_from = holder
                renamed.add(holder)
            else:
                changes.append(_adopt(reg, obs_same_name, reason=(
                    f"recorded uid {rec.uid} is gone from the target; adopting the registry of this name "
                    f"(uid {obs_same_name.uid})"), ca=ca.get(key)))
                continue
        if rec is None:
            if obs_same_name is not None:
                holder = recorded_as.get(obs_same_name.uid)
                if holder is None:
                    changes.append(_adopt(reg, obs_same_name, ca=ca.get(key)))
                    continue
                # #9.1: the uid is recorded under another name: renamed on the target
                if holder in desired_by_key or holder[:2] != key[:2]:
                    changes.append(Change(ADOPT, key, uid=obs_same_name.uid, registry=reg, blocked=(
                        f"uid {obs_same_name.uid} is recorded as {key_str(holder)}, which is still declared; "
                        "one registry cannot be managed under two names")))
                    continue
                # renamed on the target, then in the file: the same registry, updated in place
                # (the PUT carries the name the target already has); never a delete of its uid
                rec = state.records[holder]
                renamed_from = holder
                renamed.add(holder)
            else:
                created = tuple(
                    FieldChange(f.path, None, f.new, f.sensitive)
                    for f in _field_diff({}, target_spec(reg.spec), only_old_keys=False)
                )
                changes.append(Change(CREATE, key, registry=reg, fields=created))
                continue

        obs = by_uid.get(rec.uid)
        if obs is None:
            changes.append(Change(CREATE, key, registry=reg, reason="recorded but missing on the target"))
            continue
        if renamed_from is None and obs.name != reg.name:
            # renamed on the target only. Spectro's provider never renames in place (name is
            # ForceNew in terraform-provider-spectrocloud resourceRegistryOciEcr and
            # resourceRegistryHelm), so neither do we.
            changes.append(Change(UPDATE, key, uid=obs.uid, registry=reg,
                                  fields=(FieldChange("metadata.name", obs.name, reg.name),), blocked=(
                f"renamed on the target to {obs.name!r} (uid {obs.uid}); a registry is not renamed in place: "
                f"rename it in the file to {obs.name!r} (the record follows) or back on the target")))
            continue
        # a record no signed state vouches for: its uid is used (the registry of this name has
        # it), not its spec; it is written again from the definition (an update), and signed
        trusted = rec.key not in unverified  # the record used: another key's when renamed
        recorded_spec = rec.spec if trusted else None
        old_spec = recorded_spec if recorded_spec is not None else {}
        new_spec = target_spec(reg.spec)
        fp_changed = reg.fingerprint != rec.fingerprint or not trusted
        immutable = _immutable_change(reg.kind, old_spec or obs.spec, new_spec) if fp_changed else ""
        fields = []
        reason = "" if trusted else UNSIGNED_RECORD
        if fp_changed and recorded_spec is not None:
            fields = _field_diff(old_spec, new_spec, only_old_keys=False)
        # the target reports exactly the desired spec (the common case): its observable view
        # is what it reports, no drift (_observable_view of equal specs gives the observed one)
        if obs.spec != new_spec:
            view = _observable_view(new_spec, obs.spec)
            drift = [] if view == obs.spec else _field_diff(obs.spec, view, only_old_keys=True)
            if drift:
                known = {f.path for f in fields}
                extra = [f for f in drift if f.path not in known]
                if extra:
                    reason = "drift: changed on the target outside reconcile"
                    fields += extra
                immutable = immutable or _immutable_change(reg.kind, obs.spec, new_spec)
        want_ca = ca.get(key)
        if want_ca is not None and not any(f.path == _CA_PATH for f in fields):  # a new file: shown already
            applied = rec.ca_digest if rec.spec is None or (rec.spec.get("tls") or {}).get("caFile") == \
                (reg.spec.get("tls") or {}).get("caFile") else None
            ca_change = _ca_change(reg, applied, obs, want_ca)
            if ca_change is not None:
                fields.append(ca_change[0])
                if ca_change[1] and not reason:
                    reason = "drift: changed on the target outside reconcile"
        values = secrets.for_key(key)
        if any(v is not None for v in values.values()):  # else no secret of this registry to compare
            for path, _ref in reg.secret_refs:
                value = values.get(path)
                recorded = rec.secret_hashes.get(path)
                if value is not None and secret_matches(recorded, state.salt, path, value, secrets.state_key) is False:
                    if not any(f.path == path for f in fields):
                        fields.append(FieldChange(path, SENSITIVE, SENSITIVE, True))
        if fp_changed and not fields:
            fields.append(FieldChange("spec", Marker("(changed)"), Marker("(changed)")) if trusted else FieldChange(
                "record", Marker("(not signed)"), Marker("(written from the definition, signed)")))
        state_only = False
        if reg.protect != rec.protect:
            if not fields:
                state_only = True
            fields.append(FieldChange("metadata.protect", rec.protect, reg.protect))
        if renamed_from is not None:
            state_only = not fields  # the target already has the new name: nothing to send
            fields.insert(0, FieldChange("metadata.name", renamed_from[2], reg.name))
            reason = "; ".join(x for x in (
                f"renamed on the target from {renamed_from[2]!r}: same uid, the record follows",
                f"the recorded uid {stale_uid} of this name is gone from the target" if stale_uid else "", reason) if x)
        if not fields:
            changes.append(Change(NOOP, key, uid=obs.uid, registry=reg))
            continue
        if immutable:
            blocked = ""
            if rec.protect:
                # #9.5: protect: false in the same commit takes effect only once applied
                blocked = (f"protected: replacing deletes it first ({immutable}); protect: true is recorded: "
                           "apply protect: false (spec unchanged) first, then the replace")
            changes.append(
                Change(REPLACE, key, uid=obs.uid, fields=tuple(fields), registry=reg, reason=immutable, blocked=blocked,
                       renamed_from=renamed_from)
            )
        else:
            changes.append(
                Change(UPDATE, key, uid=obs.uid, fields=tuple(fields), registry=reg, reason=reason, state_only=state_only,
                       renamed_from=renamed_from)
            )

    deletions: list[Change] = []
    undeclared = [k for k in records if k not in desired_by_key]  # renamed ones among them
    delete_keys = sorted(k for k in undeclared if k not in renamed)
    for key in delete_keys:
        rec = state.records[key]
        obs = by_uid.get(rec.uid)
        if obs is not None and obs.builtin:
            changes.append(Change(DELETE, key, uid=rec.uid, blocked="built-in default registry; never deleted"))
            continue
        gone = obs is None
        if obs is not None and (obs.name != rec.name or obs.scope != rec.scope):
            # its uid is called something else on the target now (renamed in the UI): the plan
            # would show "- other" and delete "prod-critical"; as a declared registry renamed
            # on the target is not renamed back, an undeclared one is not deleted by its old name
            now = f"{obs.name!r}" + (f" (scope {obs.scope})" if obs.scope != rec.scope else "")
            changes.append(Change(DELETE, key, uid=rec.uid, blocked=(
                f"renamed on the target to {now} (uid {rec.uid}) since it was applied: not deleted under its "
                f"recorded name; declare it as {obs.name!r} to keep managing it (the record follows), or delete "
                "it by hand")))
            continue
        if key in state.unverified and not gone:  # gone: only the record goes, under the guards below
            changes.append(Change(DELETE, key, uid=rec.uid, gone=gone, blocked=(
                "recorded only by a state that is not signed with RECONCILER_STATE_KEY (an older reconcile, another "
                "key, or a change to the state outside reconcile): never deleted on its word; declare it and "
                "apply (the record is then verified), or delete it by hand")))
            continue
        if rec.protect:
            changes.append(
                Change(DELETE, key, uid=rec.uid, gone=gone,
                       blocked=("the target no longer lists it, but protect: true is recorded; the record is kept "
                                "(check the target; apply a definition with protect: false to let it go)") if gone
                       else "protect: true is recorded; apply a definition with protect: false first")
            )
            continue
        if options.inputs_failed:
            changes.append(
                Change(DELETE, key, uid=rec.uid, gone=gone,
                       blocked="some definitions failed to load or validate; deletions are off")
            )
            continue
        # #9.2: dropping a record the target no longer lists is a deletion too (an empty or
        # wrong answer from the target must hit the same guards as a real delete)
        deletions.append(Change(DELETE, key, uid=rec.uid, gone=gone,
                                reason="already gone from the target" if gone else ""))

    changes = _never_delete_kept(changes + deletions)
    notes: list[str] = []
    profiles_known: bool | None = None
    if options.in_use_checked:
        profiles_known = options.in_use is not None
        if options.in_use is None:
            notes.append(NO_PROFILES_NOTE)
        else:
            changes = [_guard_in_use(c, options.in_use, options.allow_in_use) for c in changes]
            if options.allow_in_use and any("--allow-in-use" in c.reason for c in changes):
                notes.append("--allow-in-use: changes to registries that cluster profiles use are let through")
    # only the loop over delete_keys makes DELETE changes (the guards above keep the action)
    deletions = [c for c in changes if c.action == DELETE and not c.blocked] if delete_keys else []

    refusals: list[str] = []
    live_deletions = len(deletions)
    managed_left = len(records) - len(undeclared) + len(renamed)  # recorded and declared, or renamed
    if live_deletions and managed_left == 0 and not options.allow_empty:
        refusals.append(
            f"refusing to delete every managed registry ({live_deletions}); pass --allow-empty if this is intended"
        )
    # a replace deletes the registry too (created again under a new uid: what references it
    # breaks, as protect and the in-use check already count it): it counts against the limit
    # (adversarial pass 8: six registries replaced by one edit of a shared anchor went through)
    replaces = sum(1 for c in changes if c.action == REPLACE and not c.blocked)
    if live_deletions + replaces > options.max_deletions:
        of_them = f" ({replaces} of them replace{'' if replaces == 1 else 's'}: deleted and created again under a " \
                  "new uid)" if replaces else ""
        refusals.append(f"refusing {live_deletions + replaces} deletions{of_them}: more than --max-deletions "
                        f"{options.max_deletions}")
    return Plan(tuple(changes), tuple(refusals), tuple(warnings), tuple(notes), profiles_known, ca)


def impact_uids(plan: Plan) -> list[str]:
    """The uids a plan would delete from the target (deletes and replaces): those whose
    users must be looked up before it may run."""
    return sorted({str(c.uid) for c in plan.changes  # the action first: most changes are NOOPs
                   if (c.action == REPLACE or (c.action == DELETE and not c.gone)) and c.uid and not c.blocked})


def describe_refs(refs: Sequence[ProfileRef]) -> str:
    parts = []
    for r in sorted(refs, key=lambda r: (r.project or "", r.profile_name, r.profile_uid)):
        where = f"project {r.project}" if r.project else "tenant"
        parts.append(f"{r.profile_name} ({where}, {r.clusters} cluster{'' if r.clusters == 1 else 's'})")
    return ", ".join(parts)


def describe_unread(refs: Sequence[ProfileRef]) -> str:
    ordered = sorted(refs, key=lambda r: (r.profile_name, r.profile_uid))
    return ", ".join(f"{r.profile_name} ({r.unread})" for r in ordered)


def _users(refs: Sequence[ProfileRef]) -> str:
    """Who uses the registry, and whose packs could not be checked: a profile we could not read
    counts as a user (the look-up fails closed)."""
    used = [r for r in refs if not r.unread]
    unknown = [r for r in refs if r.unread]
    said = []
    if used:
        said.append(f"used by cluster profile{'' if len(used) == 1 else 's'} {describe_refs(used)}")
    if unknown:
        said.append(f"could not check whether cluster profile{'' if len(unknown) == 1 else 's'} "
                    f"{describe_unread(unknown)} use{'s' if len(unknown) == 1 else ''} it")
    return "; ".join(said)


def _guard_in_use(c: Change, in_use: Mapping[str, Sequence[ProfileRef]], allow: bool) -> Change:
    """#10.2: a delete or replace of a registry that cluster profiles reference (or may: their
    packs could not be read) is blocked as protect blocks it, naming them; --allow-in-use lets
    a reviewed change through."""
    if c.blocked or not c.uid or not (c.action == REPLACE or (c.action == DELETE and not c.gone)):
        return c
    refs = in_use.get(c.uid) or ()
    if not refs:
        return c
    what = "deleting" if c.action == DELETE else "replacing (new uid)"
    users = _users(refs)
    if allow:
        return replace(c, reason="; ".join(x for x in (c.reason, f"{users}; let through by --allow-in-use") if x))
    breaks = "breaks them" if any(not r.unread for r in refs) else "may break them"
    return replace(c, blocked=f"{users}; {what} {breaks}; pass --allow-in-use once reviewed")


UNSIGNED_RECORD = ("its record is not signed with RECONCILER_STATE_KEY: written again from the definition, and "
                   "signed")
_CA_PATH = "tls.caFile"


def _ca_text(ref: Any, digest: str) -> Marker:
    return Marker(f"{ref} (contents {digest[:15]})")  # "sha256:" and 8 hex digits


def _ca_change(reg: Registry, applied: str | None, obs: ObservedRegistry, want: str) -> tuple[FieldChange, bool] | None:
    """(the change, whether it is drift) when the CA file's contents ``want`` differ from the
    contents applied (the record's) or from the PEM the target reports; None when neither
    differs or neither is known."""
    ref = (reg.spec.get("tls") or {}).get("caFile")
    if applied is not None and applied != want:
        return FieldChange(_CA_PATH, _ca_text(ref, applied), _ca_text(ref, want)), False
    if obs.ca_pem is not None:
        reported = ca_digest(obs.ca_pem) if obs.ca_pem else None
        if reported != want:
            was = Marker(f"(contents {reported[:15]} on the target)" if reported else "(no CA on the target)")
            return FieldChange(_CA_PATH, was, _ca_text(ref, want)), True
    return None


def _adopt(reg: Registry, obs: ObservedRegistry, reason: str = "", ca: str | None = None) -> Change:
    fields = _field_diff(obs.spec, _observable_view(reg.spec, obs.spec), only_old_keys=True)
    if ca is not None:
        ca_change = _ca_change(reg, None, obs, ca)
        if ca_change is not None:
            fields.append(ca_change[0])
    fields += [FieldChange(p, Marker("(unknown)"), SENSITIVE, True) for p, _ in reg.secret_refs]
    return Change(ADOPT, reg.key, uid=obs.uid, fields=tuple(fields), registry=reg,
                  reason=reason or "exists on the target with this name; adopted and brought to the desired spec")


def _never_delete_kept(changes: list[Change]) -> list[Change]:
    """#9.1: a plan never deletes (or replaces away) a uid that another change adopts, updates
    or keeps; such a delete is blocked, whatever led to it."""
    for c in changes:
        if c.action == DELETE or c.action == REPLACE:
            break
    else:
        return changes  # nothing that could delete a uid
    kept: dict[str, Key] = {}
    for c in changes:
        if c.action in (ADOPT, UPDATE, NOOP) and c.uid:
            kept.setdefault(c.uid, c.key)
    out = []
    for c in changes:
        other = kept.get(c.uid or "")
        if c.action in (DELETE, REPLACE) and not c.blocked and other is not None and other != c.key:
            c = replace(c, blocked=f"uid {c.uid} is also kept as {key_str(other)}; never deleted")
        out.append(c)
    return out
