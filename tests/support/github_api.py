"""A fake of the GitHub REST API's issue-comment endpoints on loopback.

Shapes follow GitHub's documented responses (``GET/POST /repos/{owner}/{repo}/issues/{n}/comments``,
``PATCH /repos/{owner}/{repo}/issues/comments/{id}``, 403 for a comment by someone other than
the token's ``github-actions[bot]``): comment objects with ``id``,
``node_id``, ``url``, ``html_url``, ``issue_url``, ``body``, ``user``, timestamps and
``author_association``; lists page with ``per_page`` (default 30, max 100) and ``page`` and
a ``Link`` header with ``next``/``last``/``prev``/``first``. A token is required
(``Authorization: Bearer|token ...``), 401 otherwise; ``read_only`` tokens get 403 on
writes, as a forked pull request's ``GITHUB_TOKEN`` does.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.http_server import QuietHTTPServer

BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot", "node_id": "MDM6Qm90NDE4OTgyODI="}
HUMAN = {"login": "octocat", "id": 583231, "type": "User", "node_id": "MDQ6VXNlcjU4MzIzMQ=="}

_LIST = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments$")
_ONE = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/comments/(\d+)$")


@dataclass
class FakeGitHub:
    token: str = "ghs_testtoken"
    read_only: bool = False
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    base_url: str = ""
    _next_id: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_comment(self, owner: str, repo: str, issue: int, body: str, user: dict[str, Any] = HUMAN) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            cid = self._next_id
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            api = f"{self.base_url}/repos/{owner}/{repo}"
            comment = {
                "id": cid,
                "node_id": f"IC_kwDO{cid:08d}",
                "url": f"{api}/issues/comments/{cid}",
                "html_url": f"https://github.com/{owner}/{repo}/pull/{issue}#issuecomment-{cid}",
                "issue_url": f"{api}/issues/{issue}",
                "body": body,
                "user": dict(user),
                "created_at": now,
                "updated_at": now,
                "author_association": "NONE" if user.get("type") == "Bot" else "MEMBER",
                "performed_via_github_app": None,
                "reactions": {"url": f"{api}/issues/comments/{cid}/reactions", "total_count": 0},
                "_key": (owner, repo, issue),
            }
            self.comments[cid] = comment
            return comment

    def on_issue(self, owner: str, repo: str, issue: int) -> list[dict[str, Any]]:
        return [c for c in sorted(self.comments.values(), key=lambda c: c["id"]) if c["_key"] == (owner, repo, issue)]

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.requests if m == method)


def _public(comment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in comment.items() if not k.startswith("_")}


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)})

        def _auth(self) -> bool:
            header = self.headers.get("Authorization", "")
            if header not in (f"Bearer {fake.token}", f"token {fake.token}"):
                self._error(401, "Bad credentials")
                return False
            return True

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                data = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._error(400, "Problems parsing JSON")
                return None
            if not isinstance(data, dict) or not isinstance(data.get("body"), str):
                self._error(422, "Validation Failed")
                return None
            if len(data["body"]) > 65536:
                self._error(422, "Validation Failed: body is too long (maximum is 65536 characters)")
                return None
            return data

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            fake.requests.append(("GET", self.path))
            if not self._auth():
                return
            m = _LIST.match(parts.path)
            if not m:
                return self._error(404, "Not Found")
            query = parse_qs(parts.query)
            per_page = min(int(query.get("per_page", ["30"])[0]), 100)
            page = max(int(query.get("page", ["1"])[0]), 1)
            owner, repo, issue = m.group(1), m.group(2), int(m.group(3))
            items = fake.on_issue(owner, repo, issue)
            last = max((len(items) + per_page - 1) // per_page, 1)
            chunk = items[(page - 1) * per_page : page * per_page]
            base = f"{fake.base_url}{parts.path}?per_page={per_page}&page="
            links = []
            if page < last:
                links += [f'<{base}{page + 1}>; rel="next"', f'<{base}{last}>; rel="last"']
            if page > 1:
                links += [f'<{base}{page - 1}>; rel="prev"', f'<{base}1>; rel="first"']
            self._send(200, [_public(c) for c in chunk], {"Link": ", ".join(links)} if links else None)

        def do_POST(self) -> None:  # noqa: N802
            fake.requests.append(("POST", self.path))
            if not self._auth():
                return
            m = _LIST.match(urlsplit(self.path).path)
            if not m:
                return self._error(404, "Not Found")
            data = self._body()
            if data is None:
                return
            if fake.read_only:
                return self._error(403, "Resource not accessible by integration")
            comment = fake.add_comment(m.group(1), m.group(2), int(m.group(3)), data["body"], BOT)
            self._send(201, _public(comment), {"Location": comment["url"]})

        def do_PATCH(self) -> None:  # noqa: N802
            fake.requests.append(("PATCH", self.path))
            if not self._auth():
                return
            m = _ONE.match(urlsplit(self.path).path)
            if not m or int(m.group(3)) not in fake.comments:
                return self._error(404, "Not Found")
            data = self._body()
            if data is None:
                return
            if fake.read_only:
                return self._error(403, "Resource not accessible by integration")
            comment = fake.comments[int(m.group(3))]
            if comment["user"]["login"] != BOT["login"]:
                # The workflow token may not edit other people's comments (issue 9.25 saw 403).
                return self._error(403, "Resource not accessible by integration")
            comment["body"] = data["body"]
            comment["updated_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._send(200, _public(comment))

    return Handler


@contextmanager
def serve_github(fake: FakeGitHub | None = None) -> Iterator[FakeGitHub]:
    fake = fake or FakeGitHub()
    server = QuietHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
