"""Markdown for pull-request comments and ``$GITHUB_STEP_SUMMARY``.

Counts first, then blocked changes and refusals in plain sight, then one folded
``<details>`` block per action with one line per change. A GitHub comment holds at most
65,536 characters, so whole change lines are dropped from the end once the budget is spent
and a note says how many; every opened fence and ``<details>`` is closed, so the comment
stays well-formed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from reconciler.model import is_secret_ref
from reconciler.plan import ADOPT, CREATE, DELETE, NOOP, REPLACE, SYMBOLS, UPDATE, Change, FieldChange, Plan

MARKER = "<!-- reconcile-plan -->"
GITHUB_COMMENT_LIMIT = 65536
GROUPS = (CREATE, UPDATE, REPLACE, DELETE, ADOPT)
LABELS = {CREATE: "create", UPDATE: "update", REPLACE: "replace", DELETE: "delete", ADOPT: "adopt", NOOP: "unchanged"}
MAX_VALUE = 80  # characters of one field value shown in a change line
_SENSITIVE = "(sensitive)"
_NOTE_RESERVE = 200  # room kept for the truncation note and closing tags


def _value(value: Any, sensitive: bool = False) -> str:
    if sensitive or is_secret_ref(value):
        return _SENSITIVE
    if value is None:
        return "(none)"
    if isinstance(value, str) and value and re.fullmatch(r"[^\s\"'`<>|]+", value):
        text = value
    else:
        text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    text = text.replace("`", "'")  # a value never closes the code fence
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 1] + "…"
    return text


def field_text(f: FieldChange, action: str) -> str:
    if f.sensitive:
        return f"{f.path}: {_SENSITIVE}"
    if action == CREATE and f.old is None:
        return f"{f.path}: {_value(f.new)}"
    return f"{f.path}: {_value(f.old)} -> {_value(f.new)}"


def change_line(change: Change) -> str:
    """One change on one line: ``+ OciRegistry/name  endpoint: a -> b; ...``."""
    line = f"{SYMBOLS[change.action]} {change.title}"
    if change.fields:
        line += "  " + "; ".join(field_text(f, change.action) for f in change.fields)
    if change.blocked:
        line += f"  [blocked: {change.blocked}]"
    elif change.reason:
        line += f"  ({change.reason})"
    if change.gone:
        line += "  (already gone)"
    return line.replace("\n", " ").replace("\r", " ")


def _plain(text: str) -> str:
    """One line of text safe outside code: no HTML, no newlines."""
    return text.replace("\r", " ").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _count_table(plan: Plan) -> list[str]:
    counts = plan.counts()
    lines = ["| action | count |", "| --- | ---: |"]
    for action in (*GROUPS, NOOP):
        symbol = SYMBOLS[action].strip()
        label = f"`{symbol}` {LABELS[action]}" if symbol else LABELS[action]
        lines.append(f"| {label} | {counts[action]:,} |")
    if counts["blocked"]:
        lines.append(f"| **blocked** | **{counts['blocked']:,}** |")
    return lines


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.used = 0
        self.full = False
        self.omitted = 0

    def cost(self, lines: Sequence[str]) -> int:
        return sum(len(line) + 1 for line in lines)

    def fits(self, lines: Sequence[str], reserve: int) -> bool:
        return self.used + self.cost(lines) + reserve <= self.limit

    def add(self, lines: Sequence[str]) -> None:
        self.lines.extend(lines)
        self.used += self.cost(lines)

    def section(self, opening: Sequence[str], items: Sequence[str], closing: Sequence[str]) -> None:
        """Add a section with as many whole item lines as fit; count the rest as omitted."""
        if not items:
            return
        if self.full or not self.fits([*opening, items[0], *closing], _NOTE_RESERVE):
            self.full = True
            self.omitted += len(items)
            return
        self.add(opening)
        reserve = self.cost(closing) + _NOTE_RESERVE
        for i, item in enumerate(items):
            if not self.fits([item], reserve):
                self.full = True
                self.omitted += len(items) - i
                break
            self.add([item])
        self.add(closing)


def _fence(items: Sequence[str]) -> str:
    longest = max((len(m) for line in items for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(
    plan: Plan,
    *,
    problems: Sequence[str] = (),
    limit: int = GITHUB_COMMENT_LIMIT,
    title: str = "reconcile plan",
) -> str:
    """The plan as GitHub-flavoured markdown of at most ``limit`` characters."""
    out = _Budget(limit)
    head = [MARKER, f"### {_plain(title)}", "", f"**{plan.summary()}**", ""]
    head += _count_table(plan)
    head.append("")
    if plan.refusals:
        head.append("> [!CAUTION]")
        head.append("> **Refused: nothing will be applied.**")
        head += [f"> - {_plain(r)}" for r in plan.refusals]
        head.append("")
    out.add(head)

    if problems:
        items = [f"- {_plain(p)}" for p in problems]
        out.section([f"**Problems ({len(items):,})**", ""], items, [""])
    if plan.warnings:
        out.section(["> [!WARNING]"], [f"> - {_plain(w)}" for w in plan.warnings], [""])
    blocked = [change_line(c) for c in plan.changes if c.blocked]
    if blocked:
        fence = _fence(blocked)
        out.section(
            [f"**Blocked ({len(blocked):,})**: shown, never executed", "", f"{fence}diff"],
            blocked,
            [fence, ""],
        )
    for action in GROUPS:
        group = [change_line(c) for c in plan.changes if c.action == action and not c.blocked]
        if not group:
            continue
        fence = _fence(group)
        symbol = SYMBOLS[action]
        out.section(
            [f"<details><summary><code>{symbol}</code> {LABELS[action]} ({len(group):,})</summary>", "", f"{fence}diff"],
            group,
            [fence, "</details>", ""],
        )
    if not plan.changes and not problems:
        out.add(["No registries declared or recorded."])
    if out.omitted:
        out.add([truncation_note(out.omitted)])
    text = "\n".join(out.lines).rstrip("\n") + "\n"
    if len(text) > limit:  # a pathological head (thousands of refusals): cut whole lines
        text = _cut(text, limit)
    return text


def truncation_note(omitted: int) -> str:
    return (
        f"… {omitted:,} more {'change' if omitted == 1 else 'changes'} not shown; "
        "see the job summary / run `reconcile --dry-run`"
    )


def _cut(text: str, limit: int) -> str:
    lines = text.splitlines()
    note = "… output truncated; run `reconcile --dry-run` for the full plan"
    kept: list[str] = []
    used = len(note) + 2
    for line in lines:
        if used + len(line) + 1 > limit:
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join([*kept, note]) + "\n"
