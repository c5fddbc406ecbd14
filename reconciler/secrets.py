"""Resolve secret references (``fromEnv`` / ``fromFile``) to values, at the edge; read the
files the tool is pointed at (secret files, CA files, the state file) safely.

Values live only in memory for the duration of a request; they are never printed, logged,
stored, or put in a plan. ``known_values`` feeds ``errors.redact`` for any message that
could echo one back (e.g. an API error body).

Files named by a definition (``fromFile``, ``tls.caFile``) are read only when they are
regular files inside the repository (never under ``.git/``) or under a root listed in
``Settings.spec.secretRoots``, never under ``/proc``, ``/sys`` or ``/dev``, and never more
than a bound of bytes: a pull request must not be able to make us send
``/proc/self/environ`` (our own credentials) to a registry, nor hang us on a FIFO.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from reconciler.errors import MIN_REDACT_LEN, OWN_CREDENTIAL_ENV, InputError, remember_credential
from reconciler.model import HASH_KEYED, HASH_SCRYPT, Key, Registry, ca_digest, key_str, secret_hash

MAX_SECRET_FILE = 64 * 1024
MAX_CA_FILE = 1 << 20  # a CA bundle (Debian's full bundle is ~200 KiB)
# Credentials of the tool itself: a definition must never be able to send them to a registry.
RESERVED_ENV = frozenset(OWN_CREDENTIAL_ENV)
# The key of the state's secret hashes (model.secret_hash); kept out of the repository.
STATE_KEY_ENV = "RECONCILER_STATE_KEY"
# Pseudo-filesystems: what they hold is the process (its environment) or the machine.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Credentials whose published formats are also valid variable names, so that one pasted in
# place of a fromEnv name would pass the schema and be named in messages and recorded in the
# state: GitHub's tokens (ghp_, gho_, ghu_, ghs_, ghr_ and 36 characters; github_pat_ and 82;
# GitHub's "Behind GitHub's new authentication token formats", 2021) and AWS access key ids
# (AKIA, ASIA and 16; AWS IAM "Unique identifiers").
_PASTED = (
    (re.compile(r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}"), "a GitHub token"),
    (re.compile(r"A[KS]IA[A-Z0-9]{16}"), "an AWS access key id"),
)


PASTED_LENGTHS = frozenset({40, 93, 20})  # the only lengths those formats have: a cheap first test


def pasted_credential(name: str) -> str | None:
    """What credential ``name`` is ("a GitHub token"), when it has the format of one; None
    for a name that could be a variable's."""
    if len(name) in PASTED_LENGTHS:
        for pattern, what in _PASTED:
            if pattern.fullmatch(name):
                return what
    return None

# Every value resolved in this process, so that the last line of defence (the CLI's error
# handler) can redact any message, whatever path it took. The tool's own credentials are not
# kept here: ``errors.redact`` masks them in every message (``remember_secret``).
_resolved: set[str] = set()


class FileRefused(OSError):
    """A file we will not read (not a regular file, too large, outside the allowed roots).

    An ``OSError`` with ``strerror`` set, so callers that report ``exc.strerror`` say why."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EINVAL, reason)


def remember_secret(value: str | None) -> None:
    """A credential of the tool itself (the Palette API key, the state key): every message
    is redacted of it (``errors.redact``), a sync status and the state as much as an error."""
    remember_credential(value)


def redact_resolved(text: str) -> str:
    from reconciler.errors import redact

    return redact(text, _resolved)


def resolved_count() -> int:
    """How many values were resolved so far (the set only grows): whether a text redacted
    before is still redacted of every one."""
    return len(_resolved)


def state_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The secret that keys the state's secret hashes, or None (empty counts as unset). A key
    that is not UTF-8 is an ``InputError`` (read while planning: before any change)."""
    env = os.environ if environ is None else environ
    key = env.get(STATE_KEY_ENV) or None
    remember_secret(key)
    if key is not None and not _utf8(key):
        raise InputError(f"{STATE_KEY_ENV} is not valid UTF-8 (the value is not shown); nothing was planned or changed")
    return key


def _utf8(value: str) -> bool:
    """Whether ``value`` encodes to UTF-8: an environment value of other bytes holds surrogates."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- files


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def root_problem(root: str) -> str | None:
    """Why a ``Settings.spec.secretRoots`` entry cannot be a root, or None: ``/`` however it is
    spelled (``//``, ``/.``, ``/tmp/..``) or reached (a symbolic link to it), and the
    pseudo-filesystems. Such a root would let a definition read any file of the runner."""
    lexical = "/" + os.path.normpath(root).lstrip("/")  # normpath keeps a leading "//"
    for p in (lexical, os.path.realpath(root)):
        if p == "/":
            return "is / (every file of the machine)"
        for bad in FORBIDDEN_ROOTS:
            if _under(p, bad):
                return f"is under {bad}, which is never read"
    return None


def in_git_dir(path: str) -> bool:
    """Whether ``path`` is inside a git directory: under a ``.git`` component (any case: some
    file systems ignore it), or under a directory that holds ``HEAD``, ``objects/`` and
    ``refs/`` (a bare repository, a separate git dir, a worktree's). Its ``config`` holds what
    ``actions/checkout`` keeps the job's token in (``http.extraheader``)."""
    parts = Path(path).parts
    if any(part.casefold() == ".git" for part in parts):
        return True
    d = Path(path).parent
    for _ in range(len(parts)):
        if (d / "HEAD").is_file() and (d / "objects").is_dir() and (d / "refs").is_dir():
            return True
        if d.parent == d:
            break
        d = d.parent
    return False


def path_problem(ref: str, base_dir: Path, roots: Sequence[str] | None, *, limit: int) -> str | None:
    """Why the file a definition names (``fromFile``, ``tls.caFile``) must not be read, or None.

    Never opens the file (a FIFO cannot block us here). A file that does not exist is no
    problem here: it may exist only where apply runs (e.g. ``/run/secrets``); reading it
    then reports it. ``roots`` None: the containment check is left to validation, which
    knows ``Settings.spec.secretRoots`` (the pseudo-filesystem and file-type checks stay)."""
    if not ref or "\0" in ref:
        return "is not a usable path"
    full = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref
    lexical = os.path.normpath(os.path.abspath(full))
    real = os.path.realpath(full)
    for p in (lexical, real):
        for bad in FORBIDDEN_ROOTS:
            if _under(p, bad):
                return f"is under {bad}, which is never read"
    # whatever the roots (adversarial pass 6: a root holding the repository made its .git/config
    # readable, and with it the CI token actions/checkout keeps there)
    for p in (lexical, real):
        if in_git_dir(p):
            how = " (through a symbolic link)" if p == real and real != lexical else ""
            return f"is inside .git/ (a git directory){how}, which is never read"
    if roots is not None:
        repo = os.path.realpath(base_dir)
        usable = [r for r in roots if root_problem(r) is None]  # validation reports the others
        allowed = [repo, *(os.path.realpath(r) for r in usable)]
        inside = [a for a in allowed if _under(real, a)]
        if not inside:
            linked = _under(lexical, repo) or any(_under(lexical, r) for r in usable)
            how = " (through a symbolic link)" if linked else ""
            listed = ", ".join(roots) if roots else "none listed"
            return (f"is outside the repository{how}; files are read only from the repository or from "
                    f"Settings.spec.secretRoots ({listed})")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return f"is {_kind_of(st.st_mode)}, not a regular file"
    if st.st_size > limit:
        return f"is larger than {limit} bytes"
    return None


def read_bounded(path: str | os.PathLike[str], limit: int,
                 opened: Callable[[int], None] | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened without blocking (a FIFO with no writer would hang ``open``), checked with
    ``fstat`` on what was opened (``stat`` says 0 bytes for devices and FIFOs), then read at
    most ``limit + 1`` bytes: ``/dev/zero`` or a growing file cannot exhaust memory. Raises
    ``OSError`` (``FileRefused`` for a file we will not read)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if opened is not None:
            opened(fd)  # may refuse what was opened (FileRefused)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"is {_kind_of(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileRefused(f"is larger than {limit} bytes")
        # what fstat says, plus one byte to see a file that grew; then bounded reads to the end
        # or the limit (the common file is one read and one buffer, not a list joined)
        parts = [os.read(fd, min(st.st_size, limit) + 1)]
        got = len(parts[0])
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 << 16))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(f"is larger than {limit} bytes")
    return data


def read_ref(ref: str, base_dir: Path, roots: Sequence[str] | None, *, limit: int) -> bytes:
    """Read a file a definition names, under the same rules as validation (``path_problem``)."""
    problem = path_problem(ref, base_dir, roots, limit=limit)
    if problem:
        raise FileRefused(problem)
    full = Path(ref) if os.path.isabs(ref) else Path(base_dir) / ref

    def same_rules(fd: int) -> None:
        # the path was checked, then resolved again to be opened: a link swapped in between
        # (the file, or a folder above it) led outside the repository and the secret roots
        # (review, this round). What was opened is checked by the same rules, where the
        # system says what it is (Linux: /proc/self/fd); elsewhere the check above stands
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if os.path.isabs(where):
            problem = path_problem(where, base_dir, roots, limit=limit)
            if problem:
                raise FileRefused(f"{problem} (it changed after it was checked)")

    return read_bounded(os.path.realpath(full), limit, same_rules)


def ca_digests(registries: Iterable[Registry], *, base_dir: Path,
               roots: Sequence[str] | None = None) -> tuple[dict[Key, str], list[str]]:
    """``model.ca_digest`` of the CA file each registry names (``tls.caFile``), by key; and
    a warning for each file that cannot be read here (e.g. one under a secret root that
    exists only where apply runs): its contents are then not compared. A CA is no secret,
    so a dry-run reads it too. Each file is read once, however many registries name it."""
    out: dict[Key, str] = {}
    warnings: list[str] = []
    read: dict[str, str | None] = {}
    for reg in registries:
        tls = reg.spec.get("tls")
        ref = tls.get("caFile") if type(tls) is dict else None
        if not ref or type(ref) is not str:
            continue
        if ref not in read:
            pem, problem = "", None
            try:
                pem = read_ref(ref, base_dir, roots, limit=MAX_CA_FILE).decode("utf-8")
            except OSError as exc:
                problem = f"cannot be read here ({exc.strerror or exc})"
            except UnicodeDecodeError:
                problem = "is not a PEM file (not UTF-8)"
            else:  # a target reports a PEM or nothing (palette._observed_ca): without one, drift for ever
                problem = None if "-----BEGIN" in pem else "holds no PEM certificate (no -----BEGIN line)"
            read[ref] = ca_digest(pem) if problem is None else None
            if problem is not None:
                warnings.append(f"tls.caFile {ref} {problem}: its contents are not compared")
        digest = read[ref]
        if digest is not None:
            out[reg.key] = digest
    return out, warnings


# ---------------------------------------------------------------- secret values


def resolve(
    registry: Registry, *, base_dir: Path, environ: Mapping[str, str] | None = None,
    roots: Sequence[str] | None = None, read_files: bool = True,
) -> tuple[dict[str, str | None], list[str]]:
    """Return ({path: value or None}, [problems]) for one registry's secret references.

    An empty value counts as missing: Actions gives ``""`` for an undefined secret, and a
    registry must not be created without its password. ``read_files`` False (dry-run): files
    are not read, their values are unknown (None) and not reported missing."""
    env = os.environ if environ is None else environ
    values: dict[str, str | None] = {}
    missing: list[str] = []
    for path, ref in registry.secret_refs:
        value: str | None
        if "fromEnv" in ref:
            name = str(ref["fromEnv"])
            value = None
            if not _ENV_NAME.fullmatch(name):
                # it may be a secret pasted in place of its name: never echo it
                missing.append(f"{path}: fromEnv is not an environment variable name (the value is not shown, "
                               "in case it is a pasted secret)")
            elif name in RESERVED_ENV:
                missing.append(f"{path}: {name} is reserved for reconcile and CI; it is never used as a registry secret")
            else:
                value = env.get(name)
                if value is not None and not _utf8(value):
                    # bytes that are not UTF-8 (os.environ keeps them as surrogates): no API call
                    # and no hash can carry them; refused here, before any change
                    _resolved.add(value)
                    missing.append(f"{path}: environment variable {name} is not valid UTF-8 (the value is not shown)")
                    value = None
                elif value is None:
                    missing.append(f"{path}: environment variable {name} is not set")
                elif not value:
                    missing.append(f"{path}: environment variable {name} is empty (an undefined Actions secret "
                                   "reads as empty); an empty secret counts as missing")
                    value = None
        elif not read_files:
            value = None
        else:
            file = str(ref["fromFile"])
            try:
                value = read_ref(file, base_dir, roots, limit=MAX_SECRET_FILE).decode("utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                missing.append(f"{path}: cannot read secret file {file} ({reason})")
                value = None
            else:
                if not value:
                    missing.append(f"{path}: secret file {file} is empty; an empty secret counts as missing")
                    value = None
        values[path] = value
        if value:
            _resolved.add(value)
    return values, missing


def short_secrets(all_values: Mapping[Key, Mapping[str, str | None]]) -> list[tuple[Key, str]]:
    """(registry, field) of every resolved value too short to be a real credential."""
    return sorted((key, path) for key, vals in all_values.items() for path, v in vals.items()
                  if v and len(v) < MIN_REDACT_LEN)


def warn_short_secrets(all_values: Mapping[Key, Mapping[str, str | None]], err: TextIO) -> None:
    """Warn about each value too short to be real: such values are not redacted from free
    text (``errors.MIN_REDACT_LEN``), which would make every message unreadable."""
    for key, path in short_secrets(all_values):
        err.write(f"warning: {key_str(key)}: {path} is shorter than {MIN_REDACT_LEN} characters, too short to be "
                  "a real secret; it is not masked in messages\n")


def resolve_all(
    registries: Iterable[Registry], *, base_dir: Path, required: bool, environ: Mapping[str, str] | None = None,
    roots: Sequence[str] | None = None, read_files: bool = True,
) -> dict[Key, dict[str, str | None]]:
    """Resolve every registry's secrets; with ``required`` a missing one is an InputError
    (listing every missing reference, located at its registry's definition)."""
    out: dict[Key, dict[str, str | None]] = {}
    problems: list[str] = []
    for reg in registries:
        if not reg.secret_refs:  # most registries: nothing to resolve
            out[reg.key] = {}
            continue
        values, missing = resolve(reg, base_dir=base_dir, environ=environ, roots=roots, read_files=read_files)
        out[reg.key] = values
        if not required:
            continue  # the problems are only for the error below
        for m in missing:
            where = f"{reg.source}: " if reg.source else ""
            problems.append(f"{where}{reg.kind}/{reg.name}: {m}")
    if required and problems:
        raise InputError("secrets are missing, nothing was changed:\n  " + "\n  ".join(problems))
    return out


def warn_missing_key(recorded: Mapping[Key, Mapping[str, str]], key: str | None, err: TextIO) -> None:
    """The state's hashes are keyed but this run has no key: it cannot tell a changed secret."""
    if key:
        return
    keyed = sum(1 for hashes in recorded.values() for h in hashes.values() if h.startswith(HASH_KEYED))
    if keyed:
        err.write(f"warning: {keyed} secret hash(es) in the state are keyed with {STATE_KEY_ENV}, which is not set: "
                  "a changed secret behind them is not detected in this run\n")


def prehash(salt: str, recorded: Mapping[Key, Mapping[str, str]], all_values: Mapping[Key, Mapping[str, str | None]],
            key: str | None) -> None:
    """Compute in parallel the unkeyed (scrypt) hashes the plan will compare one by one
    (``recorded``: the state's hashes per registry): hashlib releases the GIL during scrypt,
    so a runner with 4 cores pays a quarter of ~50 ms per secret; the plan finds them cached."""
    if key:
        return
    pairs = sorted({(path, v) for k, vals in all_values.items() for path, v in vals.items()
                    if v and str(recorded.get(k, {}).get(path, "")).startswith(HASH_SCRYPT)})
    workers = min(8, os.cpu_count() or 1, len(pairs))
    if workers < 2:
        return
    from concurrent.futures import ThreadPoolExecutor  # (and logging): only when there is work

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda pv: secret_hash(salt, pv[0], pv[1]), pairs))


def present(values: Mapping[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def known_values(all_values: Mapping[Key, Mapping[str, str | None]]) -> set[str]:
    return {v for vals in all_values.values() for v in vals.values() if v}
