"""A small keep-alive pool of stdlib ``http.client`` connections to one host.

Used for the request fan-out of the OCI sync (one ``tags/list`` per repository), where
httpx's per-request machinery (request/response models, auth flow, hooks) costs as much
client CPU as the registry's own work. The pool does the minimum: GET a path with fixed
headers, read the whole body, keep the connection if the server allows it.

- HTTPS uses the caller's ``ssl.SSLContext`` (custom CA, or verification off for
  ``insecureSkipVerify``); the hostname is checked by the context as usual.
- Timeouts: ``connect`` for the TCP/TLS setup, ``read`` for every socket read after it.
- Retries are bounded and only for connection-level failures where the request cannot
  have been processed twice in a harmful way (GET only): a stale keep-alive connection
  closed by the server is retried at once on a fresh one; a refused/reset connection is
  retried ``retries`` times with a short backoff. Timeouts and TLS errors are not retried.
- Thread-safe: connections are checked out exclusively; at most ``size`` are kept idle.
- A body is read in chunks: no larger than ``max_bytes``, complete by ``until``
  (``reconciler.content.http.read_answer``), each socket wait cut to the time left.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from reconciler.content.http import read_answer

CHUNK = 1 << 16

RETRYABLE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ConnectionRefusedError,
)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class ConnectionPool:
    def __init__(
        self,
        host: str,
        *,
        https: bool,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        size: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.05,
    ) -> None:
        self.host = host  # host[:port], IPv6 in brackets
        self.https = https
        self.ssl_context = ssl_context
        self.headers = dict(headers or {})
        self.headers.setdefault("Accept", "application/json")
        self.size = size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections
    def _new(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(
                self.host, timeout=self.connect_timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self.host, timeout=self.connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _checkout(self) -> tuple[http.client.HTTPConnection | None, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return None, False

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests
    def get(self, target: str, *, timeout: float | None = None, until: float | None = None,
            max_bytes: int | None = None, url: str = "") -> Response:
        """GET ``target`` (path and query); raises OSError / http.client.HTTPException, and
        ProbeError for a body over ``max_bytes`` or not complete at ``until`` (monotonic).

        ``timeout``: no socket wait of this request is longer (the caller's deadline);
        ``url``: the request's URL, as messages name it."""
        attempt = stale = 0
        read = self.read_timeout if timeout is None else min(self.read_timeout, timeout)
        while True:
            conn, reused = self._checkout()
            try:
                if conn is None:
                    conn = self._new()
                assert conn.sock is not None
                sock = conn.sock
                sock.settimeout(read)
                conn.request("GET", target, headers=self.headers)
                resp = conn.getresponse()  # closes conn (not sock) when the server will close
                if until is None and max_bytes is None:
                    body = resp.read()
                else:
                    body = read_answer(_chunks(resp, sock, read, until), url or f"{self.host}{target}",
                                       time.monotonic() + 1e9 if until is None else until,
                                       resp.getheader("Content-Length"), max_bytes)
            except RETRYABLE:
                if conn is not None:
                    conn.close()
                if reused and stale <= self.size:
                    stale += 1  # the server closed an idle keep-alive connection
                    continue
                if attempt >= self.retries:
                    raise
                time.sleep(self.backoff * (2**attempt))
                attempt += 1
                continue
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return Response(resp.status, resp.headers, body)


def _chunks(resp: http.client.HTTPResponse, sock: socket.socket, read: float, until: float | None) -> Iterator[bytes]:
    """The body of ``resp`` in chunks, no socket wait past ``until``."""
    while True:
        if until is not None:
            sock.settimeout(max(0.001, min(read, until - time.monotonic())))
        chunk = resp.read1(CHUNK)  # what has arrived (read waits for CHUNK bytes or the end)
        if not chunk:
            break
        yield chunk
    # read1 does not mark a response complete at the end of its Content-Length: read does (b""
    # here), and only then can the connection carry the next request
    resp.read()
