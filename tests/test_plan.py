"""The pure planner: a table of desired/recorded/observed situations -> expected changes."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from reconciler.model import ObservedRegistry, Registry, fingerprint, secret_hash, target_spec
from reconciler.plan import PlanOptions, SecretValues, make_plan
from reconciler.state.base import Record, State

OCI = {"endpoint": "reg.example.com", "provider": "helm", "baseContentPath": "charts", "sync": True,
       "auth": {"type": "basic", "username": "bot", "password": {"fromEnv": "PW"}},
       "tls": {"insecureSkipVerify": False}, "fips": False}
HELM = {"endpoint": "https://charts.example.com", "sync": True, "auth": {"type": "noAuth"},
        "tls": {"insecureSkipVerify": False}, "fips": False}


def reg(name="a", kind="HelmRegistry", spec=None, protect=False, scope="tenant"):
    return Registry(kind=kind, name=name, scope=scope, spec=dict(spec or HELM), protect=protect)


def observed(r: Registry, uid="u1", builtin=False, **changes):
    spec = copy.deepcopy(target_spec(r.spec))
    spec.update(changes)
    spec.get("auth", {}).pop("password", None)
    return ObservedRegistry(uid=uid, kind=r.kind, name=r.name, scope=r.scope, spec=spec, builtin=builtin)


def recorded(r: Registry, uid="u1", state=None, secrets=None, protect=None):
    state = state or State()
    hashes = {p: secret_hash(state.salt, p, v) for p, v in (secrets or {}).items()}
    state.records[r.key] = Record(uid=uid, kind=r.kind, name=r.name, scope=r.scope, fingerprint=fingerprint(r.spec),
                                  secret_hashes=hashes, protect=r.protect if protect is None else protect,
                                  spec=target_spec(r.spec))
    return state


def actions(plan):
    return [(c.action, c.name, bool(c.blocked)) for c in plan.changes]


def test_create_when_unknown():
    r = reg()
    plan = make_plan([r], State(), [])
    assert actions(plan) == [("create", "a", False)]
    assert {f.path for f in plan.changes[0].fields} >= {"endpoint", "auth.type", "sync"}


def test_noop_when_recorded_and_equal():
    r = reg()
    plan = make_plan([r], recorded(r), [observed(r)])
    assert actions(plan) == [("noop", "a", False)]
    assert not plan.has_changes


def test_update_lists_changed_fields():
    old = reg()
    new = reg(spec={**HELM, "endpoint": "https://other.example.com"})
    plan = make_plan([new], recorded(old), [observed(old)])
    (c,) = plan.changes
    assert c.action == "update"
    assert [(f.path, f.old, f.new) for f in c.fields] == [
        ("endpoint", "https://charts.example.com", "https://other.example.com")]


@pytest.mark.parametrize(
    "old_spec,new_spec,why",
    [
        ({**OCI}, {**OCI, "sync": False, "baseContentPath": "charts"}, "sync cannot be turned off"),
        ({**OCI, "sync": False}, {**OCI}, "sync cannot be turned on"),
        ({**OCI}, {**OCI, "auth": {"type": "ecr", "credentials": {"credentialType": "sts", "arn": "a", "externalId": "e"}},
                   "endpoint": "1.dkr.ecr.us-east-1.amazonaws.com"}, "auth type basic -> ecr"),
        ({**OCI, "auth": {"type": "ecr"}}, {**OCI}, "auth type ecr -> basic"),
    ],
)
def test_replace_on_immutable_change(old_spec, new_spec, why):
    old = reg(kind="OciRegistry", spec=old_spec)
    new = reg(kind="OciRegistry", spec=new_spec)
    plan = make_plan([new], recorded(old), [observed(old)])
    (c,) = plan.changes
    assert c.action == "replace" and why in c.reason


def test_replaces_count_against_max_deletions():
    """Adversarial pass 8: six OCI registries whose sync one edit turned off (a shared YAML
    anchor) planned six replaces under --max-deletions 5 and went through: each deletes the
    registry and creates it again under a new uid. A replace counts as a deletion now (as
    protect and the in-use check already count it), with deletions alike; blocked ones do not."""
    olds = [reg(f"o{i}", kind="OciRegistry", spec=OCI) for i in range(6)]
    news = [reg(f"o{i}", kind="OciRegistry", spec={**OCI, "sync": False, "baseContentPath": "charts"})
            for i in range(6)]
    state = State()
    for i, r in enumerate(olds):
        recorded(r, uid=f"u{i}", state=state)
    obs = [observed(r, uid=f"u{i}") for i, r in enumerate(olds)]
    plan = make_plan(news, state, obs, options=PlanOptions(max_deletions=5))
    assert [c.action for c in plan.changes] == ["replace"] * 6
    assert plan.refusals == ("refusing 6 deletions (6 of them replaces: deleted and created again under a new uid): "
                             "more than --max-deletions 5",)
    assert not make_plan(news, state, obs, options=PlanOptions(max_deletions=6)).refusals
    # three replaces and three deletes: six deletions
    mixed = make_plan(news[:3], state, obs, options=PlanOptions(max_deletions=5))
    assert sorted(c.action for c in mixed.changes) == ["delete"] * 3 + ["replace"] * 3
    assert mixed.refusals and mixed.refusals[0].startswith("refusing 6 deletions (3 of them replaces")
    # a protected replace is blocked, deletes nothing, and does not count
    state.records[olds[0].key] = replace(state.records[olds[0].key], protect=True)
    assert not make_plan(news, state, obs, options=PlanOptions(max_deletions=5)).refusals


def test_oci_basic_to_noauth_is_an_update_not_a_replace():
    # both are the basic flavour (v1BasicOciRegistry): Spectro's provider PUTs the new
    # credential_type in place (terraform-provider-spectrocloud toRegistryBasic). This test
    # used to expect a replace, which would have given the registry a new uid for nothing.
    old = reg(kind="OciRegistry", spec=OCI)
    new = reg(kind="OciRegistry", spec={**OCI, "auth": {"type": "noAuth"}})
    (c,) = make_plan([new], recorded(old), [observed(old)]).changes
    assert c.action == "update"


def test_helm_sync_off_is_an_update_not_a_replace():
    old = reg()
    new = reg(spec={**HELM, "sync": False})
    (c,) = make_plan([new], recorded(old), [observed(old)]).changes
    assert c.action == "update"


def test_secret_change_detected_through_salted_hash():
    r = reg(kind="OciRegistry", spec=OCI)
    state = recorded(r, secrets={"auth.password": "old-value"})
    same = make_plan([r], state, [observed(r)], SecretValues({r.key: {"auth.password": "old-value"}}))
    assert actions(same) == [("noop", "a", False)]
    changed = make_plan([r], state, [observed(r)], SecretValues({r.key: {"auth.password": "new-value"}}))
    (c,) = changed.changes
    assert c.action == "update"
    assert [(f.path, f.old, f.new, f.sensitive) for f in c.fields] == [
        ("auth.password", "(sensitive)", "(sensitive)", True)]
    # unknown value (dry-run without the variable): no false positive
    unknown = make_plan([r], state, [observed(r)], SecretValues({r.key: {"auth.password": None}}))
    assert actions(unknown) == [("noop", "a", False)]


def test_drift_on_target_is_an_update():
    r = reg()
    plan = make_plan([r], recorded(r), [observed(r, endpoint="https://hand-edited.example.com")])
    (c,) = plan.changes
    assert c.action == "update" and "drift" in c.reason
    assert c.fields[0].path == "endpoint"


def test_unobservable_fields_cause_no_diff():
    r = reg(spec={**HELM, "tls": {"insecureSkipVerify": False, "caFile": "ca.pem"}, "fips": True})
    obs = ObservedRegistry(uid="u1", kind=r.kind, name="a", scope="tenant",
                           spec={"endpoint": HELM["endpoint"], "sync": True, "auth": {"type": "noAuth"},
                                 "tls": {"insecureSkipVerify": False}})
    assert actions(make_plan([r], recorded(r), [obs])) == [("noop", "a", False)]


def test_adopt_when_name_exists_but_not_recorded():
    r = reg()
    plan = make_plan([r], State(), [observed(r, uid="x9")])
    (c,) = plan.changes
    assert (c.action, c.uid) == ("adopt", "x9")


def test_recorded_but_missing_on_target_is_recreated():
    r = reg()
    (c,) = make_plan([r], recorded(r), []).changes
    assert c.action == "create"


def test_delete_only_recorded_registries():
    r = reg("gone")
    unmanaged = reg("someone-elses")
    plan = make_plan([], recorded(r), [observed(r), observed(unmanaged, uid="u2")],
                     options=PlanOptions(allow_empty=True))
    assert actions(plan) == [("delete", "gone", False)]


def test_a_registry_renamed_on_the_target_is_not_deleted_under_its_recorded_name():
    """The file of 'other' is removed, but its uid is 'prod-critical' on the target now
    (renamed in the UI): the plan would read '- other' and delete 'prod-critical'."""
    other, keep = reg("other"), reg("keep")
    state = recorded(keep, uid="u2", state=recorded(other, uid="u1"))
    renamed = ObservedRegistry(uid="u1", kind=other.kind, name="prod-critical", scope=other.scope,
                               spec=observed(other).spec)
    plan = make_plan([keep], state, [renamed, observed(keep, uid="u2")])
    assert actions(plan) == [("noop", "keep", False), ("delete", "other", True)]
    assert "renamed on the target to 'prod-critical' (uid u1)" in plan.changes[1].blocked
    moved = ObservedRegistry(uid="u1", kind=other.kind, name="other", scope="project", spec=observed(other).spec)
    plan = make_plan([keep], state, [moved, observed(keep, uid="u2")])
    assert actions(plan)[1] == ("delete", "other", True), plan.changes
    # declared under its new name, the record follows the uid (an in-place update, no delete)
    declared = reg("prod-critical")
    plan = make_plan([keep, declared], state, [renamed, observed(keep, uid="u2")])
    assert ("delete", "other", False) not in actions(plan) and ("delete", "other", True) not in actions(plan)


def test_builtin_default_is_never_touched():
    b = reg("Bitnami")
    plan = make_plan([b], State(), [observed(b, uid="b1", builtin=True)])
    assert actions(plan) == [("create", "Bitnami", True)]
    state = recorded(b, uid="b1")
    plan = make_plan([], state, [observed(b, uid="b1", builtin=True)], options=PlanOptions(allow_empty=True))
    assert actions(plan) == [("delete", "Bitnami", True)]


# ---- prune guards: each would delete without the guard


def _many(n):
    regs = [reg(f"r{i}") for i in range(n)]
    state = State()
    for i, r in enumerate(regs):
        recorded(r, uid=f"u{i}", state=state)
    return regs, state, [observed(r, uid=f"u{i}") for i, r in enumerate(regs)]


def test_guard_max_deletions():
    regs, state, obs = _many(8)
    keep = regs[:2]
    refused = make_plan(keep, state, obs, options=PlanOptions(max_deletions=5))
    assert refused.refusals and "more than --max-deletions 5" in refused.refusals[0]
    allowed = make_plan(keep, state, obs, options=PlanOptions(max_deletions=6))
    assert not allowed.refusals and allowed.counts()["delete"] == 6


def test_guard_allow_empty():
    regs, state, obs = _many(2)
    refused = make_plan([], state, obs)
    assert any("every managed registry" in r for r in refused.refusals)
    # also when the desired set is all-new names
    refused2 = make_plan([reg("brand-new")], state, obs)
    assert any("every managed registry" in r for r in refused2.refusals)
    assert not make_plan([], state, obs, options=PlanOptions(allow_empty=True)).refusals


def test_guard_inputs_failed_blocks_all_deletions():
    regs, state, obs = _many(3)
    plan = make_plan(regs[:1], state, obs, options=PlanOptions(inputs_failed=True))
    assert plan.counts()["delete"] == 0 and plan.counts()["blocked"] == 2
    unguarded = make_plan(regs[:1], state, obs)
    assert unguarded.counts()["delete"] == 2


def test_guard_protect_outlives_the_file():
    r = reg("precious", protect=True)
    state = recorded(r)
    plan = make_plan([reg("other")], state, [observed(r)], options=PlanOptions(allow_empty=True))
    blocked = [c for c in plan.changes if c.name == "precious"]
    assert blocked[0].action == "delete" and "protect" in blocked[0].blocked
    assert plan.counts()["delete"] == 0
    # unprotected twin is deleted
    state2 = recorded(reg("precious", protect=False))
    assert make_plan([reg("other")], state2, [observed(r)],
                     options=PlanOptions(allow_empty=True)).counts()["delete"] == 1


def test_protect_change_is_state_only_update():
    r = reg("p", protect=True)
    state = recorded(r)
    (c,) = make_plan([reg("p", protect=False)], state, [observed(r)]).changes
    assert c.action == "update" and c.state_only
    assert [f.path for f in c.fields] == ["metadata.protect"]


def test_protected_replace_is_blocked():
    old = reg("p", kind="OciRegistry", spec=OCI, protect=True)
    new = reg("p", kind="OciRegistry", spec={**OCI, "sync": False}, protect=True)
    (c,) = make_plan([new], recorded(old), [observed(old)]).changes
    assert c.action == "replace" and c.blocked
    # lifting protect in the same definition does not unblock it (#9.5)
    new = reg("p", kind="OciRegistry", spec={**OCI, "sync": False}, protect=False)
    (c,) = make_plan([new], recorded(old), [observed(old)]).changes
    assert c.action == "replace" and "protect: true is recorded" in c.blocked


def test_no_secret_value_in_plan():
    r = reg(kind="OciRegistry", spec=OCI)
    plan = make_plan([r], State(), [], SecretValues({r.key: {"auth.password": "hunter2-value"}}))
    assert "hunter2-value" not in repr(plan)


def test_an_unverified_record_is_written_again_and_its_spec_is_not_believed():
    """A record no signed state vouches for (state branch edited by someone else): its uid is
    used, its spec is not. A forged ``sync: false`` must not turn a declared registry into a
    replace (a new uid, breaking the cluster profiles that reference it); the record is
    written again from the definition (an update), and an undeclared one is never deleted."""
    mine = reg("a", "OciRegistry", OCI)
    state = recorded(mine)
    state.records[mine.key].spec = {**target_spec(OCI), "sync": False}  # forged
    state.records[mine.key].fingerprint = "sha256:forged"
    planted = reg("prod", spec=HELM)
    state = recorded(planted, uid="u2", state=state)
    state.unverified = {mine.key, planted.key}
    plan = make_plan([mine], state, [observed(mine), observed(planted, uid="u2")])
    assert actions(plan) == [("update", "a", False), ("delete", "prod", True)]
    assert "not signed" in plan.changes[0].reason and "never deleted on its word" in plan.changes[1].blocked
    # trusted, the same forged record plans the replace it describes
    state.unverified = set()
    assert actions(make_plan([mine], state, [observed(mine)]))[0] == ("replace", "a", False)


def test_an_unverified_record_under_another_name_cannot_make_a_replace_either():
    """Adversarial pass 2: the record was planted under another name with the target's uid
    (the "renamed on the target, then in the file" path), so the declared key was never in
    ``unverified`` and the planted ``sync: false`` made a replace (a new uid)."""
    mine = reg("x", "OciRegistry", OCI)
    planted = reg("h", "OciRegistry", {**OCI, "sync": False})
    state = recorded(planted, uid="u1")
    state.unverified = {planted.key}
    plan = make_plan([mine], state, [observed(mine, uid="u1")])
    assert actions(plan) == [("update", "x", False)], plan.changes
    state.unverified = set()  # trusted, the same record plans the replace it describes
    assert actions(make_plan([mine], state, [observed(mine, uid="u1")])) == [("replace", "x", False)]


def test_an_unverified_record_of_a_registry_already_gone_is_dropped():
    """Nothing is deleted on the target, so only the record goes (under the usual guards); kept,
    it would be a blocked change, and an apply that exits 1, for ever."""
    planted = reg("ghost", spec=HELM)
    keep = reg("keep", spec=HELM)
    state = recorded(planted, uid="u-gone", state=recorded(keep, uid="u1"))
    state.unverified = {planted.key}
    plan = make_plan([keep], state, [observed(keep, uid="u1")])
    assert actions(plan) == [("noop", "keep", False), ("delete", "ghost", False)]
    assert plan.changes[1].gone
