"""``reconcile validate``: schema + policy only, every problem in one run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..errors import ReconcilerError
from ..validation import LoadResult, load_and_validate

FORMATS = ("text", "json", "markdown")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary(result: LoadResult) -> str:
    return (
        f"{_plural(len(result.files), 'file')}, "
        f"{_plural(result.declared, 'registry').replace('registrys', 'registries')}: "
        f"{_plural(len(result.errors), 'error')}, {_plural(len(result.warnings), 'warning')}"
    )


def render(result: LoadResult, fmt: str, stream: TextIO, quiet: bool = False) -> None:
    if fmt == "json":
        doc = {
            "problems": [p.as_dict() for p in result.problems],
            "files": len(result.files),
            "registries": result.declared,
        }
        stream.write(json.dumps(doc, indent=2) + "\n")
        return
    if fmt == "markdown":
        stream.write(f"**validate**: {summary(result)}\n")
        if result.problems:
            stream.write("\n| location | severity | rule | message |\n|---|---|---|---|\n")
            from reconciler.markdown import inline_text, table_code

            for p in result.problems:  # inert cells: a message quotes the file's own text
                cells = (inline_text(c) for c in (p.severity, p.rule, p.message))
                stream.write(f"| {table_code(f'{p.file}:{p.line}:{p.col}')} | " + " | ".join(cells) + " |\n")
        return
    for p in result.problems:
        if not quiet or p.severity == "error":  # -q: only errors
            stream.write(f"{p}\n")
    if not quiet:
        stream.write(summary(result) + "\n")


def write_json_error(exc: ReconcilerError, stream: TextIO) -> None:
    """Why nothing was validated, as the JSON document a ``--format json`` caller reads."""
    from reconciler.secrets import redact_resolved

    doc = {"error": redact_resolved(str(exc)), "problems": [], "files": 0, "registries": 0}
    stream.write(json.dumps(doc) + "\n")


def run_validate(
    paths: Sequence[Path | str] | None,
    root: Path | str,
    profile: str | None,
    fmt: str,
    stream: TextIO,
    *,
    ref: str | None = None,
    quiet: bool = False,
) -> int:
    """Validate and report; 1 on any error, 0 when clean (warnings do not fail)."""
    from reconciler.lifetime import hold_until_exit, keep_list
    from reconciler.runner import paused_gc

    kept = keep_list()
    try:
        with paused_gc():
            result = load_and_validate(
                Path(root), paths=[Path(p) for p in paths] if paths else None, ref=ref, profile=profile, keep=kept
            )
        hold_until_exit("load", (result, kept))
    except ReconcilerError as exc:
        if fmt == "json":
            write_json_error(exc, stream)
        else:
            stream.write(f"error: {exc}\n")
        return 1
    render(result, fmt if fmt in FORMATS else "text", stream, quiet=quiet)
    return 0 if result.ok else 1
