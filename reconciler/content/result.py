"""The value a content sync returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SyncResult:
    status: str  # "Completed" | "Failed"
    message: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    not_modified: bool = False

    @property
    def failed(self) -> bool:
        return self.status != "Completed"
