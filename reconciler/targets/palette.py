"""The Palette REST API as a target: the only module that speaks it.

Paths and bodies follow ``palette-registries-openapi.json`` (Swagger 2.0, Palette 4.8):

* OCI basic ``/v1/registries/oci/basic`` + ``/oci/{uid}/basic`` (v1BasicOciRegistry), OCI ECR
  ``/oci/ecr`` + ``/oci/{uid}/ecr`` (v1EcrRegistry), both listed by ``/oci/summary`` whose
  items carry ``registryType``;
* Helm ``/v1/registries/helm`` (v1HelmRegistryEntity / v1HelmRegistry) and Pack
  ``/v1/registries/pack`` (v1PackRegistry), listed in pages of 50 with ``continue``;
* built-in defaults are the ``isDefault`` items of ``/v1/registries/metadata`` (whether
  Palette sets ``isDefault`` is unverified, see palette-behaviour.md "Unknown"; nothing else
  marks them, so a registry whose detail GET is refused is observed from the summary).

Where the spec is silent this follows Spectro's own Terraform provider
(terraform-provider-spectrocloud, cited per function below) and the evidence collected in
the shared reference ``palette-behaviour.md``:

* ``sync``: OCI from ``status.syncStatus.isSyncSupported``, ``spec.isSyncSupported`` as the
  fallback (``resourceRegistryEcrRead``); Helm ``isPrivate`` is its inverse (PR #990); Pack
  registries always sync.
* TLS: the CA PEM of OCI basic and ECR registries goes in ``tls.certificate``
  (``toRegistryBasic``, ``toRegistryEcr``); Helm and Pack in ``tls.ca`` (PR #978: the
  backend reads ``ca`` for Helm; Pack unverified). ``caFile`` and ``fips`` cannot be read
  back, so observed specs omit them.
* ``basePath`` (OCI basic, TF ``endpoint_suffix``): sent as declared, ``""`` when absent.
* every PUT is built on the server's current object: fields we do not manage
  (``containsSpectroManifest``, ``defaultRegion``, future fields) are sent back unchanged.
* public ECR: ``auth: {type: ecr}`` without ``credentials`` is ``isPrivate: false``.
* no ``ProjectUid`` header on ``/v1/registries/*``: registries are tenant or system objects
  (every TF registry resource uses ``getV1ClientWithResourceContext(m, "tenant")``);
  ``project_uid`` is kept for the cluster-profile look-ups only.
* Secrets are write-only: observed specs never carry password/token/secretKey, and what a
  GET answers for them (``""`` or masked ``abc***def``) is never sent back.

Client rules: one ``httpx.Client``; a thread-safe token bucket (10 req/s, burst 5 by
default); retries with exponential backoff and full jitter on 429, 500/502/503/504, connect
errors, timeouts and dropped connections, honouring ``Retry-After``, within a per-run
deadline; every request (headers and body) ends within ``timeout`` seconds, however slowly
the server drips it. A 3xx is never a success: a same-origin redirect of a GET is followed,
anything else is an error, and the API key never goes to another origin. A server that has
not yet given one answer gets a short timeout and one retry, so a wrong endpoint fails in
seconds. GET/PUT/DELETE are retried; a create (POST) is never blindly retried: after an
ambiguous failure the registry is looked up by name first.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpcore
import httpx

from reconciler.content.http import ACCEPT_ENCODING, ProbeError, decode_pieces
from reconciler.errors import (
    ClientError,
    Conflict,
    InputError,
    NotFound,
    ServerError,
    TargetError,
    own_credentials,
    redact,
)
from reconciler.model import Key, ObservedRegistry, Registry, Settings, split_userinfo
from reconciler.secrets import MAX_CA_FILE, read_bounded, read_ref, remember_secret
from reconciler.targets import palette_profiles
from reconciler.targets.base import Known, ObservedList, References, Secrets, SyncStatus, Target
from reconciler.text import escape, header_safe

log = logging.getLogger("reconciler.palette")

DEFAULT_ENDPOINT = "https://api.spectrocloud.com"
PAGE_LIMIT = 50
MAX_PAGES = 2000  # 100,000 registries of one kind: more is a server that never stops paging
MAX_REDIRECTS = 5
MAX_CONNECT_RETRIES = 3  # connection refused / unresolvable: retried this many times only
FIRST_CONTACT_TIMEOUT = 5.0  # until the server has answered once: a wrong endpoint fails fast
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
SECRET_KEYS = frozenset({"password", "token", "secretKey", "secretToken"})
_MAX_MESSAGE = 300
# One answer (a page of 50 registries, a cluster profile): tens of KB. A hostile or broken server
# (or a proxy) must not exhaust the runner's memory (adversarial pass 8, item 5: 400 KB of gzip
# were 4 GB resident, httpx decoding the whole body before anyone counted); as content/http.py
# bounds what a registry sends.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_MAX_CODE = 100  # an error code is a word ("ResourceNotFound"); a longer one is cut like a message

OCI = "OciRegistry"
HELM = "HelmRegistry"
PACK = "PackRegistry"


class TokenBucket:
    """Client-side rate limit shared by every thread: ``rate`` tokens/s, at most ``burst``.

    Tokens are reserved under the lock (the count may go negative) and the caller sleeps
    outside it, so concurrent callers are spaced exactly ``1/rate`` apart.
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, deadline: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = max(0.0, -self._tokens / self.rate, self._paused_until - now)
            if deadline is not None and now + wait > deadline:
                self._tokens += 1
                raise _DeadlineExceeded()
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The server said 429 + Retry-After: hold every caller back that long."""
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + seconds)
            self._tokens = min(self._tokens, 0.0)


class _DeadlineExceeded(Exception):
    pass


class _Ambiguous(Exception):
    """A create may or may not have landed (5xx or the connection died after sending)."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _check_endpoint(endpoint: str) -> str:
    """The API base URL, or an ``InputError`` before any request is made."""
    try:
        url = httpx.URL(endpoint)
        ok = url.scheme in ("http", "https") and bool(url.host) and (url.port is None or 0 < url.port < 65536)
        userinfo = bool(url.userinfo)
        if ok and ":" not in url.host:
            # what the resolver does with the host httpx sends (ASCII: IDNA 2008 already applied,
            # so not url.host, decoded again, which the codec's IDNA 2003 may refuse): a label
            # empty (a..b) or over 63 characters
            url.raw_host.decode("ascii").encode("idna")
    except (httpx.InvalidURL, TypeError, ValueError):  # (UnicodeError is a ValueError)
        # validation's rule for registries: a password may hold "/" (httpx read "pa" of
        # "admin:pa/ss@host" as a port, and the endpoint was printed whole; review, this round)
        ok, userinfo = False, split_userinfo(str(endpoint))[1] is not None
    if userinfo:
        # issue 9 item 10: a password in a URL is printed, logged and stored everywhere the URL is
        raise InputError("palette endpoint must not carry credentials (user:password@ in the URL); the API key "
                         "is read from PALETTE_API_KEY (--endpoint or PALETTE_ENDPOINT)")
    if not ok:
        # (an endpoint with user-info never gets here: refused above, unprinted)
        raise InputError(f"palette endpoint {str(endpoint)!r} is not an http:// or https:// URL "
                         "with a host (--endpoint or PALETTE_ENDPOINT)")
    if url.scheme == "http" and not _loopback(url.host):
        # Spectro's SDK speaks https only unless told otherwise (palette-sdk-go client.go:
        # schemes []string{"https"}); over http the API key and every password cross in clear
        raise InputError(f"palette endpoint {str(endpoint)!r} is plain http://: the API key and registry passwords "
                         "would cross the network in clear; use https:// (http:// is allowed for a loopback host "
                         "only: 127.0.0.1, ::1, localhost)")
    return endpoint.rstrip("/")


def _loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` itself (never by prefix:
    ``127.0.0.1.evil.example`` is a name that resolves anywhere)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


# ---------------------------------------------------------------------- whole-request bound

_request_until = threading.local()  # monotonic time by which the current thread's request must end


class _BoundedStream(httpcore.NetworkStream):
    """Every read and write gets at most what is left of the request's time: a server that
    drips one byte per read never resets the clock (httpx's timeouts are per operation)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    @staticmethod
    def _left(timeout: float | None) -> float | None:
        until: float | None = getattr(_request_until, "at", None)
        if until is None:
            return timeout
        left = until - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the whole request took longer than its time limit")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, self._left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        left = _BoundedStream._left(timeout)
        return _BoundedStream(self._inner.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.connect_unix_socket(path, _BoundedStream._left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bounded_transport(verify: bool | ssl.SSLContext, limits: httpx.Limits) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=verify, limits=limits)
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is not None:  # httpcore's ConnectionPool keeps its backend here (httpcore 1.x)
        pool._network_backend = _BoundedBackend(inner)  # type: ignore[union-attr]
    return transport


# ---------------------------------------------------------------------- answers


def _snippet(text: str) -> str:
    """The start of an answer's text, for a message: whitespace collapsed, then cut. The
    caller redacts the whole text first; a secret with spaces or a newline, or one that
    straddles the cut, would not be found once collapsed or cut."""
    text = " ".join(text.split())
    return text[:60] + ("..." if len(text) > 60 else "")


_WORD = re.compile(r"\S+")


def _head(text: str, need: int) -> str:
    """The start of ``text`` that holds its first ``need`` characters once its whitespace is
    collapsed (all of it when it has fewer): the part of it that can reach a message cut
    after collapsing. Cut in characters of ``text`` instead, a run of blanks before a value
    pushed it across the cut, and the rest of it, unmasked, into what is shown (adversarial
    pass 8, item 1)."""
    if len(text) <= need:
        return text
    got = 0  # characters of the collapsed text so far, a blank after each word
    for m in _WORD.finditer(text):
        if got + (m.end() - m.start()) >= need:
            return text[:m.start() + need - got]
        got += m.end() - m.start() + 1
    return text


def _shown(text: str, known: Iterable[str], limit: int, room: int) -> str:
    """The server's ``text`` as a message shows it: redacted first (collapsing or cutting a
    value first hides it from ``redact``), but only as far as it can reach the shown part, the
    cut plus ``room`` for the longest value in its longest form (a 1 MiB error page against
    5,000 secrets took seconds); then on one line, at most ``limit`` characters, escaped."""
    text = " ".join(redact(_head(text, limit + room), known).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return escape(text)


def _answer_body(response: httpx.Response, method: str, url: str) -> bytes:
    """The body of ``response`` (a stream, unread), decoded here 64 KiB at a time (one layer of
    gzip or deflate: ``content.http.decode_pieces``), refused with a ``ServerError`` (not
    retried) once it passes ``MAX_ANSWER_BYTES`` or declares more."""
    path = httpx.URL(url).path
    too_big = f"palette: {method} {path}: the answer is larger than the {MAX_ANSWER_BYTES}-byte limit of one answer"
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise ServerError(too_big, status=response.status_code)
    if response.is_stream_consumed:  # an answer made whole in memory (a MockTransport's): nothing to bound
        return response.content
    body = bytearray()
    try:
        for piece in decode_pieces(response.iter_raw(), response.headers.get("Content-Encoding", ""), url):
            body += piece
            if len(body) > MAX_ANSWER_BYTES:
                raise ServerError(too_big, status=response.status_code)
    except ProbeError as exc:
        raise ServerError(f"palette: {method} {path}: {exc}", status=response.status_code) from None
    return bytes(body)


def _is_html(response: httpx.Response) -> bool:
    ctype = response.headers.get("Content-Type", "").lower()
    return "html" in ctype or response.text[:200].lstrip().lower().startswith(("<!doctype", "<html"))


def _ssl_context(ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    try:
        # bounded, regular files only: --ca-file /dev/zero or a FIFO must not hang us
        data = read_bounded(ca_file, MAX_CA_FILE)
        if not data.strip():
            raise InputError(f"--ca-file {ca_file}: the file is empty, not a PEM CA bundle")
        return ssl.create_default_context(cadata=data.decode("utf-8"))
    except ssl.SSLError as exc:
        raise InputError(f"--ca-file {ca_file}: not a PEM CA bundle ({exc.reason or exc})") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"--ca-file {ca_file}: not a PEM CA bundle ({exc})") from exc
    except OSError as exc:
        raise InputError(f"--ca-file {ca_file}: cannot read: {exc.strerror or exc}") from exc



class PaletteTarget(Target):
    max_concurrency = 8

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        api_key: str = "",
        *,
        project_uid: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        verify: bool = True,
        base_dir: str | os.PathLike[str] = ".",
        rate: float = 10.0,
        burst: int = 5,
        timeout: float = 30.0,
        deadline: float = 900.0,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_concurrency: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if not api_key:
            raise ClientError("palette: no API key (set PALETTE_API_KEY)")
        remember_secret(api_key)  # from now on every redact masks it (errors.own_credentials)
        if not header_safe(api_key):  # else an internal error, or a request that could not be sent
            raise InputError("PALETTE_API_KEY holds a character an HTTP header cannot carry (outside printable ASCII, "
                             "a control character, or a blank; the value is not shown): set it again")
        self.endpoint = _check_endpoint(endpoint)
        self._origin = _origin(httpx.URL(self.endpoint))
        self._api_key = api_key
        # only for the cluster-profile look-ups: never sent on /v1/registries/* (module docstring)
        self.project_uid = project_uid or None
        self.base_dir = Path(base_dir)
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout = timeout
        self.deadline_seconds = deadline
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._bucket = TokenBucket(rate, burst, clock=clock, sleep=sleep)
        self._deadline: float | None = None
        self._lock = threading.Lock()
        self._oci_types: dict[str, str] = {}  # uid -> basic | ecr
        self._builtin: set[str] = set()
        self._answered = False  # the server has given one answer that is not an HTML page
        self.stats = {"requests": 0, "retries": 0, "429": 0}
        headers = {"ApiKey": api_key, "Accept": "application/json", "User-Agent": "reconcile-palette/0.1",
                   "Accept-Encoding": ACCEPT_ENCODING}  # what _answer_body decodes, nothing httpx may add
        verify_arg: bool | ssl.SSLContext = verify
        if ca_file:
            verify_arg = _ssl_context(ca_file)
        limits = httpx.Limits(max_connections=max(10, self.max_concurrency * 2),
                              max_keepalive_connections=max(10, self.max_concurrency * 2))
        self._client = httpx.Client(
            base_url=self.endpoint,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport if transport is not None else _bounded_transport(verify_arg, limits),
            follow_redirects=False,
        )

    @classmethod
    def from_options(cls, **kwargs: Any) -> PaletteTarget:
        """Build from CLI options; ``None`` means "default", the key falls back to the env."""
        opts = {k: v for k, v in kwargs.items() if v is not None}
        opts.setdefault("api_key", os.environ.get("PALETTE_API_KEY", ""))
        opts.setdefault("endpoint", os.environ.get("PALETTE_ENDPOINT") or DEFAULT_ENDPOINT)
        return cls(**opts)

    @property
    def description(self) -> str:
        return f"palette ({self.endpoint})"

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:  # never show the key
        return f"PaletteTarget({self.endpoint!r})"

    # ------------------------------------------------------------------ HTTP core

    def reset_deadline(self) -> None:
        with self._lock:
            self._deadline = None

    def set_deadline(self, seconds: float) -> None:
        with self._lock:
            self._deadline = self._clock() + max(0.0, seconds)

    def _deadline_at(self) -> float:
        with self._lock:
            if self._deadline is None:
                self._deadline = self._clock() + self.deadline_seconds
            return self._deadline

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        with self._rng_lock:
            delay = self._rng.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** attempt)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _error(self, method: str, path: str, response: httpx.Response | None, secrets: Iterable[str],
               detail: str = "") -> TargetError:
        known = [self._api_key, *secrets]
        if response is None:
            msg = redact(f"palette: {method} {path}: {detail}", known)
            return ServerError(msg)
        status = response.status_code
        code, message = "", ""
        try:
            data = response.json()
            if isinstance(data, dict):
                code = str(data.get("code") or "")
                message = str(data.get("message") or "")
        except ValueError:
            message = response.text
        if not code:
            code = response.reason_phrase or "Error"
        # the server's words, redacted, then shown on one line, cut, with anything a terminal or a
        # CI log would act on escaped (adversarial pass 7: a code holding newlines forged whole
        # log lines)
        room = 8 * max((len(v) for v in (*known, *own_credentials()) if v), default=0) + 4096
        code, message = _shown(code, known, _MAX_CODE, room), _shown(message, known, _MAX_MESSAGE, room)
        text = f"palette: {method} {path}: {status} {code}" + (f": {message}" if message else "")
        if detail:
            text += f" ({detail})"
        text = redact(text, known)
        # SDK herr.IsNotFound keys on the code ResourceNotFound, not only on HTTP 404
        if status == 404 or code == "ResourceNotFound":
            return NotFound(text, status=status, code=code)
        if status == 409:
            return Conflict(text, status=status, code=code)
        if status < 500 and status != 429:
            return ClientError(text, status=status, code=code)
        return ServerError(text, status=status, code=code, delay=_retry_after(response) or 0.0)

    def _redirect(self, method: str, path: str, response: httpx.Response, hops: int,
                  secrets: Iterable[str]) -> httpx.URL:
        """Where a 3xx points, if we may follow it; else a ``ClientError`` saying why not.

        Go's HTTP client (used by Spectro's SDK) follows redirects; we follow a GET to the same
        origin only, so the ``ApiKey`` header never goes anywhere else (palette-behaviour.md).
        """
        status = response.status_code
        location = response.headers.get("Location", "")
        known = [self._api_key, *secrets]
        if not location:
            return self._refuse_redirect(method, path, status, "without a Location", known)
        try:
            target = response.request.url.join(location)
        except httpx.InvalidURL:
            return self._refuse_redirect(method, path, status, "to an invalid Location", known)
        where = f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")
        if _origin(target) != self._origin:
            return self._refuse_redirect(
                method, path, status, f"to another origin ({where}); the API key is never sent there", known)
        if method != "GET":
            return self._refuse_redirect(method, path, status, f"for a {method} (only GETs are followed)", known)
        if hops >= MAX_REDIRECTS:
            return self._refuse_redirect(method, path, status, f"after {hops} redirects", known)
        return target

    def _refuse_redirect(self, method: str, path: str, status: int, why: str, known: list[str]) -> httpx.URL:
        raise ClientError(redact(f"palette: {method} {path}: {status} redirect {why}: refusing to follow; check "
                                 "--endpoint (it must be the API URL itself)", known), status=status)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        secrets: Iterable[str] = (),
        create: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send with rate limit and retries; raise a TargetError for a failure.

        ``create``: ambiguous failures (5xx, read errors) raise ``_Ambiguous`` instead of
        being retried, so the caller can look the registry up by name first.
        """
        secrets = [s for s in secrets if s]
        deadline = self._deadline_at()
        attempt = 0
        connect_failures = 0
        silent = 0  # timeouts before the server ever answered
        hops = 0
        url: httpx.URL | str = path
        last: TargetError | None = None
        while True:
            try:
                self._bucket.acquire(deadline)
            except _DeadlineExceeded:
                raise self._gave_up(method, path, last, "deadline exceeded", secrets) from None
            self._count("requests")
            retry_after: float | None = None
            first_contact = not self._answered
            limit = min(self.timeout, FIRST_CONTACT_TIMEOUT) if first_contact else self.timeout
            limit = max(0.001, min(limit, deadline - self._clock()))
            try:
                response = self._send(method, url, params if hops == 0 else None, json, limit, headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = self._error(method, path, None, secrets,
                                   f"cannot connect: {type(exc).__name__}: {exc or 'no reason given'}")
                connect_failures += 1
                if connect_failures > MAX_CONNECT_RETRIES:
                    # nobody answers at all: a few quick tries, not minutes of backoff
                    raise self._gave_up(method, path, last, f"gave up after {connect_failures} attempts",
                                        secrets) from exc
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                timed_out = isinstance(exc, httpx.TimeoutException)
                detail = (f"no complete answer within {limit:g} s" if timed_out
                          else f"no answer ({type(exc).__name__}: {exc or 'connection closed'})")
                last = self._error(method, path, None, secrets, detail)
                if create:
                    raise _Ambiguous(last) from exc
                if first_contact and timed_out:
                    silent += 1
                    if silent >= 2:
                        raise self._gave_up(method, path, last, f"{silent} attempts; the server accepted the "
                                            "connection but never answered: is --endpoint the Palette API?",
                                            secrets) from exc
            except httpx.HTTPError as exc:
                raise self._error(method, path, None, secrets, f"{type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                log.debug("%s %s -> %s", method, path, status)
                html = _is_html(response)
                if 300 <= status < 400:
                    url = self._redirect(method, path, response, hops, secrets)
                    hops += 1
                    log.debug("%s %s: %s redirect followed (same origin)", method, path, status)
                    continue
                if status < 300:
                    if not html:
                        self._answered = True
                    return response
                if status == 404 and method == "DELETE" and attempt > 0:
                    return response  # a retried delete that had landed
                if html and not self._answered:
                    # an HTML error page from a server that never gave an API answer: not Palette's API
                    raise self._error(method, path, response, secrets,
                                      "an HTML page, not the Palette API's JSON: is --endpoint the API URL?")
                if not html:
                    self._answered = True
                last = self._error(method, path, response, secrets)
                if status not in RETRY_STATUSES:
                    raise last
                retry_after = _retry_after(response)
                if status == 429:
                    self._count("429")
                    self._bucket.pause(retry_after if retry_after is not None else 1.0)
                elif create:
                    raise _Ambiguous(last)
            attempt += 1
            if attempt > self.max_retries:
                raise self._gave_up(method, path, last, f"gave up after {attempt} attempts", secrets)
            delay = self._backoff(attempt - 1, retry_after)
            if self._clock() + delay > deadline:
                raise self._gave_up(method, path, last, "deadline exceeded", secrets)
            self._count("retries")
            self._sleep(delay)

    def _send(self, method: str, url: httpx.URL | str, params: Mapping[str, Any] | None, json: Any,
              limit: float, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """One request that ends, headers and body, within ``limit`` seconds (issue 9 item 15),
        its body read here, bounded (``_answer_body``)."""
        _request_until.at = time.monotonic() + limit
        try:
            request = self._client.build_request(method, url, params=params, json=json, headers=headers,
                                                 timeout=httpx.Timeout(limit, connect=min(limit, 10.0)))
            response = self._client.send(request, stream=True)
            try:
                body = _answer_body(response, method, str(request.url))
            finally:
                response.close()
        finally:
            _request_until.at = None
        # the answer as httpx would have given it, its body decoded already
        kept = [(k, v) for k, v in response.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(response.status_code, headers=kept, content=body, request=request,
                              extensions=response.extensions)

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def _gave_up(self, method: str, path: str, last: TargetError | None, why: str,
                 secrets: Iterable[str]) -> TargetError:
        if last is None:
            return ServerError(redact(f"palette: {method} {path}: {why}", [self._api_key, *secrets]))
        text = f"{last} ({why})"
        cls = type(last) if isinstance(last, ServerError) else ServerError
        return cls(text, status=last.status, code=last.code)

    def _json(self, method: str, path: str, response: httpx.Response, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """The answer's JSON object, or a ``ServerError`` that says what came instead (issue 9
        item 17), its text redacted of the API key and of the secrets the request sent."""
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            what = "an HTML page" if _is_html(response) else "not JSON"
            known = [self._api_key, *secrets]
            shown = _snippet(redact(response.text, known))
            raise ServerError(redact(f"palette: {method} {path}: {response.status_code} answered {what} "
                                     f"({shown!r}); is --endpoint the Palette API URL?", known),
                              status=response.status_code) from None
        if not isinstance(data, dict):
            raise ServerError(f"palette: {method} {path}: {response.status_code} answered a JSON "
                              f"{type(data).__name__}, not the object the API returns", status=response.status_code)
        return data

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._request_json("GET", path, params=params)

    def _request_json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                      headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self._json(method, path, self._request(method, path, params=params, json=json, headers=headers))

    def _items(self, path: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        return palette_profiles.items_of(data, f"GET {path}")

    # ------------------------------------------------------------------ reading

    def _paged(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        seen: set[str] = set()
        for page in range(1, MAX_PAGES + 1):
            params: dict[str, Any] = {"limit": PAGE_LIMIT, "scope": "all"}
            if token:
                params["continue"] = token
            data = self._get_json(path, params)
            items.extend(_with_uid(path, self._items(path, data)))
            listmeta = data.get("listmeta")
            listmeta = listmeta if isinstance(listmeta, dict) else {}
            token = str(listmeta.get("continue") or "")
            if not token:
                # the registries it left out would read as gone (their records dropped) or missing
                palette_profiles.check_count(listmeta, len(items), f"GET {path}", "registries")
                return items
            if token in seen:
                # issue 9 items 14, 36: a server that repeats its token would page until the deadline
                raise ServerError(f"palette: GET {path}: paging does not end: page {page} returned a continue "
                                  "token the server already gave; stopped (a Palette bug or a proxy that caches "
                                  "pages?)")
            seen.add(token)
        raise ServerError(f"palette: GET {path}: paging does not end: more than {MAX_PAGES} pages of "
                          f"{PAGE_LIMIT}; stopped")

    def _refresh_builtins(self) -> set[str]:
        data = self._get_json("/v1/registries/metadata", {"scope": "all"})
        found = {str(i.get("uid")) for i in self._items("/v1/registries/metadata", data)
                 if i.get("isDefault") and i.get("uid")}
        with self._lock:
            self._builtin = found
        return found

    def _oci_summary(self) -> list[dict[str, Any]]:
        path = "/v1/registries/oci/summary"
        items = _with_uid(path, self._items(path, self._get_json(path)))
        with self._lock:
            for item in items:
                uid = _uid(_obj(item.get("metadata")).get("uid"))
                rtype = _text(_obj(item.get("spec")).get("registryType")).lower()
                if rtype in ("basic", "ecr"):
                    self._oci_types[uid] = rtype
        return items

    def _from_summary(self, item: Mapping[str, Any], builtin: set[str]) -> ObservedRegistry:
        """What the OCI summary alone says (no detail GET): name, scope, endpoint, provider, sync."""
        meta, spec = _obj(item.get("metadata")), _obj(item.get("spec"))
        uid = _uid(meta.get("uid"))
        observed: dict[str, Any] = {"endpoint": _text(spec.get("endpoint")),
                                    "provider": (_text(spec.get("providerType")) or "helm")}
        sync = _obj(item.get("status")).get("sync")
        if isinstance(sync, dict) and "isSyncSupported" in sync:
            observed["sync"] = bool(sync["isSyncSupported"])
        return ObservedRegistry(uid=uid, kind=OCI, name=_text(meta.get("name")),
                                scope=(_text(spec.get("scope")) or "tenant"), spec=observed, builtin=uid in builtin)

    def _oci_detail(self, item: Mapping[str, Any], builtin: set[str]) -> ObservedRegistry | None:
        uid = _uid(_obj(item.get("metadata")).get("uid"))
        try:
            return self.get(OCI, uid)
        except NotFound:
            return None
        except ClientError as exc:
            if exc.status != 403:
                raise
            # Spectro's built-in ECR registries refuse detail reads, and so may an API key without
            # the permission: what the summary says is all we can know. It does not make the
            # registry a built-in (those come from the metadata list); a write to it fails clearly.
            log.info("OCI registry %s: detail read refused (403); using the summary", uid)
            return self._from_summary(item, builtin)

    def list(self) -> list[ObservedRegistry]:
        return self._collect(None, {})

    def observe(self, wanted: Collection[Key], known: Mapping[str, Known]) -> ObservedList:
        return self._collect(set(wanted), dict(known))

    def _collect(self, wanted: set[Key] | None, known: dict[str, Known]) -> ObservedList:
        """Every registry; OCI details read only where they are needed.

        No Spectro client reads details of registries it does not own (SDK ``ListOCIRegistries``
        uses the summary), so: built-ins never; with ``wanted`` (a plan), only what is declared
        or recorded, and a recorded one only when its summary ``metadata.lastModifiedTimestamp``
        differs from the stamp recorded at our last write (issue 11 item 2). A summary without
        the stamp means a GET (whether Palette's summary carries it is unverified).
        """
        builtin = self._refresh_builtins()
        out = [self._observe(HELM, obj, builtin) for obj in self._paged("/v1/registries/helm")]
        out += [self._observe(PACK, obj, builtin) for obj in self._paged("/v1/registries/pack")]
        fetch: list[Mapping[str, Any]] = []
        for item in self._oci_summary():
            meta, spec = _obj(item.get("metadata")), _obj(item.get("spec"))
            uid = _uid(meta.get("uid"))
            rec = known.get(uid)
            stamp = meta.get("lastModifiedTimestamp")
            if uid in builtin:
                out.append(self._from_summary(item, builtin))
            elif rec is not None and rec.version and stamp and str(stamp) == rec.version and rec.kind in ("", OCI):
                out.append(self._as_recorded(item, rec, builtin))
            elif wanted is None or rec is not None or \
                    ((_text(spec.get("scope")) or "tenant"), OCI, _text(meta.get("name"))) in wanted:
                fetch.append(item)
            else:
                out.append(self._from_summary(item, builtin))
        if len(fetch) > 1 and self.max_concurrency > 1:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(fetch))) as pool:
                details = list(pool.map(lambda i: self._oci_detail(i, builtin), fetch))
        else:
            details = [self._oci_detail(i, builtin) for i in fetch]
        out += [d for d in details if d is not None]
        return out

    def _as_recorded(self, item: Mapping[str, Any], rec: Known, builtin: set[str]) -> ObservedRegistry:
        """Unchanged since our last write: what we wrote then is what a detail GET would show."""
        meta, spec = _obj(item.get("metadata")), _obj(item.get("spec"))
        name, scope = _text(meta.get("name")), (_text(spec.get("scope")) or "tenant")
        flavour, body = build_body(Registry(OCI, name, scope, rec.spec), {}, "")
        # the CA we wrote is not in the record (its digest is, and the plan compares that)
        return self._observe(OCI, {"metadata": meta, "spec": body["spec"]}, builtin, oci_type=flavour, ca_known=False)

    def version(self, kind: str, uid: str) -> str | None:
        """``metadata.lastModifiedTimestamp`` right after our write (OCI only: Helm and Pack lists
        carry full objects, so nothing is saved by knowing it). One GET per OCI write."""
        if kind != OCI:
            return None
        try:
            data = self._get_json(self._path(kind, uid))
        except TargetError as exc:
            log.info("OCI registry %s: no modification stamp (%s); the next plan reads it in full", uid, exc)
            return None
        stamp = _obj(data.get("metadata")).get("lastModifiedTimestamp")
        return str(stamp) if stamp else None

    def _oci_type(self, uid: str) -> str:
        with self._lock:
            known = self._oci_types.get(uid)
        if known:
            return known
        data = self._get_json(f"/v1/registries/oci/{uid}")
        rtype = _text(data.get("type")).lower()
        if rtype not in ("basic", "ecr"):
            # older servers: probe ECR, then basic
            for candidate in ("ecr", "basic"):
                try:
                    self._get_json(f"/v1/registries/oci/{uid}/{candidate}")
                except NotFound:
                    continue
                rtype = candidate
                break
            else:
                raise NotFound(f"palette: OCI registry {uid} not found", status=404)
        with self._lock:
            self._oci_types[uid] = rtype
        return rtype

    def _path(self, kind: str, uid: str) -> str:
        if kind == OCI:
            return f"/v1/registries/oci/{uid}/{self._oci_type(uid)}"
        if kind == HELM:
            return f"/v1/registries/helm/{uid}"
        if kind == PACK:
            return f"/v1/registries/pack/{uid}"
        raise ClientError(f"palette: unknown registry kind {kind!r}")

    def get(self, kind: str, uid: str) -> ObservedRegistry:
        obj = self._get_json(self._path(kind, uid))
        with self._lock:
            builtin = set(self._builtin)
        return self._observe(kind, obj, builtin, oci_type=self._oci_types.get(uid))

    def find(self, scope: str, kind: str, name: str) -> ObservedRegistry | None:
        if kind == OCI:
            for item in self._oci_summary():
                meta, spec = _obj(item.get("metadata")), _obj(item.get("spec"))
                if _text(meta.get("name")) == name and (_text(spec.get("scope")) or "tenant") == scope:
                    return self._oci_detail(item, self._refresh_builtins())
            return None
        path = "/v1/registries/helm" if kind == HELM else "/v1/registries/pack"
        for obj in self._paged(path):
            if _text(_obj(obj.get("metadata")).get("name")) == name and \
                    (_text(_obj(obj.get("spec")).get("scope")) or "tenant") == scope:
                return self._observe(kind, obj, self._refresh_builtins())
        return None

    # ------------------------------------------------------------------ API -> canonical

    def _observe(self, kind: str, obj: Mapping[str, Any], builtin: set[str],
                 oci_type: str | None = None, ca_known: bool = True) -> ObservedRegistry:
        meta = _obj(obj.get("metadata"))
        spec = _obj(obj.get("spec"))
        uid = _uid(meta.get("uid"))
        if kind == OCI:
            rtype = oci_type or ("ecr" if "credentials" in spec or "isPrivate" in spec else "basic")
            canonical = observe_oci(spec, rtype, obj.get("status"))
        elif kind == HELM:
            canonical = observe_helm(spec)
        else:
            canonical = observe_pack(spec)
        return ObservedRegistry(uid=uid, kind=kind, name=_text(meta.get("name")) or _text(spec.get("name")),
                                scope=(_text(spec.get("scope")) or "tenant"), spec=canonical, builtin=uid in builtin,
                                ca_pem=_observed_ca(spec) if ca_known else None)

    # ------------------------------------------------------------------ writing

    def _read_ca(self, spec: Mapping[str, Any]) -> str:
        ca_file = (spec.get("tls") or {}).get("caFile")
        if not ca_file:
            return ""
        try:
            return read_ref(str(ca_file), self.base_dir, None, limit=MAX_CA_FILE).decode("utf-8")
        except OSError as exc:
            raise ClientError(f"palette: cannot read tls.caFile {ca_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ClientError(f"palette: tls.caFile {ca_file} is not a PEM file (not UTF-8)") from exc

    def _body(self, registry: Registry, secrets: Secrets) -> tuple[str, dict[str, Any]]:
        """(flavour, API object) for a desired registry; flavour: basic|ecr|helm|pack."""
        return build_body(registry, secrets, self._read_ca(registry.spec))

    def _check_writable(self, kind: str, uid: str) -> None:
        with self._lock:
            builtin = uid in self._builtin
        if builtin:
            raise ClientError(f"palette: {kind} {uid} is a built-in default registry: it cannot be changed")

    def create(self, registry: Registry, secrets: Secrets) -> str:
        flavour, body = self._body(registry, secrets)
        path = {"basic": "/v1/registries/oci/basic", "ecr": "/v1/registries/oci/ecr",
                "helm": "/v1/registries/helm", "pack": "/v1/registries/pack"}[flavour]
        values = list(secrets.values())
        ambiguous: TargetError | None = None
        for attempt in range(self.max_retries + 1):
            try:
                response = self._request("POST", path, json=body, secrets=values, create=True)
            except _Ambiguous as exc:
                ambiguous = exc.error
                found = self.find(registry.scope, registry.kind, registry.name)
                if found is not None:
                    log.info("create %s: landed despite %s", registry.name, exc.error)
                    return self._created(flavour, found.uid)
                delay = self._backoff(attempt, exc.error.delay if isinstance(exc.error, ServerError) else None)
                if self._clock() + delay > self._deadline_at():
                    raise self._gave_up("POST", path, ambiguous, "deadline exceeded", values) from None
                self._sleep(delay)
                continue
            except Conflict:
                if ambiguous is None:
                    raise
                found = self.find(registry.scope, registry.kind, registry.name)
                if found is None:
                    raise
                return self._created(flavour, found.uid)
            uid = str(self._json("POST", path, response, values).get("uid") or "")
            if not uid:
                raise ServerError(f"palette: POST {path}: {response.status_code}: answer without uid")
            return self._created(flavour, uid)
        assert ambiguous is not None
        raise self._gave_up("POST", path, ambiguous, f"gave up after {self.max_retries + 1} attempts", values)

    def _created(self, flavour: str, uid: str) -> str:
        if flavour in ("basic", "ecr"):
            with self._lock:
                self._oci_types[uid] = flavour
        return uid

    def update(self, uid: str, registry: Registry, secrets: Secrets) -> None:
        self._check_writable(registry.kind, uid)
        path = self._path(registry.kind, uid)
        flavour, body = self._body(registry, secrets)
        if registry.kind == OCI and not path.endswith("/" + flavour):
            raise ClientError(f"palette: {registry.name}: cannot change an OCI registry between basic and ECR in "
                              "place (replace it)")
        current = self._get_json(path)
        # the PUT replaces the whole object: build it on what the server has, so fields we do
        # not manage (containsSpectroManifest, defaultRegion, labels, future fields) survive;
        # secrets are never taken from a GET (masked or empty), only from ``secrets``
        merged = {"metadata": dict(_obj(current.get("metadata"))),
                  "spec": _overlay(_without_secrets(_obj(current.get("spec"))), body["spec"])}
        if flavour == "ecr" and "credentials" not in body["spec"]:
            merged["spec"].pop("credentials", None)  # now a public ECR
        elif flavour == "ecr":
            # only the chosen type's fields, as TF toRegistryAwsAccountCredential sends them
            old = _obj(merged["spec"].get("credentials"))
            merged["spec"]["credentials"] = {**({"partition": old["partition"]} if "partition" in old else {}),
                                             **body["spec"]["credentials"]}
        merged["metadata"]["name"] = registry.name
        merged["spec"]["registryUid"] = uid
        self._request("PUT", path, json=merged, secrets=list(secrets.values()))

    def delete(self, kind: str, uid: str) -> None:
        self._check_writable(kind, uid)
        self._request("DELETE", self._path(kind, uid))
        with self._lock:
            self._oci_types.pop(uid, None)

    def references(self, uids: Collection[str]) -> References:
        return palette_profiles.find_references(self._request_json, uids, workers=self.max_concurrency,
                                                project_uid=self.project_uid)

    def check_tenant_policy(self, settings: Settings, registries: Sequence[Registry]) -> str | None:
        if settings.profile != "vertex":
            return None
        non_fips = [r.name for r in registries if r.spec.get("fips") is not True]
        return palette_profiles.check_tenant_fips(self._request_json, settings.allow_non_fips, non_fips)

    def validate(self, registry: Registry, secrets: Secrets) -> None:
        flavour, body = self._body(registry, secrets)
        spec = dict(body["spec"])
        if flavour in ("helm", "pack"):
            spec.pop("createOption", None)
        path = {"basic": "/v1/registries/oci/basic/validate", "ecr": "/v1/registries/oci/ecr/validate",
                "helm": "/v1/registries/helm/validate", "pack": "/v1/registries/pack/validate"}[flavour]
        self._request("POST", path, json=spec, secrets=list(secrets.values()))

    def sync(self, kind: str, uid: str, *, force: bool = False, secrets: Secrets | None = None) -> None:
        params = {"forceSync": "true"} if force else None
        self._request("POST", self._path(kind, uid) + "/sync", params=params)

    def sync_status(self, kind: str, uid: str) -> SyncStatus:
        data = self._get_json(self._path(kind, uid) + "/sync/status")
        return SyncStatus(
            status=str(data.get("status") or ""),
            message=str(data.get("message") or ""),
            # times by their shape (adversarial pass 8, item 3: a number was recorded as it came,
            # and the state then refused itself at every later run)
            last_synced=_text(data.get("lastSyncedTime")) or None,
            last_run=_text(data.get("lastRunTime")) or None,
            sync_supported=bool(data.get("isSyncSupported", True)),
        )


# ---------------------------------------------------------------------- body mapping


def _without_secrets(data: Any) -> Any:
    """A server object with every secret field dropped: a GET answers them empty or masked."""
    if isinstance(data, dict):
        return {k: _without_secrets(v) for k, v in data.items() if k not in SECRET_KEYS}
    if isinstance(data, list):
        return [_without_secrets(v) for v in data]
    return data


def _overlay(base: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``ours`` written over it, recursively for objects."""
    out = copy.deepcopy(dict(base))
    for k, v in ours.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _overlay(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _tls_body(spec: Mapping[str, Any], endpoint: str, ca: str, field: str = "ca") -> dict[str, Any]:
    tls = spec.get("tls") or {}
    return {
        "enabled": not endpoint.startswith("http://"),
        "insecureSkipVerify": bool(tls.get("insecureSkipVerify", False)),
        field: ca,
    }


def _auth_body(spec: Mapping[str, Any], secrets: Secrets, ca: str, ca_field: str = "ca") -> dict[str, Any]:
    auth = spec.get("auth") or {"type": "noAuth"}
    atype = auth.get("type", "noAuth")
    out: dict[str, Any] = {"type": atype}
    if atype == "basic":
        out["username"] = str(auth.get("username", ""))
        if secrets.get("auth.password"):
            out["password"] = secrets["auth.password"]
    elif atype == "token":
        if secrets.get("auth.token"):
            out["token"] = secrets["auth.token"]
    out["tls"] = _tls_body(spec, str(spec.get("endpoint", "")), ca, ca_field)
    return out


def build_body(registry: Registry, secrets: Secrets, ca: str = "") -> tuple[str, dict[str, Any]]:
    spec = registry.spec
    endpoint = str(spec["endpoint"])
    meta = {"name": registry.name}
    if registry.kind == OCI:
        auth = spec.get("auth") or {"type": "noAuth"}
        common = {
            "endpoint": endpoint,
            "providerType": spec.get("provider", "helm"),
            "baseContentPath": spec.get("baseContentPath") or "",
            "isSyncSupported": bool(spec.get("sync", False)),
            "scope": registry.scope,
        }
        if auth.get("type") == "ecr":
            creds = auth.get("credentials")
            ecr: dict[str, Any] = {**common, "isPrivate": bool(creds),
                                   # TF toRegistryEcr: the CA PEM in tls.certificate
                                   "tls": _tls_body(spec, endpoint, ca, "certificate")}
            if creds:
                ctype = creds.get("credentialType", "secret")
                if ctype == "sts":
                    ecr["credentials"] = {"credentialType": "sts",
                                          "sts": {"arn": str(creds.get("arn", "")),
                                                  "externalId": str(creds.get("externalId", ""))}}
                else:
                    cbody: dict[str, Any] = {"credentialType": "secret", "accessKey": str(creds.get("accessKey", ""))}
                    if secrets.get("auth.credentials.secretKey"):
                        cbody["secretKey"] = secrets["auth.credentials.secretKey"]
                    ecr["credentials"] = cbody
            # a public ECR (no credentials): isPrivate false, as TF is_private and the docs allow
            return "ecr", {"metadata": meta, "spec": ecr}
        # TF toRegistryBasic: endpoint_suffix -> basePath; the CA PEM in auth.tls.certificate
        return "basic", {"metadata": meta, "spec": {**common, "basePath": str(spec.get("basePath") or ""),
                                                    "auth": _auth_body(spec, secrets, ca, "certificate")}}
    if registry.kind == HELM:
        return "helm", {"metadata": meta, "spec": {
            "endpoint": endpoint, "name": registry.name, "scope": registry.scope,
            "isPrivate": not bool(spec.get("sync", True)), "auth": _auth_body(spec, secrets, ca)}}
    if registry.kind == PACK:
        auth_type = (spec.get("auth") or {}).get("type", "noAuth")
        return "pack", {"metadata": meta, "spec": {
            "endpoint": endpoint, "name": registry.name, "scope": registry.scope,
            "private": auth_type != "noAuth", "auth": _auth_body(spec, secrets, ca)}}
    raise ClientError(f"palette: unknown registry kind {registry.kind!r}")


# Every field of a server answer is read for its shape: an object where an object belongs, a
# string where a string does. Anything else (a proxy's rewrite, a server bug) reads as absent,
# so the plan shows it as drift and never stops on it (adversarial pass 4, #6: ``auth: "noAuth"``
# was an internal error in plan, status and export).
_obj = palette_profiles.obj_of


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _uid(value: Any) -> str:
    """A uid as text; a number is taken as its digits (an odd server), any other shape is none."""
    if isinstance(value, bool):
        return ""
    return str(value) if isinstance(value, str | int) else ""


def _with_uid(path: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items that name a uid. One that does not can be neither read nor changed nor matched to
    a record (a GET of ``/v1/registries/helm/`` is no API path): left out, and said in one line."""
    kept = [i for i in items if _uid(_obj(i.get("metadata")).get("uid"))]
    if len(kept) < len(items):
        # a warning line of its own, as every other warning: logging has no handler without -v
        # (Python's last-resort one would print it bare, past the redaction -v sets up)
        import sys

        sys.stderr.write(f"warning: palette: GET {escape(path)}: {len(items) - len(kept)} item(s) without a "
                         "metadata.uid left out\n")
    return kept


def _observed_ca(spec: Mapping[str, Any]) -> str | None:
    """The CA PEM where each kind keeps it: OCI basic ``auth.tls.certificate``, ECR
    ``tls.certificate`` (TF toRegistryBasic / toRegistryEcr), Helm and Pack ``auth.tls.ca``.
    ``""`` when the object has a TLS block without a PEM (the server reports none: TF
    ``ociBasicTLSConfigForRead`` reads the certificate back, so a CA changed in the UI is
    drift); None when it has no TLS block at all (nothing is known, nothing is compared)."""
    auth = spec.get("auth")
    auth = auth if isinstance(auth, Mapping) else {}
    seen = False
    for tls in (auth.get("tls"), spec.get("tls")):
        if isinstance(tls, Mapping):
            seen = True
            for name in ("certificate", "ca"):
                pem = tls.get(name)
                if isinstance(pem, str) and "-----BEGIN" in pem:
                    return pem
    return "" if seen else None


def _observe_tls(tls: Any) -> dict[str, Any]:
    tls = tls if isinstance(tls, Mapping) else {}
    return {"insecureSkipVerify": bool(tls.get("insecureSkipVerify", False))}


def _observe_auth(auth: Any) -> dict[str, Any]:
    auth = auth if isinstance(auth, Mapping) else {}
    atype = _text(auth.get("type")) or "noAuth"
    out: dict[str, Any] = {"type": atype}
    if atype == "basic":
        out["username"] = _text(auth.get("username"))
    return out


def _oci_sync_flag(spec: Mapping[str, Any], status: Any) -> bool:
    # TF resourceRegistryEcrRead reads is_synchronization from Status.SyncStatus.IsSyncSupported
    # (commit c3025510, "fetch from status field in read operation"); the spec is the fallback
    sync = status.get("syncStatus") if isinstance(status, Mapping) else None
    if isinstance(sync, Mapping) and isinstance(sync.get("isSyncSupported"), bool):
        return bool(sync["isSyncSupported"])
    return bool(spec.get("isSyncSupported", False))


def observe_oci(spec: Mapping[str, Any], rtype: str, status: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint": _text(spec.get("endpoint")),
        "provider": (_text(spec.get("providerType")) or "helm"),
        "baseContentPath": _text(spec.get("baseContentPath")),
        "sync": _oci_sync_flag(spec, status),
    }
    if rtype == "ecr":
        creds = _obj(spec.get("credentials"))
        if not spec.get("isPrivate") and not creds.get("accessKey") and not _obj(creds.get("sts")).get("arn"):
            out["auth"] = {"type": "ecr"}  # a public ECR
        elif (creds.get("credentialType") or "secret") == "sts":
            sts = _obj(creds.get("sts"))
            out["auth"] = {"type": "ecr", "credentials": {"credentialType": "sts", "arn": _text(sts.get("arn")),
                                                          "externalId": _text(sts.get("externalId"))}}
        else:
            out["auth"] = {"type": "ecr", "credentials": {"credentialType": "secret",
                                                          "accessKey": _text(creds.get("accessKey"))}}
        out["tls"] = _observe_tls(spec.get("tls"))
    else:
        auth = _obj(spec.get("auth"))
        if _text(spec.get("basePath")):
            out["basePath"] = _text(spec.get("basePath"))
        out["auth"] = _observe_auth(auth)
        out["tls"] = _observe_tls(auth.get("tls"))
    return out


def observe_helm(spec: Mapping[str, Any]) -> dict[str, Any]:
    auth = _obj(spec.get("auth"))
    return {"endpoint": _text(spec.get("endpoint")), "sync": not bool(spec.get("isPrivate", False)),
            "auth": _observe_auth(auth), "tls": _observe_tls(auth.get("tls"))}


def observe_pack(spec: Mapping[str, Any]) -> dict[str, Any]:
    auth = _obj(spec.get("auth"))
    return {"endpoint": _text(spec.get("endpoint")), "auth": _observe_auth(auth),
            "tls": _observe_tls(auth.get("tls"))}
