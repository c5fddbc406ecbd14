"""``state.base._record``: the fast path for the common shape and the field-by-field checker
agree on every record, good or corrupt: the same ``Record``, or the same refusal."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Any

import pytest

from reconciler.errors import StateError
from reconciler.state import base
from reconciler.state.base import State, _record, _record_checked, _record_fast

GOOD: dict[str, Any] = {
    "uid": "u1", "kind": "OciRegistry", "name": "a", "scope": "tenant", "fingerprint": "sha256:x",
    "secret_hashes": {"auth.password": "scrypt-n16384r8p1:ab"}, "protect": False, "origin": "created",
    "applied_commit": "3f2a1bc", "applied_at": "2024-01-02T03:04:05Z",
    "last_sync": {"status": "Completed", "last_synced": "t", "last_success": None, "message": ""},
    "spec": {"endpoint": "reg.example.com", "auth": {"type": "basic", "password": {"fromEnv": "PW"},
                                                     "credentials": {"x": 1}},
             "tls": {"insecureSkipVerify": False}},
    "version": "1700000000",
}
MINIMAL = {k: GOOD[k] for k in ("uid", "kind", "name", "scope", "fingerprint")}

VALUES: list[Any] = [None, "", "x", "created", "adopted", "OciRegistry", "tenant", "system", 0, 1, -1, 1.5,
                     True, False, [], ["x"], {}, {"a": "b"}, {"a": 5}, {"status": 5}, {"last_synced": "t"},
                     {"auth": "basic"}, {"auth": {"type": 5}}, {"auth": {"credentials": "c"}}]
SPEC_VALUES: list[Any] = [None, "x", 5, True, [], {}, {"type": None}, {"type": "basic"}, {"type": 5},
                          {"credentials": None}, {"credentials": "c"}, {"credentials": {}}, {"type": "ecr", "x": []}]


def _outcome(fn: Any, raw: Any) -> Any:
    try:
        rec = fn(raw, 3)
    except (TypeError, ValueError) as exc:
        return ("refused", type(exc).__name__, str(exc))
    return ("accepted", asdict(rec))


def _cases() -> list[Any]:
    out: list[Any] = [GOOD, MINIMAL, [], "x", None, 5, {}]
    for start in (GOOD, MINIMAL):
        for name in [*base._RECORD_FIELDS, "colour", 7]:
            for value in VALUES:
                raw = copy.deepcopy(start)
                raw[name] = value
                out.append(raw)
            raw = copy.deepcopy(start)
            raw.pop(name, None)
            out.append(raw)
    for field in ("auth", "tls", "endpoint", 5):
        for value in SPEC_VALUES:
            raw = copy.deepcopy(GOOD)
            raw["spec"][field] = value
            out.append(raw)
    for name in base._LAST_SYNC_STRINGS:
        for value in (None, "", "t", 5, True, [], {}):
            raw = copy.deepcopy(GOOD)
            raw["last_sync"][name] = value
            out.append(raw)
    for hashes in ({"a": 5}, {5: "a"}, {"a": None}, {"a": ""}):
        out.append({**GOOD, "secret_hashes": hashes})

    class Sub(str):
        pass

    out.append({**GOOD, "uid": Sub("u1"), "origin": Sub("adopted")})  # str subclasses: the checker decides
    out.append({**GOOD, "spec": {**GOOD["spec"], 5: "x"}})
    return out


CASES = _cases()


def test_cases_cover_both_answers() -> None:
    outcomes = [_outcome(_record_checked, raw)[0] for raw in CASES]
    assert outcomes.count("accepted") > 50 and outcomes.count("refused") > 200


def test_fast_path_agrees_with_the_checker() -> None:
    for raw in CASES:  # one test, not ~850: the suite's count stays readable
        checked = _outcome(_record_checked, raw)
        assert _outcome(_record, raw) == checked, raw
        fast = _record_fast(raw) if type(raw) is dict else None
        if fast is not None:  # the fast path accepts only what the checker accepts, and builds the same
            assert ("accepted", asdict(fast)) == checked, raw


def test_fast_path_takes_the_common_shape() -> None:
    assert _record_fast(copy.deepcopy(GOOD)) is not None
    assert _record_fast(copy.deepcopy(MINIMAL)) is not None
    written = State()
    written.records[("tenant", "OciRegistry", "a")] = _record_checked(copy.deepcopy(GOOD), 0)
    (raw,) = json.loads(json.dumps(written.to_json()))["registries"]
    assert _record_fast(raw) is not None


def test_shared_values_are_the_raw_ones() -> None:
    raw = copy.deepcopy(GOOD)
    rec = _record(raw, 0)
    assert rec.spec is raw["spec"] and rec.secret_hashes is raw["secret_hashes"] and rec.last_sync is raw["last_sync"]
    a, b = _record(dict(MINIMAL), 0), _record(dict(MINIMAL), 1)
    assert a.secret_hashes == {} and a.secret_hashes is not b.secret_hashes


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(origin=None), "'origin' must be created or adopted, not None"),
    (lambda r: r.update(protect="yes"), "'protect' must be true or false, not str"),
    (lambda r: r["spec"].update(auth="basic"), "'spec.auth' must be an object, not str"),
    (lambda r: r["last_sync"].update(status=5), "'last_sync.status' must be a string"),
])
def test_corrupt_state_document_still_refused_in_the_same_words(mutate: Any, message: str) -> None:
    raw = copy.deepcopy(GOOD)
    mutate(raw)
    doc = {"version": 1, "lineage": "l", "serial": 1, "salt": "s", "target": "local", "registries": [raw]}
    with pytest.raises(StateError) as info:
        State.from_json(doc, "state.json")
    assert str(info.value) == f"state.json: state is corrupt (registries[0]: {message}); refusing to use or overwrite it"
