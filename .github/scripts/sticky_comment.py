#!/usr/bin/env python3
"""Create or update one pull-request comment, found again by a hidden marker.

    python .github/scripts/sticky_comment.py [--marker '<!-- reconcile-plan -->'] [--pr N] BODY_FILE

Environment: GITHUB_TOKEN (required), GITHUB_REPOSITORY (owner/name), GITHUB_API_URL
(default https://api.github.com), GITHUB_EVENT_PATH (the pull request number is read from
it unless --pr is given). Standard library only, so it runs before anything is installed.

The first comment on the pull request that was posted by the workflow's own identity
(``--author``, default ``$STICKY_COMMENT_AUTHOR`` or ``github-actions[bot]``, the login of
``GITHUB_TOKEN``) and whose body contains the marker is edited (PATCH); without one a new
comment is posted, so each push updates the same comment. A marker in anyone else's comment
is ignored: otherwise anyone who can comment could post the marker first and freeze the plan
(our PATCH of their comment gets 403). A token that may not write (a pull request from a
fork) is a warning, not a failure: the plan is in the job summary anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_MARKER = "<!-- reconcile-plan -->"
DEFAULT_AUTHOR = "github-actions[bot]"
LIMIT = 65536
TIMEOUT = 30


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub API answered {status}: {message}")
        self.status = status


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/vnd.github+json")
    req.add_header("X-GitHub-Api-Version", "2022-11-28")
    req.add_header("User-Agent", "reconcile-sticky-comment")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 (URL from GITHUB_API_URL)
            payload = resp.read()
            return (json.loads(payload) if payload else None), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        text = exc.read()[:500].decode("utf-8", "replace")
        try:
            text = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            pass
        raise ApiError(exc.code, text) from None


def _next_link(headers: dict[str, str]) -> str | None:
    link = next((v for k, v in headers.items() if k.lower() == "link"), "")
    for part in link.split(","):
        m = re.match(r'\s*<([^>]+)>\s*;\s*rel="([^"]+)"', part)
        if m and m.group(2) == "next":
            return m.group(1)
    return None


def _by(comment: dict[str, Any], author: str) -> bool:
    login = str((comment.get("user") or {}).get("login") or "")
    return login.lower() == author.lower()


def find_comment(api: str, repo: str, pr: int, token: str, marker: str,
                 author: str = DEFAULT_AUTHOR) -> dict[str, Any] | None:
    """Our own earlier comment: posted by ``author`` and carrying the marker."""
    url: str | None = f"{api}/repos/{repo}/issues/{pr}/comments?per_page=100"
    while url:
        comments, headers = _request("GET", url, token)
        for comment in comments:
            if _by(comment, author) and marker in (comment.get("body") or ""):
                return comment  # type: ignore[no-any-return]
        url = _next_link(headers)
    return None


KEEP = "<!-- reconcile-keep -->"  # what follows this line survives truncation (the failure report)
NOTE = "… truncated to fit a GitHub comment; the job summary shows the rest"  # action.yml: all of plan.md
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _closers(fence: str | None, details: int) -> list[str]:
    return ([fence] if fence else []) + ["</details>"] * details


def _truncate(lines: list[str], budget: int) -> list[str]:
    """The first lines that fit in ``budget`` characters with every code fence and
    ``<details>`` they open closed again; a line longer than what is left is cut."""
    kept: list[str] = []
    used = 0
    fence: str | None = None
    details = 0
    for line in lines:
        nfence, ndetails = fence, details
        m = _FENCE.match(line)
        if fence is None and m:
            nfence = m.group(1)
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip().strip(fence[0]):
            nfence = None
        elif fence is None:
            ndetails = max(0, details + len(re.findall(r"<details\b", line)) - line.count("</details>"))
        closing = sum(len(c) + 1 for c in _closers(nfence, ndetails))
        if used + len(line) + 1 + closing > budget:
            room = budget - used - 1 - sum(len(c) + 1 for c in _closers(fence, details))
            if room > 20 and fence is not None:  # inside code a cut line is still shown as text
                kept.append(line[: room - 1] + "…")
            break
        kept.append(line)
        used += len(line) + 1
        fence, details = nfence, ndetails
    return kept + _closers(fence, details)


def fit(body: str, marker: str, limit: int = LIMIT) -> str:
    """Marker alone on the first line; within GitHub's limit. Over it, the plan is cut at a
    line, its open code fences and ``<details>`` are closed, a note says so, and the part after
    ``KEEP`` (the failure report) is kept."""
    if not body.startswith(marker + "\n"):
        body = f"{marker}\n{body}"
    if len(body) <= limit:
        return body
    # the failure report: from the last line that is KEEP alone (md_section writes it so); a
    # registry name in a diff line may hold the same text, and a cut there posted the rest of
    # the diff as markdown (images, mentions, links) and lost the report (review, this round)
    at = body.rfind(f"\n{KEEP}\n")
    head, tail = (body[: at + 1], body[at + 1:]) if at >= 0 else (body, "")
    tail_lines = tail.splitlines()
    if len(tail) > limit // 2:
        tail_lines = _truncate(tail_lines, limit // 2)
    tail_len = sum(len(line) + 1 for line in tail_lines)
    budget = limit - tail_len - len(NOTE) - 4
    head_lines = head.splitlines()
    kept = [marker] + _truncate(head_lines[1:], budget - len(marker) - 1)
    return "\n".join([*kept, "", NOTE, *([""] + tail_lines if tail_lines else [])]) + "\n"


def _one_line(text: str) -> str:
    """A server's message inside our own ``::error::`` line: one line, so it cannot start a
    workflow command of its own."""
    return " ".join(text.split())


def pr_number(explicit: int | None) -> int:
    if explicit:
        return explicit
    path = os.environ.get("GITHUB_EVENT_PATH")
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            event = json.load(fh)
        number = (event.get("pull_request") or {}).get("number") or event.get("number")
        if number:
            return int(number)
    raise SystemExit("sticky_comment: no pull request number (pass --pr or run on a pull_request event)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("body_file")
    parser.add_argument("--marker", default=DEFAULT_MARKER)
    parser.add_argument("--pr", type=int, default=None)
    parser.add_argument("--author", default=os.environ.get("STICKY_COMMENT_AUTHOR") or DEFAULT_AUTHOR,
                        help="login that posts the comment (default: github-actions[bot], the GITHUB_TOKEN's)")
    args = parser.parse_args(argv)

    token = os.environ.get("GITHUB_TOKEN", "")
    repo = os.environ.get("GITHUB_REPOSITORY", "")
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    if not token or not repo:
        print("sticky_comment: GITHUB_TOKEN and GITHUB_REPOSITORY must be set", file=sys.stderr)
        return 1
    with open(args.body_file, encoding="utf-8") as fh:
        body = fit(fh.read(), args.marker)
    pr = pr_number(args.pr)
    try:
        existing = find_comment(api, repo, pr, token, args.marker, args.author)
        if existing is not None:
            comment, _ = _request("PATCH", f"{api}/repos/{repo}/issues/comments/{existing['id']}", token, {"body": body})
            print(f"updated {comment.get('html_url', existing['id'])}")
        else:
            comment, _ = _request("POST", f"{api}/repos/{repo}/issues/{pr}/comments", token, {"body": body})
            print(f"created {comment.get('html_url', comment.get('id'))}")
    except ApiError as exc:
        if exc.status == 403:
            print(f"::warning::cannot write the plan comment ({_one_line(str(exc))}); a pull request from a fork "
                  "gets a read-only token. The plan is in the job summary.")
            return 0
        print(f"::error::{_one_line(str(exc))}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        print(f"::error::{_one_line(f'cannot reach the GitHub API at {api}: {exc}')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
