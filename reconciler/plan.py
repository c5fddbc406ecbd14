"""The pure diff: desired registries vs recorded state vs what the target reports.

No I/O. The result is an immutable ``Plan`` of ``Change`` values that the renderers print
and ``apply`` executes. Prune guards are applied here, so a dry-run shows exactly what a
real run would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import (
    Key,
    ObservedRegistry,
    Registry,
    Span,
    fingerprint,
    flatten,
    is_secret_ref,
    iter_secret_refs,
    key_str,
    secret_hash,
    secret_matches,
    target_spec,
)
from reconciler.state.base import State

CREATE, UPDATE, REPLACE, DELETE, ADOPT, NOOP = "create", "update", "replace", "delete", "adopt", "noop"
SYMBOLS = {CREATE: "+", UPDATE: "~", REPLACE: "-/+", DELETE: "-", ADOPT: "=", NOOP: " "}
# Order in which apply runs the actions: free names first, then build.
APPLY_ORDER = {DELETE: 0, REPLACE: 1, CREATE: 2, ADOPT: 3, UPDATE: 4, NOOP: 5}


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    sensitive: bool = False


@dataclass(frozen=True)
class Change:
    action: str
    key: Key
    uid: str | None = None
    fields: tuple[FieldChange, ...] = ()
    reason: str = ""
    registry: Registry | None = None  # desired (None for delete)
    blocked: str = ""  # non-empty: shown, never executed
    state_only: bool = False  # e.g. protect flag changed: nothing to send to the target
    gone: bool = False  # delete of a registry already gone from the target

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


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != NOOP and not c.blocked)

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable)

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
    max_deletions: int = 5
    allow_empty: bool = False
    inputs_failed: bool = False  # some file failed to load or validate: no deletions at all


@dataclass
class SecretValues:
    """Resolved secret values per registry key: path -> value (None when unavailable)."""

    values: dict[Key, dict[str, str | None]] = field(default_factory=dict)
    state_key: str | None = None  # RECONCILER_STATE_KEY: keys the recorded hashes (model.secret_hash)

    def for_key(self, key: Key) -> Mapping[str, str | None]:
        return self.values.get(key, {})


def _display(value: Any) -> Any:
    if is_secret_ref(value):
        return "(sensitive)"
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
                    "(sensitive)" if sensitive else _display(a.get(k)),
                    "(sensitive)" if sensitive else _display(b.get(k)),
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
    old_auth = (old.get("auth") or {}).get("type")
    new_auth = (new.get("auth") or {}).get("type")
    if old_auth and new_auth and old_auth != new_auth and (old_auth == "ecr" or new_auth == "ecr"):
        return f"auth type {old_auth} -> {new_auth} cannot change in place"
    if old_auth and new_auth and old_auth != new_auth and kind == "OciRegistry":
        return f"auth type {old_auth} -> {new_auth} cannot change in place"
    if kind == "OciRegistry" and old.get("sync") is True and new.get("sync") is False:
        return "sync cannot be turned off in place"
    return ""


def secret_hashes(salt: str, registry: Registry, values: Mapping[str, str | None],
                  key: str | None = None) -> dict[str, str]:
    out = {}
    for path, _ref in iter_secret_refs(registry.spec):
        value = values.get(path)
        if value is not None:
            out[path] = secret_hash(salt, path, value, key)
    return out


def make_plan(
    desired: Iterable[Registry],
    state: State,
    observed: Iterable[ObservedRegistry],
    secrets: SecretValues | None = None,
    options: PlanOptions | None = None,
) -> Plan:
    options = options or PlanOptions()
    secrets = secrets or SecretValues()
    desired_by_key = {r.key: r for r in desired}
    observed_list = list(observed)
    by_uid = {o.uid: o for o in observed_list}
    by_key = {o.key: o for o in observed_list}
    changes: list[Change] = []
    warnings: list[str] = []

    for key in sorted(desired_by_key):
        reg = desired_by_key[key]
        rec = state.records.get(key)
        obs_same_name = by_key.get(key)
        if obs_same_name is not None and obs_same_name.builtin:
            changes.append(
                Change(CREATE, key, registry=reg, blocked=f"{key_str(key)} is a built-in default registry; it is read-only")
            )
            continue
        if rec is None:
            if obs_same_name is not None:
                fields = _field_diff(obs_same_name.spec, _observable_view(reg.spec, obs_same_name.spec), only_old_keys=True)
                fields += [FieldChange(p, "(unknown)", "(sensitive)", True) for p, _ in iter_secret_refs(reg.spec)]
                changes.append(
                    Change(ADOPT, key, uid=obs_same_name.uid, fields=tuple(fields), registry=reg,
                           reason="exists on the target with this name; adopted and brought to the desired spec")
                )
            else:
                created = tuple(
                    FieldChange(f.path, None, f.new, f.sensitive)
                    for f in _field_diff({}, target_spec(reg.spec), only_old_keys=False)
                )
                changes.append(Change(CREATE, key, registry=reg, fields=created))
            continue

        obs = by_uid.get(rec.uid)
        if obs is None:
            obs = obs_same_name
            if obs is None:
                changes.append(Change(CREATE, key, registry=reg, reason="recorded but missing on the target"))
                continue
        old_spec = rec.spec if rec.spec is not None else {}
        new_spec = target_spec(reg.spec)
        fp_changed = fingerprint(reg.spec) != rec.fingerprint
        immutable = _immutable_change(reg.kind, old_spec or obs.spec, new_spec) if fp_changed else ""
        fields = []
        reason = ""
        if fp_changed and rec.spec is not None:
            fields = _field_diff(old_spec, new_spec, only_old_keys=False)
        view = _observable_view(new_spec, obs.spec)
        drift = [] if view == obs.spec else _field_diff(obs.spec, view, only_old_keys=True)
        if drift:
            known = {f.path for f in fields}
            extra = [f for f in drift if f.path not in known]
            if extra:
                reason = "drift: changed on the target outside reconcile"
                fields += extra
            immutable = immutable or _immutable_change(reg.kind, obs.spec, new_spec)
        values = secrets.for_key(key)
        for path, _ref in iter_secret_refs(reg.spec):
            value = values.get(path)
            recorded = rec.secret_hashes.get(path)
            if value is not None and secret_matches(recorded, state.salt, path, value, secrets.state_key) is False:
                if not any(f.path == path for f in fields):
                    fields.append(FieldChange(path, "(sensitive)", "(sensitive)", True))
        if fp_changed and not fields:
            fields.append(FieldChange("spec", "(changed)", "(changed)"))
        state_only = False
        if reg.protect != rec.protect:
            if not fields:
                state_only = True
            fields.append(FieldChange("metadata.protect", rec.protect, reg.protect))
        if not fields:
            changes.append(Change(NOOP, key, uid=obs.uid, registry=reg))
            continue
        if immutable:
            blocked = ""
            if rec.protect and reg.protect:
                blocked = f"protected: replacing deletes it first ({immutable}); set protect: false to allow"
            changes.append(
                Change(REPLACE, key, uid=obs.uid, fields=tuple(fields), registry=reg, reason=immutable, blocked=blocked)
            )
        else:
            changes.append(
                Change(UPDATE, key, uid=obs.uid, fields=tuple(fields), registry=reg, reason=reason, state_only=state_only)
            )

    deletions: list[Change] = []
    for key in sorted(set(state.records) - set(desired_by_key)):
        rec = state.records[key]
        obs = by_uid.get(rec.uid)
        if obs is None:
            changes.append(Change(DELETE, key, uid=rec.uid, gone=True, reason="already gone from the target"))
            continue
        if obs.builtin:
            changes.append(Change(DELETE, key, uid=rec.uid, blocked="built-in default registry; never deleted"))
            continue
        if rec.protect:
            changes.append(
                Change(DELETE, key, uid=rec.uid,
                       blocked="protect: true is recorded; apply a definition with protect: false first")
            )
            continue
        if options.inputs_failed:
            changes.append(
                Change(DELETE, key, uid=rec.uid, blocked="some definitions failed to load or validate; deletions are off")
            )
            continue
        deletions.append(Change(DELETE, key, uid=rec.uid))
    changes.extend(deletions)

    refusals: list[str] = []
    live_deletions = len(deletions)
    managed_left = len([k for k in state.records if k in desired_by_key])
    if live_deletions and managed_left == 0 and not options.allow_empty:
        refusals.append(
            f"refusing to delete every managed registry ({live_deletions}); pass --allow-empty if this is intended"
        )
    if live_deletions > options.max_deletions:
        refusals.append(
            f"refusing {live_deletions} deletions: more than --max-deletions {options.max_deletions}"
        )
    return Plan(tuple(changes), tuple(refusals), tuple(warnings))
