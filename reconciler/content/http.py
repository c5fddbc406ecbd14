"""HTTP plumbing shared by the Helm, OCI and Pack content modules.

One place builds httpx clients from a registry spec (auth, custom CA, insecureSkipVerify,
timeouts) and turns transport failures into one readable line (``describe_error``): the
callers report it as a ``Failed`` status or a preflight line, never as a traceback.
Messages never carry a secret value (``redact``) nor a URL's userinfo.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from reconciler.errors import redact
from reconciler.secrets import MAX_CA_FILE, path_problem
from reconciler.text import header_safe

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = "reconcile-content/0.1"
# One answer of a registry's API (a catalog page, a tag list, a token, a Pack listing): the
# largest real one is a few MB (100,000 tags of 30 characters); a registry that sends more,
# or keeps sending, must not exhaust the runner's memory. Helm indexes have their own limit.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# ... nor keep one request going for ever: TIMEOUT bounds each socket wait, so a trickle of a
# byte every 29 s never ends without a bound on the whole answer (and --timeout's deadline,
# when given, is the tighter of the two)
MAX_ANSWER_SECONDS = 300.0


class ProbeError(Exception):
    """A failed request, already described in one line (no secret, no traceback)."""

    def __init__(self, message: str, *, check: str = "reach", status: int = 0) -> None:
        self.check = check  # resolve | reach | tls | credentials | content | config
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Access:
    """How to talk to one registry: verify setting, auth, and the secret values to redact."""

    verify: ssl.SSLContext | bool
    auth: httpx.Auth | None
    headers: Mapping[str, str]
    secrets: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    insecure_skip_verify: bool = False
    ca_file: Path | None = None


def strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@functools.lru_cache(maxsize=16)
def _ssl_context(ca_file: str | None, _mtime: float) -> ssl.SSLContext:
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def _no_verify_context() -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=False)


class _VerifiedOnFirstUse(ssl.SSLContext):
    """The context of an endpoint given as plain ``http://`` without ``insecureSkipVerify``:
    ``_ssl_context(None, 0.0)`` (certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR as httpx reads
    them), made on the first TLS handshake and each handshake delegated to it. A redirect to
    https (a CDN, an object store) is verified as an https endpoint is, as Helm's own getter
    does; it was made with verification off. A sync that stays on http makes no handshake,
    so it does not pay for loading the bundle (17-26 ms on the development machine).

    httpcore sets ALPN on the context it is given, then wraps each socket with it: both are
    passed on to the real one."""

    def __new__(cls) -> _VerifiedOnFirstUse:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._real: ssl.SSLContext | None = None
        self._alpn: list[str] | None = None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        with self._lock:
            self._alpn = list(alpn_protocols)
            if self._real is not None:
                self._real.set_alpn_protocols(self._alpn)

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._real is None:
                self._real = _ssl_context(None, 0.0)
            if self._alpn is not None:
                self._real.set_alpn_protocols(self._alpn)
            return self._real

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._context().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._context().wrap_bio(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def _verified_on_first_use() -> ssl.SSLContext:
    return _VerifiedOnFirstUse()


def build_access(
    spec: Mapping[str, Any], secrets: Mapping[str, str], base_dir: Path, *, https: bool = True
) -> Access:
    """Resolve auth and TLS settings; raises ProbeError(check="config") on a bad setup."""
    auth_spec = spec.get("auth") or {}
    auth_type = auth_spec.get("type", "noAuth") if isinstance(auth_spec, Mapping) else "noAuth"
    values = tuple(str(v) for v in secrets.values() if v)
    auth: httpx.Auth | None = None
    headers: dict[str, str] = {"User-Agent": USER_AGENT}
    username = password = None
    if auth_type == "basic":
        username = str(auth_spec.get("username") or "")
        password = _secret(secrets, auth_spec, "password")
        auth = httpx.BasicAuth(username, password)
    elif auth_type == "token":
        token = _secret(secrets, auth_spec, "token")
        if not header_safe(token):  # else httpx raised UnicodeEncodeError: an internal error
            raise ProbeError("auth.token holds a character a bearer token cannot (a space, a control character or "
                             "one outside ASCII; the value is not shown)", check="config")
        headers["Authorization"] = "Bearer " + token
    elif auth_type not in ("noAuth", "none", "", None):
        raise ProbeError(
            f"auth.type {auth_type} is not supported by the local content sync", check="config"
        )

    tls = spec.get("tls") or {}
    insecure = bool(tls.get("insecureSkipVerify", False))
    ca_file: Path | None = None
    verify: ssl.SSLContext | bool
    if insecure:
        verify = _no_verify_context()  # built once per process
    elif not https and not tls.get("caFile"):
        verify = _verified_on_first_use()  # used only if a redirect leads to https
    else:
        if tls.get("caFile"):
            ca_file = (base_dir / str(tls["caFile"])).resolve()
            refused = path_problem(str(tls["caFile"]), base_dir, None, limit=MAX_CA_FILE)
            if refused:
                raise ProbeError(f"tls.caFile {tls['caFile']} {refused}", check="config")
            if not ca_file.is_file():
                raise ProbeError(
                    f"tls.caFile {tls['caFile']} not found (looked in {base_dir})", check="config"
                )
        try:
            verify = _ssl_context(
                str(ca_file) if ca_file else None, os.stat(ca_file).st_mtime if ca_file else 0.0
            )
        except (ssl.SSLError, OSError) as exc:
            raise ProbeError(
                f"tls.caFile {tls.get('caFile')} is not a usable CA bundle: {exc}", check="config"
            ) from None
    return Access(
        verify=verify,
        auth=auth,
        headers=headers,
        secrets=values,
        username=username,
        password=password,
        insecure_skip_verify=insecure,
        ca_file=ca_file,
    )


def _secret(secrets: Mapping[str, str], auth_spec: Mapping[str, Any], field: str) -> str:
    value = secrets.get(f"auth.{field}")
    if value is None:
        literal = auth_spec.get(field)
        if isinstance(literal, str):
            value = literal
    if not value:
        raise ProbeError(f"auth.{field} has no value (secret not provided)", check="config")
    return value


def make_client(access: Access, *, pool: int = 10) -> httpx.Client:
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return httpx.Client(
        verify=access.verify,
        auth=access.auth,
        headers=dict(access.headers),
        timeout=TIMEOUT,
        limits=limits,
        follow_redirects=True,
        trust_env=False,
    )


def time_left(deadline: float | None, url: str) -> float | None:
    """Seconds until ``deadline`` (None: no deadline); raises ProbeError once it has passed.

    ``reconcile sync --timeout`` on the local target: the sync runs in this process, so it is
    bounded here, before each request and by capping each request's timeouts."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProbeError(
            f"the sync's deadline (--timeout) passed before {strip_userinfo(url)} was read",
            check="reach",
        )
    return left


def answer_deadline(deadline: float | None) -> float:
    """When the answer of a request starting now must be complete: ``MAX_ANSWER_SECONDS``
    from now, or the sync's deadline (``--timeout``) if that comes first."""
    cap = time.monotonic() + MAX_ANSWER_SECONDS
    return cap if deadline is None else min(cap, deadline)


def read_answer(chunks: Iterable[bytes], url: str, until: float, declared: str | None = None,
                max_bytes: int | None = None) -> bytes:
    """The body of one API answer from ``chunks``, refused (ProbeError) once it passes
    ``max_bytes`` (``MAX_ANSWER_BYTES``), or declares more in ``declared`` (Content-Length),
    or is still arriving at ``until`` (``answer_deadline``)."""
    limit = MAX_ANSWER_BYTES if max_bytes is None else max_bytes
    where = strip_userinfo(url)
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise ProbeError(f"{where} answered {int(declared)} bytes, over the {limit}-byte limit of an answer",
                         check="content")
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ProbeError(f"{where} answered more than the {limit}-byte limit of an answer", check="content")
        if time.monotonic() >= until:
            raise ProbeError(f"{where} was still answering when its time ran out (at most "
                             f"{MAX_ANSWER_SECONDS:.0f} s, or the sync's --timeout): refused", check="reach")
    return bytes(body)


# What we accept, asked for explicitly: httpx would add br or zstd when their libraries are
# installed, and a body is decoded here (``decoded``), never by httpx.
ACCEPT_ENCODING = "gzip, deflate"
MAX_REDIRECTS = 5
DECODED_CHUNK = 1 << 16


def decoded(resp: httpx.Response, url: str) -> Iterator[bytes]:
    """The body of ``resp`` as sent (``iter_raw``), decoded here in pieces of at most 64 KiB:
    httpx decodes a whole chunk, and every layer, before a caller can count the bytes (3.5 KB
    of ``Content-Encoding: gzip, gzip`` became 4 GB). One layer of gzip or deflate is read;
    anything else is refused (ProbeError)."""
    yield from decode_pieces(resp.iter_raw(), resp.headers.get("Content-Encoding", ""), url)


def decode_pieces(raw_chunks: Iterable[bytes], content_encoding: str, url: str) -> Iterator[bytes]:
    """``decoded`` for any client: ``raw_chunks`` as sent, decoded by ``content_encoding``."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        yield from raw_chunks
        return
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise ProbeError(f"{strip_userinfo(url)} answered with Content-Encoding {coding[:40]!r}, which reconcile "
                         f"does not read (it asks for {ACCEPT_ENCODING})", check="content")
    wbits = 16 + zlib.MAX_WBITS if coding != "deflate" else zlib.MAX_WBITS
    inflate = zlib.decompressobj(wbits)
    try:
        for raw in raw_chunks:
            data = raw
            while data:
                if inflate.eof:  # another gzip member follows: read it too
                    data, inflate = inflate.unused_data + data, zlib.decompressobj(wbits)
                piece = inflate.decompress(data, DECODED_CHUNK)
                data = inflate.unconsumed_tail
                if piece:
                    yield piece
        rest = inflate.flush()
    except zlib.error as exc:
        raise ProbeError(f"{strip_userinfo(url)} sent a {coding} body that does not decode ({exc})",
                         check="content") from None
    if rest:
        yield rest


def get_answer(client: httpx.Client, url: str, *, deadline: float | None = None, read_body: bool = True,
               **kw: Any) -> tuple[httpx.Response, bytes]:
    """GET ``url``: the response (status, headers, links; its body unread) and, for a 200
    when ``read_body``, the body read by ``read_answer``; any other body is never read.
    Redirects are followed here, on the same origin only and at most ``MAX_REDIRECTS``: httpx
    reads each redirect's body whole, unbounded, before it follows. httpx errors are the
    caller's to describe."""
    left = time_left(deadline, url)
    until = answer_deadline(deadline)
    first = origin(url)
    params = kw.pop("params", None)
    for _ in range(MAX_REDIRECTS + 1):
        with client.stream("GET", url, params=params, timeout=request_timeout(left), follow_redirects=False,
                           headers={"Accept-Encoding": ACCEPT_ENCODING}, **kw) as resp:
            location = resp.headers.get("Location") if resp.is_redirect else None
            if location is None:
                body = b""
                if resp.status_code == 200 and read_body:
                    body = read_answer(decoded(resp, url), url, until, resp.headers.get("Content-Length"))
                return resp, body
        nxt = str(resp.url.join(location))
        if first is None or origin(nxt) != first:  # the client sends the registry's credentials with every request
            raise ProbeError(f"{strip_userinfo(url)} redirects to another origin ({strip_userinfo(nxt)[:200]}): "
                             "not followed, as no request goes elsewhere with the registry's credentials",
                             check="content")
        url, params = nxt, None
        left = time_left(deadline, url)
    raise ProbeError(f"{strip_userinfo(url)} redirected more than {MAX_REDIRECTS} times: refused", check="content")


@contextlib.contextmanager
def stream_redirected(client: httpx.Client, url: str, *, headers: Mapping[str, str],
                      deadline: float | None = None) -> Iterator[httpx.Response]:
    """GET ``url`` as a stream (its body unread), following redirects to any origin, as a
    Helm index may (a CDN, GitHub releases, an object store), by httpx's own rule for what
    each hop sends: httpx builds the next request (``Response.next_request``), which drops
    the Authorization header once a redirect leaves the origin (scheme, host and port; an
    http->https upgrade on the default ports keeps it), and an https->http downgrade is
    followed without it, as httpx does. Unlike httpx's own following, no body of a redirect
    is read (httpx reads each whole: 300 MiB 302 bodies used 6.6 GiB), no more than
    ``MAX_REDIRECTS`` are followed, and every hop is under ``deadline``. httpx errors are the
    caller's to describe."""
    left = time_left(deadline, url)
    request = client.build_request("GET", url, headers=headers, timeout=request_timeout(left))
    resp = client.send(request, stream=True, follow_redirects=False)
    try:
        for _ in range(MAX_REDIRECTS):
            nxt = resp.next_request
            if nxt is None:
                break
            resp.close()
            left = time_left(deadline, url)
            nxt.extensions = {**nxt.extensions, "timeout": request_timeout(left).as_dict()}
            # the request as httpx built it: the client's auth is not applied again (httpx
            # applies it to the first request only, and it would put credentials back)
            resp = client.send(nxt, auth=httpx.Auth(), stream=True, follow_redirects=False)
        if resp.next_request is not None:
            raise ProbeError(f"{strip_userinfo(url)} redirected more than {MAX_REDIRECTS} times: refused",
                             check="content")
        yield resp
    finally:
        resp.close()


def origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL, the default port filled in; None: not a URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return None
    scheme = parsed.scheme.lower()
    port = parsed.port or {"http": 80, "https": 443}.get(scheme, 0)
    return scheme, parsed.host.lower(), port


def request_timeout(left: float | None) -> httpx.Timeout:
    """TIMEOUT, no part of it longer than ``left`` seconds."""
    if left is None:
        return TIMEOUT
    return httpx.Timeout(min(TIMEOUT.read or 30.0, left), connect=min(TIMEOUT.connect or 5.0, left))


def check_resolves(url: str) -> None:
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        # the host httpx connects to: a name that is not ASCII as IDNA 2008 encodes it (the
        # resolver's own "idna" codec is IDNA 2003: fußball.example would be fussball.example)
        sent = httpx.URL(url).raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError):
        sent = host
    try:
        socket.getaddrinfo(sent, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ProbeError(
            f"host {host!r} does not resolve ({exc.args[-1]})", check="resolve"
        ) from None


def describe_error(exc: BaseException, url: str, secrets: tuple[str, ...] = ()) -> ProbeError:
    """Translate an httpx/ssl/OS exception into a one-line ProbeError."""
    where = strip_userinfo(url)
    if isinstance(exc, ProbeError):
        return exc
    text = _root_text(exc, secrets)
    check = "reach"
    if _is_tls(exc):
        check = "tls"
        msg = f"TLS verification failed for {where}: {text}"
    elif isinstance(exc, httpx.TimeoutException):
        msg = f"timed out talking to {where}"
    elif isinstance(exc, httpx.ConnectError):
        msg = f"cannot connect to {where}: {text}"
    elif isinstance(exc, httpx.HTTPError):
        msg = f"request to {where} failed: {text}"
    else:
        msg = f"request to {where} failed: {type(exc).__name__}: {text}"
    return ProbeError(redact(msg, secrets), check=check)


def status_error(status: int, url: str, what: str = "") -> ProbeError:
    where = strip_userinfo(url)
    if status == 401:
        return ProbeError(
            f"credentials rejected (HTTP 401) by {where}", check="credentials", status=status
        )
    if status == 403:
        return ProbeError(
            f"access denied (HTTP 403) by {where}", check="credentials", status=status
        )
    if status == 404:
        return ProbeError(
            f"{what or 'resource'} not found (HTTP 404) at {where}", check="content", status=status
        )
    return ProbeError(f"unexpected HTTP {status} from {where}", check="reach", status=status)


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen) or "SSL" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _root_text(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    seen: BaseException = exc
    while (seen.__cause__ or seen.__context__) is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    if isinstance(seen, ssl.SSLCertVerificationError):
        return seen.verify_message or str(seen)
    if isinstance(seen, ConnectionRefusedError):
        return "connection refused"
    text = redact(str(seen), secrets) or type(seen).__name__  # redact before cutting
    return text.splitlines()[0][:200]
