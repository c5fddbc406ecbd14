"""The Palette REST API as a target: the only module that speaks it.

Paths and bodies follow ``palette-registries-openapi.json`` (Swagger 2.0, Palette 4.8):

* OCI basic ``/v1/registries/oci/basic`` + ``/oci/{uid}/basic`` (v1BasicOciRegistry), OCI ECR
  ``/oci/ecr`` + ``/oci/{uid}/ecr`` (v1EcrRegistry), both listed by ``/oci/summary`` whose
  items carry ``registryType``;
* Helm ``/v1/registries/helm`` (v1HelmRegistryEntity / v1HelmRegistry) and Pack
  ``/v1/registries/pack`` (v1PackRegistry), listed in pages of 50 with ``continue``;
* built-in defaults are the ``isDefault`` items of ``/v1/registries/metadata``.

Mapping of our canonical spec (``reconciler.model``) to the API:

* ``sync``: OCI ``isSyncSupported``; Helm ``isPrivate`` is its inverse (Palette's Helm
  "private" registry is the one whose charts are not synchronised, see
  terraform-provider-spectrocloud PR #990); Pack registries always sync.
* TLS: ``auth.tls`` (basic OCI, Helm, Pack) or ``spec.tls`` (ECR) as ``{enabled,
  insecureSkipVerify, ca}``; the CA file's content goes into ``ca``. ``caFile`` and ``fips``
  cannot be read back, so observed specs omit them.
* Secrets are write-only: observed specs never carry password/token/secretKey.

Client rules: one ``httpx.Client``; a thread-safe token bucket (10 req/s, burst 5 by
default); retries with exponential backoff and full jitter on 429, 500/502/503/504, connect
errors, timeouts and dropped connections, honouring ``Retry-After``, within a per-run
deadline. GET/PUT/DELETE are retried; a create (POST) is never blindly retried: after an
ambiguous failure the registry is looked up by name first.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from reconciler.errors import ClientError, Conflict, InputError, NotFound, ServerError, TargetError, redact
from reconciler.model import ObservedRegistry, Registry, Settings
from reconciler.targets import palette_profiles
from reconciler.targets.base import References, Secrets, SyncStatus, Target

log = logging.getLogger("reconciler.palette")

DEFAULT_ENDPOINT = "https://api.spectrocloud.com"
PAGE_LIMIT = 50
MAX_CONNECT_RETRIES = 3  # connection refused / unresolvable: retried this many times only
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BUILTIN_ANNOTATION = "palette.spectrocloud.com/builtin"
_MAX_MESSAGE = 300

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
    except (httpx.InvalidURL, TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"palette endpoint {endpoint!r} is not an http:// or https:// URL with a host "
                         "(--endpoint or PALETTE_ENDPOINT)")
    return endpoint.rstrip("/")


def _ssl_context(ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise InputError(f"--ca-file {ca_file}: not a PEM CA bundle ({exc.reason or exc})") from exc
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
        self.endpoint = _check_endpoint(endpoint)
        self._api_key = api_key
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
        self.stats = {"requests": 0, "retries": 0, "429": 0}
        headers = {"ApiKey": api_key, "Accept": "application/json", "User-Agent": "reconcile-palette/0.1"}
        if project_uid:
            headers["ProjectUid"] = project_uid
        verify_arg: bool | ssl.SSLContext = verify
        if ca_file:
            verify_arg = _ssl_context(ca_file)
        self._client = httpx.Client(
            base_url=self.endpoint,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=verify_arg,
            transport=transport,
            limits=httpx.Limits(max_connections=max(10, self.max_concurrency * 2),
                                max_keepalive_connections=max(10, self.max_concurrency * 2)),
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
        message = " ".join(message.split())
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
        text = f"palette: {method} {path}: {status} {code}" + (f": {message}" if message else "")
        if detail:
            text += f" ({detail})"
        text = redact(text, known)
        if status == 404:
            return NotFound(text, status=status, code=code)
        if status == 409:
            return Conflict(text, status=status, code=code)
        if status < 500 and status != 429:
            return ClientError(text, status=status, code=code)
        return ServerError(text, status=status, code=code, delay=_retry_after(response) or 0.0)

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
        last: TargetError | None = None
        while True:
            try:
                self._bucket.acquire(deadline)
            except _DeadlineExceeded:
                raise self._gave_up(method, path, last, "deadline exceeded", secrets) from None
            self._count("requests")
            retry_after: float | None = None
            try:
                response = self._client.request(method, path, params=params, json=json, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = self._error(method, path, None, secrets,
                                   f"cannot connect: {type(exc).__name__}: {exc or 'no reason given'}")
                connect_failures += 1
                if connect_failures > MAX_CONNECT_RETRIES:
                    # nobody answers at all: a few quick tries, not minutes of backoff
                    raise self._gave_up(method, path, last, f"gave up after {connect_failures} attempts",
                                        secrets) from exc
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                last = self._error(method, path, None, secrets,
                                   f"no answer ({type(exc).__name__}: {exc or 'connection closed'})")
                if create:
                    raise _Ambiguous(last) from exc
            except httpx.HTTPError as exc:
                raise self._error(method, path, None, secrets, f"{type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                log.debug("%s %s -> %s", method, path, status)
                if status < 400:
                    return response
                if status == 404 and method == "DELETE" and attempt > 0:
                    return response  # a retried delete that had landed
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

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self._request("GET", path, params=params)
        return response.json() if response.content else {}

    # ------------------------------------------------------------------ reading

    def _paged(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        for _ in range(10000):
            params: dict[str, Any] = {"limit": PAGE_LIMIT, "scope": "all"}
            if token:
                params["continue"] = token
            data = self._get_json(path, params)
            items.extend(data.get("items") or [])
            token = (data.get("listmeta") or {}).get("continue") or ""
            if not token:
                return items
        raise ServerError(f"palette: GET {path}: paging did not end")

    def _refresh_builtins(self) -> set[str]:
        data = self._get_json("/v1/registries/metadata", {"scope": "all"})
        found = {str(i.get("uid")) for i in data.get("items") or [] if i.get("isDefault") and i.get("uid")}
        with self._lock:
            self._builtin = found
        return found

    def _oci_summary(self) -> list[dict[str, Any]]:
        data = self._get_json("/v1/registries/oci/summary")
        items = data.get("items") or []
        with self._lock:
            for item in items:
                uid = (item.get("metadata") or {}).get("uid")
                rtype = str((item.get("spec") or {}).get("registryType") or "").lower()
                if uid and rtype in ("basic", "ecr"):
                    self._oci_types[uid] = rtype
        return items

    def _oci_detail(self, uid: str) -> ObservedRegistry | None:
        try:
            return self.get(OCI, uid)
        except NotFound:
            return None

    def list(self) -> list[ObservedRegistry]:
        builtin = self._refresh_builtins()
        out = [self._observe(HELM, obj, builtin) for obj in self._paged("/v1/registries/helm")]
        out += [self._observe(PACK, obj, builtin) for obj in self._paged("/v1/registries/pack")]
        uids = [str(i["metadata"]["uid"]) for i in self._oci_summary() if (i.get("metadata") or {}).get("uid")]
        if len(uids) > 1 and self.max_concurrency > 1:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(uids))) as pool:
                details = list(pool.map(self._oci_detail, uids))
        else:
            details = [self._oci_detail(uid) for uid in uids]
        out += [d for d in details if d is not None]
        return out

    def _oci_type(self, uid: str) -> str:
        with self._lock:
            known = self._oci_types.get(uid)
        if known:
            return known
        data = self._get_json(f"/v1/registries/oci/{uid}")
        rtype = str(data.get("type") or "").lower()
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
                meta, spec = item.get("metadata") or {}, item.get("spec") or {}
                if meta.get("name") == name and (spec.get("scope") or "tenant") == scope:
                    self._refresh_builtins()
                    return self._oci_detail(str(meta["uid"]))
            return None
        path = "/v1/registries/helm" if kind == HELM else "/v1/registries/pack"
        for obj in self._paged(path):
            if (obj.get("metadata") or {}).get("name") == name and \
                    ((obj.get("spec") or {}).get("scope") or "tenant") == scope:
                return self._observe(kind, obj, self._refresh_builtins())
        return None

    # ------------------------------------------------------------------ API -> canonical

    def _observe(self, kind: str, obj: Mapping[str, Any], builtin: set[str],
                 oci_type: str | None = None) -> ObservedRegistry:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        uid = str(meta.get("uid") or "")
        annotations = meta.get("annotations") or {}
        is_builtin = uid in builtin or str(annotations.get(BUILTIN_ANNOTATION, "")).lower() == "true"
        if kind == OCI:
            rtype = oci_type or ("ecr" if "credentials" in spec or "isPrivate" in spec else "basic")
            canonical = observe_oci(spec, rtype)
        elif kind == HELM:
            canonical = observe_helm(spec)
        else:
            canonical = observe_pack(spec)
        return ObservedRegistry(uid=uid, kind=kind, name=str(meta.get("name") or spec.get("name") or ""),
                                scope=str(spec.get("scope") or "tenant"), spec=canonical, builtin=is_builtin)

    # ------------------------------------------------------------------ writing

    def _read_ca(self, spec: Mapping[str, Any]) -> str:
        ca_file = (spec.get("tls") or {}).get("caFile")
        if not ca_file:
            return ""
        path = Path(ca_file)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"palette: cannot read tls.caFile {ca_file}: {exc.strerror}") from exc

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
            uid = str((response.json() or {}).get("uid") or "")
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
        meta = dict(current.get("metadata") or {})
        if str((meta.get("annotations") or {}).get(BUILTIN_ANNOTATION, "")).lower() == "true":
            raise ClientError(f"palette: {registry.kind} {registry.name} is a built-in default registry")
        body["metadata"] = {k: meta[k] for k in ("name", "uid", "annotations", "labels") if k in meta}
        body["metadata"]["name"] = registry.name
        body["spec"]["registryUid"] = uid
        self._request("PUT", path, json=body, secrets=list(secrets.values()))

    def delete(self, kind: str, uid: str) -> None:
        self._check_writable(kind, uid)
        self._request("DELETE", self._path(kind, uid))
        with self._lock:
            self._oci_types.pop(uid, None)

    def references(self, uids: Collection[str]) -> References:
        return palette_profiles.find_references(self._request, uids, workers=self.max_concurrency)

    def check_tenant_policy(self, settings: Settings, registries: Sequence[Registry]) -> str | None:
        if settings.profile != "vertex":
            return None
        non_fips = [r.name for r in registries if r.spec.get("fips") is not True]
        return palette_profiles.check_tenant_fips(self._request, settings.allow_non_fips, non_fips)

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
            last_synced=data.get("lastSyncedTime") or None,
            last_run=data.get("lastRunTime") or None,
            sync_supported=bool(data.get("isSyncSupported", True)),
        )


# ---------------------------------------------------------------------- body mapping


def _tls_body(spec: Mapping[str, Any], endpoint: str, ca: str) -> dict[str, Any]:
    tls = spec.get("tls") or {}
    return {
        "enabled": not endpoint.startswith("http://"),
        "insecureSkipVerify": bool(tls.get("insecureSkipVerify", False)),
        "ca": ca,
    }


def _auth_body(spec: Mapping[str, Any], secrets: Secrets, ca: str) -> dict[str, Any]:
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
    out["tls"] = _tls_body(spec, str(spec.get("endpoint", "")), ca)
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
            creds = auth.get("credentials") or {}
            ctype = creds.get("credentialType", "secret")
            if ctype == "sts":
                cbody: dict[str, Any] = {"credentialType": "sts",
                                         "sts": {"arn": str(creds.get("arn", "")),
                                                 "externalId": str(creds.get("externalId", ""))}}
            else:
                cbody = {"credentialType": "secret", "accessKey": str(creds.get("accessKey", ""))}
                if secrets.get("auth.credentials.secretKey"):
                    cbody["secretKey"] = secrets["auth.credentials.secretKey"]
            return "ecr", {"metadata": meta, "spec": {**common, "isPrivate": True, "credentials": cbody,
                                                      "tls": _tls_body(spec, endpoint, ca)}}
        return "basic", {"metadata": meta, "spec": {**common, "auth": _auth_body(spec, secrets, ca)}}
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


def _observe_tls(tls: Any) -> dict[str, Any]:
    tls = tls if isinstance(tls, Mapping) else {}
    return {"insecureSkipVerify": bool(tls.get("insecureSkipVerify", False))}


def _observe_auth(auth: Any) -> dict[str, Any]:
    auth = auth if isinstance(auth, Mapping) else {}
    atype = auth.get("type") or "noAuth"
    out: dict[str, Any] = {"type": atype}
    if atype == "basic":
        out["username"] = str(auth.get("username") or "")
    return out


def observe_oci(spec: Mapping[str, Any], rtype: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint": str(spec.get("endpoint") or ""),
        "provider": str(spec.get("providerType") or "helm"),
        "baseContentPath": str(spec.get("baseContentPath") or ""),
        "sync": bool(spec.get("isSyncSupported", False)),
    }
    if rtype == "ecr":
        creds = spec.get("credentials") or {}
        if not spec.get("isPrivate") and not creds.get("accessKey") and not (creds.get("sts") or {}).get("arn"):
            out["auth"] = {"type": "noAuth"}
        elif (creds.get("credentialType") or "secret") == "sts":
            sts = creds.get("sts") or {}
            out["auth"] = {"type": "ecr", "credentials": {"credentialType": "sts", "arn": str(sts.get("arn") or ""),
                                                          "externalId": str(sts.get("externalId") or "")}}
        else:
            out["auth"] = {"type": "ecr", "credentials": {"credentialType": "secret",
                                                          "accessKey": str(creds.get("accessKey") or "")}}
        out["tls"] = _observe_tls(spec.get("tls"))
    else:
        auth = spec.get("auth") or {}
        out["auth"] = _observe_auth(auth)
        out["tls"] = _observe_tls(auth.get("tls"))
    return out


def observe_helm(spec: Mapping[str, Any]) -> dict[str, Any]:
    auth = spec.get("auth") or {}
    return {"endpoint": str(spec.get("endpoint") or ""), "sync": not bool(spec.get("isPrivate", False)),
            "auth": _observe_auth(auth), "tls": _observe_tls(auth.get("tls"))}


def observe_pack(spec: Mapping[str, Any]) -> dict[str, Any]:
    auth = spec.get("auth") or {}
    return {"endpoint": str(spec.get("endpoint") or ""), "auth": _observe_auth(auth),
            "tls": _observe_tls(auth.get("tls"))}
