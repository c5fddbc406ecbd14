"""Markdown as GitHub renders it: cmark-gfm (GitHub's own renderer), raw HTML allowed as in
comments and job summaries. A missing cmarkgfm is a skip here, which ``CI=true`` turns into a
failure (``tests/conftest.py``)."""

from __future__ import annotations

import html as html_lib
import re

import pytest


def to_html(markdown: str) -> str:
    cmarkgfm = pytest.importorskip("cmarkgfm")
    from cmarkgfm.cmark import Options

    return str(cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE))


def text_of(fragment: str) -> str:
    """The text a reader sees in an HTML fragment: tags dropped, entities decoded, and the
    zero-width spaces that stop GitHub's mentions and autolinks removed."""
    return html_lib.unescape(re.sub(r"<[^>]*>", "", fragment)).replace("\u200b", "")


def tables(rendered: str) -> list[list[list[str]]]:
    """Every ``<table>`` of rendered HTML as rows of cell texts (the header row first)."""
    found = []
    for table in re.findall(r"<table>(.*?)</table>", rendered, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        found.append([[text_of(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, flags=re.S)] for r in rows])
    return found
