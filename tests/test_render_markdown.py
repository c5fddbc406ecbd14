"""Markdown tables (``sync``/``status``/``catalog --format markdown``, which CI writes to the job
summary, and ``validate --format markdown``): every cell is inert text, as GitHub renders it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from reconciler import render
from reconciler.plan import SENSITIVE, UPDATE, FieldChange, Marker
from tests.support.gfm import tables, to_html

SPOOF = ("index: 401 <br></td></tr></tbody></table>\n\n## reconcile sync: 1 ok, 0 failed\n\n"
         "| REGISTRY | STATUS |\n|---|---|\n| prod-charts | Completed |\n\n"
         "<details><summary>more</summary><table><tr><td>")

HOSTILE = [
    SPOOF,
    "<img src=x onerror=alert(1)> &lt;b&gt; &amp;",
    "[log in again](https://evil.example/login) ![ok](https://evil.example/ok.png)",
    "`a | b` **Completed** _x_ ~~Failed~~ $\\color{green}{ok}$",
    "a \\| b \\\\| c | d",
    "<https://evil.example/> <!-- hidden --> <details open><summary>x</summary>",
]
# what GitHub would make of markdown or HTML in a cell: none of it may come from a cell's text
ACTIVE = ("<a ", "<img", "<code", "<strong", "<em>", "<del", "<details", "<summary", "<br", "<!--", "<h2")


@pytest.mark.parametrize("message", HOSTILE)
def test_a_table_cell_is_inert_text_as_github_renders_it(message: str) -> None:
    """Adversarial pass 6, item 1: a sync message (Palette echoes the registry server) holding
    ``</td></tr></table>`` closed the job summary's table, faked a second one saying
    "1 ok, 0 failed" and opened a ``<details>`` that folded away the rows after it."""
    out = io.StringIO()
    rows = [["prod-charts", "HelmRegistry", "Failed", message], ["after", "OciRegistry", "Completed", "fine"]]
    render.markdown_table(rows, ["REGISTRY", "KIND", "STATUS", "MESSAGE"], out)
    html = to_html(out.getvalue())
    assert html.count("<table>") == 1 and html.count("<tr>") == 3, html
    assert not [a for a in ACTIVE if a in html], html
    [table] = tables(html)
    # the text reads as it was sent (its newlines shown escaped, as everywhere else)
    assert table == [["REGISTRY", "KIND", "STATUS", "MESSAGE"],
                     ["prod-charts", "HelmRegistry", "Failed", message.replace("\n", "\\x0a")],
                     ["after", "OciRegistry", "Completed", "fine"]], html


def test_validate_markdown_cells_are_inert_text(tmp_path: Path) -> None:
    """``validate --format markdown`` quotes the file's own text in a message (a name, a value):
    the same rule as the other tables."""
    from reconciler.commands.validate import run_validate

    defs = tmp_path / "registries.d"
    defs.mkdir()
    (defs / "a.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata: {name: a}\n"
        "spec: {endpoint: 'https://h.example.com', '</td></tr></table><details><summary>x|y': 1}\n"
    )
    out = io.StringIO()
    assert run_validate(None, tmp_path, None, "markdown", out) == 1
    html = to_html(out.getvalue())
    assert html.count("<table>") == 1 and "<details" not in html and "<summary" not in html, html
    [table] = tables(html)
    assert table[0] == ["location", "severity", "rule", "message"]
    assert any("</td></tr></table><details><summary>x|y" in row[3] for row in table[1:]), table
    assert all(re.fullmatch(r"registries\.d/a\.yaml:\d+:\d+", row[0]) for row in table[1:]), table


@pytest.mark.parametrize("old,new", [("1", 1), ("true", True), ("null", None), ("[1]", [1]),
                                     ("1.5", 1.5), ("abc", "abc "), ("(sensitive)", SENSITIVE),
                                     ("(changed)", Marker("(changed)")), ("(none)", None)])
def test_the_text_plan_never_shows_two_values_alike(old, new) -> None:
    """Adversarial pass 6 (left open there): the text plan showed the string "1" and the number
    1 alike, so a change of type only read as "f: 1 -> 1"."""
    from reconciler.render import field_line

    line = field_line(FieldChange("f", old, new), UPDATE)
    shown_old, shown_new = line.split(": ", 1)[1].split(" -> ")
    assert shown_old != shown_new, line


def test_a_registry_value_that_reads_like_a_marker_is_quoted_in_every_plan() -> None:
    """Left alone last round: the plan's own words ((sensitive), (changed)) were shown bare, and
    so was a registry's value with the same text: a username literally "(sensitive)" read as a
    masked one. The plan's markers are ``Marker`` values now: bare; a value that reads like one
    is quoted, in the text plan and the pull-request comment alike."""
    from reconciler.markdown import field_lines
    from reconciler.render import field_line

    change = FieldChange("auth.username", "(sensitive)", "(changed)")
    assert field_line(change, UPDATE) == 'auth.username: "(sensitive)" -> "(changed)"'
    assert [line[2:] for line in field_lines(change, UPDATE)] == ['auth.username: "(sensitive)"',
                                                                  'auth.username: "(changed)"']
    masked = FieldChange("auth.password", SENSITIVE, SENSITIVE, True)
    assert field_line(masked, UPDATE) == "auth.password: (sensitive) -> (sensitive)"
    marker = FieldChange("record", Marker("(not signed)"), Marker("(written from the definition, signed)"))
    assert field_line(marker, UPDATE) == "record: (not signed) -> (written from the definition, signed)"
    assert [line[2:] for line in field_lines(marker, UPDATE)] == ["record: (not signed)",
                                                                  "record: (written from the definition, signed)"]


def test_a_value_that_ends_like_a_marker_is_quoted_in_the_text_plan() -> None:
    """Adversarial pass 9: ``looks_marked`` knew only a whole value in parentheses, but the CA
    marker is ``PATH (contents sha256:…)``: a pull request that points ``tls.caFile`` at a file
    named ``evil.pem (contents sha256:1a2b3c4d)`` had the text plan show
    ``certs/ca.pem -> certs/evil.pem (contents sha256:1a2b3c4d)``, bare, as the plan's own digest
    of a CA file reads (a path change shows no digest at all). Quoted now, as the comment quotes it."""
    from reconciler.markdown import field_lines
    from reconciler.plan import _ca_text
    from reconciler.render import field_line

    forged = FieldChange("tls.caFile", "certs/ca.pem", "certs/evil.pem (contents sha256:1a2b3c4d)")
    assert field_line(forged, UPDATE) == 'tls.caFile: certs/ca.pem -> "certs/evil.pem (contents sha256:1a2b3c4d)"'
    assert field_lines(forged, UPDATE)[1] == '+ tls.caFile: "certs/evil.pem (contents sha256:1a2b3c4d)"'
    real = FieldChange("tls.caFile", _ca_text("certs/ca.pem", "sha256:" + "0" * 64),
                       _ca_text("certs/ca.pem", "sha256:" + "1" * 64))
    assert field_line(real, UPDATE) == ("tls.caFile: certs/ca.pem (contents sha256:00000000) -> "
                                        "certs/ca.pem (contents sha256:11111111)")
