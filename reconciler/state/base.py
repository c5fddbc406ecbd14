"""Recorded state and the ``StateStore`` interface.

The state is a versioned JSON document: per managed registry keyed by (scope, kind, name)
its uid, a normalised spec fingerprint, a salted hash per secret (never the value),
``protect``, whether we created or adopted it, the commit it was last applied from and the
last sync result; plus lineage, serial and the tool version. Stores: ``file.FileStateStore``
(atomic JSON file with an exclusive lock) and ``git.GitBranchStateStore``. Both run the
contract suite in ``tests/support/state_contract.py``.
"""

from __future__ import annotations

import secrets as _secrets
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler import __version__
from reconciler.errors import StateError
from reconciler.model import Key

STATE_VERSION = 1


@dataclass
class Record:
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

    @property
    def key(self) -> Key:
        return (self.scope, self.kind, self.name)


@dataclass
class State:
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    tool_version: str = __version__
    salt: str = field(default_factory=lambda: _secrets.token_hex(16))
    target: str = ""
    records: dict[Key, Record] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "tool_version": self.tool_version,
            "salt": self.salt,
            "target": self.target,
            "registries": [asdict(r) for _, r in sorted(self.records.items())],
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> State:
        if not isinstance(data, dict):
            raise StateError(f"{where}: state is not a JSON object; refusing to use or overwrite it")
        version = data.get("version")
        if not isinstance(version, int):
            raise StateError(f"{where}: state has no integer 'version'; refusing to use or overwrite it")
        if version > STATE_VERSION:
            raise StateError(
                f"{where}: state version {version} is newer than this reconcile understands "
                f"({STATE_VERSION}); upgrade reconcile (state written by {data.get('tool_version')})"
            )
        try:
            records = {}
            for raw in data["registries"]:
                rec = Record(**raw)
                records[rec.key] = rec
            return cls(
                lineage=str(data["lineage"]),
                serial=int(data["serial"]),
                tool_version=str(data.get("tool_version", "")),
                salt=str(data["salt"]),
                target=str(data.get("target", "")),
                records=records,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{where}: state is corrupt ({exc!s}); refusing to use or overwrite it") from exc


class StateStore(ABC):
    """Where the recorded state lives. ``write`` is atomic; ``lock`` is exclusive."""

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

    @abstractmethod
    def write(self, state: State, message: str = "") -> None:
        """Persist atomically; the caller bumps ``serial``. ``message`` describes the change
        (the git store uses it as commit message: applied commit, plan counts).

        ``StateConflict`` if someone else wrote since our ``read`` (never overwrite)."""

    def records(self) -> Iterator[Record]:
        yield from self.read().records.values()
