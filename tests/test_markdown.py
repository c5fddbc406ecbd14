from __future__ import annotations

import re

import pytest

from reconciler.markdown import (
    GITHUB_COMMENT_LIMIT,
    MARKER,
    MAX_VALUE,
    Header,
    change_lines,
    field_lines,
    render_apply_markdown,
    render_markdown,
)
from reconciler.model import Registry
from reconciler.plan import ADOPT, CREATE, DELETE, NOOP, REPLACE, UPDATE, Change, FieldChange, Plan
from tests.support.gfm import to_html as _html

SECRET = "s3cr3t-value-never-shown"


def key(name: str, kind: str = "OciRegistry", scope: str = "tenant") -> tuple[str, str, str]:
    return (scope, kind, name)


def reg(name: str) -> Registry:
    return Registry("OciRegistry", name, "tenant", {"endpoint": f"{name}.example.com"})


def sample_plan() -> Plan:
    return Plan(
        (
            Change(CREATE, key("new-oci"), registry=reg("new-oci"), fields=(
                FieldChange("endpoint", None, "registry.example.com"),
                FieldChange("auth.password", None, "(sensitive)", True),
            )),
            Change(UPDATE, key("charts", "HelmRegistry"), uid="u1", fields=(
                FieldChange("endpoint", "https://old.example.com", "https://new.example.com"),
                FieldChange("auth.token", SECRET, SECRET + "2", True),
            )),
            Change(REPLACE, key("packs"), uid="u2", reason="sync cannot be turned off in place",
                   fields=(FieldChange("sync", True, False),)),
            Change(DELETE, key("old"), uid="u3"),
            Change(ADOPT, key("found"), uid="u4", reason="exists on the target with this name"),
            Change(NOOP, key("same"), uid="u5"),
            Change(DELETE, key("guarded"), uid="u6", blocked="protect: true is recorded"),
        ),
        refusals=("refusing 6 deletions: more than --max-deletions 5",),
        warnings=("PackRegistry/legacy: legacy Pack registry; OCI is recommended",),
    )


def _diff_blocks(html: str) -> list[list[str]]:
    import html as html_lib

    blocks = re.findall(r'<pre lang="diff"><code>(.*?)</code></pre>', html, flags=re.S)
    return [html_lib.unescape(b).splitlines() for b in blocks]


HEADER = Header(target="Palette api.acme.example", profile="vertex", commit="abc1234-dirty")


def test_marker_header_warning_first_then_counts_then_folded_details() -> None:
    text = render_markdown(sample_plan(), problems=["registries.d/a.yaml:3:1: unknown field 'x'"], header=HEADER,
                           warnings=["registries.d/p.yaml:1:1: warning: sync is off"])
    lines = text.splitlines()
    assert lines[0] == MARKER
    assert lines[1] == "### reconcile plan"
    assert "| `+` create | 1 |" in lines
    assert "| `~` update | 1 |" in lines
    assert "| `-/+` replace | 1 |" in lines
    assert "| `-` delete | 1 |" in lines
    assert "| `=` adopt | 1 |" in lines
    assert "| unchanged | 1 |" in lines
    assert "| **blocked** | **1** |" in lines
    html = _html(text)
    first_details = html.index("<details>")
    head = html[:first_details]
    # the installation and the commit are named
    assert "<strong>target</strong> <code>Palette api.acme.example</code>" in head
    assert "<strong>profile</strong> <code>vertex</code>" in head
    assert "<strong>commit</strong> <code>abc1234-dirty</code>" in head
    # refusals, then every delete / replace / blocked change, before the counts and anything folded
    assert head.index("Refused") < head.index("refusing 6 deletions") < head.index("<table>")
    warning = head[head.index("Review: 1 to delete and 1 to replace"):head.index("<table>")]
    assert "delete <code>OciRegistry/old</code>" in warning
    assert "replace <code>OciRegistry/packs</code>: sync cannot be turned off in place" in warning
    assert "delete <code>OciRegistry/guarded</code>: protect: true is recorded" in warning
    assert head.index("Review: 1 to delete") < head.index("<table>")
    assert "unknown field" in head  # problems in plain sight
    # validation and plan warnings are folded
    folded = html[html.index("<summary>warnings (2)</summary>"):]
    assert "OCI is recommended" in folded.split("</details>")[0] and "sync is off" in folded.split("</details>")[0]
    assert "OCI is recommended" not in head
    assert text.count("<details>") == text.count("</details>") == 7  # warnings, blocked, 5 actions
    assert SECRET not in text
    assert "same" not in text  # unchanged registries are only counted


def test_fields_one_per_line_in_diff_blocks_that_github_colours() -> None:
    blocks = _diff_blocks(_html(render_markdown(sample_plan(), header=HEADER)))
    create = next(b for b in blocks if "@@ OciRegistry/new-oci @@" in b)
    assert create[create.index("@@ OciRegistry/new-oci @@") + 1:][:2] == [
        "+ endpoint: registry.example.com", "+ auth.password: (sensitive)"]
    update = next(b for b in blocks if any("HelmRegistry/charts" in line for line in b))
    i = update.index("@@ HelmRegistry/charts @@")
    assert update[i + 1:i + 5] == [
        "- endpoint: https://old.example.com", "+ endpoint: https://new.example.com",
        "- auth.token: (sensitive)", "+ auth.token: (sensitive)"]
    replace = next(b for b in blocks if any("OciRegistry/packs" in line for line in b))
    assert replace[:3] == ["@@ OciRegistry/packs (gets a new uid; sync cannot be turned off in place) @@",
                           "- sync: true", "+ sync: false"]
    delete = next(b for b in blocks if "@@ OciRegistry/old @@" in b)
    assert "- OciRegistry/old  (uid u3)" in delete
    # every line of every diff block is coloured (+/-) or a hunk header: no `~` lines
    for block in blocks:
        assert all(line[:1] in "+-" or line.startswith("@@ ") for line in block), block


def test_markdown_outside_code_is_inert() -> None:
    """A name or reason with markdown or HTML is shown as text, never as a link or a tag."""
    evil = "x](https://evil.example)<img src=x>`**bold**"
    plan = Plan((Change(DELETE, key(evil), uid="u"),), refusals=(f"refusing {evil}",))
    html = _html(render_markdown(plan, header=Header(target="local", commit="`abc`")))
    assert "<img" not in html and 'href="https://evil.example"' not in html and "<strong>bold" not in html
    assert "<code>`abc`</code>" in html


def test_text_outside_code_mentions_nobody() -> None:
    """Adversarial pass: a warning starts with its file path, which the pull request author
    chooses: ``registries.d/@acme/security-team.yaml`` would notify that team. GitHub's
    mentions are "@" then a name in a text node; a zero-width space after "@" stops them."""
    import re as _re

    plan = Plan((Change(DELETE, key("x"), uid="u", blocked="asked by @acme/security-team"),),
                refusals=("@octocat please approve",), warnings=("registries.d/@acme/security-team.yaml:2:7: legacy",),
                notes=("cc @someone",))
    html = _html(render_markdown(plan, header=Header(target="local", commit="abc")))
    outside_code = _re.sub(r"<code>.*?</code>|<pre.*?</pre>", "", html, flags=_re.S)
    assert "@" in outside_code and not _re.search(r"@[A-Za-z0-9]", outside_code), outside_code
    assert "@\u200bacme/security-team" in outside_code  # still readable


# GitHub's autolinked references and URLs (docs "Autolinked references and URLs"), as they
# would match the rendered text: an issue (#26, GH-26, owner/repo#26), a commit SHA (7 to 40
# hex digits between non-word characters), a URL (scheme://, www.) or an e-mail address
GITHUB_LINKS = (r"#\d", r"(?i)(?<![a-z0-9_])gh-\d", r"(?i)(?<![a-z0-9_])[0-9a-f]{7,40}(?![a-z0-9_])",
                r"(?i)[a-z]://", r"(?i)(?<![a-z0-9_])www\.", r"@[A-Za-z0-9]")
LINKY = [
    "fixed in #123, see GH-45 and acme/registries#6",
    "reverted by a5c3785ed8d6a35868bc169f07e40e889087fd2e (and 0123abc)",
    "registry answered: see https://status.example.com/incident?id=7 or www.example.com",
    "mail ops@example.com; ftp://mirror.example.com/x; HTTP://UPPER.example.com",
    "acme/registries@a5c3785 and #1: both",
]


@pytest.mark.parametrize("text", LINKY)
def test_text_outside_code_links_nothing_and_reads_the_same(text: str) -> None:
    """Adversarial pass 6, item 3: names and error messages in the sticky comment
    cross-referenced issues and commits (#123, GH-1, org/repo#2, a bare SHA) and showed a
    server's URL (or a www. host) as a clickable link. A zero-width space inside each stops it,
    as for @-mentions; what a reader sees is the same text."""
    from tests.support.gfm import text_of

    plan = Plan((Change(DELETE, key("x"), uid="u", blocked=text),), refusals=(text,), warnings=(text,),
                notes=(text,))
    html = _html(render_markdown(plan, header=Header(target="local", commit="abc")))
    outside_code = re.sub(r"<code>.*?</code>|<pre.*?</pre>", "", html, flags=re.S)
    assert "<a " not in outside_code, outside_code
    seen = re.sub(r"<[^>]*>", "", outside_code)
    for pattern in GITHUB_LINKS:
        assert not re.search(pattern, seen), (pattern, seen)
    items = [text_of(li) for li in re.findall(r"<li>(.*?)</li>", outside_code, flags=re.S)]
    assert items.count(text) == 2, items  # the refusal and the warning, as they were written
    assert text_of(outside_code).count(text) >= 4, text_of(outside_code)  # refusal, blocked, warning, note


def test_apply_markdown_names_failed_changes_and_why() -> None:
    """Issue 9.32: apply --format markdown showed the plan only."""
    from reconciler.apply import ChangeResult

    plan = sample_plan()
    ok, bad = plan.changes[0], plan.changes[1]
    results = [ChangeResult(ok, True, uid="new-uid"),
               ChangeResult(bad, False, error="palette answered 409 Conflict:\nname already exists")]
    text = render_apply_markdown(plan, results, header=HEADER)
    assert len(text) <= GITHUB_COMMENT_LIMIT
    html = _html(text)
    head = html[:html.index("<details>")]
    assert "Apply: 1 change(s) applied, 1 failed" in head
    assert "update <code>HelmRegistry/charts</code>: palette answered 409 Conflict: name already exists" in head
    assert head.index("1 change(s) failed") < head.index("<table>")


def test_secret_references_and_odd_values() -> None:
    plan = Plan((
        Change(UPDATE, key("x"), uid="u", fields=(
            FieldChange("auth.password", {"fromEnv": "PW"}, {"fromEnv": "PW2"}),
            FieldChange("baseContentPath", "a\nb```c", "x" * 500),
            FieldChange("tls.caFile", None, "certs/ca.pem"),
        )),
    ))
    text = render_markdown(plan)
    lines = text.splitlines()
    assert "- auth.password: (sensitive)" in lines and "+ auth.password: (sensitive)" in lines
    assert "PW2" not in text
    assert "+ tls.caFile: certs/ca.pem" in lines
    old = next(line for line in lines if line.startswith("- baseContentPath: "))
    new = next(line for line in lines if line.startswith("+ baseContentPath: "))
    assert "```c" not in old and "\n" not in old.replace("\\n", "") and "…" in new
    assert len(new) == len("+ baseContentPath: ") + MAX_VALUE
    assert len(_diff_blocks(_html(text))) == 1  # nothing broke out of the fence


STABLE = "https://artifacts.corp.example.com/artifactory/api/helm/platform-team-production-charts-virtual-repository/stable"


def _shown(f: FieldChange) -> tuple[str, str]:
    """The old and the new value as the comment shows them (in the rendered diff block)."""
    text = render_markdown(Plan((Change(UPDATE, key("r"), uid="u", fields=(f,)),)))
    [block] = _diff_blocks(_html(text))
    old = next(line for line in block if line.startswith(f"- {f.path}: "))
    new = next(line for line in block if line.startswith(f"+ {f.path}: "))
    return old[len(f"- {f.path}: "):], new[len(f"+ {f.path}: "):]


def test_a_change_past_the_old_cut_is_shown_in_full() -> None:
    """Adversarial pass 6, item 2: values were cut at 80 characters, so changing an endpoint
    .../stable (120 characters) to .../stable.attacker.example.net showed two identical lines;
    for drift (changed in the Palette UI, not in the pull request's diff) the reviewer could
    not see what changed."""
    assert _shown(FieldChange("endpoint", STABLE, STABLE + ".attacker.example.net")) == (
        STABLE, STABLE + ".attacker.example.net")


@pytest.mark.parametrize("old, new", [
    ("p" * 1000 + "/stable", "p" * 1000 + "/stable.attacker.example.net"),  # past the bound: both cut alike
    ("p" * 1000 + "/a" + "s" * 500, "p" * 1000 + "/b" + "s" * 500),
    ("x" * 400, "x" * 401),
    ("short", "short/" + "x" * 600),
    ("a" + "s" * 600, "b" + "s" * 600),
], ids=["suffix-added-after-1000", "differs-at-1001", "one-longer", "short-to-long", "first-differs"])
def test_two_long_values_are_cut_where_they_differ(old: str, new: str) -> None:
    shown_old, shown_new = _shown(FieldChange("endpoint", old, new))
    assert shown_old != shown_new
    assert len(shown_old) <= MAX_VALUE and len(shown_new) <= MAX_VALUE
    prefix = len(__import__("os").path.commonprefix([old, new]))
    if prefix > 30:  # a long shared start is cut short, marked, and the rest is where they differ
        assert shown_old.startswith("…") and shown_new.startswith("…")
    # both show a slice of their value from one same place at or before the first difference,
    # and each slice reaches past it (or to the value's end)
    bodies = [shown.removeprefix("…").removesuffix("…") for shown in (shown_old, shown_new)]
    assert any(all(v[start:start + len(b)] == b and (start + len(b) > prefix or start + len(b) == len(v))
                   for v, b in ((old, bodies[0]), (new, bodies[1])))
               for start in range(prefix + 1)), (shown_old, shown_new)


@pytest.mark.parametrize("old, new", [
    (1, "1"), (True, "true"), (False, "false"), ([1], "[1]"), ({"a": 1}, '{"a": 1}'), (1.5, "1.5"),
    ("(none)", "(sensitive)"), ("a`b", "a'b"), ("x\x00", "x\\u0000"), ("\U000e0001", "\ue0001"),
    ("v…", "v"), ("x" * 300 + "…", "x" * 301), ("x" * 298 + "…", "x" * 299 + "…"),
])
def test_two_different_values_never_look_the_same(old, new) -> None:
    """Each value is shown as no other value is: a string that reads as JSON, a marker or
    holds the cut mark is quoted JSON (a backtick was shown as ', so a`b and a'b looked alike)."""
    assert _shown(FieldChange("f", old, new))[0] != _shown(FieldChange("f", old, new))[1]
    lines = [line for o, n in ((old, new), (new, old)) for line in field_lines(FieldChange("f", o, n), UPDATE)]
    assert lines[0][1:] == lines[3][1:] and lines[1][1:] == lines[2][1:] and lines[0][1:] != lines[1][1:]
    assert not {line[len("- f: "):] for line in lines} & {"(none)", "(sensitive)"}  # markers are not values


def test_values_cut_at_random_places_never_look_the_same() -> None:
    import random

    rnd = random.Random(6)
    for _ in range(2000):
        base = "".join(rnd.choice("ab/.…`") for _ in range(rnd.randrange(0, 900)))
        old = base + "".join(rnd.choice("ab/.") for _ in range(rnd.randrange(0, 400)))
        new = base + "".join(rnd.choice("ab/.") for _ in range(rnd.randrange(0, 400)))
        if old != new:
            f = FieldChange("f", old, new)
            shown_old, shown_new = field_lines(f, UPDATE)
            assert shown_old[1:] != shown_new[1:], (old, new)


def test_empty_plan() -> None:
    text = render_markdown(Plan(()))
    assert text.startswith(MARKER + "\n")
    assert "0 to create" in text
    assert "<details>" not in text


def _big_plan(n: int) -> Plan:
    actions = [CREATE, UPDATE, DELETE, REPLACE, ADOPT]
    changes = []
    for i in range(n):
        action = actions[i % len(actions)]
        fields = (
            FieldChange("endpoint", f"old-{i}.example.com", f"registry-{i}.example.com"),
            FieldChange("auth.password", None, "(sensitive)", True),
        ) if action in (UPDATE, REPLACE) else ()
        changes.append(Change(action, key(f"registry-{i:05d}"), uid=f"uid-{i}", fields=fields))
    return Plan(tuple(changes))


@pytest.mark.parametrize("limit", [GITHUB_COMMENT_LIMIT, 4000])
def test_five_thousand_changes_fit_in_one_comment(limit: int) -> None:
    plan = _big_plan(5000)
    full_lines = {line for c in plan.changes for line in change_lines(c)}
    text = render_markdown(plan, limit=limit, header=HEADER)
    assert len(text) <= limit
    lines = text.splitlines()
    # The note is the last line and counts exactly the changes that were left out.
    m = re.fullmatch(r"… ([\d,]+) more changes not shown \(a comment holds 65,536 characters\); "
                     r"run `reconcile --dry-run` for the full plan", lines[-1])
    assert m, lines[-1]
    omitted = int(m.group(1).replace(",", ""))
    # Every line inside a fence belongs to a change; changes are whole; fences and <details> balance.
    shown = 0
    in_fence = False
    block: list[str] = []
    for line in lines:
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            assert line in full_lines, line
            shown += line.startswith("@@ ")
            block.append(line)
    assert not in_fence
    assert text.count("<details>") == text.count("</details>")
    assert shown + omitted == 5000
    assert shown > (300 if limit == GITHUB_COMMENT_LIMIT else 5)
    # each change shown has all its lines: an update's header is followed by its 4 field lines
    if limit == GITHUB_COMMENT_LIMIT:
        i = block.index("@@ OciRegistry/registry-00001 @@")  # an update
        assert block[i + 1:i + 5] == ["- endpoint: old-1.example.com", "+ endpoint: registry-1.example.com",
                                      "+ auth.password: (sensitive)", "@@ OciRegistry/registry-00006 @@"]
    # Counts are for the whole plan, not for what was shown.
    assert "| `+` create | 1,000 |" in lines
    assert "| `~` update | 1,000 |" in lines
    assert "**1000 to create, 1000 to update, 1000 to replace, 1000 to delete, 1000 to adopt, 0 unchanged**" in lines
    # The delete/replace warning is capped too, with a count of the rest.
    assert any(re.fullmatch(r"> - … and [\d,]+ more", line) for line in lines)


def test_exactly_fitting_plan_has_no_note() -> None:
    plan = _big_plan(50)
    text = render_markdown(plan)
    assert "not shown" not in text
    assert sum(1 for line in text.splitlines() if re.match(r"^@@ OciRegistry/", line)) == 50


def test_plan_notes_are_shown_before_the_counts() -> None:
    from reconciler.plan import NO_PROFILES_NOTE

    plan = Plan((Change(DELETE, key("old"), uid="u3"),), notes=(NO_PROFILES_NOTE,))
    text = render_markdown(plan, header=HEADER)
    html = _html(text)
    assert "no cluster profiles known on this target" in html
    assert html.index("no cluster profiles known") < html.index(plan.summary())


@pytest.mark.parametrize("ch", ["\u2800", "\u3164", "\ufe0f", "\u115f"])
def test_invisible_characters_python_calls_printable_are_escaped_in_the_comment(ch) -> None:
    """Adversarial pass 8 (noticed): U+2800 (braille blank), U+3164 (Hangul filler), variation
    selectors are printable to Python, so the comment showed them bare where the text plan
    escapes them (``text.CONTROL``): a drift value or a server's message holding one read like
    another (``a⠀b`` like ``a b``). Escaped in values and in messages alike now."""
    from reconciler.markdown import inline_text

    old, new = field_lines(FieldChange("endpoint", "ab", f"a{ch}b"), UPDATE)
    assert ch not in new and f"\\u{ord(ch):04x}" in new, new
    assert ch not in inline_text(f"registry a{ch}b failed") and f"\\u{ord(ch):04x}" in inline_text(f"a{ch}b")


@pytest.mark.parametrize("ch", ["\u2800", "\u3164", "\ufe0f", "\u115f"])
def test_invisible_characters_are_escaped_in_hunk_headers_and_code_spans_too(ch) -> None:
    """Adversarial pass 9: the pass 8 fix escaped ``text.CONTROL`` in values and in
    ``inline_text``, but not in ``_one_line``, which writes a change's reason and blocked text
    in its ``@@`` header (a name the target reports: "renamed on the target from 'a⠀b'", a
    cluster profile that blocks a delete) and the inline code of titles: there ``a⠀b`` still read
    like ``a b``."""
    renamed = Change(UPDATE, key("ab"), uid="u1", reason=f"renamed on the target from 'a{ch}b'",
                     fields=(FieldChange("metadata.name", f"a{ch}b", "ab"),))
    blocked = Change(DELETE, key("gone"), uid="u2", blocked=f"used by cluster profile p{ch}q")
    for change in (renamed, blocked):
        head = change_lines(change)[0]
        assert ch not in head and f"\\u{ord(ch):04x}" in head, head
    text = render_markdown(Plan((renamed, blocked)))
    assert ch not in text, [line for line in text.splitlines() if ch in line]
