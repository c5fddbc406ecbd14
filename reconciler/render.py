"""Renderers: a plan, an apply result, status and sync tables, as text or JSON.

Every renderer takes a stream. Secrets never reach here as values: plans carry only
``(sensitive)`` markers and references.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from reconciler.plan import NOOP, SYMBOLS, Change, FieldChange, Marker, Plan, looks_marked
from reconciler.text import escape, reads_as_json

PLAN_FORMAT_VERSION = 1


def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Marker):  # the plan's own word, "(sensitive)", "(changed)": bare
        return escape(v)
    if isinstance(v, str):  # a value the target reports (drift) may hold ESC or a newline: escaped
        # quoted when bare it would read as another value: "1" and 1, "true" and true, a
        # registry's "(sensitive)" and the plan's marker
        quoted = v == "" or v.strip() != v or reads_as_json(v) or looks_marked(v)
        return json.dumps(v) if quoted else escape(v)
    return json.dumps(v, sort_keys=True)


def field_line(f: FieldChange, action: str) -> str:
    if action in ("create",) or f.old is None and f.new is not None and action != "update":
        return f"{f.path}: {_value(f.new)}"
    return f"{f.path}: {_value(f.old)} -> {_value(f.new)}"


def change_line(c: Change) -> str:
    """One line, whatever it quotes: a reason or a block names what the target calls things
    (cluster profiles, projects, a renamed registry), and a newline or ESC in such a name must
    not forge or erase plan lines (adversarial pass 6, item 2)."""
    head = f"{SYMBOLS[c.action]} {c.title}"
    if c.blocked:
        head = f"! {c.title}: {c.action} blocked: {c.blocked}"
    elif c.reason:
        head += f"  ({c.reason})"
    return escape(head)


def replace_note(c: Change) -> str:
    return f"new uid: deleted and created again; uid {c.uid} goes away (what references it breaks)"


def render_plan_text(plan: Plan, out: TextIO, *, show_noop: bool = False) -> None:
    for c in plan.changes:
        if c.action == NOOP and not show_noop:
            continue
        out.write(change_line(c) + "\n")
        if not c.blocked:
            for f in c.fields:
                out.write(f"    {field_line(f, c.action)}\n")
            if c.action == "replace":
                out.write(f"    {replace_note(c)}\n")
    for w in plan.warnings:
        out.write(f"warning: {escape(w)}\n")
    for n in plan.notes:
        out.write(f"note: {escape(n)}\n")
    for r in plan.refusals:
        out.write(f"refused: {escape(r)}\n")
    if plan.has_changes:
        out.write(f"Plan: {plan.summary()}\n")
    elif plan.blocked:  # not "No changes.": the target still differs from the definitions
        out.write(f"Nothing to apply, {len(plan.blocked)} blocked: {plan.summary()}\n")
    else:
        out.write(f"No changes. {plan.summary()}\n")


def change_json(c: Change) -> dict[str, Any]:
    return {
        "action": c.action,
        "kind": c.kind,
        "name": c.name,
        "scope": c.scope,
        "uid": c.uid,
        "reason": c.reason or None,
        "blocked": c.blocked or None,
        "new_uid": c.action == "replace",  # a replace deletes the registry: whatever uses its uid breaks
        "note": replace_note(c) if c.action == "replace" else None,
        "renamed_from": c.renamed_from[2] if c.renamed_from else None,
        "source": str(c.source) if c.source else None,
        "fields": [
            {"path": f.path, "old": f.old, "new": f.new, "sensitive": f.sensitive} for f in c.fields
        ],
    }


def plan_json(plan: Plan, *, problems: Sequence[str] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format_version": PLAN_FORMAT_VERSION,
        "has_changes": plan.has_changes,
        "has_blocked": bool(plan.blocked),  # blocked changes: the target still differs (exit 2 with --detailed-exitcode)
        "summary": plan.counts(),
        "changes": [change_json(c) for c in plan.changes if c.action != NOOP or c.blocked],
        "refusals": list(plan.refusals),
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        # null: nothing deleted or replaced, not asked; false: the target knows no cluster profiles
        "cluster_profiles_known": plan.profiles_known,
        "problems": list(problems),
    }
    if extra:
        data.update(extra)
    return data


def write_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


def _cell(value: Any) -> str:
    """A table cell's text, its control characters escaped: cells show what a target answered
    (a sync message, a name) too, and ESC, CR or a newline from there must not rewrite a
    terminal, a CI log or a markdown table (``text.escape``)."""
    return "" if value is None else escape(str(value))


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    rows = [[_cell(v) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, r, strict=True)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


def markdown_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    """A GFM table (``sync``/``status``/``catalog --format markdown``, which CI writes to the job
    summary) whose every cell is inert text: a cell shows what a target answered (a sync
    message echoes the registry server), and raw HTML or markdown there could close the table
    and fake or fold away the rows after it (``markdown.inline_text``)."""
    from reconciler.markdown import inline_text

    out.write("| " + " | ".join(headers) + " |\n")
    out.write("|" + "---|" * len(headers) + "\n")
    for r in rows:
        out.write("| " + " | ".join(inline_text(_cell(v)) for v in r) + " |\n")
