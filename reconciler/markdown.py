"""Markdown for pull-request comments and ``$GITHUB_STEP_SUMMARY``, written for reviewers.

Layout, as GitHub renders it (checked with cmark-gfm, GitHub's own renderer, in the tests):

1. the marker (the sticky comment finds it again) and a header naming the installation
   (target: local or the Palette endpoint's host; the profile) and the commit planned;
2. before anything folded: refusals, then a warning naming every registry to be deleted or
   replaced and every blocked change with its reason;
3. the counts;
4. problems (preflight) in plain sight; validation warnings folded;
5. one folded ``<details>`` per action, its changes in a ``diff`` block: a ``@@ title @@``
   line per change, then its fields one per line, ``- field: old`` and ``+ field: new``
   (a create lists its fields as ``+`` lines), so GitHub colours them. Secrets are
   ``(sensitive)``.

A GitHub comment holds at most 65,536 characters: whole changes are dropped from the end
once the budget is spent and a note says how many; every opened fence and ``<details>`` is
closed, so the comment stays well-formed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.model import is_secret_ref
from reconciler.plan import (
    ADOPT,
    CREATE,
    DELETE,
    NOOP,
    REPLACE,
    SYMBOLS,
    UPDATE,
    Change,
    FieldChange,
    Marker,
    Plan,
    looks_marked,
)
from reconciler.text import CONTROL, reads_as_json

if TYPE_CHECKING:
    from reconciler.apply import ChangeResult

MARKER = "<!-- reconcile-plan -->"
GITHUB_COMMENT_LIMIT = 65536
GROUPS = (CREATE, UPDATE, REPLACE, DELETE, ADOPT)
LABELS = {CREATE: "create", UPDATE: "update", REPLACE: "replace", DELETE: "delete", ADOPT: "adopt", NOOP: "unchanged"}
MAX_VALUE = 300  # characters of one field value shown in a change line (longer: cut, ``_cut_pair``)
VALUE_CONTEXT = 24  # of two long values, characters they share shown before the first that differs
MAX_MESSAGE = 500  # characters of one error or warning shown
_SENSITIVE = "(sensitive)"
_NOTE_RESERVE = 200  # room kept for the truncation note and closing tags


@dataclass(frozen=True)
class Header:
    """What the plan is for: ``target`` is ``local`` or ``Palette <host>``; ``commit`` is a
    short SHA, with ``-dirty`` when the work tree differs from it."""

    target: str | None = None
    profile: str | None = None
    commit: str | None = None


def short_commit(commit: str | None, dirty: bool) -> str | None:
    if commit is None:
        return "uncommitted work tree" if dirty else None
    return commit[:7] + ("-dirty" if dirty else "")


def _value(value: Any, sensitive: bool = False) -> str:
    """One value as one line, never shown as another value is: a plain string bare when it
    cannot be read as anything else (a number, ``true``, a list in JSON; a marker such as
    ``(none)``), otherwise JSON with what is not printable, a backtick and ``…`` (the cut
    mark) as ``\\u`` escapes; not cut (``_cut_value``, ``_cut_pair``)."""
    if sensitive or is_secret_ref(value):
        return _SENSITIVE
    if value is None:
        return "(none)"
    if isinstance(value, Marker):  # the plan's own word: bare (a CA file's name in it escaped as below)
        return _printable(value)
    if (isinstance(value, str) and _BARE.fullmatch(value) and value.isprintable() and not CONTROL.search(value)
            and not looks_marked(value) and not reads_as_json(value)):
        return value
    return _printable(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False))


def _printable(text: str) -> str:
    """``text`` with what is not printable or is invisible (``text.CONTROL``: U+2800, U+3164,
    variation selectors, which Python calls printable), a backtick and ``…`` (the cut mark)
    as JSON escapes."""
    return "".join(ch if ch.isprintable() and ch not in "`…" and not CONTROL.match(ch) else _json_escape(ch)
                   for ch in text)


_BARE = re.compile(r"[^\s\"'`<>|…]+")


def _json_escape(ch: str) -> str:
    """``ch`` as a JSON string escape (a surrogate pair above U+FFFF)."""
    return "\\u0060" if ch == "`" else json.dumps(ch)[1:-1]


def _cut_value(text: str, limit: int = MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_pair(old: str, new: str, limit: int = MAX_VALUE) -> tuple[str, str]:
    """An old and a new value cut alike when either is too long: both from the same place,
    ``VALUE_CONTEXT`` characters before the first one where they differ, so that the
    difference is in sight (cut at the end only, a change after the cut showed two identical
    lines). A cut is marked with ``…``, which no value shows otherwise."""
    if len(old) <= limit and len(new) <= limit:
        return old, new
    start = max(0, len(os.path.commonprefix([old, new])) - VALUE_CONTEXT)
    head = "…" if start else ""
    return head + _cut_value(old[start:], limit - len(head)), head + _cut_value(new[start:], limit - len(head))


def _one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    # invisible too (text.CONTROL), as in values: a reason or a blocked text names what the target calls things
    text = "".join(ch if ch.isprintable() and not CONTROL.match(ch) else f"\\u{ord(ch):04x}" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_lines(f: FieldChange, action: str) -> list[str]:
    """One field as diff lines: ``- path: old`` / ``+ path: new``; a create (or a field that
    had no value) only ``+``, a removed field only ``-``."""
    old = _SENSITIVE if f.sensitive else _value(f.old)
    new = _SENSITIVE if f.sensitive else _value(f.new)
    if action == CREATE or f.old is None:
        return [f"+ {f.path}: {_cut_value(new)}"]
    if f.new is None:
        return [f"- {f.path}: {_cut_value(old)}"]
    old, new = _cut_pair(old, new)
    return [f"- {f.path}: {old}", f"+ {f.path}: {new}"]


def _note(change: Change) -> str:
    notes = []
    if change.action == REPLACE:
        notes.append("gets a new uid")
    if change.blocked:
        # in full in the warning at the top; here short, so the hunk header does not scroll far
        notes.append(f"blocked: {_one_line(change.blocked, 100)}")
    elif change.reason:
        notes.append(change.reason)
    if change.gone:
        notes.append("already gone")
    return f" ({_one_line('; '.join(notes), 300)})" if notes else ""


def change_lines(change: Change) -> list[str]:
    """One change inside a ``diff`` block: a ``@@`` header line (GitHub shows it as a hunk
    header, not as an addition or a removal), then one line per field."""
    head = f"@@ {change.title}{_note(change)} @@"
    lines = [head.replace("\n", " ").replace("\r", " ")]
    if change.action == DELETE and not change.fields:
        return [*lines, f"- {change.title}" + (f"  (uid {change.uid})" if change.uid else "")]
    for f in change.fields:
        lines.extend(field_lines(f, change.action))
    return lines


def change_line(change: Change) -> str:
    """The change's ``@@`` header line (kept for callers that want one line per change)."""
    return change_lines(change)[0]


_MARKDOWN_PUNCT = re.compile(r"([\\`*_\[\]|~#!$])")
# What GitHub turns into a link in text outside code: autolinked URLs (``scheme://``, ``www.``;
# cmark-gfm) and references (``#123``, ``GH-123``, ``org/repo#123``, a commit SHA of 7 to 40 hex
# digits; GitHub's own filters, after cmark). A zero-width space (U+200B, written as
# ``&#8203;``) inside each stops the link and reads the same; a hex run is split every 6
# digits, so no part of it is long enough to be a SHA. (``@`` is handled with the other
# escapes; custom autolink prefixes a repository may configure are not known here.)
_UNLINK = (
    (re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:)(?=//)"), "\\1\u200b"),
    (re.compile(r"(?i)(?<![a-z0-9_])(www)(?=\.)"), "\\1\u200b"),
    (re.compile(r"#(?=\d)"), "#\u200b"),
    (re.compile(r"(?i)(?<![a-z0-9_])(gh-)(?=\d)"), "\\1\u200b"),
    (re.compile(r"(?<![0-9A-Za-z_])[0-9A-Fa-f]{7,}(?![0-9A-Za-z_])"),
     lambda m: "\u200b".join(re.findall(".{1,6}", m.group()))),
)


def inline_text(text: str) -> str:
    """``text`` as inert markdown outside code (a list item, a table cell): it reads as itself
    and is nothing else. No HTML (``<``, ``>``, ``&`` as entities: a server's message holding
    ``</td></tr></table>`` would close the table and could open a ``<details>`` that hides the
    rows after it), no emphasis, code, links, images, math or table cell breaks (backslash
    escapes), no @-mention (a file path is the pull request author's choice:
    ``registries.d/@org/team`` would notify a team; a zero-width space after ``@`` stops it,
    as Dependabot writes them), no link or cross-reference (``_UNLINK``: a name or an error
    message would link issues, commits or a server's URL from the sticky comment). Characters
    that are not printable, or invisible (``text.CONTROL``), are shown escaped."""
    text = "".join(ch if ch.isprintable() and not CONTROL.match(ch) else f"\\u{ord(ch):04x}"
                   for ch in text)  # no U+200B left
    for pattern, repl in _UNLINK:
        text = pattern.sub(repl, text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_PUNCT.sub(r"\\\1", text)
    return text.replace("@", "@\u200b").replace("\u200b", "&#8203;")  # after: the entity has a '#'


def _plain(text: str) -> str:
    """One line of text safe outside code (``inline_text``), at most ``MAX_MESSAGE`` long."""
    return inline_text(_one_line(text))


def _code(text: str) -> str:
    """Inline code that its content cannot close."""
    text = _one_line(text, 300)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    tick = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{tick}{pad}{text}{pad}{tick}"


def table_code(text: str) -> str:
    """Inline code in a GFM table cell: ``_code`` with ``|`` escaped (GFM splits a row into
    cells before it reads code spans)."""
    return _code(text).replace("|", "\\|")


def _header(title: str, header: Header | None) -> list[str]:
    lines = [MARKER, f"### {_plain(title)}", ""]
    if header is not None:
        parts = []
        if header.target:
            parts.append(f"**target** {_code(header.target)}")
        if header.profile:
            parts.append(f"**profile** {_code(header.profile)}")
        if header.commit:
            parts.append(f"**commit** {_code(header.commit)}")
        if parts:
            lines += [" · ".join(parts), ""]
    return lines


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

    def section(self, opening: Sequence[str], items: Sequence[Sequence[str]], closing: Sequence[str],
                *, count: bool = True, more: str = "", share: float = 1.0) -> None:
        """Add a section with as many whole items (each a few lines) as fit; the rest are
        counted as omitted (``count``) or summed up in one ``more`` line. A section with
        ``share`` < 1 stops at that share of the whole limit and leaves the rest to others."""
        if not items:
            return
        reserve = self.cost(closing) + _NOTE_RESERVE + (len(more) + 20 if more else 0)
        if self.full or not self.fits([*opening, *items[0]], reserve):
            if count:
                self.full = True
                self.omitted += len(items)
            return
        stop = self.used + int(self.limit * share) if share < 1 else self.limit
        self.add(opening)
        for i, item in enumerate(items):
            if not self.fits(item, reserve) or self.used + self.cost(item) > stop:
                if count:
                    self.full = True
                    self.omitted += len(items) - i
                elif more:
                    self.add([more.format(n=len(items) - i)])
                break
            self.add(item)
        self.add(closing)


def _fence(items: Sequence[Sequence[str]]) -> str:
    longest = max((len(m) for item in items for line in item for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _attention(out: _Budget, plan: Plan) -> None:
    """Refusals, then every delete, replace and blocked change, before anything folded."""
    if plan.refusals:
        out.add(["> [!CAUTION]", "> **Refused: nothing will be applied.**"])
        out.section([], [[f"> - {_plain(r)}"] for r in plan.refusals], [""], count=False,
                    more="> - … and {n} more refusals", share=0.1)
    risky = [c for c in plan.changes if c.action in (DELETE, REPLACE) and not c.blocked]
    blocked = [c for c in plan.changes if c.blocked]
    if not risky and not blocked:
        return
    out.add(["> [!WARNING]"])
    if risky:
        deletes = sum(c.action == DELETE for c in risky)
        replaces = len(risky) - deletes
        what = " and ".join(p for p in (f"{deletes:,} to delete" if deletes else "",
                                        f"{replaces:,} to replace (new uid)" if replaces else "") if p)
        why = (" A replace deletes the registry and creates it again with a new uid; cluster profiles "
               "refer to registries by uid.") if replaces else ""
        out.add([f"> **Review: {what}.**{why}"])
        out.section([], [[f"> - `{SYMBOLS[c.action]}` {LABELS[c.action]} {_code(c.title)}"
                          + (f": {_plain(c.reason)}" if c.reason else "")] for c in risky],
                    [">"] if blocked else [""], count=False, more="> - … and {n} more", share=0.15)
    if blocked:
        out.add([f"> **Blocked ({len(blocked):,}): shown, never executed.**"])
        out.section([], [[f"> - `{SYMBOLS[c.action]}` {LABELS[c.action]} {_code(c.title)}: {_plain(c.blocked)}"]
                         for c in blocked], [""], count=False, more="> - … and {n} more", share=0.1)


def render_markdown(
    plan: Plan,
    *,
    problems: Sequence[str] = (),
    warnings: Sequence[str] = (),
    limit: int = GITHUB_COMMENT_LIMIT,
    title: str = "reconcile plan",
    header: Header | None = None,
    results: Sequence[ChangeResult] | None = None,
    error: str = "",
) -> str:
    """The plan (and, with ``results``, what an apply did) as GitHub-flavoured markdown of at
    most ``limit`` characters. ``warnings``: validation warnings, shown folded with the plan's."""
    out = _Budget(limit)
    out.add(_header(title, header))
    if results is not None:
        _results(out, results)
    if error:
        out.add(["> [!CAUTION]", f"> **{_plain(error)}**", ""])
    _attention(out, plan)
    # e.g. "no cluster profiles known on this target", "--allow-in-use: ... let through"
    out.add([f"> [!NOTE]\n> {_plain(n)}\n" for n in plan.notes])
    out.add([f"**{plan.summary()}**", "", *_count_table(plan), ""])

    if problems:
        out.section([f"**Problems ({len(problems):,})**", ""], [[f"- {_plain(p)}"] for p in problems], [""],
                    count=False, more="- … and {n} more", share=0.15)
    all_warnings = [*plan.warnings, *warnings]
    if all_warnings:
        out.section([f"<details><summary>warnings ({len(all_warnings):,})</summary>", ""],
                    [[f"- {_plain(w)}"] for w in all_warnings], ["", "</details>", ""],
                    count=False, more="- … and {n} more", share=0.1)
    blocked = [change_lines(c) for c in plan.changes if c.blocked]
    if blocked:
        fence = _fence(blocked)
        out.section([f"<details><summary>blocked ({len(blocked):,})</summary>", "", f"{fence}diff"],
                    blocked, [fence, "</details>", ""])
    for action in GROUPS:
        group = [change_lines(c) for c in plan.changes if c.action == action and not c.blocked]
        if not group:
            continue
        fence = _fence(group)
        symbol = SYMBOLS[action]
        out.section(
            [f"<details><summary><code>{symbol}</code> {LABELS[action]} ({len(group):,})</summary>", "", f"{fence}diff"],
            group,
            [fence, "</details>", ""],
        )
    if not plan.changes and not problems and results is None:
        out.add(["No registries declared or recorded."])
    if out.omitted:
        out.add([truncation_note(out.omitted)])
    text = "\n".join(out.lines).rstrip("\n") + "\n"
    if len(text) > limit:  # cannot happen with the reserves above; never send an oversized comment
        text = _cut(text, limit)
    return text


def _results(out: _Budget, results: Sequence[ChangeResult]) -> None:
    """What an apply did: counts, and every failed change with its error, in plain sight."""
    failed = [r for r in results if not r.ok]
    done = len(results) - len(failed)
    # applied, but the state holds no record of them (the write at the end failed too): never "recorded"
    unrecorded = [r for r in results if r.ok and r.unrecorded]
    out.add([f"**Apply: {done:,} change(s) applied, {len(failed):,} failed**", ""])
    if unrecorded:
        out.add(["> [!CAUTION]", f"> **{len(unrecorded):,} change(s) applied but NOT recorded in the state**; the "
                                 "next plan finds them again (a created registry is adopted by name)."])
        out.section([], [[f"> - `{SYMBOLS[r.change.action]}` {LABELS[r.change.action]} {_code(r.change.title)}"]
                         for r in unrecorded], [""], count=False, more="> - … and {n} more", share=0.1)
    if failed:
        rest = "the rest were applied and recorded" if not unrecorded else "the rest were applied"
        out.add(["> [!CAUTION]", f"> **{len(failed):,} change(s) failed**; {rest}."])
        out.section([], [[f"> - `{SYMBOLS[r.change.action]}` {LABELS[r.change.action]} {_code(r.change.title)}: "
                          f"{_plain(r.error or 'failed')}"] for r in failed],
                    [""], count=False, more="> - … and {n} more failures", share=0.2)


def render_apply_markdown(plan: Plan, results: Sequence[ChangeResult], *, header: Header | None = None,
                          warnings: Sequence[str] = (), limit: int = GITHUB_COMMENT_LIMIT, error: str = "") -> str:
    """``error``: why the apply failed after its changes ran (the state write at its end)."""
    return render_markdown(plan, results=results, header=header, warnings=warnings, limit=limit,
                           title="reconcile apply", error=error)


def truncation_note(omitted: int) -> str:
    """Where the rest is: not the job summary, which action.yml writes from the same cut
    document as the comment (test_workflows checks that this stays so or the note changes)."""
    return (
        f"… {omitted:,} more {'change' if omitted == 1 else 'changes'} not shown (a comment holds "
        f"{GITHUB_COMMENT_LIMIT:,} characters); run `reconcile --dry-run` for the full plan"
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
