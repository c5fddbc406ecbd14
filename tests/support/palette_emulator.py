"""A Palette registries API emulator on loopback, for tests and benchmarks.

It serves the registry paths of ``tests/palette_spec/palette-registries-openapi.json`` from an
in-memory store. Every request is checked against the spec: unknown path/method, unknown or
ill-typed query parameter, body not matching the body parameter's definition (Swagger 2.0
definitions turned into JSON Schema; by default objects are closed, so a misspelt field is
caught too). A bad request gets 400 with a V1Error body and is recorded in ``violations``.

Everything it does beyond the spec names its evidence: a row of
``/work/shared/reference/palette-behaviour.md`` ("PB: <table>"), a file of Spectro's Terraform
provider ("TF") or SDK, or says **unverified** (our conservative guess; the client must not
depend on it). Behaviours with evidence that a real server may or may not show are switches
(``Behaviour``); ``PaletteEmulator(realistic=True)`` turns on every evidenced one at once and
is what the target contract suite runs against.

Always on:

* ``ApiKey`` (or ``Authorization``) header required, 401 otherwise (spec securityDefinitions);
* uids of 24 hex chars (unverified); secrets (password, token, secretKey, secretToken) are
  write-only (PB "Reading": masked or empty on GET, ``Behaviour.secrets_on_get``); a PUT
  with an empty or missing secret keeps the stored one (unverified: the console's behaviour);
* server defaults (TLS block, ``basePath``, ``containsSpectroManifest``, metadata timestamps,
  status): the shapes of the spec's definitions, values unverified;
* built-in default registries (``seed_defaults``) are ``isDefault: true`` in
  ``/v1/registries/metadata`` (unverified: PB "Unknown") and refuse PUT/DELETE with 403
  (PB "Rules": default registries cannot be edited; the status code is unverified);
* content sync: ``POST .../sync`` (202) starts a sync that ``GET .../sync/status`` reports
  ``InProgress`` for ``sync_polls`` polls, then ``Completed`` (or ``Failed`` / never ending,
  see ``Faults``); ``isSyncSupported: false`` for a registry with sync off (PB "Sync status").
  ``forceSync=true`` is refused with 409 ``SyncForceNotAllowed`` while the last sync started
  less than an hour ago on the injectable ``clock`` (unverified);
* ``/validate`` rule (unverified, documented for tests): 400 ``RegistryValidationFailed`` when
  the endpoint contains ``invalid`` or a secret (password, token, secretKey) equals ``wrong``;
* a token bucket rate limit (default 10 requests/s, burst 6: PB "Writing", the documented
  "10 rps with a burst queue of 5") answering 429 with ``Retry-After``;
* fault switches (``Faults``): latency, seeded random 500/503/429/timeouts/dropped
  connections, and "fail after effect" for creates (the registry is stored, the answer is a
  500 or a dropped connection); raw answers (``answers``: HTML, invalid JSON, a JSON list) and
  redirects (``redirects``) per path. Every sleep is bounded.

The raw requests (headers and bodies, secrets included) are kept in ``raw`` (never in the
request log that leak scans read), so tests can check where a secret went
(``misplaced_secrets``) and which headers were sent.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import secrets as _secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import pytest

from tests.support import leaks
from tests.support.http_server import QuietHTTPServer
from tests.support.palette_emulator_profiles import PATHS as PROFILE_PATHS
from tests.support.palette_emulator_profiles import ProfilesData

SPEC_PATH = Path(__file__).resolve().parent.parent / "palette_spec" / "palette-registries-openapi.json"
SECRET_KEYS = frozenset({"password", "token", "secretKey", "secretToken"})
MAX_SLEEP = 5.0  # no emulator sleep lasts longer than this
API_KEY = "test-api-key-0123456789"

# kind family per API flavour: OCI basic and ECR share names
FAMILY = {"helm": "helm", "pack": "pack", "basic": "oci", "ecr": "oci"}


# ---------------------------------------------------------------- spec and validation


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _to_json_schema(node: Any, closed: bool) -> Any:
    """Swagger 2.0 schema -> JSON Schema (draft 4): drop ``x-*``; optionally close objects."""
    if isinstance(node, dict):
        out = {k: _to_json_schema(v, closed) for k, v in node.items() if not k.startswith("x-")}
        if closed and "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_to_json_schema(v, closed) for v in node]
    return node


@dataclass
class Operation:
    template: str
    method: str
    regex: re.Pattern[str]
    n_params: int
    params: dict[str, dict[str, Any]]  # query params by name
    body: dict[str, Any] | None  # body parameter
    op_id: str


class SpecIndex:
    """Routes and validators built from the spec."""

    def __init__(self, spec: dict[str, Any], closed_objects: bool = True) -> None:
        self.spec = spec
        defs = _to_json_schema(spec["definitions"], closed_objects)
        self._definitions = defs
        self.operations: list[Operation] = []
        for template, item in spec["paths"].items():
            shared = item.get("parameters", [])
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
            regex = re.compile(pattern)
            for method, op in item.items():
                if method == "parameters":
                    continue
                params: dict[str, dict[str, Any]] = {}
                body = None
                for p in [*shared, *op.get("parameters", [])]:
                    if p["in"] == "query":
                        params[p["name"]] = p
                    elif p["in"] == "body":
                        body = p
                self.operations.append(
                    Operation(template, method.upper(), regex, template.count("{"), params, body,
                              op.get("operationId", ""))
                )
        self._validators: dict[str, jsonschema.Draft4Validator] = {}

    def route(self, method: str, path: str) -> tuple[Operation | None, list[str], bool]:
        """(operation, path args, path known) for a request."""
        best: tuple[Operation, list[str]] | None = None
        known = False
        for op in self.operations:
            m = op.regex.match(path)
            if not m:
                continue
            known = True
            if op.method != method:
                continue
            if best is None or op.n_params < best[0].n_params:
                best = (op, [unquote(g) for g in m.groups()])
        if best is None:
            return None, [], known
        return best[0], best[1], True

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft4Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            full = dict(_to_json_schema(schema, True))
            full["definitions"] = self._definitions
            self._validators[key] = jsonschema.Draft4Validator(full)  # no format checker
        return self._validators[key]

    def check_query(self, op: Operation, query: dict[str, list[str]]) -> list[str]:
        problems = []
        for name, values in query.items():
            decl = op.params.get(name)
            if decl is None:
                problems.append(f"unknown query parameter {name!r}")
                continue
            if len(values) != 1:
                problems.append(f"query parameter {name!r} given {len(values)} times")
                continue
            value = values[0]
            typ = decl.get("type")
            if typ == "integer" and not re.fullmatch(r"-?\d+", value):
                problems.append(f"query parameter {name!r} must be an integer, got {value!r}")
            elif typ == "boolean" and value not in ("true", "false"):
                problems.append(f"query parameter {name!r} must be true|false, got {value!r}")
            if "enum" in decl and value not in decl["enum"]:
                problems.append(f"query parameter {name!r} must be one of {decl['enum']}, got {value!r}")
        return problems

    def check_body(self, op: Operation, raw: bytes, ignore: Iterable[str] = ()) -> tuple[Any, list[str]]:
        if op.body is None:
            if raw.strip():
                return None, [f"{op.method} {op.template} takes no body"]
            return None, []
        if not raw.strip():
            if op.body.get("required"):
                return None, ["request body required"]
            return None, []
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return None, [f"body is not JSON: {exc}"]
        checked = data
        extra = [k for k in ignore if isinstance(data, dict) and isinstance(data.get("spec"), dict) and k in data["spec"]]
        if extra:  # fields the server itself added (Behaviour.future_fields): not ours to check
            checked = {**data, "spec": {k: v for k, v in data["spec"].items() if k not in extra}}
        errors = sorted(self.validator(op.body["schema"]).iter_errors(checked), key=lambda e: list(e.path))
        problems = [f"body{''.join(f'[{p!r}]' for p in e.path)}: {e.message}" for e in errors]
        return data, problems

    def check_response(self, op: Operation, status: int, data: Any) -> list[str]:
        """Used by the emulator's own tests: a response body matches its declared schema."""
        spec_op = self.spec["paths"][op.template][op.method.lower()]
        resp = spec_op.get("responses", {}).get(str(status), {})
        schema = resp.get("schema")
        if schema is None:
            return []
        return [e.message for e in self.validator(schema).iter_errors(data)]


# ---------------------------------------------------------------- store


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uid() -> str:
    return _secrets.token_hex(12)


@dataclass
class SyncState:
    status: str = ""
    message: str = ""
    polls_left: int = 0
    started_at: float | None = None
    last_synced: float | None = None
    mode: str = "complete"  # complete | fail | hang


@dataclass
class Record:
    uid: str
    flavour: str  # helm | pack | basic | ecr
    obj: dict[str, Any]  # metadata + spec, secrets included (server side)
    builtin: bool = False
    sync: SyncState = field(default_factory=SyncState)

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def scope(self) -> str:
        return str(self.obj["spec"].get("scope") or "tenant")


class Store:
    """The emulator's registries, in creation order. Thread-safe through ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.records: dict[str, Record] = {}

    def by_name(self, flavour: str, name: str, scope: str | None = None) -> Record | None:
        with self.lock:
            for rec in self.records.values():
                if FAMILY[rec.flavour] == FAMILY[flavour] and rec.name == name and (
                    scope is None or rec.scope == scope
                ):
                    return rec
        return None

    def of(self, *flavours: str) -> list[Record]:
        with self.lock:
            return [r for r in self.records.values() if r.flavour in flavours]

    def count(self, *flavours: str) -> int:
        return len(self.of(*flavours)) if flavours else len(self.records)

    def names(self) -> list[str]:
        with self.lock:
            return [r.name for r in self.records.values()]


# ---------------------------------------------------------------- switches


@dataclass
class Faults:
    """Fault switches; probabilities are per request, drawn from a seeded RNG."""

    latency: float = 0.0  # seconds added to every answered request
    p500: float = 0.0
    p503: float = 0.0
    p429: float = 0.0
    p_timeout: float = 0.0  # answer nothing for ``timeout_sleep`` s, then drop
    p_drop: float = 0.0  # close the socket without an answer
    timeout_sleep: float = 1.0
    retry_after: float = 0.1  # Retry-After seconds sent with injected and rate-limit 429s
    # "fail after effect": the next N creates (POST that makes a registry) are applied, then
    # answered with a 500 ("500") or a dropped connection ("drop")
    after_effect: str = ""
    after_effect_count: int = 0
    # deterministic faults: each request (of ``methods``) pops the first entry:
    # "" (none), "500", "503", "429", "timeout", "drop"
    script: list[str] = field(default_factory=list)
    # only inject faults on these methods (empty = all)
    methods: tuple[str, ...] = ()
    # sync behaviour: polls of /sync/status that answer InProgress before the end
    sync_polls: int = 2
    sync_mode: str = "complete"  # complete | fail | hang
    sync_fail_message: str = "failed to pull index: 401 Unauthorized"
    # the message of a sync still InProgress (a fault to inject, e.g. one that echoes a
    # credential; not a claim about Palette's words, which no source gives)
    sync_progress_message: str = ""
    sync_mode_by_name: dict[str, str] = field(default_factory=dict)
    # a server that drips its answers: one byte every ``drip`` seconds (status line, headers, body)
    drip: float = 0.0

    def clear(self) -> None:
        self.latency = self.p500 = self.p503 = self.p429 = self.p_timeout = self.p_drop = self.drip = 0.0
        self.after_effect = ""
        self.after_effect_count = 0
        self.script = []


# server-kept fields of an OCI registry that our format does not manage (or manages only when
# declared): a PUT must send them back (spec v1BasicOciRegistrySpec / v1EcrRegistrySpec)
SERVER_KEPT = ("basePath", "containsSpectroManifest", "defaultRegion")


@dataclass
class Behaviour:
    """Switches for what Palette is evidenced to do beyond the spec (each names its source)."""

    # PB "Reading" row 1; TF resourceRegistryEcrRead reads Status.SyncStatus.IsSyncSupported
    # (commit c3025510): the OCI sync flag only in ``status.syncStatus``, absent from the spec
    sync_in_status_only: bool = False
    # PB "Reading" row 2; TF tests/mockApiServer/routes/mockRegistries.go ecrRegistryFixtureFor
    # ("ecr-uid-secret-masked" answers SecretKey "abc***def"): "empty" or "masked"
    secrets_on_get: str = "empty"
    # issue 13 (Spectro's built-in ECR registries); PB "Reading" row 3 (no Spectro client reads
    # built-ins in detail): a detail GET of a built-in OCI registry answers 403
    builtin_detail_403: bool = False
    # PB "Writing" row 3 (TF toRegistryBasic / toRegistryEcr send whole objects): a PUT replaces
    # the object, so a server-kept field missing from the body is lost (recorded in ``lost``)
    put_replaces: bool = False
    # unknown future fields the server adds to every OCI spec; a PUT must send them back
    # (unverified that any exist today; the closed-object check ignores these names)
    future_fields: dict[str, Any] = field(default_factory=dict)
    # unverified (PB "Unknown"): whether the OCI summary carries metadata.lastModifiedTimestamp
    summary_timestamps: bool = True
    # paging: spec v1ListMetaData (``continue``); the page size cap of 50 is unverified
    page_limit: int = 50
    # a server bug or a caching proxy: every page answers the same non-empty continue token
    stuck_continue: bool = False

    @classmethod
    def realistic(cls) -> Behaviour:
        """Every evidenced behaviour at once (the configuration the contract suite runs against),
        and the conservative side of every unverified one: no timestamps in the OCI summary, so
        the client reads each declared OCI registry in detail (the tests of the cheaper path
        turn ``summary_timestamps`` on by name)."""
        return cls(sync_in_status_only=True, secrets_on_get="masked", builtin_detail_403=True, put_replaces=True,
                   future_fields={"futureField": "kept-by-server"}, summary_timestamps=False)


def mask_value(value: Any) -> Any:
    """How the TF mock server shows a secret: first and last three characters around ``***``."""
    if not isinstance(value, str) or not value:
        return ""
    return f"{value[:3]}***{value[-3:]}" if len(value) > 6 else "***"


class Clock:
    """Wall clock plus an adjustable offset (``advance``) for the force-sync hour."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 if allowed, else the seconds until a token is there."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


def mask(data: Any) -> Any:
    """Copy of ``data`` with every secret field blanked (for the request log)."""
    if isinstance(data, dict):
        return {k: ("***" if k in SECRET_KEYS and v else mask(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [mask(v) for v in data]
    return data


def _strip_secrets(data: Any, how: str = "empty") -> Any:
    """What GET answers: secrets write-only (empty string, or masked with ``how="masked"``)."""
    if isinstance(data, dict):
        return {k: ((mask_value(v) if how == "masked" else "") if k in SECRET_KEYS else _strip_secrets(v, how))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_strip_secrets(v, how) for v in data]
    return data


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


_TLS_DEFAULT = {"enabled": False, "insecureSkipVerify": False, "ca": "", "certificate": "", "key": ""}


def _tls(value: Any) -> dict[str, Any]:
    out = dict(_TLS_DEFAULT)
    if isinstance(value, dict):
        out.update({k: v for k, v in value.items() if v is not None})
    return out


def _merge_secrets(new: Any, old: Any) -> Any:
    """PUT with an empty/missing secret keeps the stored one (the console's behaviour)."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = {k: _merge_secrets(v, old.get(k)) for k, v in new.items()}
        for k in SECRET_KEYS:
            if not out.get(k) and old.get(k):
                out[k] = old[k]
        return out
    return new


# ---------------------------------------------------------------- the emulator


class PaletteEmulator:
    def __init__(
        self,
        *,
        rate: float = 10.0,
        burst: float = 6.0,
        seed_defaults: bool = False,
        seed: int = 1234,
        api_key: str = API_KEY,
        closed_objects: bool = True,
        spec_path: Path = SPEC_PATH,
        realistic: bool = False,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.spec = SpecIndex(load_spec(spec_path), closed_objects)
        self.store = Store()
        self.faults = Faults()
        self.behaviour = behaviour or (Behaviour.realistic() if realistic else Behaviour())
        # raw answers per path (status, content type, body): HTML pages, invalid JSON, lists
        self.answers: dict[str, tuple[int, str, bytes]] = {}
        # redirects per path: [status, Location, times left (-1: always)]
        self.redirects: dict[str, list[Any]] = {}
        self.raw: list[dict[str, Any]] = []  # raw requests: method, path, query, headers, body (secrets included)
        self.lost: list[str] = []  # server-kept fields a PUT dropped (Behaviour.put_replaces)
        self.clock = Clock()
        self.api_key = api_key
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.bucket: TokenBucket | None = TokenBucket(rate, burst) if rate else None
        self.violations: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.count_429 = 0
        self.injected: dict[str, int] = {}
        self.system_config: dict[str, Any] = {}
        self.oci_image: dict[str, Any] = {"name": "", "endpoint": "", "baseContentPath": ""}
        self.profiles = ProfilesData()  # cluster profiles, projects, tenant: palette_emulator_profiles.py
        self._log_lock = threading.Lock()
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if seed_defaults:
            self.seed_defaults()

    # ---- lifecycle

    def start(self) -> PaletteEmulator:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 128
        self._thread = threading.Thread(target=self._server.serve_forever, name="palette-emulator",
                                        daemon=True, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> PaletteEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_rate(self, rate: float | None, burst: float = 6.0) -> None:
        self.bucket = TokenBucket(rate, burst) if rate else None

    # ---- seeding

    def seed_defaults(self) -> None:
        """The SaaS default registries (read-only, system scope)."""
        self.add("helm", "Bitnami", {"endpoint": "https://charts.bitnami.com/bitnami", "isPrivate": False,
                                     "auth": {"type": "noAuth"}}, scope="system", builtin=True)
        self.add("pack", "Public Repo", {"endpoint": "https://registry.spectrocloud.com", "private": False,
                                         "auth": {"type": "noAuth"}}, scope="system", builtin=True)
        self.add("ecr", "Palette Registry", {"endpoint": "415789037893.dkr.ecr.us-east-1.amazonaws.com",
                                             "isPrivate": False, "providerType": "pack",
                                             "baseContentPath": "production", "isSyncSupported": True},
                 scope="system", builtin=True)

    def add(self, flavour: str, name: str, spec: dict[str, Any], *, scope: str = "tenant",
            builtin: bool = False, uid: str | None = None) -> Record:
        """Put a registry straight into the store (no request, no validation)."""
        body = {"metadata": {"name": name}, "spec": {**spec, "scope": scope}}
        with self.store.lock:
            rec = self._create_record(flavour, body, builtin=builtin, uid=uid)
        return rec

    # ---- bookkeeping

    def violation(self, text: str) -> None:
        with self._log_lock:
            self.violations.append(text)

    def _log(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def _roll(self) -> float:
        with self._rng_lock:
            return self.rng.random()

    def request_lines(self) -> list[str]:
        """The request log as text lines (for leak tests)."""
        with self._log_lock:
            return [json.dumps(e, sort_keys=True) for e in self.requests]

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[dict[str, Any]]:
        with self._log_lock:
            return [e for e in self.requests if (method is None or e["method"] == method)
                    and e["path"].startswith(path_prefix)]

    def edit(self, name: str, change: Callable[[dict[str, Any]], None], flavour: str | None = None) -> Record:
        """An edit made in the Palette UI: ``change(spec)`` and a new lastModifiedTimestamp."""
        with self.store.lock:
            rec = next(r for r in self.store.records.values()
                       if r.name == name and (flavour is None or r.flavour == flavour))
            change(rec.obj["spec"])
            rec.obj["metadata"]["lastModifiedTimestamp"] = _now_iso(self.clock() + 0.001)
        return rec

    def misplaced_secrets(self, values: Iterable[str]) -> list[str]:
        """Where a secret value went that is not the field it belongs to (raw requests: URL,
        headers, any body field not named password/token/secretKey/secretToken)."""
        values = [v for v in values if v]
        found: list[str] = []

        def walk(node: Any, where: str) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in SECRET_KEYS and isinstance(v, str):
                        continue
                    walk(v, f"{where}.{k}")
                    if any(s in str(k) for s in values):
                        found.append(f"{where}: a key")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}[{i}]")
            elif isinstance(node, str) and any(s in node for s in values):
                found.append(where)

        with self._log_lock:
            raw = list(self.raw)
        for e in raw:
            name = f"{e['method']} {e['path']}"
            if any(s in e["path"] + json.dumps(e["query"]) for s in values):
                found.append(f"{name}: URL")
            for h, v in e["headers"].items():
                if h.lower() not in ("apikey", "authorization") and any(s in v for s in values):
                    found.append(f"{name}: header {h}")
            try:
                body = json.loads(e["body"]) if e["body"].strip() else None
            except ValueError:
                if any(s in e["body"] for s in values):
                    found.append(f"{name}: body (not JSON)")
                continue
            walk(body, f"{name}: body")
        return found

    def headers_sent(self, name: str, path_prefix: str = "/v1/registries") -> list[str]:
        """Values of header ``name`` on raw requests under ``path_prefix``."""
        with self._log_lock:
            return [v for e in self.raw if e["path"].startswith(path_prefix)
                    for h, v in e["headers"].items() if h.lower() == name.lower()]

    # ---- objects

    def _create_record(self, flavour: str, body: dict[str, Any], *, builtin: bool = False,
                       uid: str | None = None) -> Record:
        meta = body.get("metadata") or {}
        spec = copy.deepcopy(body.get("spec") or {})
        name = meta.get("name") or spec.get("name")
        if not name:
            raise ApiError(400, "InvalidRequest", "metadata.name is required")
        scope = spec.get("scope") or "tenant"
        if scope not in ("tenant", "system", "project"):
            raise ApiError(400, "InvalidRequest", f"unknown scope {scope!r}")
        if self.store.by_name(flavour, name, scope) is not None:
            # issue 10 (409 on a duplicate name); the code word is unverified. PB "Rules": a registry
            # may be added once per content type; OCI basic and ECR share one name space (unverified)
            raise ApiError(409, "DuplicateRegistryName",
                           f"registry with name '{name}' already exists in scope {scope}")
        self._business_rules(flavour, spec)
        if flavour in ("basic", "ecr"):
            for k, v in self.behaviour.future_fields.items():
                spec.setdefault(k, v)
        now = self.clock()
        uid = uid or new_uid()
        annotations = dict(meta.get("annotations") or {})
        metadata = {"name": name, "uid": uid, "annotations": annotations, "labels": dict(meta.get("labels") or {}),
                    "creationTimestamp": _now_iso(now), "lastModifiedTimestamp": _now_iso(now)}
        spec["scope"] = scope
        rec = Record(uid, flavour, {"metadata": metadata, "spec": self._fill_defaults(flavour, spec, name)},
                     builtin=builtin)
        self.store.records[uid] = rec
        return rec

    def _business_rules(self, flavour: str, spec: dict[str, Any]) -> None:
        if flavour in ("basic", "ecr"):
            provider = spec.get("providerType", "helm")
            # unverified: the spec's enum allows zarf for ECR too; our format keeps it to basic
            if provider == "zarf" and flavour != "basic":
                raise ApiError(400, "InvalidRegistrySpec", "providerType zarf is only supported for basic OCI registries")
            # PB "Sync status": Pack-provider OCI registries have no sync toggle, they always sync
            if provider == "pack" and not spec.get("isSyncSupported"):
                raise ApiError(400, "InvalidRegistrySpec", "providerType pack requires isSyncSupported")
            # unverified for helm/zarf; PB "Rules": for provider pack an empty baseContentPath
            # means <endpoint>/spectro-packs, so it is allowed there
            if spec.get("isSyncSupported") and not spec.get("baseContentPath") and provider != "pack":
                raise ApiError(400, "InvalidRegistrySpec", "baseContentPath is required when sync is enabled")
        # unverified: the shape of v1AwsCloudAccount; TF toRegistryAwsAccountCredential fills one or the other
        if flavour == "ecr" and spec.get("isPrivate"):
            creds = spec.get("credentials") or {}
            ctype = creds.get("credentialType", "secret")
            if ctype == "sts" and not (creds.get("sts") or {}).get("arn"):
                raise ApiError(400, "InvalidRegistrySpec", "sts credentials need an arn")
            if ctype == "secret" and not creds.get("accessKey"):
                raise ApiError(400, "InvalidRegistrySpec", "secret credentials need an accessKey")

    def _fill_defaults(self, flavour: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
        spec = copy.deepcopy(spec)
        if flavour in ("helm", "pack", "basic"):
            auth = dict(spec.get("auth") or {"type": "noAuth"})
            auth.setdefault("type", "noAuth")
            auth.setdefault("username", "")
            auth.setdefault("password", "")
            auth.setdefault("token", "")
            auth["tls"] = _tls(auth.get("tls"))
            spec["auth"] = auth
        if flavour in ("helm", "pack"):
            spec["name"] = name
            spec.setdefault("isPrivate" if flavour == "helm" else "private", False)
        if flavour == "basic":
            spec.setdefault("basePath", "")
        if flavour in ("basic", "ecr"):
            spec.setdefault("providerType", "helm")
            spec.setdefault("baseContentPath", "")
            spec.setdefault("isSyncSupported", False)
            spec.setdefault("containsSpectroManifest", False)
        if flavour == "ecr":
            spec.setdefault("isPrivate", False)
            spec.setdefault("defaultRegion", "")
            spec["tls"] = _tls(spec.get("tls"))
            if spec.get("credentials"):
                creds = dict(spec["credentials"])
                creds.setdefault("credentialType", "secret")
                creds.setdefault("accessKey", "")
                creds.setdefault("secretKey", "")
                creds.setdefault("partition", "aws")
                creds.setdefault("sts", {"arn": "", "externalId": ""})
                spec["credentials"] = creds
        return spec

    def _sync_supported(self, rec: Record) -> bool:
        spec = rec.obj["spec"]
        if rec.flavour == "helm":
            return not spec.get("isPrivate", False)
        if rec.flavour == "pack":
            return True
        return bool(spec.get("isSyncSupported"))

    def sync_status_body(self, rec: Record) -> dict[str, Any]:
        s = rec.sync
        body: dict[str, Any] = {"isSyncSupported": self._sync_supported(rec), "status": s.status,
                                "message": s.message}
        if s.started_at is not None:
            body["lastRunTime"] = _now_iso(s.started_at)
        if s.last_synced is not None:
            body["lastSyncedTime"] = _now_iso(s.last_synced)
        return body

    def view(self, rec: Record) -> dict[str, Any]:
        """What GET answers for a registry: no secrets, defaults in, status attached."""
        obj = _strip_secrets(copy.deepcopy(rec.obj), self.behaviour.secrets_on_get)
        if rec.flavour in ("basic", "ecr") and self.behaviour.sync_in_status_only:
            obj["spec"].pop("isSyncSupported", None)
        status_key = {"helm": "helmSyncStatus", "pack": "packSyncStatus"}.get(rec.flavour, "syncStatus")
        obj["status"] = {status_key: self.sync_status_body(rec)}
        obj["kind"] = {"helm": "HelmRegistry", "pack": "PackRegistry", "basic": "OciRegistry",
                       "ecr": "OciRegistry"}[rec.flavour]
        if rec.flavour in ("helm", "pack"):
            obj["apiVersion"] = "v1"
        return obj

    def _get(self, uid: str, *flavours: str) -> Record:
        rec = self.store.records.get(uid)
        if rec is None or (flavours and rec.flavour not in flavours):
            raise ApiError(404, "ResourceNotFound", f"registry '{uid}' not found")
        return rec

    def _writable(self, rec: Record) -> None:
        if rec.builtin:
            raise ApiError(403, "Forbidden", f"registry '{rec.name}' is a default registry and cannot be modified")

    # ---- handlers

    def handle(self, method: str, op: Operation, args: list[str], query: dict[str, str],
               body: Any) -> tuple[int, Any]:
        t = op.template
        with self.store.lock:
            if t in ("/v1/registries/helm", "/v1/registries/pack") and method == "GET":
                return 200, self._list("helm" if "helm" in t else "pack", query, summary=False)
            if t in ("/v1/registries/helm/summary", "/v1/registries/pack/summary"):
                return 200, self._list("helm" if "helm" in t else "pack", query, summary=True)
            if method == "POST" and t in ("/v1/registries/helm", "/v1/registries/pack",
                                          "/v1/registries/oci/basic", "/v1/registries/oci/ecr"):
                flavour = t.rsplit("/", 1)[1]
                rec = self._create_record(flavour, body or {})
                return 201, {"uid": rec.uid}
            if t.endswith("/validate"):
                self._validate(body or {})
                return 204, None
            m = re.fullmatch(r"/v1/registries/(helm|pack)/\{uid\}", t) or re.fullmatch(
                r"/v1/registries/oci/\{uid\}/(basic|ecr)", t)
            if m:
                flavour = m.group(1)
                rec = self._get(args[0], flavour)
                if method == "GET":
                    if rec.builtin and flavour in ("basic", "ecr") and self.behaviour.builtin_detail_403:
                        raise ApiError(403, "Forbidden", f"registry '{rec.name}': access denied")
                    return 200, self.view(rec)
                self._writable(rec)
                if method == "DELETE":
                    del self.store.records[rec.uid]
                    return 204, None
                return self._put(rec, body or {})
            m = re.fullmatch(r"/v1/registries/(?:(helm|pack)/\{uid\}|oci/\{uid\}/(basic|ecr))/sync", t)
            if m:
                rec = self._get(args[0], m.group(1) or m.group(2))
                self._start_sync(rec, force=query.get("forceSync") == "true")
                return 202, None
            m = re.fullmatch(r"/v1/registries/(?:(helm|pack)/\{uid\}|oci/\{uid\}/(basic|ecr))/sync/status", t)
            if m:
                rec = self._get(args[0], m.group(1) or m.group(2))
                return 200, self._poll_sync(rec)
            if t == "/v1/registries/metadata":
                scope = query.get("scope", "all")
                items = [{"uid": r.uid, "name": r.name, "kind": FAMILY[r.flavour], "scope": r.scope,
                          "isDefault": r.builtin, "isPrivate": bool(r.obj["spec"].get("isPrivate")
                                                                    or r.obj["spec"].get("private"))}
                         for r in self.store.records.values() if scope in ("all", r.scope)]
                return 200, {"items": items}
            if t == "/v1/registries/oci/summary":
                items = []
                for r in self.store.of("basic", "ecr"):
                    s = r.obj["spec"]
                    items.append({
                        "metadata": {k: r.obj["metadata"][k] for k in (
                            ("name", "uid", "annotations", "creationTimestamp", "lastModifiedTimestamp")
                            if self.behaviour.summary_timestamps else ("name", "uid", "annotations"))},
                        "spec": {"endpoint": s["endpoint"], "providerType": s.get("providerType", "helm"),
                                 "registryType": r.flavour, "scope": r.scope,
                                 "isPrivate": bool(s.get("isPrivate", r.flavour == "basic"
                                                         and s["auth"]["type"] != "noAuth")),
                                 "containsSpectroManifest": bool(s.get("containsSpectroManifest")),
                                 "defaultRegion": s.get("defaultRegion", "")},
                        "status": {"sync": self.sync_status_body(r)},
                    })
                return 200, {"items": items}
            if t == "/v1/registries/oci/{uid}":
                rec = self._get(args[0], "basic", "ecr")
                s = _strip_secrets(rec.obj["spec"])
                return 200, {"endpoint": s["endpoint"], "providerType": s.get("providerType", "helm"),
                             "scope": rec.scope, "type": rec.flavour, "defaultRegion": s.get("defaultRegion", ""),
                             "auth": s.get("auth") or {"type": "noAuth"}}
            if t == "/v1/registries/oci/image":
                return 200, dict(self.oci_image)
            if t == "/v1/registries/{uid}" and method == "DELETE":
                rec = self._get(args[0])
                self._writable(rec)
                del self.store.records[rec.uid]
                return 204, None
            if t == "/v1/registries/{registryName}/config":
                conf = self.system_config.get(args[0])
                if conf is None:
                    raise ApiError(404, "ResourceNotFound", f"registry config '{args[0]}' not found")
                return 200, {"config": {"name": args[0], **_strip_secrets(conf.get("spec") or {})}}
            if t == "/v1/system/config/registries/oci/image":
                if method == "GET":
                    return 200, dict(self.oci_image)
                self.oci_image = dict(body or {})
                return 204, None
            if t == "/v1/system/config/registries/{registryName}":
                name = args[0]
                if method == "GET":
                    if name not in self.system_config:
                        raise ApiError(404, "ResourceNotFound", f"system registry '{name}' not found")
                    return 200, _strip_secrets(self.system_config[name])
                if method == "PUT":
                    self.system_config[name] = copy.deepcopy(body or {})
                    return 204, None
                if self.system_config.pop(name, None) is None:
                    raise ApiError(404, "ResourceNotFound", f"system registry '{name}' not found")
                return 204, None
        raise ApiError(405, "MethodNotAllowed", f"{method} {t} not emulated")  # pragma: no cover

    def _list(self, flavour: str, query: dict[str, str], summary: bool) -> dict[str, Any]:
        scope = query.get("scope", "all")
        recs = [r for r in self.store.of(flavour) if scope in ("all", r.scope)]
        cap = self.behaviour.page_limit
        limit = min(int(query.get("limit", str(cap))), cap)
        if limit <= 0:
            limit = cap
        offset = int(query.get("offset", "0"))
        token = query.get("continue")
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
            except (ValueError, IndexError) as exc:
                raise ApiError(400, "InvalidContinueToken", "continue token is invalid") from exc
        page = recs[offset: offset + limit]
        nxt = offset + len(page)
        cont = base64.urlsafe_b64encode(f"off:{nxt}".encode()).decode() if nxt < len(recs) else ""
        if self.behaviour.stuck_continue:
            cont = base64.urlsafe_b64encode(b"off:0").decode()  # the same token on every page
        if summary:
            key = "isPrivate" if flavour == "helm" else "private"
            items = [{"metadata": {k: r.obj["metadata"][k] for k in ("name", "uid", "annotations")},
                      "spec": {"endpoint": r.obj["spec"]["endpoint"], "scope": r.scope,
                               key: bool(r.obj["spec"].get(key))},
                      "status": {"sync": self.sync_status_body(r)}} for r in page]
        else:
            items = [self.view(r) for r in page]
        return {"items": items, "listmeta": {"continue": cont, "count": len(recs), "limit": limit, "offset": nxt}}

    def _put(self, rec: Record, body: dict[str, Any]) -> tuple[int, Any]:
        spec = copy.deepcopy(body.get("spec") or {})
        if self.behaviour.put_replaces:
            old = rec.obj["spec"]
            for k in (*SERVER_KEPT, *self.behaviour.future_fields):
                if old.get(k) not in (None, "", False) and spec.get(k) != old.get(k):
                    self.lost.append(f"{rec.name}: spec.{k} {old.get(k)!r} -> {spec.get(k)!r}")
        else:  # a lenient server (unverified): what the PUT leaves out is kept
            for k in (*SERVER_KEPT, *self.behaviour.future_fields):
                if k not in spec and k in rec.obj["spec"]:
                    spec[k] = copy.deepcopy(rec.obj["spec"][k])
        spec["scope"] = rec.scope  # scope cannot change
        spec = _merge_secrets(spec, rec.obj["spec"])
        for k in ("registryUid",):
            spec.pop(k, None)
        self._business_rules(rec.flavour, spec)
        meta = rec.obj["metadata"]
        new_meta = body.get("metadata") or {}
        if new_meta.get("name") not in (None, meta["name"]):
            raise ApiError(400, "InvalidRequest", "metadata.name cannot be updated")
        if "annotations" in new_meta:
            meta["annotations"] = dict(new_meta["annotations"] or {})
        meta["lastModifiedTimestamp"] = _now_iso(self.clock())
        rec.obj["spec"] = self._fill_defaults(rec.flavour, spec, rec.name)
        return 204, None

    def _validate(self, spec: dict[str, Any]) -> None:
        if "invalid" in str(spec.get("endpoint", "")):
            raise ApiError(400, "RegistryValidationFailed",
                           f"unable to reach registry endpoint {spec.get('endpoint')}")

        def walk(node: Any) -> bool:
            if isinstance(node, dict):
                return any((k in SECRET_KEYS and v == "wrong") or walk(v) for k, v in node.items())
            return False

        if walk(spec):
            raise ApiError(400, "RegistryValidationFailed", "invalid credentials: authentication failed")

    def _start_sync(self, rec: Record, force: bool) -> None:
        s = rec.sync
        now = self.clock()
        if force and s.started_at is not None and now - s.started_at < 3600:
            raise ApiError(409, "SyncForceNotAllowed",
                           "force sync is allowed only when the last sync started at least an hour ago "
                           f"(last sync started {_now_iso(s.started_at)})")
        if s.status == "InProgress" and not force:
            return  # already running
        s.status = "InProgress"
        s.message = self.faults.sync_progress_message
        s.started_at = now
        s.polls_left = self.faults.sync_polls
        s.mode = self.faults.sync_mode_by_name.get(rec.name, self.faults.sync_mode)

    def _poll_sync(self, rec: Record) -> dict[str, Any]:
        s = rec.sync
        if s.status == "InProgress" and s.mode != "hang":
            if s.polls_left > 0:
                s.polls_left -= 1
            else:
                if s.mode == "fail":
                    s.status, s.message = "Failed", self.faults.sync_fail_message
                else:
                    s.status, s.message = "Completed", ""
                    s.last_synced = self.clock()
        return self.sync_status_body(rec)


class _Handler(BaseHTTPRequestHandler):
    emulator: PaletteEmulator
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one write per answer (headers + body): no Nagle/delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dripped(self, status: int, headers: dict[str, str], payload: bytes) -> bool:
        """Write the answer one byte every ``Faults.drip`` s (False: not dripping)."""
        drip = self.emulator.faults.drip
        if not drip:
            return False
        head = f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(payload))}.items())
        data = (head + "\r\n").encode() + payload
        self.close_connection = True
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(min(drip, MAX_SLEEP))
        except OSError:
            pass  # the client gave up
        return True

    def _send(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = b"" if data is None or status == 204 else json.dumps(data).encode()
        if self._dripped(status, {**({"Content-Type": "application/json"} if payload else {}), **(headers or {})},
                         payload):
            return
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _send_raw(self, status: int, content_type: str, payload: bytes) -> None:
        if self._dripped(status, {"Content-Type": content_type}, payload):
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self, method: str) -> None:
        emu = self.emulator
        parts = urlsplit(self.path)
        path = parts.path
        raw_query = parse_qs(parts.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry: dict[str, Any] = {"method": method, "path": path, "query": {k: v[0] for k, v in raw_query.items()},
                                 "status": 0, "body": None, "fault": "", "t": time.monotonic()}
        try:
            entry["body"] = mask(json.loads(raw)) if raw.strip() else None
        except ValueError:
            entry["body"] = "<not json>"
        with emu._log_lock:
            emu.raw.append({"method": method, "path": path, "query": entry["query"],
                            "headers": dict(self.headers.items()), "body": raw.decode("utf-8", "replace")})
        try:
            self._dispatch(emu, method, path, raw_query, raw, entry)
        finally:
            emu._log(entry)

    def _dispatch(self, emu: PaletteEmulator, method: str, path: str, raw_query: dict[str, list[str]],
                  raw: bytes, entry: dict[str, Any]) -> None:
        def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
            entry["status"] = status
            self._send(status, {"code": code, "message": message}, headers)

        if emu.bucket is not None:
            wait = emu.bucket.take()
            if wait > 0:
                emu.count_429 += 1
                entry["fault"] = "ratelimit"
                retry_after = max(emu.faults.retry_after, wait)
                return error(429, "TooManyRequests", "rate limit exceeded",
                             {"Retry-After": f"{retry_after:.3f}".rstrip("0").rstrip(".")})
        if not (self.headers.get("ApiKey") == emu.api_key or self.headers.get("Authorization") == emu.api_key):
            return error(401, "Unauthorized", "missing or invalid ApiKey header")
        redirect = emu.redirects.get(path)
        if redirect is not None and redirect[2] != 0:
            redirect[2] -= 1 if redirect[2] > 0 else 0
            entry["status"], entry["fault"] = redirect[0], "redirect"
            return self._send(redirect[0], None, {"Location": redirect[1]})
        answer = emu.answers.get(path)
        if answer is not None:
            entry["status"], entry["fault"] = answer[0], "answer"
            return self._send_raw(*answer)
        op, args, known = emu.spec.route(method, path)
        if op is None:
            emu.violation(f"{method} {path}: {'method not allowed' if known else 'path not in spec'}")
            return error(405 if known else 404, "NotFound", f"{method} {path} is not an API operation")
        problems = emu.spec.check_query(op, raw_query)
        body, body_problems = emu.spec.check_body(op, raw, emu.behaviour.future_fields)
        problems += body_problems
        if problems:
            for p in problems:
                emu.violation(f"{method} {op.template}: {p}")
            return error(400, "InvalidRequest", "; ".join(problems)[:500])

        f = emu.faults
        if f.latency:
            time.sleep(min(f.latency, MAX_SLEEP))
        if not f.methods or method in f.methods:
            scripted = ""
            with emu._rng_lock:
                if f.script:
                    scripted = f.script.pop(0)
            roll = emu._roll()
            for kind, p in (("500", f.p500), ("503", f.p503), ("429", f.p429), ("timeout", f.p_timeout),
                            ("drop", f.p_drop)):
                if scripted == kind or (not scripted and roll < p):
                    emu.injected[kind] = emu.injected.get(kind, 0) + 1
                    entry["fault"] = kind
                    if kind == "500":
                        return error(500, "InternalError", "injected internal error")
                    if kind == "503":
                        return error(503, "ServiceUnavailable", "injected service unavailable")
                    if kind == "429":
                        emu.count_429 += 1
                        return error(429, "TooManyRequests", "injected rate limit",
                                     {"Retry-After": f"{f.retry_after:g}"})
                    if kind == "timeout":
                        time.sleep(min(f.timeout_sleep, MAX_SLEEP))
                    self._drop()
                    return None
                roll -= p

        query = {k: v[0] for k, v in raw_query.items()}
        try:
            if op.template in PROFILE_PATHS:
                status, data = emu.profiles.handle(method, op.template, args, query, body,
                                                   self.headers.get("ProjectUid"))
            else:
                status, data = emu.handle(method, op, args, query, body)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message, exc.headers)
        is_create = method == "POST" and status == 201
        if is_create and f.after_effect and f.after_effect_count > 0:
            with emu.store.lock:
                f.after_effect_count -= 1
            emu.injected["after_effect"] = emu.injected.get("after_effect", 0) + 1
            entry["fault"] = "after_effect_" + f.after_effect
            if f.after_effect == "drop":
                self._drop()
                return None
            return error(500, "InternalError", "injected error after the create was applied")
        entry["status"] = status
        self._send(status, data)
        return None


# ---------------------------------------------------------------- pytest fixtures


@pytest.fixture
def palette_emulator_factory() -> Iterator[Callable[..., PaletteEmulator]]:
    """Start emulators with custom settings; each fails the test at teardown on a spec violation."""
    started: list[PaletteEmulator] = []

    def make(**kwargs: Any) -> PaletteEmulator:
        emu = PaletteEmulator(**kwargs).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
        leaks.note_secret(emu.api_key)
        leaks.note_output(*emu.request_lines())
    problems = [v for emu in started for v in emu.violations]
    if problems:
        pytest.fail("requests violated the Palette API spec:\n  " + "\n  ".join(problems[:20]), pytrace=False)


@pytest.fixture
def palette_emulator(palette_emulator_factory: Callable[..., PaletteEmulator]) -> PaletteEmulator:
    """An emulator with Palette's defaults (10 req/s, SaaS default registries seeded)."""
    return palette_emulator_factory(seed_defaults=True)


@pytest.fixture
def palette_emulator_raw() -> Iterator[PaletteEmulator]:
    """An emulator that does NOT fail the test on violations (for tests of the checks)."""
    emu = PaletteEmulator(seed_defaults=True).start()
    yield emu
    emu.stop()
