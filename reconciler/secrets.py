"""Resolve secret references (``fromEnv`` / ``fromFile``) to values, at the edge.

Values live only in memory for the duration of a request; they are never printed, logged,
stored, or put in a plan. ``known_values`` feeds ``errors.redact`` for any message that
could echo one back (e.g. an API error body).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.errors import InputError
from reconciler.model import Key, Registry, iter_secret_refs

MAX_SECRET_FILE = 64 * 1024
# Credentials of the tool itself: a definition must never be able to send them to a registry.
RESERVED_ENV = frozenset({"PALETTE_API_KEY", "GITHUB_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"})

# Every value resolved in this process, so that the last line of defence (the CLI's error
# handler) can redact any message, whatever path it took.
_resolved: set[str] = set()


def redact_resolved(text: str) -> str:
    from reconciler.errors import redact

    return redact(text, _resolved)


def resolve(
    registry: Registry, *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str | None], list[str]]:
    """Return ({path: value or None}, [problems]) for one registry's secret references."""
    env = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    missing: list[str] = []
    for path, ref in iter_secret_refs(registry.spec):
        if "fromEnv" in ref:
            name = str(ref["fromEnv"])
            value = env.get(name) if name not in RESERVED_ENV else None
            if name in RESERVED_ENV:
                missing.append(f"{path}: {name} is reserved for reconcile and CI; it is never used as a registry secret")
            elif value is None:
                missing.append(f"{path}: environment variable {name} is not set")
            values[path] = value
            if value:
                _resolved.add(value)
        else:
            file = Path(str(ref["fromFile"]))
            full = file if file.is_absolute() else base_dir / file
            try:
                if full.stat().st_size > MAX_SECRET_FILE:
                    raise OSError("file is larger than 64 KiB")
                value = full.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                missing.append(f"{path}: cannot read secret file {file} ({reason})")
                value = None
            values[path] = value
            if value:
                _resolved.add(value)
    return values, missing


def resolve_all(
    registries: Iterable[Registry], *, base_dir: Path, required: bool, environ: Mapping[str, str] | None = None
) -> dict[Key, dict[str, str | None]]:
    """Resolve every registry's secrets; with ``required`` a missing one is an InputError
    (listing every missing reference, located at its registry's definition)."""
    out: dict[Key, dict[str, str | None]] = {}
    problems: list[str] = []
    for reg in registries:
        values, missing = resolve(reg, base_dir=base_dir, environ=environ)
        out[reg.key] = values
        for m in missing:
            where = f"{reg.source}: " if reg.source else ""
            problems.append(f"{where}{reg.kind}/{reg.name}: {m}")
    if required and problems:
        raise InputError("secrets are missing, nothing was changed:\n  " + "\n  ".join(problems))
    return out


def present(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def known_values(all_values: Mapping[Key, Mapping[str, str | None]]) -> set[str]:
    return {v for vals in all_values.values() for v in vals.values() if v}
