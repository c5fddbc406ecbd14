"""Plain values shared by every layer: registries, source spans, observed registries.

No I/O here. A registry's ``spec`` is the *canonical* form of the YAML spec: field names
of our format (DESIGN.md section 2), defaults filled in, secrets kept as references
(``{"fromEnv": NAME}`` / ``{"fromFile": PATH}``), never as values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from json import encoder as _json_encoder
from typing import Any, Generic, TypeVar, overload
from urllib.parse import unquote_plus

from .errors import TargetError
from .text import lazy_pattern

KINDS = ("OciRegistry", "HelmRegistry", "PackRegistry")
SCOPES = ("tenant", "system")
# each name to one string of it: what a state or a target decodes thousands of times is then one
# string, not one per record or row (5,000 of either: 0.6-0.9 MB less, for a lookup each)
KIND_NAMES, SCOPE_NAMES = {k: k for k in KINDS}, {s: s for s in SCOPES}
SECRET_FIELDS = frozenset({"password", "token", "secretKey"})
# Fields that only the reconciler uses (preflight, policy); never sent to a target.
LOCAL_ONLY_FIELDS = frozenset({"requiredCharts"})

Key = tuple[str, str, str]  # (scope, kind, name)


_T = TypeVar("_T")


class _once(Generic[_T]):  # noqa: N801 - used as a decorator, like property
    """A value computed from a frozen instance on first use, then read as a plain attribute
    (kept in the instance's ``__dict__``, which a non-data descriptor lets shadow it).

    ``functools.cached_property`` without its lock (Python 3.11 takes an RLock on every first
    use: measurable over 5,000 registries). Not a dataclass field: equality, ``repr``,
    ``asdict`` and ``replace`` (a new instance computes it again) ignore it."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _once[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _once[_T] | _T:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


@dataclass(frozen=True, slots=True)  # slots: one per definition of thousands, kept to the end of a run
class Span:
    """A position in a source file, 1-based line and column."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True)
class Registry:
    """One desired registry, as declared in ``registries.d/``."""

    kind: str
    name: str
    scope: str
    spec: Mapping[str, Any]
    protect: bool = False
    source: Span | None = None

    @_once
    def key(self) -> Key:
        return (self.scope, self.kind, self.name)

    @_once
    def fingerprint(self) -> str:
        """``fingerprint(self.spec)``, computed once: a plan compares it for every registry
        (``known_to_target`` and ``make_plan``). Not a field: equality, ``repr`` and
        ``dataclasses.replace`` (which recomputes it for the new spec) are unchanged; it
        relies on the spec being treated as immutable, as it is everywhere."""
        return _digest(self.target_json)

    @_once
    def target_json(self) -> str:
        """``canonical_json(target_spec(self.spec))``, computed once: the fingerprint's input,
        and the text the local target stores (a plan compares the two texts)."""
        return canonical_json(_target_view(self.spec))

    @_once
    def secret_refs(self) -> tuple[tuple[str, Mapping[str, str]], ...]:
        """``tuple(iter_secret_refs(self.spec))``, computed once: the secret resolution and the
        plan read it for every registry, and most name no secret (``declared_registry`` is
        told so by validation, which has seen every key of the document)."""
        return tuple(iter_secret_refs(self.spec))


def declared_registry(kind: str, name: str, scope: str, spec: Mapping[str, Any], protect: bool = False,
                      source: Span | None = None, *, no_secrets: bool = False) -> Registry:
    """``Registry(kind=..., ...)``, the same object (same ``__dict__``, in field order), built
    without the frozen dataclass's ``object.__setattr__`` per field: validation builds one per
    definition (``tests/test_fingerprint.py`` keeps the two in step). ``no_secrets``: the caller
    has seen every key of the spec and none is ``fromEnv`` or ``fromFile``, so ``secret_refs``
    is known to be empty without a walk."""
    reg: Registry = object.__new__(Registry)
    reg.__dict__.update(kind=kind, name=name, scope=scope, spec=spec, protect=protect, source=source)
    if no_secrets:  # the caller knows no key of the spec is fromEnv or fromFile
        reg.__dict__["secret_refs"] = ()
    return reg


_SET_FILE, _SET_LINE, _SET_COL = (getattr(Span, name).__set__ for name in ("file", "line", "col"))  # its slots


def span(file: str, line: int = 0, col: int = 0) -> Span:
    """``Span(file, line, col)``, its slots set directly: without the frozen dataclass's
    per-field ``object.__setattr__``, as ``declared_registry`` builds a ``Registry``."""
    where: Span = object.__new__(Span)
    _SET_FILE(where, file)
    _SET_LINE(where, line)
    _SET_COL(where, col)
    return where


@dataclass(frozen=True)
class ObservedRegistry:
    """A registry as a target reports it: canonical spec without secrets."""

    uid: str
    kind: str
    name: str
    scope: str
    spec: Mapping[str, Any]
    builtin: bool = False
    # the CA certificate (PEM) the target reports for the registry's TLS: not part of the
    # canonical spec (that holds ``tls.caFile``, a path). ``""``: it reports none; None: it
    # cannot tell (the local target, or a registry not read in detail). A plan compares it
    # with the CA file's contents (drift); ``reconcile export`` writes it to a file.
    ca_pem: str | None = None

    @property
    def key(self) -> Key:
        return (self.scope, self.kind, self.name)

    def reports_json(self, text: str) -> bool:
        """Whether the target reported exactly ``text`` as this registry's spec: True only for
        one built by ``observed_from_json`` from that very text, whose ``spec`` is then the
        text's value (equal canonical texts are equal specs). Otherwise compare ``spec``."""
        return self.__dict__.get("_spec_json") == text


class _DecodedOnRead:
    """``ObservedRegistry.spec`` of a registry built by ``observed_from_json``: its JSON text,
    decoded on the first read and kept. Any other instance has its spec in its ``__dict__``,
    which an attribute read finds first (this descriptor has no ``__set__``)."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        spec = d["spec"] = stored_spec(d["kind"], d["name"], d["uid"], d["_spec_json"])
        return spec


def spec_shape_problem(spec: Any) -> str:
    """What makes ``spec`` unfit to diff against a desired spec ("" when nothing): it must be an
    object whose ``auth`` and ``tls`` blocks are objects (#9.18: a string ``auth`` crashed the
    planner). The state's records and the local target's rows are both held to it."""
    if not isinstance(spec, dict):
        return f"'spec' must be an object, not {type(spec).__name__}"
    if not all(isinstance(k, str) for k in spec):
        return "'spec' keys must be strings"
    for name in ("auth", "tls"):
        if name in spec and spec[name] is not None and not isinstance(spec[name], dict):
            return f"'spec.{name}' must be an object, not {type(spec[name]).__name__}"
    auth = spec.get("auth") or {}
    if "type" in auth and not isinstance(auth["type"], str):
        return "'spec.auth.type' must be a string"
    if "credentials" in auth and auth["credentials"] is not None and not isinstance(auth["credentials"], dict):
        return "'spec.auth.credentials' must be an object"
    return ""


def stored_spec(kind: str, name: str, uid: str, text: str, where: str = "") -> Any:
    """``decode_spec(text)`` of a spec a target stores, refused in words (``TargetError``: exit 1,
    nothing planned or changed) when it is not JSON or not a spec (a hand-edited local
    database), instead of a traceback in the planner."""
    try:
        spec = decode_spec(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to decode
        problem = f"is not valid JSON ({exc})"
    else:
        shape = spec_shape_problem(spec)
        if not shape:
            return spec
        problem = f"is refused ({shape})"
    what = f"{where}: the spec stored for" if where else "the spec the target stores for"
    raise TargetError(f"{what} {kind}/{name} (uid {uid}) {problem}; it was changed outside reconcile: restore it, "
                      "or delete that registry there and apply again")


setattr(ObservedRegistry, "spec", _DecodedOnRead())  # noqa: B010 - a field's class attribute, after dataclass


# the scanner of json.loads' own decoder (JSONDecoder.raw_decode calls it), without the
# per-call checks and Python frames around it
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def load_json(raw: str | bytes) -> Any:
    """``json.loads(raw)`` of bytes someone else may have written (a state branch, a hand-edited
    file or database): every way it refuses them is a ``ValueError``, said in words. json.loads
    also raises a plain ValueError, not a JSONDecodeError, for an integer of more than 4,300
    digits (Python's int_max_str_digits), and RecursionError for nesting too deep; both were
    internal errors (exit 3) where the readers caught only JSONDecodeError."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):  # both ValueErrors, with their own words
        raise
    except ValueError as exc:
        raise ValueError("an integer of more than 4,300 digits") from exc
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def load_json_object(text: str | None) -> dict[str, Any] | None:
    """The JSON object ``text`` holds; None when it is empty or does not decode to one (a
    hand-edited database row of what only informs: sync details, catalog counts)."""
    try:
        value = load_json(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decode_spec(text: str) -> Any:
    """``json.loads(text)``: the text we write (``canonical_json``) decodes in one step;
    anything else (white space around it, extra data, invalid JSON) goes to ``json.loads``
    itself, which gives the same value or raises the same error."""
    try:
        value, end = _scan_once(text, 0)
    except Exception:  # noqa: S110 - json.loads below answers, as before
        pass
    else:
        if end == len(text):
            return value
    return json.loads(text)


def observed_from_json(uid: str, kind: str, name: str, scope: str, spec_json: str, builtin: bool = False,
                       ca_pem: str | None = None) -> ObservedRegistry:
    """``observed_registry(..., decode_spec(spec_json), ...)``, but the spec is decoded only when
    read: a plan finds most registries unchanged by comparing ``spec_json`` with the desired
    spec's canonical text (``reports_json``), without the value. Equal to the eager one in
    every field (``tests/test_local_observe.py``)."""
    reg: ObservedRegistry = object.__new__(ObservedRegistry)
    reg.__dict__.update(uid=uid, kind=kind, name=name, scope=scope, _spec_json=spec_json, builtin=builtin,
                        ca_pem=ca_pem)
    return reg


def observed_registry(uid: str, kind: str, name: str, scope: str, spec: Mapping[str, Any], builtin: bool = False,
                      ca_pem: str | None = None) -> ObservedRegistry:
    """``ObservedRegistry(uid=..., ...)``, the same object (same ``__dict__``, in field order),
    built without the frozen dataclass's ``object.__setattr__`` per field: a target lists
    thousands (``tests/test_local_observe.py`` keeps the two in step)."""
    reg: ObservedRegistry = object.__new__(ObservedRegistry)
    reg.__dict__.update(uid=uid, kind=kind, name=name, scope=scope, spec=spec, builtin=builtin, ca_pem=ca_pem)
    return reg


@dataclass(frozen=True)
class Settings:
    """The Settings document of registries.d/ (profile, policy, sync interval, deletion guard,
    secret roots), or its defaults."""

    profile: str = "saas"
    allow_non_fips: bool = False
    sync_interval_seconds: int = 24 * 3600
    max_deletions: int = 5
    source: Span | None = None
    secret_roots: tuple[str, ...] = ()  # Settings.spec.secretRoots: where fromFile/caFile may read besides the repo


class Desired:
    """What the repository declares, plus where it came from: ``commit``, the SHA the files
    came from (None for a directory outside git), and ``dirty``, whether the work tree differs
    from it under registries.d/.

    ``origin`` gives both when first asked for, and only then: a plan shown as text or JSON
    shows neither, and for a work tree the answer is a ``git status`` of every definition."""

    __slots__ = ("registries", "settings", "_origin", "_commit", "_dirty")

    def __init__(self, registries: list[Registry] | None = None, settings: Settings | None = None,
                 commit: str | None = None, dirty: bool = False, *,
                 origin: Callable[[], tuple[str | None, bool]] | None = None) -> None:
        self.registries: list[Registry] = [] if registries is None else registries
        self.settings: Settings = Settings() if settings is None else settings
        self._origin = origin
        self._commit, self._dirty = commit, dirty

    def _ask(self) -> None:
        if self._origin is not None:
            origin, self._origin = self._origin, None
            self._commit, self._dirty = origin()

    @property
    def commit(self) -> str | None:
        self._ask()
        return self._commit

    @property
    def dirty(self) -> bool:
        self._ask()
        return self._dirty


def key_str(key: Key) -> str:
    scope, kind, name = key
    return f"{kind}/{name}" if scope == "tenant" else f"{kind}/{name} (scope {scope})"


def split_userinfo(endpoint: str) -> tuple[str, str | None]:
    """``(endpoint without its user-info, the user-info)``; ``(endpoint, None)`` when it has none.

    ``https://alice:pw@host`` gives ``("https://host", "alice:pw")``. Anything before an ``@``
    that precedes the query counts (a password may hold ``/``), up to the last such ``@`` (it
    may hold ``@`` too): the endpoint left holds none, so validation accepts it."""
    if "@" not in endpoint:  # the common endpoint: one scan
        return endpoint, None
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    head = rest.split("?", 1)[0].split("#", 1)[0]
    at = head.rfind("@")
    if at < 0:
        return endpoint, None
    return scheme + sep + rest[at + 1:], rest[:at]


# Query parameters that carry a credential: OAuth and API tokens (``access_token``,
# ``private_token``, ``refresh-token``), API keys, secrets, passwords, and the signatures and
# credentials of Azure SAS and S3 / GCS presigned URLs (a Helm repository on blob storage).
# Matched on the name as a server reads it: percent-decoded, any case, ``-`` as ``_``.
_CREDENTIAL_PARAM = lazy_pattern(
    r"(?:[a-z0-9]+_)*(?:token|secret|password|passwd|pwd|api_?key|apikey|key|sig|signature|credential|auth|"
    r"authorization)")
_SEPARATORS = lazy_pattern(r"([&;])")  # ';' separates parameters too, for some servers


def _query_parts(endpoint: str) -> tuple[str, list[str], str]:
    """``(before the query, its parameters and their separators in turn, the fragment with
    its '#')``."""
    head, _, query = endpoint.partition("?")
    query, hash_, fragment = query.partition("#")
    return head, _SEPARATORS.split(query), hash_ + fragment


def _is_credential(param: str) -> bool:
    name = unquote_plus(param.partition("=")[0]).strip().lower().replace("-", "_")
    return _CREDENTIAL_PARAM.fullmatch(name) is not None


def query_credentials(endpoint: str) -> list[str]:
    """The names of the query parameters of ``endpoint`` that carry a credential (their
    values are never looked at, nor shown)."""
    if "?" not in endpoint:  # the common endpoint: one scan
        return []
    _, parts, _ = _query_parts(endpoint)
    return [p.partition("=")[0] for p in parts[::2] if _is_credential(p)]


def without_query_credentials(endpoint: str, keep_as: str | None = None) -> str:
    """``endpoint`` without the query parameters that carry a credential (``keep_as``: kept
    by name, with this text as their value); every other part as it was."""
    if not query_credentials(endpoint):
        return endpoint
    head, parts, fragment = _query_parts(endpoint)
    kept: list[str] = []
    for i in range(0, len(parts), 2):
        param = parts[i]
        if _is_credential(param):
            if keep_as is None:
                continue
            param = f"{param.partition('=')[0]}={keep_as}"
        if kept:
            kept.append(parts[i - 1] if i else "&")
        kept.append(param)
    return head + ("?" + "".join(kept) if kept else "") + fragment


def without_userinfo(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` whose endpoint holds no credential: no user-info and no query
    parameter that carries one (a target may report them typed in its UI: they must never be
    recorded)."""
    out = dict(spec)
    endpoint = out.get("endpoint")
    if isinstance(endpoint, str):
        out["endpoint"] = without_query_credentials(split_userinfo(endpoint)[0])
    return out


def is_secret_ref(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and ("fromEnv" in value or "fromFile" in value)


def iter_secret_refs(spec: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping[str, str]]]:
    """Yield (dotted path, reference) for every secret field in a canonical spec, in order.

    Collected into a list first (a plan and the secret resolution walk every registry's spec:
    nested generators cost more than the walk); callers only iterate."""
    out: list[tuple[str, Mapping[str, str]]] = []
    _secret_refs(spec, prefix, out)
    return iter(out)


def _secret_refs(spec: Mapping[str, Any], prefix: str, out: list[tuple[str, Mapping[str, str]]]) -> None:
    for k, v in spec.items():
        if type(v) is dict:  # canonical specs are plain dicts (and ABC checks are slow)
            if k in SECRET_FIELDS and len(v) == 1 and ("fromEnv" in v or "fromFile" in v):
                out.append((f"{prefix}{k}", v))
            else:
                _secret_refs(v, f"{prefix}{k}.", out)


def target_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a canonical spec a target stores (local-only fields dropped).

    A shallow copy: canonical specs are treated as immutable values everywhere."""
    return {k: v for k, v in spec.items() if k not in LOCAL_ONLY_FIELDS}


def base_paths(spec: Mapping[str, Any]) -> list[str]:
    """The base content paths of an OCI spec, in order: Palette's ``baseContentPath`` may list
    several, comma separated (validation refuses empty items). ``[""]`` when it is empty (for
    ``provider: pack`` Palette then reads ``<endpoint>/spectro-packs``). Here, not in
    validation, because content sync and preflight (which must look under each one) use it
    too and the content layer depends on the model only."""
    raw = spec.get("baseContentPath") or ""
    paths = [p.strip("/") for p in str(raw).split(",")]
    return [p for p in paths if p] or [""]


_c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
# json.dumps(..., sort_keys=True, separators=(",", ":"), default=str) builds this C encoder per
# call; one is enough. Without circular-reference markers (they are the only state it would
# keep between calls): a circular spec ends in RecursionError, and then json.dumps itself
# raises what it always raised.
_encode = (_c_make_encoder(None, str, _json_encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
           if _c_make_encoder is not None else None)


def canonical_json(spec: Mapping[str, Any]) -> str:
    """``json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)``, byte for byte.

    Calls the C encoder ``json.dumps`` would build, without its Python-level set-up per
    call. Anything unusual (no C encoder, any error) goes through ``json.dumps`` itself,
    which gives the same text or raises the same error."""
    if _encode is not None:
        try:
            return "".join(_encode(spec, 0))
        except Exception:  # noqa: S110 - json.dumps below raises it again, as before
            pass
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def _target_view(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """``target_spec(spec)``, or ``spec`` itself when that is the same plain dict."""
    if type(spec) is not dict or not LOCAL_ONLY_FIELDS.isdisjoint(spec):
        return target_spec(spec)  # always a plain dict, as before
    return spec


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def fingerprint(spec: Mapping[str, Any]) -> str:
    """Stable digest of a canonical spec (secret *references* included, never values).

    The digest's input is fixed: recorded fingerprints in users' states must keep matching."""
    return _digest(canonical_json(_target_view(spec)))


def ca_digest(pem: str) -> str:
    """Digest of a CA bundle's contents, as a plan compares them: with the file's (recorded
    at apply) and with the PEM the target reports. Line ends and trailing blanks are not
    compared (whether Palette gives the PEM back byte for byte is unverified; Spectro's
    provider compares what it gives back, ``ociBasicTLSConfigForRead``)."""
    lines = pem.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    return "sha256:" + hashlib.sha256("\n".join(line.rstrip() for line in lines).encode()).hexdigest()


# Without a key, a recorded hash is a password-guessing oracle for anyone who can read the
# state (the salt sits beside it): scrypt makes each guess cost ~50 ms and 16 MiB (n=2**14,
# r=8, p=1; 47 ms measured on the 2-core development machine). With the key
# (RECONCILER_STATE_KEY, kept out of the repository, e.g. an Actions secret) a guess needs
# the key, so a cheap HMAC suffices.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
HASH_KEYED = "hmac-sha256-key:"
HASH_SCRYPT = f"scrypt-n{SCRYPT_N}r{SCRYPT_R}p{SCRYPT_P}:"


@lru_cache(maxsize=16384)  # a plan compares and apply records the same values: pay scrypt once
def _scrypt(salt: str, path: str, value: str) -> str:
    digest = hashlib.scrypt(value.encode(), salt=f"{salt}\0{path}".encode(), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 << 20, dklen=32)
    return digest.hex()


def secret_hash(salt: str, path: str, value: str, key: str | None = None) -> str:
    """Salted digest of a secret value; the value itself is never stored.

    Keyed (HMAC with a secret that is not in the repository) when ``key`` is given, else
    scrypt. Older states hold ``hmac-sha256:`` (keyed by the salt alone): they no longer
    match, so each secret is planned as an update once and recorded in the new form."""
    if key:
        mac = hmac.new(key.encode(), f"{salt}\0{path}\0{value}".encode(), hashlib.sha256)
        return HASH_KEYED + mac.hexdigest()
    return HASH_SCRYPT + _scrypt(salt, path, value)


def secret_matches(recorded: str | None, salt: str, path: str, value: str, key: str | None = None) -> bool | None:
    """Whether ``value`` is the recorded one; None when this run cannot tell (the state was
    keyed and the key is not given, e.g. a dry-run without the Actions secret)."""
    if recorded is None:
        return False
    if recorded.startswith(HASH_KEYED) and not key:
        return None
    # bytes: compare_digest refuses non-ASCII str (a tampered state must not crash us)
    return hmac.compare_digest(recorded.encode(), secret_hash(salt, path, value, key).encode())


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"auth": {"type": "basic"}}`` -> ``{"auth.type": "basic"}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        path = f"{prefix}{k}"
        if type(v) is dict and v and not is_secret_ref(v):
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out
