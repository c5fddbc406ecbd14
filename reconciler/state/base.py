"""Recorded state and the ``StateStore`` interface.

The state is a versioned JSON document: per managed registry keyed by (scope, kind, name)
its uid, a normalised spec fingerprint, a salted hash per secret (never the value),
``protect``, whether we created or adopted it, the commit it was last applied from and the
last sync result; plus lineage, serial and the tool version. Stores: ``file.FileStateStore``
(atomic JSON file with an exclusive lock) and ``git.GitBranchStateStore``. Both run the
contract suite in ``tests/support/state_contract.py``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from reconciler import __version__
from reconciler.errors import StateError, own_credentials
from reconciler.model import KIND_NAMES, KINDS, SCOPE_NAMES, SCOPES, Key, spec_shape_problem

STATE_VERSION = 1
MAX_STATE_BYTES = 256 << 20  # read bounded, by both stores: --state /dev/zero or a huge blob must not exhaust memory


@dataclass
class Record:
    """One managed registry as the state records it: its uid, what was applied, its secrets' hashes."""

    uid: str
    kind: str
    name: str
    scope: str
    fingerprint: str
    secret_hashes: dict[str, str] = field(default_factory=dict)
    protect: bool = False
    origin: str = "created"  # created | adopted
    applied_commit: str | None = None
    applied_at: str | None = None
    last_sync: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None  # canonical spec as applied (secret *references* only)
    version: str | None = None  # the target's modification stamp after our last write (Palette lastModifiedTimestamp)
    ca_digest: str | None = None  # model.ca_digest of the tls.caFile contents applied (None: no CA file, or older)

    @property
    def key(self) -> Key:
        return (self.scope, self.kind, self.name)


def _new_lineage() -> str:
    import uuid  # a new state only: uuid imports platform, which every run would pay for

    return str(uuid.uuid4())


@dataclass
class State:
    """The state document: the target, lineage and serial, the salt, and one record per managed registry."""

    lineage: str = field(default_factory=lambda: _new_lineage())
    serial: int = 0
    tool_version: str = __version__
    salt: str = field(default_factory=lambda: os.urandom(16).hex())  # secrets.token_hex(16)
    target: str = ""
    records: dict[Key, Record] = field(default_factory=dict)
    # records no signed state vouches for (read from a state that was not signed with
    # RECONCILER_STATE_KEY, see ``state_mac``): never deleted on the state's word alone, their
    # specs not believed; one is verified when an apply writes it again from its definition
    unverified: set[Key] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """The document; ``StateError`` if ``from_json`` would refuse it (a record under
        another key than its own, or one uid under two keys): every store writes through here,
        so reconcile never writes a state it would refuse to read."""
        holders: dict[str, Key] = {}
        for key, rec in self.records.items():
            other = holders.setdefault(rec.uid, rec.key)
            if rec.key != key or other != rec.key:
                what = (f"{rec.kind}/{rec.name} (scope {rec.scope}) is recorded under {key!r}" if rec.key != key else
                        f"uid {rec.uid!r} of {rec.kind}/{rec.name} is also recorded for {other[1]}/{other[2]}")
                raise StateError(f"refusing to write a state that could not be read back ({what}); nothing was written")
        scrub = free_text_scrubber()
        doc = {
            "version": STATE_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "tool_version": self.tool_version,
            "salt": self.salt,
            "target": self.target,
            "registries": [record_json(r, scrub) for _, r in sorted(self.records.items())],
        }
        unverified = sorted(k for k in self.unverified if k in self.records)
        if unverified:
            doc["unverified"] = [list(k) for k in unverified]
        return doc

    @classmethod
    def from_json(cls, data: Any, where: str) -> State:
        if not isinstance(data, dict):
            raise StateError(f"{where}: state is not a JSON object; refusing to use or overwrite it")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise StateError(f"{where}: state has no integer 'version'; refusing to use or overwrite it")
        if version > STATE_VERSION:
            raise StateError(
                f"{where}: state version {version} is newer than this reconcile understands "
                f"({STATE_VERSION}); upgrade reconcile (state written by {data.get('tool_version')})"
            )
        try:
            for name in ("lineage", "salt"):
                _check_field(data, name, str, "a string")
            _check_field(data, "serial", int, "a non-negative integer")
            if data["serial"] < 0:
                raise ValueError("'serial' must be a non-negative integer")
            registries = data["registries"] if "registries" in data else _missing("registries")
            if not isinstance(registries, list):
                raise ValueError("'registries' must be a list")
            records = {}
            uids: dict[str, Record] = {}
            for i, raw in enumerate(registries):
                rec = _record(raw, i)
                key = (rec.scope, rec.kind, rec.name)  # rec.key
                if key in records:
                    raise ValueError(f"registries[{i}]: {rec.kind}/{rec.name} (scope {rec.scope}) is recorded twice")
                # #9.3: one uid under two records would make a plan delete a registry it keeps
                # (or PUT one registry's spec onto another)
                twin = uids.get(rec.uid)
                if twin is not None:
                    raise ValueError(f"registries[{i}]: uid {rec.uid!r} of {rec.kind}/{rec.name} is also recorded "
                                     f"for {twin.kind}/{twin.name}")
                records[key] = rec
                uids[rec.uid] = rec
            unverified = data.get("unverified") or []
            if not isinstance(unverified, list) or not all(
                    isinstance(k, list) and len(k) == 3 and all(isinstance(x, str) for x in k) for k in unverified):
                raise ValueError("'unverified' must be a list of [scope, kind, name]")
            return cls(
                lineage=data["lineage"],
                serial=data["serial"],
                tool_version=str(data.get("tool_version", "")),
                salt=data["salt"],
                target=str(data.get("target", "")),
                records=records,
                unverified={(k[0], k[1], k[2]) for k in unverified if (k[0], k[1], k[2]) in records},
            )
        except ValueError as exc:
            raise StateError(f"{where}: state is corrupt ({exc!s}); refusing to use or overwrite it") from exc


# What a record holds that is free text, from a server: its last sync (the message, the status
# and whatever other keys a state written by an older reconcile has there). Before every
# message was redacted of the tool's own credentials, a sync message could carry the API key,
# and the state that git:BRANCH pushes kept it, each write copying it again; every write now
# redacts these of the tool's own credentials and of every secret value resolved in this run.
_clean: dict[str, str] = {}
_clean_for: tuple[frozenset[str], int] | None = None
_CLEAN_MAX = 1 << 16


def free_text_scrubber() -> Callable[[str], str]:
    """``redact_resolved``, remembering its answers while the secrets it masks are the same: a
    sync writes the state once per registry, and each write holds every record's message."""
    global _clean, _clean_for
    from reconciler.secrets import redact_resolved, resolved_count

    now = (own_credentials(), resolved_count())
    if now != _clean_for or len(_clean) > _CLEAN_MAX:
        _clean, _clean_for = {}, now
    clean = _clean

    def scrub(text: str) -> str:
        out = clean.get(text)
        if out is None:
            out = clean[text] = redact_resolved(text)
        return out

    return scrub


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, scrub) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, scrub) for v in value]
    return value


def record_json(record: Record, scrub: Callable[[str], str] | None = None) -> dict[str, Any]:
    """A record as the state document and the journal hold it: its free text (``last_sync``)
    redacted."""
    return scrub_record(asdict(record), scrub)


def scrub_record(raw: dict[str, Any], scrub: Callable[[str], str] | None = None) -> dict[str, Any]:
    """``raw`` (a record's JSON) with its free text redacted; itself when it holds none."""
    last_sync = raw.get("last_sync")
    if not last_sync:
        return raw
    return {**raw, "last_sync": _scrubbed(last_sync, scrub or free_text_scrubber())}


def scrub_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A journal entry with the free text of the record it puts redacted (``scrub_record``)."""
    rec = entry.get("record")
    if entry.get("op") != "put" or not isinstance(rec, dict):
        return entry
    clean = scrub_record(rec)
    return entry if clean is rec else {**entry, "record": clean}


MAC_PREFIX = "hmac-sha256:"


def state_mac(key: str, doc: dict[str, Any]) -> str:
    """The signature of a state document (without its ``mac``), keyed with
    RECONCILER_STATE_KEY: over its canonical JSON, so a reformatted document still verifies
    and any changed value does not."""
    import hashlib
    import hmac
    import json

    body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return MAC_PREFIX + hmac.new(key.encode(), b"reconcile-state-v1\0" + body.encode(), hashlib.sha256).hexdigest()


def signature_problem(key: str, data: dict[str, Any]) -> str:
    """'' when ``data`` (a state document as read) carries its ``state_mac``; else why not."""
    import hmac

    mac = data.get("mac")
    if isinstance(mac, str) and hmac.compare_digest(mac, state_mac(key, data)):
        return ""
    return "is not signed" if mac is None else "has a signature that does not match"


def unsigned_note(where: str, why: str, changed: str) -> str:
    """What a store says when a state it read with RECONCILER_STATE_KEY vouches for nothing;
    ``changed``: how else it could have come about ("the branch was changed")."""
    return (f"{where} {why} with RECONCILER_STATE_KEY (written by an older reconcile or without the key, the key "
            f"changed, or {changed} outside reconcile): a registry it records is not deleted on its word; each "
            "declared one is written again from its definition, and the state signed, by the next apply")


def note(message: str) -> None:
    """How a store tells the user something while it works (stderr, as a warning would)."""
    import sys

    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


def _missing(name: str) -> Any:
    raise ValueError(f"missing field {name!r}")


def _check_field(data: dict[str, Any], name: str, typ: type | tuple[type, ...], what: str,
                 *, prefix: str = "", optional: bool = False) -> None:
    if name not in data:
        if optional:
            return
        raise ValueError(f"{prefix}missing field {name!r}")
    value = data[name]
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise ValueError(f"{prefix}{name!r} must be {what}, not {value!r}")
    if not isinstance(value, typ):
        raise ValueError(f"{prefix}{name!r} must be {what}, not {type(value).__name__}")


_RECORD_FIELDS = {f.name for f in fields(Record)}
_ORIGINS = {"created": "created", "adopted": "adopted"}  # as model.KIND_NAMES: one string each
_LAST_SYNC_STRINGS = ("status", "last_synced", "last_success", "last_run", "fingerprint", "message")


def _record(raw: Any, i: int) -> Record:
    """One recorded registry, every field checked (a corrupt state must not crash later).

    A state holds thousands: the shape every good record has is checked first with plain
    type tests (JSON gives exact types); anything else goes to the field-by-field checker,
    which refuses it (or accepts it) with its own words."""
    if type(raw) is dict:
        rec = _record_fast(raw)
        if rec is not None:
            return rec
    return _record_checked(raw, i)


def _record_fast(raw: dict[str, Any]) -> Record | None:
    """The record ``_record_checked`` would build, or None when it must look itself (this
    accepts only what it accepts, and builds the same ``Record``)."""
    get = raw.get
    uid, kind, name, scope, fp = get("uid"), get("kind"), get("name"), get("scope"), get("fingerprint")
    protect, origin, hashes = get("protect"), get("origin", "created"), get("secret_hashes")
    # None unless a known name (a list or a dict cannot be looked up: the checker refuses it)
    kind = KIND_NAMES.get(kind) if type(kind) is str else None
    scope = SCOPE_NAMES.get(scope) if type(scope) is str else None
    origin = _ORIGINS.get(origin) if type(origin) is str else None
    applied_commit, applied_at, version, ca = get("applied_commit"), get("applied_at"), get("version"), get("ca_digest")
    last_sync, spec = get("last_sync"), get("spec")
    if not (
        raw.keys() <= _RECORD_FIELDS
        and type(uid) is str and uid and type(name) is str and name and type(fp) is str
        and kind is not None and scope is not None
        and (protect is None or protect is True or protect is False)
        and origin is not None
        and (applied_commit is None or type(applied_commit) is str)
        and (applied_at is None or type(applied_at) is str)
        and (version is None or type(version) is str)
        and (ca is None or type(ca) is str)
        and (hashes is None or (type(hashes) is dict  # most are empty: no generator for them
                                and (not hashes or all(type(k) is str and type(v) is str for k, v in hashes.items()))))
        and (last_sync is None or (type(last_sync) is dict
                                   and all(last_sync.get(n) is None or type(last_sync[n]) is str
                                           for n in _LAST_SYNC_STRINGS)))
        and (spec is None or (type(spec) is dict and _spec_fast(spec)))
    ):
        return None
    # positional, in field order (tests/test_state_record.py compares with the checker's Record)
    return Record(uid, kind, name, scope, fp, {} if hashes is None else hashes, protect is True, origin,
                  applied_commit, applied_at, last_sync, spec, version, ca)


def _spec_fast(spec: dict[str, Any]) -> bool:
    """What ``_check_spec`` accepts, in plain type tests (False: let it look)."""
    tls, auth = spec.get("tls"), spec.get("auth")
    if not (tls is None or type(tls) is dict):
        return False
    for k in spec:  # a loop, not all() over a generator: one per record of thousands
        if type(k) is not str:
            return False
    if auth is None:
        return True
    if type(auth) is not dict or type(auth.get("type", "")) is not str:
        return False
    credentials = auth.get("credentials")
    return credentials is None or type(credentials) is dict


def _record_checked(raw: Any, i: int) -> Record:
    """``_record`` field by field, each refusal in its own words."""
    prefix = f"registries[{i}]: "
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix}must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _RECORD_FIELDS, key=str)
    if unknown:
        raise ValueError(f"{prefix}unknown field {unknown[0]!r}")
    for name in ("uid", "kind", "name", "scope", "fingerprint"):
        _check_field(raw, name, str, "a string", prefix=prefix)
    _check_field(raw, "protect", bool, "true or false", prefix=prefix, optional=True)
    for name in ("origin", "applied_commit", "applied_at", "version", "ca_digest"):
        _check_field(raw, name, str, "a string", prefix=prefix, optional=True)
    for name in ("secret_hashes", "last_sync", "spec"):
        _check_field(raw, name, dict, "an object", prefix=prefix, optional=True)
    if raw["kind"] not in KINDS:
        raise ValueError(f"{prefix}'kind' must be one of {', '.join(KINDS)}, not {raw['kind']!r}")
    if raw["scope"] not in SCOPES:
        raise ValueError(f"{prefix}'scope' must be one of {', '.join(SCOPES)}, not {raw['scope']!r}")
    if not raw["uid"] or not raw["name"]:
        raise ValueError(f"{prefix}'uid' and 'name' must not be empty")
    _check_spec(raw.get("spec"), prefix)
    if raw.get("origin", "created") not in ("created", "adopted"):
        raise ValueError(f"{prefix}'origin' must be created or adopted, not {raw['origin']!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (raw.get("secret_hashes") or {}).items()):
        raise ValueError(f"{prefix}'secret_hashes' must map strings to strings")
    last_sync = raw.get("last_sync") or {}
    for name in ("status", "last_synced", "last_success", "last_run", "fingerprint", "message"):
        if last_sync.get(name) is not None and not isinstance(last_sync[name], str):
            raise ValueError(f"{prefix}'last_sync.{name}' must be a string")
    values = {k: v for k, v in raw.items() if not (v is None and k in ("protect", "origin", "secret_hashes"))}
    return Record(**values)


def _check_spec(spec: dict[str, Any] | None, prefix: str) -> None:
    """The recorded spec is diffed against the desired one: its nested blocks must be
    objects (#9.18: a string ``auth`` crashed the planner once the definition changed)."""
    if spec is None:
        return
    problem = spec_shape_problem(spec)
    if problem:
        raise ValueError(f"{prefix}{problem}")


class StateStore(ABC):
    """Where the recorded state lives. ``write`` is atomic; ``lock`` is exclusive.

    An apply records its changes through ``begin`` / ``record`` / ``finish``: ``record`` is
    O(1) per change (the file store appends to a journal and fsyncs it; the git store
    commits at most every few seconds), and ``finish`` writes the whole document once.

    Continuity: while a store holds its lock, every read remembers the state's lineage and
    serial, and a later read in the same run that finds another lineage or a lower serial
    (the state was replaced or rolled back under us) is refused. Stores that can remember
    across runs (the git store) refuse more, in ``read`` and in ``verify``.
    """

    # (lineage, serial) of the newest state read while this store held its lock.
    _run_seen: tuple[str, int] | None = None
    _locked: bool = False

    @property
    @abstractmethod
    def description(self) -> str:
        """e.g. ``.reconciler/state.json`` or ``git:reconciler-state``."""

    @abstractmethod
    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        """Hold the exclusive lock; raise ``StateLocked`` (naming the holder) after ``timeout``."""

    @abstractmethod
    def read(self) -> State:
        """The current state, or a new empty one; ``StateError`` if corrupt or too new."""

    def check_writable(self) -> None:  # noqa: B027 - optional probe; a store may know no cheaper check
        """Raise ``StateError`` if a ``write`` is bound to fail (read-only directory, an
        immutable file), without changing anything. Called before the first change reaches
        the target, so a state that cannot record it stops the apply before it starts."""

    @abstractmethod
    def write(self, state: State, message: str = "") -> None:
        """Persist atomically; the caller bumps ``serial``. ``message`` describes the change
        (the git store uses it as commit message: applied commit, plan counts).

        ``StateConflict`` if someone else wrote since our ``read`` (never overwrite)."""

    def unlock(self, lock_id: str) -> str:
        """Release a lock left by a run that is gone (``reconcile unlock ID``)."""
        raise StateError(f"{self.description}: this state store has no lock to release by hand")

    def unlock_corrupt(self) -> str:
        """Remove a lock record that cannot be read (``reconcile unlock --corrupt``)."""
        return self.unlock("")

    def verify(self, state: State, live_uids: Collection[str]) -> None:
        """Called with the uids the target holds, after ``read`` and before any change."""

    # -- recording an apply -----------------------------------------------------------------

    def begin(self, state: State, message: str) -> None:
        """Before the first change: the state can be written and changes can be recorded."""

    def record(self, state: State, entry: dict[str, Any], message: str) -> None:
        """``state`` already holds one more change, described by ``entry`` (``{"op": "put",
        "record": {...}}`` or ``{"op": "drop", "key": [scope, kind, name]}``). Default: write.
        Every store refuses first what its reader would refuse (``_refuse_unreadable``)."""
        self._refuse_unreadable(state, entry)
        state.serial += 1
        self.write(state, message)

    def finish(self, state: State, message: str) -> None:
        """After the last change: everything recorded is in the state document."""

    def unsaved(self) -> list[Key]:
        """The keys of what ``record`` took that no write has stored yet, oldest first: the git
        store's changes since its last commit. The file store stores each entry before
        ``record`` returns (a fsynced journal line), so it has none."""
        return []

    _uids: tuple[State, UidIndex] | None = None

    def _refuse_unreadable(self, state: State, entry: dict[str, Any]) -> None:
        """``StateError`` if ``entry`` (``state`` holds it already) would give one uid two keys,
        a state the reader refuses (#9.3): a store checks each change before it records it, as
        ``State.to_json`` checks the document, so it never records what bricks every later run.
        O(1) per change: the index is built once per state, from its records but this one."""
        if self._uids is None or self._uids[0] is not state:
            skip = entry_key(entry)
            self._uids = (state, UidIndex({k: r for k, r in state.records.items() if k != skip}))
        uids = self._uids[1]
        if entry.get("op") == "drop":
            uids.drop(entry_key(entry))
            return
        try:  # the line as the reader will parse it: a record it refuses is never written either
            rec = _record(entry.get("record"), 0)
        except (TypeError, ValueError) as exc:
            raise StateError(f"{self.description}: refusing to record a change the state could not read back "
                             f"({str(exc).removeprefix('registries[0]: ')}); nothing was written") from exc
        other = uids.holder(rec)
        if other is not None:
            raise UidConflict(self.description, rec, other)
        uids.put(rec)

    # -- continuity --------------------------------------------------------------------------

    def _remember(self, state: State | None, where: str) -> None:
        """``state`` was read (None: no document) while holding the lock, or not."""
        if not self._locked:
            return
        seen = self._run_seen
        if seen is not None:
            lineage, serial = seen
            if state is None:
                raise StateError(
                    f"{where}: the state (lineage {lineage}, serial {serial}) this run read under its lock is gone; "
                    "refusing to go on without it"
                )
            if state.lineage != lineage:
                raise StateError(
                    f"{where}: state lineage {state.lineage} is not the {lineage} this run read under its lock "
                    "(the state was replaced); refusing to use it"
                )
            if state.serial < serial:
                raise StateError(
                    f"{where}: state serial {state.serial} is older than the {serial} this run read under its lock "
                    "(the state was rolled back); refusing to use it"
                )
        if state is not None:
            self._run_seen = (state.lineage, state.serial)


class UidConflict(StateError):
    """A store refused to record ``record``: its uid is recorded under ``other`` (one uid under
    two keys is a state the reader refuses); nothing was written."""

    def __init__(self, where: str, record: Record, other: Key) -> None:
        self.record, self.other = record, other
        super().__init__(f"{where}: refusing to record {record.kind}/{record.name} (scope {record.scope}) with uid "
                         f"{record.uid!r}, which is recorded for {other[1]}/{other[2]} (scope {other[0]}): the state "
                         "could not be read back; nothing was written")


class UidIndex:
    """Which key holds each uid, kept in step with the puts and drops recorded: whether a
    record would give its uid a second key, in O(1) and not by a scan of thousands."""

    def __init__(self, records: dict[Key, Record]) -> None:
        self._holder = {rec.uid: key for key, rec in records.items()}
        self._uid = {key: rec.uid for key, rec in records.items()}

    def holder(self, rec: Record) -> Key | None:
        """The other key that holds ``rec.uid``, or None."""
        key = self._holder.get(rec.uid)
        return key if key is not None and key != rec.key else None

    def put(self, rec: Record) -> None:
        self.drop(rec.key)  # its old uid, if it had another, is free now
        self._holder[rec.uid], self._uid[rec.key] = rec.key, rec.uid

    def drop(self, key: Key) -> None:
        uid = self._uid.pop(key, None)
        if uid is not None and self._holder.get(uid) == key:
            del self._holder[uid]


def entry_key(entry: dict[str, Any]) -> Key:
    """The (scope, kind, name) an ``entry_put`` or ``entry_drop`` is about."""
    if entry.get("op") == "drop":
        scope, kind, name = entry["key"]
    else:
        rec = entry["record"]
        scope, kind, name = rec["scope"], rec["kind"], rec["name"]
    return (scope, kind, name)


def entry_put(record: Record) -> dict[str, Any]:
    return {"op": "put", "record": asdict(record)}


def entry_drop(key: Key) -> dict[str, Any]:
    return {"op": "drop", "key": list(key)}
