"""Shared wiring of the commands: options, building the state store and the target, loading
and validating the definitions, making a plan, printing problems and progress.

Each command has its module under ``reconciler/commands/`` (``plan``, ``apply``, ``status``,
``import_``, ``validate``, ``export``, ``catalog``, ``unlock``; ``sync`` lives in
``reconciler/sync.py``): the CLI only parses options and calls one ``run_*`` function, which
returns the exit code.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from reconciler.errors import InputError, ReconcilerError, StateError
from reconciler.lifetime import hold_until_exit, keep_list
from reconciler.model import Desired, Key
from reconciler.plan import Plan, PlanOptions, SecretValues, impact_uids, make_plan
from reconciler.secrets import (
    ca_digests,
    prehash,
    redact_resolved,
    resolve_all,
    state_key,
    warn_missing_key,
    warn_short_secrets,
)
from reconciler.state.base import State, StateStore
from reconciler.targets.base import Known, Target, make_known

if TYPE_CHECKING:
    from reconciler.markdown import Header
    from reconciler.validation import LoadResult

EXIT_OK, EXIT_FAIL, EXIT_CHANGES = 0, 1, 2


@dataclass
class Options:
    """The options the commands share, from the command line and the environment."""

    root: Path = Path(".")
    ref: str | None = None
    target: str = "local"
    state: str | None = None
    profile: str | None = None
    fmt: str = "text"
    max_deletions: int | None = None
    allow_empty: bool = False
    allow_in_use: bool = False
    lock_timeout: float = 0.0
    detailed_exitcode: bool = False
    endpoint: str | None = None
    project_uid: str | None = None
    ca_file: str | None = None
    local_db: str | None = None
    rate_limit: float | None = None
    burst: int | None = None
    verbose: int = 0
    quiet: bool = False
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


# ---------------------------------------------------------------- builders

def build_store(opts: Options) -> StateStore:
    if opts.target == "local":
        local_db_path(opts)  # refused here, before the store takes its lock: a refusal writes nothing
    spec = opts.state
    if spec and spec.startswith("git:"):
        from reconciler.state.git import GitBranchStateStore

        branch = spec[4:] or "reconciler-state"
        remote = opts.environ.get("RECONCILER_STATE_REMOTE", "").strip() or None
        return GitBranchStateStore(opts.root, branch=branch, remote=remote, key=state_key(opts.environ))
    from reconciler.state.file import FileStateStore

    if spec:
        if spec.startswith("file:") and not spec[5:]:
            raise InputError("--state file: needs a path (file:PATH)")
        path = Path(spec[5:] if spec.startswith("file:") else spec)
    else:
        name = "state.json" if opts.target == "local" else f"state-{opts.target}.json"
        path = Path(".reconciler") / name
    path = path if path.is_absolute() else opts.root / path
    refuse_inside_repository_internals(path, opts.root, "--state")
    return FileStateStore(path, key=state_key(opts.environ))


def refuse_inside_repository_internals(path: Path, root: Path, what: str) -> None:
    """A file we write (and lock as ``NAME.lock``) must not be one of git's (``--state
    .git/index`` left ``.git/index.lock`` behind, after which ``git commit`` failed) nor sit
    among the definitions (``--state registries.d/s.yaml`` was written, then read as one)."""
    from reconciler.loader import DEFINITIONS_DIR

    try:
        real, definitions = path.resolve(), (root / DEFINITIONS_DIR).resolve()
    except (OSError, RuntimeError):  # a symlink loop: left to the store to report
        return
    if ".git" in real.parts or any(_is_git_dir(d) for d in real.parents):
        raise InputError(f"{what} {path}: is inside a git directory (.git/ or another), where git keeps its own "
                         "files and locks; use a path outside it, such as .reconciler/")
    if real == definitions or definitions in real.parents:
        raise InputError(f"{what} {path}: is inside {DEFINITIONS_DIR}/, which holds the definitions; use a path "
                         "outside it, such as .reconciler/")


def _is_git_dir(d: Path) -> bool:
    """Whether ``d`` is a git directory under any name (``git init --separate-git-dir``, a
    bare repository): what git itself looks for, ``HEAD`` beside ``objects/`` and ``refs/``."""
    try:
        return (d / "HEAD").is_file() and (d / "objects").is_dir() and (d / "refs").is_dir()
    except OSError:
        return False


def local_db_path(opts: Options) -> Path:
    """The local target's database: ``--local-db`` (relative to ``--dir``), else .reconciler/local.db."""
    db = Path(opts.local_db) if opts.local_db else Path(".reconciler") / "local.db"
    db = db if db.is_absolute() else opts.root / db
    refuse_inside_repository_internals(db, opts.root, "--local-db")
    return db


def build_target(opts: Options, profile: str, progress: Callable[[str], None] | None = None,
                 *, read_only: bool = False) -> Target:
    if opts.target == "local":
        from reconciler.targets.local import LocalTarget

        return LocalTarget(local_db_path(opts), profile=profile, base_dir=opts.root, progress=progress,
                           read_only=read_only)
    if opts.target == "palette":
        from reconciler.targets.palette import PaletteTarget

        api_key = opts.environ.get("PALETTE_API_KEY", "")
        if not api_key:
            raise InputError("--target palette needs the API key in the environment variable PALETTE_API_KEY")
        return PaletteTarget.from_options(
            endpoint=palette_endpoint(opts),
            api_key=api_key,
            project_uid=opts.project_uid or opts.environ.get("PALETTE_PROJECT_UID") or None,
            ca_file=opts.ca_file,
            base_dir=opts.root,
            rate=opts.rate_limit,
            burst=opts.burst,
        )
    raise InputError(f"unknown target {opts.target!r}: choose local or palette")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Run the core (load, validate, plan) without the cyclic collector.

    The core builds hundreds of thousands of small containers that hold no reference cycle
    (values, documents, records, changes); the collector would walk them again and again as
    they pile up, for nothing to free: a sixth of a cold plan of 5,000 definitions. So it is
    paused meanwhile; what the core built is then frozen (``gc.freeze``: never walked again,
    and kept, as it is anyway) and collection resumes for what comes next (apply, sync)."""
    if not gc.isenabled():  # nested, or paused by the caller
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _load(opts: Options, *, require_definitions: bool = False) -> LoadResult:
    """Load and validate; ``require_definitions``: a missing ``registries.d/`` is an error
    (a wrong ``--dir`` or ``--ref`` must not plan "nothing declared")."""
    from reconciler.validation import load_and_validate

    kept = keep_list()
    with paused_gc():
        result = load_and_validate(opts.root, ref=opts.ref, profile=opts.profile, keep=kept)
    hold_until_exit("load", (result, kept))
    if require_definitions:
        check_definitions_present(opts)
    return result


def check_definitions_present(opts: Options) -> None:
    """A missing ``registries.d/`` is an error for every command that reads it (plan, apply,
    import, validate): the same rule and the same message everywhere."""
    from reconciler.loader import DEFINITIONS_DIR, definitions_present

    if not definitions_present(opts.root, opts.ref):
        if opts.ref is not None:
            from reconciler.loader import discover_git

            discover_git(opts.root, opts.ref)  # a ref that names no commit says so first
        where = f"commit {opts.ref}" if opts.ref is not None else str(opts.root)
        raise InputError(f"no {DEFINITIONS_DIR}/ directory in {where}; use --dir to point at the repository root "
                         f"(an empty {DEFINITIONS_DIR}/ declares no registries)")


WARNINGS_PER_RULE = 10


def _print_problems(result: LoadResult, err: TextIO, quiet: bool = False, verbose: int = 0) -> None:
    """Every error; warnings too, but at most 10 of a kind unless -v (`validate` shows all)."""
    shown: dict[str, int] = {}
    for p in result.problems:
        if p.severity == "error":
            err.write(f"{p}\n")
        elif not quiet:
            shown[p.rule] = shown.get(p.rule, 0) + 1
            if verbose or shown[p.rule] <= WARNINGS_PER_RULE:
                err.write(f"{p}\n")
    for rule, n in shown.items():
        if not verbose and n > WARNINGS_PER_RULE:
            err.write(f"... and {n - WARNINGS_PER_RULE} more {rule} warnings (reconcile validate lists them all)\n")


def _check_state_target(state: State, target: Target, store: StateStore) -> None:
    if state.records and state.target and state.target != target.identity:
        raise StateError(
            f"{store.description} records registries of {state.target}, not of {target.description}; "
            "use a separate --state for each target"
        )


def _progress(err: TextIO) -> Callable[[str], None] | None:
    if not getattr(err, "isatty", lambda: False)():
        return None

    def show(msg: str) -> None:
        err.write(f"\r\033[K{msg[:200]}")
        err.flush()

    return show


def end_progress(err: TextIO) -> None:
    if getattr(err, "isatty", lambda: False)():
        err.write("\r\033[K")
        err.flush()


class _Watched:
    """``out``, remembering whether anything was written to it (a JSON caller gets one document)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner, self.written = inner, False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def one_json_document(fmt: str, out: TextIO, fallback: Callable[[str], dict[str, Any]]) -> Iterator[TextIO]:
    """``--format json``: the caller reads one JSON document from stdout, also when the command
    fails before writing its own (no registries.d/, the state, the target, the lock): then
    ``fallback(error)``, the error's words redacted, is that document (stderr says it too, and
    the exit code is the error's). Any other format: ``out`` itself, untouched."""
    if fmt != "json":
        yield out
        return
    watched = _Watched(out)
    try:
        yield cast("TextIO", watched)
    except ReconcilerError as exc:
        if not watched.written:
            from reconciler import render

            render.write_json(fallback(redact_resolved(str(exc))), out)
        raise


# ---------------------------------------------------------------- plan / apply





@contextmanager
def _target(opts: Options, profile: str, err: TextIO, *, read_only: bool = False) -> Iterator[Target]:
    target = build_target(opts, profile, _progress(err), read_only=read_only)
    try:
        yield target
    finally:
        target.close()


def known_to_target(desired: Desired, state: State) -> dict[str, Known]:
    """What a target may skip re-reading: recorded registries whose definition did not change
    since they were applied (a changed one is read in full, to diff against what is there).
    Never an unverified record: its spec would stand in for what the target reports, and a
    planted one (sync: false, its stamp kept) turned an unchanged registry into a replace."""
    declared = {r.key: r.fingerprint for r in desired.registries}  # computed once, make_plan reuses it
    get = declared.get
    unverified = state.unverified
    return {rec.uid: make_known(rec.version, rec.spec, rec.kind) for key, rec in state.records.items()
            if rec.spec is not None and get(key) == rec.fingerprint and key not in unverified}


def _make_plan(
    opts: Options, desired: Desired, store: StateStore, target: Target, max_del: int, read_files: bool = True,
    state: State | None = None,
) -> tuple[State, Plan, dict[Key, dict[str, str | None]]]:
    """``state``: the store's, when the caller read it already (before opening the target)."""
    with paused_gc():
        return _plan_now(opts, desired, store, target, max_del, read_files, state)


def _plan_now(
    opts: Options, desired: Desired, store: StateStore, target: Target, max_del: int, read_files: bool,
    state: State | None,
) -> tuple[State, Plan, dict[Key, dict[str, str | None]]]:
    if state is None:
        state = store.read()
    _check_state_target(state, target, store)
    known = known_to_target(desired, state) if target.observe_reads_known else {}
    observed = target.observe({r.key for r in desired.registries}, known)
    hold_until_exit("observed", (known, observed))
    store.verify(state, {o.uid for o in observed})  # a replaced state is refused here (issue #9.4)
    values = resolve_all(desired.registries, base_dir=opts.root, required=False, environ=opts.environ,
                         roots=desired.settings.secret_roots, read_files=read_files)
    prehash(state.salt, {k: r.secret_hashes for k, r in state.records.items()}, values, state_key(opts.environ))
    secret_values = SecretValues(values, state_key(opts.environ))
    ca, ca_warnings = ca_digests(desired.registries, base_dir=opts.root, roots=desired.settings.secret_roots)
    options = PlanOptions(max_deletions=max_del, allow_empty=opts.allow_empty, allow_in_use=opts.allow_in_use)
    plan = make_plan(desired.registries, state, observed, secret_values, options, ca)
    uids = impact_uids(plan)
    if uids:  # #10.2: look up users only when something would be deleted or replaced
        options = replace(options, in_use_checked=True, in_use=target.references(uids))
        plan = make_plan(desired.registries, state, observed, secret_values, options, ca)
    if ca_warnings:
        plan = replace(plan, warnings=(*plan.warnings, *ca_warnings))
    return state, plan, values


def _warn_secrets(opts: Options, state: State, values: Mapping[Key, Mapping[str, str | None]], err: TextIO) -> None:
    warn_short_secrets(values, err)
    warn_missing_key({k: r.secret_hashes for k, r in state.records.items()}, state_key(opts.environ), err)


def palette_endpoint(opts: Options) -> str:
    return (opts.endpoint if opts.endpoint is not None
            else opts.environ.get("PALETTE_ENDPOINT") or "https://api.spectrocloud.com")


def md_header(opts: Options, desired: Desired) -> Header:
    """The PR comment's header: which installation (local, or the Palette endpoint's host), which
    profile, which commit (short SHA, ``-dirty``)."""
    from urllib.parse import urlsplit

    from reconciler.markdown import Header, short_commit

    if opts.target == "palette":
        host = urlsplit(palette_endpoint(opts)).hostname or palette_endpoint(opts)
        target = f"Palette {host}"
    else:
        target = opts.target
    return Header(target=target, profile=desired.settings.profile, commit=short_commit(desired.commit, desired.dirty))


__all__ = ["Options", "build_store", "build_target", "Key"]
