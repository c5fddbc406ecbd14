"""The local target's listing shortcuts give what the plain code gave: ``observed_registry``
is ``ObservedRegistry(...)``, ``decode_spec`` is ``json.loads``, and a read-only ``list()``
has the same registries in the same order as the database's ``ORDER BY`` then a sort."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import Conflict, TargetError
from reconciler.model import ObservedRegistry, Registry, decode_spec, observed_registry
from reconciler.targets.local import LocalTarget


def test_observed_registry_is_the_dataclass() -> None:
    spec = {"endpoint": "https://x", "auth": {"type": "noAuth"}}
    for kw in ({}, {"builtin": True}, {"builtin": True, "ca_pem": "PEM"}):
        fast = observed_registry("u1", "HelmRegistry", "a", "tenant", spec, **kw)  # type: ignore[arg-type]
        plain = ObservedRegistry(uid="u1", kind="HelmRegistry", name="a", scope="tenant", spec=spec, **kw)  # type: ignore[arg-type]
        assert fast == plain and repr(fast) == repr(plain) and hash(type(fast)) == hash(type(plain))
        assert list(vars(fast).items()) == list(vars(plain).items())
        assert dataclasses.asdict(fast) == dataclasses.asdict(plain) and fast.key == plain.key
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.uid = "u2"  # type: ignore[misc]
    # a field added to ObservedRegistry must be added to observed_registry too
    assert [f.name for f in dataclasses.fields(ObservedRegistry)] == list(vars(fast))


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": [1, 2.5, null, true], "c": {"d": "\\u00e9"}}', "{}", "[]", "null", "5", '"s"',
    ' {"a": 1}', '{"a": 1} ', '{"a": 1}\n', "\ufeff{}", '{"a": 1}{"b": 2}', '{"a": 1}, {"b": 2}', "{", "",
    '{"a": NaN}', '{"a": 1, "a": 2}',
])
def test_spec_of_is_json_loads(text: str) -> None:
    def outcome(fn: Any) -> Any:
        try:
            return ("ok", fn(text))
        except ValueError as exc:
            return ("error", type(exc).__name__, str(exc))

    got, want = outcome(decode_spec), outcome(json.loads)
    assert repr(got) == repr(want)  # repr: NaN != NaN


def _reference_list(target: LocalTarget) -> list[ObservedRegistry]:
    """LocalTarget.list() as it was: SQLite's order, then (read-only) the built-ins sorted in."""
    rows = target.conn.execute(
        "SELECT uid, kind, scope, name, spec, builtin FROM registries"
        + (" WHERE builtin = 0" if target.read_only else "") + " ORDER BY kind, scope, name").fetchall()
    out = [ObservedRegistry(uid=u, kind=k, name=n, scope=s, spec=json.loads(sp), builtin=bool(b))
           for u, k, s, n, sp, b in rows]
    if target.read_only:
        out = sorted(out + target._builtins, key=lambda o: (o.kind, o.scope, o.name))
    return out


def test_list_is_the_same_list_in_the_same_order(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    writer = LocalTarget(db, profile="airgap", base_dir=tmp_path)  # no built-ins: rows may take their names
    names = ["zeta", "Alpha", "bitnami", "Bitnami", "Palette Registry", "palette", "é-accent", "日本", "a b", "_x",
             "Public Spectro Helm Repo", "Z", "0"]
    for i, name in enumerate(names):
        for kind, scope in (("HelmRegistry", "tenant"), ("OciRegistry", "system"), ("HelmRegistry", "system")):
            spec: dict[str, Any] = {"endpoint": f"https://{i}.example.com", "sync": bool(i % 2), "n": i}
            try:
                writer.create(Registry(kind=kind, name=name, scope=scope, spec=spec), {})
            except Conflict:  # a built-in's name
                pass
    assert writer.list() == _reference_list(writer)
    writer.close()
    reader = LocalTarget(db, profile="self-hosted", base_dir=tmp_path, read_only=True)
    got, want = reader.list(), _reference_list(reader)
    assert [vars(o) for o in got] == [vars(o) for o in want]
    keys = [o.key for o in got]
    assert any(o.builtin for o in got) and len(keys) > len(set(keys))  # a row and a built-in share a key
    reader.close()


def test_list_of_a_row_with_odd_json(tmp_path: Path) -> None:
    db = tmp_path / "local.db"
    LocalTarget(db, base_dir=tmp_path).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO registries VALUES ('u1','HelmRegistry','tenant','a',' {\"x\": 1} ',0,'t','t')")
    reader = LocalTarget(db, base_dir=tmp_path, read_only=True)
    (row,) = [o for o in reader.list() if not o.builtin]
    assert row.spec == {"x": 1}
    reader.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE registries SET spec = '{\"x\": 1} trailing' WHERE uid = 'u1'")
    reader = LocalTarget(db, base_dir=tmp_path, read_only=True)
    with pytest.raises(TargetError, match=r"local target .*local.db: the spec stored for HelmRegistry/a \(uid u1\) "
                                          r"is not valid JSON \(Extra data"):
        reader.list()
    reader.close()


def test_make_known_is_the_dataclass() -> None:
    from reconciler.targets.base import Known, make_known

    spec = {"endpoint": "https://x"}
    for fast, plain in ((make_known("v1", spec, "HelmRegistry"), Known("v1", spec, "HelmRegistry")),
                        (make_known(None, spec), Known(None, spec))):
        assert fast == plain and repr(fast) == repr(plain)
        assert list(vars(fast).items()) == list(vars(plain).items())
    assert [f.name for f in dataclasses.fields(Known)] == list(vars(fast))  # a new field: add it to make_known


def test_the_local_target_is_given_no_known_as_it_reads_none(tmp_path: Path) -> None:
    from reconciler import runner
    from reconciler.model import Desired, fingerprint, target_spec
    from reconciler.state.base import Record, State
    from reconciler.targets.base import Target

    # LocalTarget.observe lists every row whatever is known (as Target.observe does)
    assert not LocalTarget.observe_reads_known and Target.observe_reads_known
    reg = Registry(kind="HelmRegistry", name="a", scope="tenant", spec={"endpoint": "https://x"})
    state = State()
    state.records[reg.key] = Record(uid="u1", kind=reg.kind, name="a", scope="tenant", fingerprint=fingerprint(reg.spec),
                                    spec=target_spec(reg.spec), version="v1")
    seen: list[dict[str, Any]] = []

    class Recording(LocalTarget):
        def observe(self, wanted: Any, known: Any) -> list[ObservedRegistry]:
            seen.append(dict(known))
            return super().observe(wanted, known)

    class Store:
        description = "memory"

        def read(self) -> State:
            return state

        def verify(self, state: State, uids: Any) -> None:
            pass

    opts = runner.Options(root=tmp_path)
    results = []
    for reads in (False, True):
        target = Recording(tmp_path / "local.db", base_dir=tmp_path)
        target.observe_reads_known = reads
        results.append(runner._make_plan(opts, Desired(registries=[reg]), Store(), target, 5)[1])  # type: ignore[arg-type]
        target.close()
    assert seen == [{}, runner.known_to_target(Desired(registries=[reg]), state)] and seen[1]
    assert results[0] == results[1]


def test_observed_from_json_is_the_eager_one() -> None:
    """The local target's plan listing decodes a spec only when read; every field, equality,
    repr and asdict are those of the registry built with its decoded spec."""
    from reconciler.model import canonical_json, observed_from_json

    spec = {"endpoint": "https://x", "auth": {"type": "noAuth"}, "tls": {"insecureSkipVerify": False}}
    text = canonical_json(spec)
    for kw in ({}, {"builtin": True}, {"builtin": True, "ca_pem": "PEM"}):
        plain = ObservedRegistry(uid="u1", kind="HelmRegistry", name="a", scope="tenant", spec=json.loads(text),
                                 **kw)  # type: ignore[arg-type]
        lazy = observed_from_json("u1", "HelmRegistry", "a", "tenant", text, **kw)  # type: ignore[arg-type]
        assert "spec" not in vars(lazy) and lazy.reports_json(text) and not plain.reports_json(text)
        assert not lazy.reports_json(json.dumps(spec))  # the same value in other text: compare values
        assert lazy == plain and repr(lazy) == repr(plain) and dataclasses.asdict(lazy) == dataclasses.asdict(plain)
        assert lazy.spec == spec and lazy.spec is lazy.spec and lazy.key == plain.key
        assert dataclasses.replace(lazy, name="b") == dataclasses.replace(plain, name="b")
        with pytest.raises(dataclasses.FrozenInstanceError):
            lazy.spec = {}  # type: ignore[misc]
    odd = observed_from_json("u1", "HelmRegistry", "a", "tenant", '{"x": 1} trailing')
    with pytest.raises(TargetError, match=r"the spec the target stores for HelmRegistry/a \(uid u1\) is not valid "
                                          r"JSON \(Extra data"):
        odd.spec  # noqa: B018 - read, to decode


def test_the_plan_listing_is_the_listing_and_rows_hold_canonical_text(tmp_path: Path) -> None:
    from reconciler.model import canonical_json, target_spec

    target = LocalTarget(tmp_path / "local.db", base_dir=tmp_path)
    regs = [Registry(kind="HelmRegistry", name=f"h{i}", scope="tenant",
                     spec={"endpoint": f"https://h{i}.example.com", "sync": True, "auth": {"type": "noAuth"},
                           "tls": {"insecureSkipVerify": False}, "fips": False, "requiredCharts": ["a"]})
            for i in range(3)]
    uids = [target.create(r, {}) for r in regs]
    target.update(uids[1], dataclasses.replace(regs[1], spec={**regs[1].spec, "sync": False}), {})
    assert target.observe(set(), {}) == target.list()
    with sqlite3.connect(tmp_path / "local.db") as conn:
        texts = dict(conn.execute("SELECT uid, spec FROM registries WHERE builtin = 0").fetchall())
    assert texts[uids[0]] == canonical_json(target_spec(regs[0].spec)) == regs[0].target_json
    assert texts[uids[1]] == canonical_json(target_spec({**regs[1].spec, "sync": False}))
    target.close()


def test_a_ui_edit_of_a_row_is_drift_and_an_old_format_row_is_no_change(tmp_path: Path) -> None:
    """A row edited outside reconcile (its text is no longer the canonical text of the desired
    spec) is decoded and diffed; a row in another format but with the same value is unchanged."""
    from reconciler.model import fingerprint, target_spec
    from reconciler.plan import make_plan
    from reconciler.state.base import Record, State

    reg = Registry(kind="HelmRegistry", name="a", scope="tenant",
                   spec={"endpoint": "https://charts.example.com", "sync": True, "auth": {"type": "noAuth"},
                         "tls": {"insecureSkipVerify": False}, "fips": False})
    db = tmp_path / "local.db"
    target = LocalTarget(db, base_dir=tmp_path)
    uid = target.create(reg, {})
    target.close()
    state = State()
    state.records[reg.key] = Record(uid=uid, kind=reg.kind, name="a", scope="tenant", fingerprint=fingerprint(reg.spec),
                                    spec=target_spec(reg.spec))

    def plan_of(text: str) -> list[tuple[str, list[str]]]:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE registries SET spec = ? WHERE uid = ?", (text, uid))
        reader = LocalTarget(db, base_dir=tmp_path, read_only=True)
        try:
            plan = make_plan([reg], state, reader.observe({reg.key}, {}))
        finally:
            reader.close()
        return [(c.action, [f.path for f in c.fields]) for c in plan.changes if c.key == reg.key]

    assert plan_of(reg.target_json) == [("noop", [])]
    reader = LocalTarget(db, base_dir=tmp_path, read_only=True)
    observed = reader.observe({reg.key}, {})
    make_plan([reg], state, observed)
    reader.close()
    assert [o for o in observed if o.uid == uid and "spec" in vars(o)] == []  # compared as text, never decoded
    assert plan_of(json.dumps(target_spec(reg.spec), indent=2)) == [("noop", [])]  # as older versions wrote it
    edited = json.dumps({**target_spec(reg.spec), "endpoint": "https://edited-in-the-ui.example.com"}, sort_keys=True)
    assert plan_of(edited) == [("update", ["endpoint"])]
