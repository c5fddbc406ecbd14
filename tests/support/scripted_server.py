"""A scripted HTTP server on loopback: ``route(path, headers) -> (status, headers, body)``;
HTTP/1.1 keep-alive unless the route asks to drop the connection after answering (``x-drop``),
status 0 never answers (5 s, then the connection closes); a callable body writes itself
(``body(wfile)``: without a Content-Length of the route's, the connection then closes, which
ends the body). Serves hostile registries: it
records each request's path, Authorization and Host header, and the connections made."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.http_server import QuietHTTPServer


class ScriptedServer:
    def __init__(self, route) -> None:
        import http.server
        import threading

        outer = self
        self.connections = 0
        self.requests: list[tuple[str, str | None]] = []
        self.hosts: list[str] = []  # the Host header of each request

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections += 1

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Authorization")))
                outer.hosts.append(self.headers.get("Host", ""))
                status, headers, body = route(self.path, self.headers)
                if status == 0:  # hang: never answer
                    time.sleep(5)
                    self.close_connection = True
                    return
                if callable(body):  # streamed by the route: as much, and as slowly, as it likes
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if "Content-Length" not in headers:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        body(self.wfile)
                    except OSError:  # the client hung up: what a limit does
                        pass
                    self.close_connection = True
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    if k != "x-drop":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if headers.get("x-drop"):  # close without announcing it: a stale keep-alive
                    self.close_connection = True

            def log_message(self, *a: object) -> None:
                pass

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[..., Any]], ScriptedServer]]:
    """``scripted(route)``: a ScriptedServer answering with ``route``; every one made is closed
    when the test ends (import the fixture into a test module to use it)."""
    made: list[ScriptedServer] = []

    def make(route: Callable[..., Any]) -> ScriptedServer:
        made.append(ScriptedServer(route))
        return made[-1]

    yield make
    for s in made:
        s.close()
