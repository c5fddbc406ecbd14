"""OCI registry sync: repositories and tags under every path of ``baseContentPath``.

``baseContentPath`` may list several paths, comma separated (``team-a,team-b``); for
``provider: pack`` an empty one means ``<endpoint>/spectro-packs`` (both are Palette's
documented rules: ``../shared/reference/palette-behaviour.md``, "Rules the docs state").
The catalog is paged once and every repository under any of the paths is kept, by its full
name; a path with no repository fails the sync, naming each such path (``base_prefixes``).

Listing uses the distribution API: ``/v2/_catalog?n=`` (paged through ``Link: <...>;
rel="next"``; ``/v2/`` is asked only to explain a catalog the server refused) over httpx, then
``/v2/<repo>/tags/list`` for every repository over a small keep-alive pool of stdlib
``http.client`` connections (``_pool``), fetched by a bounded thread pool that starts as soon
as the first catalog page has arrived. The pool costs ~0.2 ms of client CPU per request against
httpx's ~0.6 ms, which matters because on a small machine the registry's own CPU (~1 ms per
``tags/list`` for docker-registry 2.8) and ours share the same cores. Basic credentials (or a
static token) are sent up front; a registry that answers with a ``Bearer`` challenge gets the
standard token dance (``get_authorized``, outside httpx's auth flow, every answer bounded)
through the httpx client, which then serves the rest of the fan-out.

oras-py (this is the only module importing it) reads manifests for ``provider: pack``.
It is used around its traps: ``auth_backend="basic"`` with the credentials set directly
(``login()`` would write ~/.docker and prove nothing), its docker-config lookup disabled,
its retry decorator (up to ~131 s of sleeps) bypassed, every request it makes bounded as
ours are (``_oras_request``: size, time, gzip pieces, same-origin redirects, no body but a
200's read), and it is only called once the host has answered our own quick probe.

Pack layouts recognised (one manifest per repository, of its highest tag by name):
- ``artifactType`` or ``config.mediaType`` containing ``spectrocloud`` or ``spectro-pack``;
- a manifest annotation key starting with ``io.spectrocloud.`` / ``com.spectrocloud.`` /
  ``spectrocloud.com/`` (e.g. ``io.spectrocloud.pack.name``);
- a layer titled (``org.opencontainers.image.title``) ``pack.json``, the file every pack
  archive carries at its root.
The repository's ``layout`` column records ``pack`` (with the rule that matched) or
``other``; for other providers it stays NULL.
"""

from __future__ import annotations

import base64
import functools
import http.client
import re
import socket
import sqlite3
import ssl
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from reconciler.content import catalog
from reconciler.content._pool import ConnectionPool, Response
from reconciler.content.http import (
    ACCEPT_ENCODING,
    MAX_ANSWER_BYTES,
    MAX_REDIRECTS,
    TIMEOUT,
    Access,
    ProbeError,
    answer_deadline,
    build_access,
    decode_pieces,
    decoded,
    describe_error,
    get_answer,
    make_client,
    read_answer,
    request_timeout,
    status_error,
    strip_userinfo,
    time_left,
)
from reconciler.content.http import (
    origin as _origin,
)
from reconciler.content.result import SyncResult
from reconciler.errors import redact
from reconciler.model import base_paths, load_json
from reconciler.text import escape, header_safe

KIND = "OciRegistry"
PAGE = 1000
# tags fan-out: round trips dominate against a real registry. bench/sync_oci.py with 20 ms added
# per request, 200 repositories x 5 tags, idle 2 cores: x4 0.26, x8 0.15, x16 0.093-0.098, x32 0.08
# of a serial client; 16 keeps a registry's concurrent requests from one client modest
WORKERS = 16
# pages of one listing (the catalog, or one repository's tags) followed at most: 5,000 catalog
# pages of PAGE are 5 million repositories, and a registry whose links never end must not keep
# a sync (and the state lock) for ever
MAX_PAGES = 5000
MAX_TOKEN_BYTES = 1024 * 1024  # a token service's answer: a JWT is a few KB
ORAS_TIMEOUT = 30.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
PACK_BASE_PATH = "spectro-packs"  # DOCS (oci-registry, packs): empty means <endpoint>/spectro-packs
Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class Endpoint:
    base: str  # scheme://host[:port]
    host: str  # host[:port], as oras wants it
    path: str  # repository prefix carried by the endpoint itself ("" if none)
    https: bool

    def prefix(self, base_content_path: str) -> str:
        return "/".join(p for p in (self.path, base_content_path.strip("/")) if p)


def base_prefixes(endpoint: Endpoint, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(base path as the user wrote it, repository prefix)`` for each base content path, in
    order, one per distinct prefix (``team,team/`` is one). For ``provider: pack`` an empty
    ``baseContentPath`` is ``spectro-packs`` under the endpoint, as Palette reads it."""
    paths = base_paths(spec)
    if paths == [""] and spec.get("provider") == "pack":
        paths = [PACK_BASE_PATH]
    out: dict[str, str] = {}
    for path in paths:
        out.setdefault(endpoint.prefix(path), path)
    return [(path, prefix) for prefix, path in out.items()]


def under(repo: str, prefix: str) -> bool:
    return not prefix or repo == prefix or repo.startswith(prefix + "/")


def missing_prefixes(prefixes: list[tuple[str, str]], repos: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(path, prefix)`` pairs no repository is under (an empty prefix is never missing)."""
    found = list(repos)
    return [(p, x) for p, x in prefixes if x and not any(under(r, x) for r in found)]


def parse_endpoint(endpoint: str) -> Endpoint:
    text = endpoint.strip()
    https = not text.startswith("http://")
    text = re.sub(r"^[a-z]+://", "", text)
    host, _, path = text.partition("/")
    scheme = "https" if https else "http"
    return Endpoint(f"{scheme}://{host}", host, path.strip("/"), https)


class RegistryAuth(httpx.Auth):
    """Basic credentials up front, or the token fetched for the request's path.

    The token dance runs outside httpx's auth flow (``get_authorized``): httpx reads every
    answer a flow goes on from whole and unbounded, the 401 challenge (638 MiB were read) and
    the token service's answer (a chunked 300 MiB one: 695 MiB resident) alike. This flow
    only adds credentials and yields once, so no answer is read by httpx."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self._basic = httpx.BasicAuth(username, password or "") if username is not None else None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            token = self._tokens.get(request.url.path)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._basic is not None:
            request = next(self._basic.auth_flow(request))
        yield request

    def token_request(self, response: httpx.Response) -> httpx.Request | None:
        """The request for a token that ``response`` (a ``Bearer`` challenge) asks for, with
        the basic credentials; None: no challenge this answers. Raises ProbeError for a realm
        off https when the registry is reached over https."""
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.lower().startswith("bearer"):
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            return None
        try:
            realm_url = httpx.URL(realm)
            realm_scheme, realm_host = realm_url.scheme, realm_url.host
        except httpx.InvalidURL:
            realm_scheme, realm_host = "", ""
        if self._basic is not None and response.request.url.scheme == "https" and realm_scheme != "https":
            # a registry reached over https must not move its credentials to plain http (or
            # to a realm that is no URL): the challenge is the server's word, not ours
            where = f"{realm_scheme or '?'}://{realm_host or '?'}"
            raise ProbeError(f"the registry's token service is not https ({where}): its credentials are not sent "
                             "in clear", check="credentials", status=401)
        token_req = httpx.Request(
            "GET", realm, params={k: v for k, v in params.items() if k in ("service", "scope")}
        )
        if self._basic is not None:
            token_req = next(self._basic.auth_flow(token_req))
        return token_req

    def take_token(self, path: str, realm: str, answer: bytes) -> None:
        """Keep the token of a token service's 200 ``answer`` for requests to ``path``;
        raises ProbeError when it holds none."""
        try:
            body = load_json(answer)
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not header_safe(token):
            # the token service's word: a JSON list, a number, a token that cannot go in a
            # header (httpx raised UnicodeEncodeError deep inside) are no token; the value is
            # not shown
            try:
                url = httpx.URL(realm)
                where = f"{url.scheme or '?'}://{url.host or '?'}"
            except httpx.InvalidURL:
                where = "?://?"
            raise ProbeError(
                f"the registry's token service ({where}) answered HTTP 200 without a usable token",
                check="credentials",
                status=401,
            )
        with self._lock:
            self._tokens[path] = token


def get_authorized(client: httpx.Client, url: str, auth: RegistryAuth | None, *, deadline: float | None = None,
                   **kw: Any) -> tuple[httpx.Response, bytes]:
    """``get_answer``, and when the registry answers with a ``Bearer`` challenge, the token
    dance: the token is fetched (``_fetch_token``: bounded in size, ``MAX_TOKEN_BYTES``, and
    time, like every answer) and the request asked once more. The challenge's body is never
    read. A token service's refusal is the answer returned. httpx errors are the caller's."""
    resp, body = get_answer(client, url, deadline=deadline, **kw)
    if auth is None:
        return resp, body
    token_req = auth.token_request(resp)
    if token_req is None:
        return resp, body
    realm = str(token_req.url.copy_with(query=None))
    token_resp, answer = _fetch_token(client, token_req, realm, deadline)
    if token_resp.status_code != 200:
        return token_resp, b""
    auth.take_token(resp.request.url.path, realm, answer)
    return get_answer(client, url, deadline=deadline, **kw)


def _fetch_token(client: httpx.Client, token_req: httpx.Request, realm: str,
                 deadline: float | None) -> tuple[httpx.Response, bytes]:
    """The token service's answer to ``token_req`` (sent as built: no redirect followed) and,
    for a 200, its body read by ``read_answer``: at most ``MAX_TOKEN_BYTES``, complete by the
    answer's deadline. The realm is the registry's word."""
    left = time_left(deadline, realm)
    until = answer_deadline(deadline)
    token_req.extensions = {**token_req.extensions, "timeout": request_timeout(left).as_dict()}
    token_req.headers["Accept-Encoding"] = ACCEPT_ENCODING
    resp = client.send(token_req, auth=httpx.Auth(), stream=True, follow_redirects=False)
    try:
        body = b""
        if resp.status_code == 200:
            body = read_answer(decoded(resp, realm), realm, until, resp.headers.get("Content-Length"),
                               MAX_TOKEN_BYTES)
        return resp, body
    finally:
        resp.close()


class Distribution:
    """The distribution API of one registry (thread-safe).

    ``ping``/``catalog`` and anything needing a token dance go through one httpx client;
    the ``tags/list`` fan-out goes through ``self.pool`` (stdlib keep-alive connections).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        access: Access,
        *,
        workers: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.access = access
        self.deadline = deadline  # time.monotonic(): no request starts after it
        self.workers = workers = WORKERS if workers is None else max(1, workers)
        auth = (
            RegistryAuth(access.username, access.password) if access.username is not None else None
        )
        self._auth = auth
        self.client = make_client(access, pool=workers)
        self.client.auth = auth  # type: ignore[assignment]
        headers = dict(access.headers)
        if access.username is not None:
            pair = f"{access.username}:{access.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        context: ssl.SSLContext | None = None
        if endpoint.https:
            context = access.verify if isinstance(access.verify, ssl.SSLContext) else None
            if context is None:
                context = httpx.create_ssl_context(verify=bool(access.verify))
        self.pool = ConnectionPool(
            endpoint.host,
            https=endpoint.https,
            ssl_context=context,
            headers=headers,
            size=workers,
            connect_timeout=TIMEOUT.connect or 5.0,
            read_timeout=TIMEOUT.read or 30.0,
        )
        self._bearer = False  # set once the registry asked for tokens: use the httpx client
        self._origin = _origin(endpoint.base)
        self._oras = threading.local()

    def close(self) -> None:
        self.client.close()
        self.pool.close()

    def __enter__(self) -> Distribution:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, url: str, what: str, **kw: Any) -> tuple[httpx.Response, bytes]:
        """A 200 and its body (``get_answer``: bounded in size and time); raises ProbeError."""
        try:
            resp, body = get_authorized(self.client, url, self._auth, deadline=self.deadline, **kw)
        except (httpx.HTTPError, OSError) as exc:
            time_left(self.deadline, url)  # timed out by the deadline: say so
            raise describe_error(exc, url, self.access.secrets) from None
        if resp.status_code != 200:
            raise status_error(resp.status_code, url, what)
        return resp, body

    def ping(self) -> None:
        """``GET /v2/``: reachable, TLS verified, credentials accepted."""
        url = f"{self.endpoint.base}/v2/"
        try:
            resp, _ = get_authorized(self.client, url, self._auth, deadline=self.deadline, read_body=False)
        except (httpx.HTTPError, OSError) as exc:
            time_left(self.deadline, url)
            raise describe_error(exc, url, self.access.secrets) from None
        if resp.status_code == 401 and self.access.username is None:
            raise ProbeError(
                f"{url} requires credentials (HTTP 401) but auth.type is noAuth",
                check="credentials",
                status=401,
            )
        if resp.status_code == 404:
            raise ProbeError(
                f"{url} is not an OCI distribution API (HTTP 404)", check="reach", status=404
            )
        if resp.status_code != 200:
            raise status_error(resp.status_code, url)

    def catalog_pages(
        self, prefix: str | Sequence[str] = "", page: int | None = None
    ) -> Iterator[list[str]]:
        """The repositories (under ``prefix``, or any of several) of each ``_catalog`` page,
        as they arrive."""
        prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        keep_all = not prefixes or "" in prefixes
        url: str | None = f"{self.endpoint.base}/v2/_catalog"
        params: dict[str, Any] | None = {"n": PAGE if page is None else page}
        seen: set[str] = set()
        while url:
            resp, body = self._get(url, "repository catalog", params=params)
            repos = _strings(_json(body, url), "repositories", url)
            yield [r for r in repos if keep_all or any(under(r, p) for p in prefixes)]
            url = self._follow(_next_link(resp), seen, "repository catalog")
            params = None

    def catalog(self, prefix: str | Sequence[str] = "", page: int | None = None) -> list[str]:
        """Every repository (under ``prefix``), following ``Link`` rel=next pages."""
        return [r for chunk in self.catalog_pages(prefix, page) for r in chunk]

    def _pool_get(self, url: str, target: str, what: str) -> tuple[bytes, str | None] | None:
        """``(body, next url)`` of a 200 through the pool; None: ask the httpx client."""
        left = time_left(self.deadline, url)
        try:
            resp = self.pool.get(target, timeout=left, until=answer_deadline(self.deadline),
                                 max_bytes=MAX_ANSWER_BYTES, url=url)
        except (OSError, http.client.HTTPException) as exc:
            time_left(self.deadline, url)
            raise _pool_error(exc, url, self.access.secrets) from None
        status = resp.status
        if status == 200:
            return resp.body, _pool_next_link(resp, url)
        if status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("bearer"):
                self._bearer = True  # a token registry: the client does the challenge
                return None
        if 300 <= status < 400:
            return None  # redirects: the client follows them
        raise status_error(status, url, what)

    def tags(self, repo: str) -> list[str]:
        url: str | None = f"{self.endpoint.base}/v2/{quote(repo, safe='/')}/tags/list"
        what = f"repository {repo}"
        seen: set[str] = set()
        out: list[str] = []
        while url:
            try:
                got = None if self._bearer else self._pool_get(url, _target(url), what)
                if got is None:
                    resp, body = self._get(url, what)
                    nxt = _next_link(resp)
                else:
                    body, nxt = got
            except ProbeError as exc:
                if exc.status == 404:
                    return out  # deleted between catalog and tags: nothing to list
                raise
            out.extend(_strings(_json(body, url), "tags", url))
            url = self._follow(nxt, seen, f"tag list of {what}")
        return out

    def _follow(self, nxt: str | None, seen: set[str], what: str) -> str | None:
        """The next page to ask for (None: the listing is complete); raises ProbeError.

        A ``Link`` is the server's word: a page on another origin (scheme, host or port) is
        never asked for, since the client and the pool send the registry's credentials with
        every request (httpx drops them on a cross-origin redirect, but a Link is no redirect).
        A page asked for before, or more than MAX_PAGES pages, ends the listing as a failure:
        a catalog cut short is not stored as if it were complete."""
        if nxt is None:
            return None
        origin = _origin(nxt)
        if origin is None:
            raise ProbeError(
                f"the {what} at {self.endpoint.base} links its next page to a URL that is not "
                "valid: not followed",
                check="content",
            )
        if origin != self._origin:
            raise ProbeError(
                f"the {what} at {self.endpoint.base} links its next page to another origin "
                f"({_origin_text(origin)}): not followed, so the registry's credentials are not "
                "sent there",
                check="content",
            )
        url = strip_userinfo(str(httpx.URL(nxt)))  # percent-encoded; no user:password@ of its own
        if url in seen:
            raise ProbeError(
                f"the {what} at {self.endpoint.base} links back to a page it already served "
                f"({_target(url)}): the listing loops",
                check="content",
            )
        if len(seen) + 1 >= MAX_PAGES:
            raise ProbeError(
                f"the {what} at {self.endpoint.base} has more than {MAX_PAGES} pages: refused "
                "as endless",
                check="content",
            )
        seen.add(url)
        return url

    # -- manifests through oras-py
    def _oras_client(self) -> Any:
        client = getattr(self._oras, "client", None)
        if client is None:
            import oras.client

            verify: bool | str = True
            if self.access.insecure_skip_verify:
                verify = False
            elif self.access.ca_file is not None:
                verify = str(self.access.ca_file)
            client = oras.client.OrasClient(
                hostname=self.endpoint.host,
                insecure=not self.endpoint.https,
                auth_backend="basic",
                tls_verify=verify,
            )
            client.auth._auth_config = {"auths": {}, "credsStore": None, "credHelpers": {}}
            # nothing from the environment, as the httpx clients (trust_env=False): requests would
            # add ~/.netrc credentials and HTTP(S)_PROXY, and oras-py's basic backend ORAS_USER /
            # ORAS_PASS, to a registry that declares none
            client.session.trust_env = False
            if self.access.username is not None:
                client.auth.set_basic_auth(self.access.username, self.access.password or "")
            else:  # noAuth: a 401 is an answer, never retried with credentials
                client.auth._basic_auth = None
                client.auth.authenticate_request = lambda original, headers, refresh=False: (headers, False)
            client.session.request = functools.partial(self._oras_request, client.session.request)
            # requests reads a redirect's body whole to find where it leads, even when it is
            # not to follow it (allow_redirects=False): _oras_request follows them itself
            client.session.get_redirect_target = lambda resp: None
            undecorated = type(client).do_request.__wrapped__  # no retry-with-sleeps loop
            client.do_request = functools.partial(undecorated, client)
            self._oras.client = client
        return client

    def _oras_request(self, request: Callable[..., Any], method: str, url: str, **kw: Any) -> Any:
        """oras-py's ``session.request``, every answer bounded as ours are: requests reads a
        body whole (the manifest, a 401's, each redirect's), decodes gzip whole and has no
        bound on a whole answer's time. Here the body of a 200 is read raw by ``read_answer``
        (``MAX_ANSWER_BYTES``, the answer's deadline, decoded in 64 KiB pieces); any other
        is never read; redirects are followed on the registry's origin only, at most
        ``MAX_REDIRECTS``, as ``get_answer`` does; no socket wait passes ``ORAS_TIMEOUT`` or
        the sync's deadline."""
        until = answer_deadline(self.deadline)
        headers = dict(kw.pop("headers", None) or {})
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        for name in ("stream", "allow_redirects", "timeout"):  # ours to set
            kw.pop(name, None)
        if _origin(url) != self._origin:  # oras-py builds its URLs from names the registry gave
            raise ProbeError(f"{strip_userinfo(url)[:200]} is not on the registry's origin: not asked, as no request "
                             "goes elsewhere with the registry's credentials", check="content")
        for _ in range(MAX_REDIRECTS + 1):
            left = time_left(self.deadline, url)
            timeout = ORAS_TIMEOUT if left is None else min(ORAS_TIMEOUT, left)
            resp = request(method, url, headers=headers, stream=True, allow_redirects=False, timeout=timeout, **kw)
            if not resp.is_redirect:
                break
            resp.close()
            nxt = urljoin(url, resp.headers["Location"])
            if _origin(nxt) != self._origin:
                raise ProbeError(f"{strip_userinfo(url)} redirects to another origin ({strip_userinfo(nxt)[:200]}): "
                                 "not followed, as no request goes elsewhere with the registry's credentials",
                                 check="content")
            url = nxt
        else:
            raise ProbeError(f"{strip_userinfo(url)} redirected more than {MAX_REDIRECTS} times: refused",
                             check="content")
        try:
            body = b""
            if resp.status_code == 200:
                raw = _raw_chunks(resp.raw)
                body = read_answer(decode_pieces(raw, resp.headers.get("Content-Encoding", ""), url), url, until,
                                   resp.headers.get("Content-Length"))
        finally:
            resp.close()
        resp._content, resp._content_consumed = body, True  # what requests' own read leaves
        return resp

    def manifest(self, repo: str, ref: str) -> dict[str, Any]:
        target = manifest_target(self.endpoint.host, repo, ref)
        if target is None:
            raise ProbeError(f"the registry lists repository {escape(repo)[:200]!r}, tag {escape(ref)[:130]!r}: "
                             "not an OCI repository and tag name, so its manifest is not read", check="content")
        time_left(self.deadline, f"{self.endpoint.base}/v2/{repo}/manifests/{ref}")
        try:
            manifest: dict[str, Any] = self._oras_client().get_manifest(
                target, allowed_media_type=list(MANIFEST_TYPES)
            )
            return manifest
        except Exception as exc:  # oras raises ValueError / requests errors
            raise ProbeError(
                redact(f"cannot read manifest {repo}:{ref}: {exc}", self.access.secrets)[:300],
                check="content",
            ) from None


def _raw_chunks(raw: Any) -> Iterator[bytes]:
    """A urllib3 response's body as sent, in chunks as they arrive (``read1``; ``read(n)``
    waits for n bytes, so a trickle would never meet the time check between chunks)."""
    read1 = getattr(raw, "read1", None)  # urllib3 2
    while True:
        chunk = read1(1 << 16, decode_content=False) if read1 else raw.read(1 << 10, decode_content=False)
        if not chunk:
            return
        yield chunk


def manifest_target(host: str, repo: str, ref: str) -> Any:
    """The oras-py container of ``repo:ref`` on ``host``, or None when oras-py would read the name
    as another one. The repository and the tag are the registry's word (its catalog, its tag
    list), and oras-py parses a joined name with an unanchored pattern: a repository
    "x/evil.example:8443/y", or a tag "a/evil.example/y:1", named another registry, which was
    then sent the credentials (review, this round). oras-py takes a first part with a dot or a
    colon for the registry, so a host without either ("https://registry") is given as the
    default, not in the name."""
    import oras.container

    name = f"{host}/{repo}:{ref}" if "." in host or ":" in host else f"{repo}:{ref}"
    try:
        target = oras.container.Container(name, registry=host)
    except ValueError:
        return None
    if (target.registry, target.api_prefix, target.tag, target.digest) != (host, repo, ref, None):
        return None
    return target


def _origin_text(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _target(url: str) -> str:
    """The request target (path and query) of an absolute URL, percent-encoded."""
    return httpx.URL(url).raw_path.decode("ascii")


def _next_link(resp: httpx.Response) -> str | None:
    nxt = resp.links.get("next")
    if not nxt or not nxt.get("url"):
        return None
    return urljoin(str(resp.url), nxt["url"])


_LINK_NEXT = re.compile(r'<([^>]*)>[^,]*;\s*rel="?next"?', re.IGNORECASE)


def _pool_next_link(resp: Response, url: str) -> str | None:
    links = resp.headers.get_all("Link")
    if not links:
        return None
    for value in links:
        m = _LINK_NEXT.search(value)
        if m and m.group(1):
            nxt: str = m.group(1)
            return urljoin(url, nxt)
    return None


def _json(body: bytes, url: str) -> dict[str, Any]:
    try:
        data = load_json(body) if body else {}
    except ValueError:  # not JSON, nested some thousands deep, an integer of 4,300 digits (load_json)
        raise ProbeError(f"{strip_userinfo(url)} did not return JSON", check="content") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{strip_userinfo(url)} did not return a JSON object", check="content")
    return data


def _strings(doc: Mapping[str, Any], key: str, url: str) -> list[str]:
    """``doc[key]`` as a list of strings (null or absent: none); raises ProbeError.

    A list holding anything else is refused, not filtered: a repository or tag that cannot
    be named cannot be listed, and a catalog that silently lacks it is worse than a Failed
    sync that keeps the last good one."""
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProbeError(
            f"{strip_userinfo(url)} did not return a valid listing ({key!r} is not a list of "
            "strings)",
            check="content",
        )
    return value


def _pool_error(exc: BaseException, url: str, secrets: tuple[str, ...]) -> ProbeError:
    """Same wording as ``describe_error`` gives for httpx's equivalents."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return describe_error(exc, url, secrets)
    where = strip_userinfo(url)
    if isinstance(exc, TimeoutError):
        return ProbeError(f"timed out talking to {where}")
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError(f"cannot connect to {where}: connection refused")
    if isinstance(exc, socket.gaierror | ConnectionError):
        return describe_error(httpx.ConnectError(str(exc) or type(exc).__name__), url, secrets)
    return describe_error(exc, url, secrets)


def pack_layout(repo: str, manifest: Mapping[str, Any]) -> str:
    """``pack:<rule>`` when the manifest looks like a Spectro Cloud pack, else ``other``.

    The manifest is the registry's JSON: a field of another type than the spec's is read as
    absent (a list for ``config`` was an AttributeError, an internal error)."""
    if not isinstance(manifest, Mapping):
        return "other"
    config = _mapping(manifest.get("config"))
    media = " ".join(
        x for x in (manifest.get("artifactType"), config.get("mediaType")) if isinstance(x, str)
    )
    if "spectrocloud" in media or "spectro-pack" in media:
        return "pack:mediaType"
    for key in _mapping(manifest.get("annotations")):
        if isinstance(key, str) and key.startswith(
            ("io.spectrocloud.", "com.spectrocloud.", "spectrocloud.com/")
        ):
            return "pack:annotation"
    layers = manifest.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        title = _mapping(_mapping(layer).get("annotations")).get("org.opencontainers.image.title")
        if isinstance(title, str) and (title == "pack.json" or title.endswith("/pack.json")):
            return "pack:pack.json"
    return "other"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Listing:
    tags: dict[str, list[str]]  # repository -> tags
    layouts: dict[str, str | None]


def list_content(
    dist: Distribution,
    prefix: str | Sequence[str],
    *,
    packs: bool = False,
    progress: Progress = None,
) -> Listing:
    """Repositories and tags under ``prefix`` (or any of several prefixes, the catalog paged
    once); raises ProbeError.

    Tag lists are fetched while the catalog is still being paged: each page's repositories
    go to the thread pool as soon as the page has arrived."""
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    repos: list[str] = []
    futures: list[Future[list[str]]] = []
    result: dict[str, list[str]] = {}
    layouts: dict[str, str | None] = {}
    with ThreadPoolExecutor(max_workers=dist.workers, thread_name_prefix="oci-tags") as pool:
        try:
            pages = dist.catalog_pages(prefixes)
            try:
                chunk: list[str] | None = next(pages, [])
            except ProbeError as exc:
                # the catalog's first page answers for ``GET /v2/`` (reachable, TLS verified,
                # credentials accepted): the ping is asked only to explain a catalog the
                # server refused, and its words come first, as when it was asked first (one
                # round trip less for every registry that lists). Not after a timeout or a
                # refused connection: the catalog's error says that already, and a second
                # wait would double a hung registry's
                if exc.status:  # 0: no answer at all
                    dist.ping()
                if exc.status not in (401, 403, 404) or not all(prefixes):
                    raise
                # catalog disabled (ECR, Docker Hub, some Harbor setups): each base path may
                # be a repository itself
                for one in prefixes:
                    try:
                        tags = dist.tags(one)
                    except ProbeError:
                        raise exc from None
                    if tags:
                        repos.append(one)
                        result[one] = tags
                if not repos:
                    raise exc from None
                chunk = None
            while chunk is not None:
                repos.extend(chunk)
                futures.extend(pool.submit(dist.tags, repo) for repo in chunk)
                chunk = next(pages, None)
            if progress:
                where = ", ".join(p or "/" for p in prefixes)
                progress(f"{len(repos)} repositories under {where}; listing tags")
            for i, (repo, future) in enumerate(zip(repos[len(result) :], futures, strict=True), 1):
                result[repo] = future.result()
                if progress and i % 100 == 0:
                    progress(f"tags of {i}/{len(repos)} repositories")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if packs:

            def layout(repo: str) -> str | None:
                tags = result[repo]
                if not tags:
                    return None
                try:
                    return pack_layout(repo, dist.manifest(repo, max(tags)))
                except ProbeError:
                    return "unreadable"

            for repo, lay in zip(repos, pool.map(layout, repos), strict=True):
                layouts[repo] = lay
    return Listing(result, layouts)


# --------------------------------------------------------------------------- sync


def sync(
    conn: sqlite3.Connection,
    uid: str,
    spec: Mapping[str, Any],
    secrets: Mapping[str, str],
    *,
    base_dir: Path,
    force: bool = False,
    progress: Progress = None,
    deadline: float | None = None,
) -> SyncResult:
    endpoint = parse_endpoint(str(spec.get("endpoint") or ""))
    prefixes = base_prefixes(endpoint, spec)
    source = ", ".join(f"{endpoint.base}/{prefix}".rstrip("/") for _, prefix in prefixes)
    prev = catalog.previous(conn, uid, KIND)
    secret_values: tuple[str, ...] = tuple(v for v in secrets.values() if v)
    try:
        if (spec.get("auth") or {}).get("type") == "ecr":
            raise ProbeError(
                "ECR credentials are not supported by the local content sync", check="config"
            )
        access = build_access(spec, secrets, base_dir, https=endpoint.https)
        with Distribution(endpoint, access, deadline=deadline) as dist:
            listing = list_content(
                dist,
                [prefix for _, prefix in prefixes],
                packs=spec.get("provider") == "pack",
                progress=progress,
            )
        missing = missing_prefixes(prefixes, listing.tags)
        if missing:
            # A declared path with nothing under it is a typo or content never pushed: fail
            # (the catalog keeps its earlier content) rather than store a catalog that
            # silently lacks it; every such path is named, as preflight names each one.
            raise ProbeError(
                "no repositories under "
                + ", ".join(describe_path(path, spec) for path, _ in missing)
                + f" at {endpoint.base}",
                check="content",
            )
    except ProbeError as exc:
        return catalog.failed(conn, uid, KIND, redact(str(exc), secret_values), prev, source)

    with catalog.transaction(conn):
        added, removed = _store(conn, uid, listing)
        counts = {
            "repositories": len(listing.tags),
            "tags": sum(len(t) for t in listing.tags.values()),
        }
        if listing.layouts:
            counts["packs"] = sum(1 for v in listing.layouts.values() if v and v.startswith("pack"))
        message = f"{counts['repositories']} repositories, {counts['tags']} tags"
        if "packs" in counts:
            message += f" ({counts['packs']} packs)"
        message += f"; +{len(added)} -{len(removed)}"
        catalog.record(
            conn, uid, KIND, "Completed", message, prev=prev, counts=counts, source=source
        )
    if progress:
        progress(f"{KIND}: {message}")
    return SyncResult("Completed", message, added, removed, counts, False)


def describe_path(path: str, spec: Mapping[str, Any]) -> str:
    """How a message names a base path: as written, or Palette's default for packs."""
    if not base_paths(spec)[0] and path == PACK_BASE_PATH:
        return f"{PACK_BASE_PATH!r} (provider: pack with an empty baseContentPath)"
    return f"baseContentPath {path!r}"


def _store(conn: sqlite3.Connection, uid: str, listing: Listing) -> tuple[list[str], list[str]]:
    old: set[tuple[str, str]] = set(
        conn.execute(
            "SELECT repository, tag FROM content_oci_tags WHERE uid = ?", (uid,)
        ).fetchall()
    )
    old_repos = {
        r
        for (r,) in conn.execute(
            "SELECT repository FROM content_oci_repositories WHERE uid = ?", (uid,)
        )
    }
    new = {(repo, tag) for repo, tags in listing.tags.items() for tag in tags}
    added_pairs = sorted(new - old)
    removed_pairs = sorted(old - new)
    conn.executemany(
        "DELETE FROM content_oci_tags WHERE uid = ? AND repository = ? AND tag = ?",
        [(uid, r, t) for r, t in removed_pairs],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO content_oci_tags VALUES (?, ?, ?)",
        [(uid, r, t) for r, t in added_pairs],
    )
    conn.executemany(
        "DELETE FROM content_oci_repositories WHERE uid = ? AND repository = ?",
        [(uid, r) for r in old_repos - set(listing.tags)],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO content_oci_repositories VALUES (?, ?, ?)",
        [(uid, r, listing.layouts.get(r)) for r in listing.tags],
    )
    added = [f"{r}:{t}" for r, t in added_pairs]
    added += [f"{r}" for r in sorted(set(listing.tags) - old_repos) if not listing.tags[r]]
    removed = [f"{r}:{t}" for r, t in removed_pairs]
    return added, removed
