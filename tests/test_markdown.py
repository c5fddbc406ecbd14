from __future__ import annotations

import re

import pytest

from reconciler.markdown import GITHUB_COMMENT_LIMIT, MARKER, change_line, render_markdown
from reconciler.model import Registry
from reconciler.plan import ADOPT, CREATE, DELETE, NOOP, REPLACE, UPDATE, Change, FieldChange, Plan

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


def test_marker_counts_then_folded_details() -> None:
    text = render_markdown(sample_plan(), problems=["registries.d/a.yaml:3:1: unknown field 'x'"])
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
    # Counts come before any details; refusals and blocked changes are not folded.
    first_details = next(i for i, line in enumerate(lines) if line.startswith("<details>"))
    assert lines.index("| `+` create | 1 |") < first_details
    assert any("Refused" in line for line in lines[:first_details])
    assert any("refusing 6 deletions" in line for line in lines[:first_details])
    assert "- OciRegistry/guarded  [blocked: protect: true is recorded]" in lines[:first_details]
    assert any("unknown field" in line for line in lines[:first_details])
    assert any("OCI is recommended" in line for line in lines[:first_details])
    assert text.count("<details>") == text.count("</details>") == 5
    assert "+ OciRegistry/new-oci  endpoint: registry.example.com; auth.password: (sensitive)" in lines
    assert (
        "~ HelmRegistry/charts  endpoint: https://old.example.com -> https://new.example.com; "
        "auth.token: (sensitive)" in lines
    )
    assert "-/+ OciRegistry/packs  sync: true -> false  (sync cannot be turned off in place)" in lines
    assert "- OciRegistry/old" in lines
    assert SECRET not in text
    assert "same" not in text  # unchanged registries are only counted


def test_secret_references_and_odd_values() -> None:
    plan = Plan((
        Change(UPDATE, key("x"), uid="u", fields=(
            FieldChange("auth.password", {"fromEnv": "PW"}, {"fromEnv": "PW2"}),
            FieldChange("baseContentPath", "a\nb```c", "x" * 500),
            FieldChange("tls.caFile", None, "certs/ca.pem"),
        )),
    ))
    text = render_markdown(plan)
    line = next(line for line in text.splitlines() if line.startswith("~ "))
    assert "auth.password: (sensitive) -> (sensitive)" in line
    assert "PW2" not in text
    assert "tls.caFile: (none) -> certs/ca.pem" in line
    assert "```c" not in line and "…" in line and len(line) < 300


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
    full_lines = {change_line(c) for c in plan.changes}
    text = render_markdown(plan, limit=limit)
    assert len(text) <= limit
    lines = text.splitlines()
    # The note is the last line and counts exactly the lines that were left out.
    m = re.fullmatch(r"… ([\d,]+) more changes not shown; see the job summary / run `reconcile --dry-run`", lines[-1])
    assert m, lines[-1]
    omitted = int(m.group(1).replace(",", ""))
    # Every line inside a fence is a whole change line; fences and <details> are balanced.
    shown = 0
    in_fence = False
    for line in lines:
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            assert line in full_lines, line
            shown += 1
    assert not in_fence
    assert text.count("<details>") == text.count("</details>")
    assert shown + omitted == 5000
    assert shown > (500 if limit == GITHUB_COMMENT_LIMIT else 10)
    # Counts are for the whole plan, not for what was shown.
    assert "| `+` create | 1,000 |" in lines
    assert "| `~` update | 1,000 |" in lines
    assert "**1000 to create, 1000 to update, 1000 to replace, 1000 to delete, 1000 to adopt, 0 unchanged**" in lines


def test_exactly_fitting_plan_has_no_note() -> None:
    plan = _big_plan(50)
    text = render_markdown(plan)
    assert "not shown" not in text
    assert sum(1 for line in text.splitlines() if re.match(r"^(\+|~|-/\+|-|=) OciRegistry/", line)) == 50
