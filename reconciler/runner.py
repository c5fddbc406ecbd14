"""Wiring of the main jobs: build the state store and target from options, then
load -> validate -> plan -> (apply | sync | import | status). The CLI only parses options
and calls one of the ``run_*`` functions, which return the exit code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reconciler import render
from reconciler.errors import InputError, StateError
from reconciler.model import Desired, Key, key_str
from reconciler.plan import ADOPT, CREATE, REPLACE, UPDATE, Plan, PlanOptions, SecretValues, impact_uids, make_plan
from reconciler.secrets import (
    known_values,
    prehash,
    present,
    resolve_all,
    state_key,
    warn_missing_key,
    warn_short_secrets,
)
from reconciler.state.base import Record, State, StateStore
from reconciler.targets.base import Known, Target

if TYPE_CHECKING:
    from reconciler.apply import ChangeResult
    from reconciler.markdown import Header
    from reconciler.validation import LoadResult

EXIT_OK, EXIT_FAIL, EXIT_CHANGES = 0, 1, 2


@dataclass
class Options:
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
    spec = opts.state
    if spec and spec.startswith("git:"):
        from reconciler.state.git import GitBranchStateStore

        branch = spec[4:] or "reconciler-state"
        return GitBranchStateStore(opts.root, branch=branch)
    from reconciler.state.file import FileStateStore

    if spec:
        path = Path(spec[5:] if spec.startswith("file:") else spec)
    else:
        name = "state.json" if opts.target == "local" else f"state-{opts.target}.json"
        path = Path(".reconciler") / name
    return FileStateStore(path if path.is_absolute() else opts.root / path)


def build_target(opts: Options, profile: str, progress: Callable[[str], None] | None = None,
                 *, read_only: bool = False) -> Target:
    if opts.target == "local":
        from reconciler.targets.local import LocalTarget

        db = Path(opts.local_db) if opts.local_db else Path(".reconciler") / "local.db"
        return LocalTarget(db if db.is_absolute() else opts.root / db, profile=profile, base_dir=opts.root,
                           progress=progress, read_only=read_only)
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


def _load(opts: Options, *, require_definitions: bool = False) -> LoadResult:
    """Load and validate; ``require_definitions``: a missing ``registries.d/`` is an error
    (a wrong ``--dir`` or ``--ref`` must not plan "nothing declared")."""
    from reconciler.validation import load_and_validate

    result = load_and_validate(opts.root, ref=opts.ref, profile=opts.profile)
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


# ---------------------------------------------------------------- plan / apply

def run_reconcile(opts: Options, out: TextIO, err: TextIO, *, dry_run: bool, preflight: bool = False) -> int:
    result = _load(opts, require_definitions=True)
    _print_problems(result, err, opts.quiet, opts.verbose)
    if result.errors:
        err.write(
            f"{len(result.errors)} error(s) in the definitions; nothing was planned or changed\n"
        )
        if opts.fmt == "json":
            render.write_json({"format_version": render.PLAN_FORMAT_VERSION, "has_changes": False,
                               "valid": False, "errors": [p.as_dict() for p in result.errors]}, out)
        return EXIT_FAIL
    desired = result.desired
    profile = desired.settings.profile
    max_del = opts.max_deletions if opts.max_deletions is not None else desired.settings.max_deletions
    store = build_store(opts)
    if dry_run:
        with _target(opts, profile, err, read_only=True) as target:  # #9.40: a dry-run writes nothing
            _check_tenant_policy(desired, target)
            return _dry_run(opts, out, err, desired, store, target, max_del, preflight,
                            warnings=[str(p) for p in result.warnings])
    # the lock comes first: a second apply must not even open the target
    with store.lock(opts.lock_timeout), _target(opts, profile, err) as target:
        _check_tenant_policy(desired, target)
        return _apply(opts, out, err, desired, store, target, max_del, warnings=[str(p) for p in result.warnings])


def _check_tenant_policy(desired: Desired, target: Target) -> None:
    """Refuse, before planning, definitions the target's own policy (VerteX tenant FIPS) refuses."""
    problem = target.check_tenant_policy(desired.settings, desired.registries)
    if problem:
        src = desired.settings.source
        raise InputError(f"{problem}; nothing was planned or changed",
                         *((src.file, src.line, src.col) if src else ()))


@contextmanager
def _target(opts: Options, profile: str, err: TextIO, *, read_only: bool = False) -> Iterator[Target]:
    target = build_target(opts, profile, _progress(err), read_only=read_only)
    try:
        yield target
    finally:
        target.close()


def known_to_target(desired: Desired, state: State) -> dict[str, Known]:
    """What a target may skip re-reading: recorded registries whose definition did not change
    since they were applied (a changed one is read in full, to diff against what is there)."""
    from reconciler.model import fingerprint

    declared = {r.key: fingerprint(r.spec) for r in desired.registries}
    return {rec.uid: Known(rec.version, rec.spec, rec.kind) for rec in state.records.values()
            if rec.spec is not None and declared.get(rec.key) == rec.fingerprint}


def _make_plan(
    opts: Options, desired: Desired, store: StateStore, target: Target, max_del: int, read_files: bool = True
) -> tuple[State, Plan, dict[Key, dict[str, str | None]]]:
    state = store.read()
    _check_state_target(state, target, store)
    observed = target.observe({r.key for r in desired.registries}, known_to_target(desired, state))
    store.verify(state, {o.uid for o in observed})  # a replaced state is refused here (issue #9.4)
    values = resolve_all(desired.registries, base_dir=opts.root, required=False, environ=opts.environ,
                         roots=desired.settings.secret_roots, read_files=read_files)
    prehash(state.salt, {k: r.secret_hashes for k, r in state.records.items()}, values, state_key(opts.environ))
    secret_values = SecretValues(values, state_key(opts.environ))
    options = PlanOptions(max_deletions=max_del, allow_empty=opts.allow_empty, allow_in_use=opts.allow_in_use)
    plan = make_plan(desired.registries, state, observed, secret_values, options)
    uids = impact_uids(plan)
    if uids:  # #10.2: look up users only when something would be deleted or replaced
        options = replace(options, in_use_checked=True, in_use=target.references(uids))
        plan = make_plan(desired.registries, state, observed, secret_values, options)
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


def _emit_plan(opts: Options, out: TextIO, plan: Plan, extra: dict[str, Any] | None = None,
               problems: Sequence[str] = (), *, header: Header | None = None,
               warnings: Sequence[str] = ()) -> None:
    if opts.fmt == "json":
        render.write_json(render.plan_json(plan, problems=problems, extra=extra), out)
    elif opts.fmt == "markdown":
        from reconciler.markdown import render_markdown

        out.write(render_markdown(plan, problems=list(problems), header=header, warnings=warnings))
        if not out.isatty():
            out.write("\n")
    else:
        render.render_plan_text(plan, out)
        for p in problems:
            out.write(f"preflight: {p}\n")


def _dry_run(opts: Options, out: TextIO, err: TextIO, desired: Desired, store: StateStore, target: Target,
             max_del: int, preflight: bool, warnings: Sequence[str] = ()) -> int:
    # a dry-run reads no secret file (environment values only, to show rotations); --preflight
    # sends the credentials to the registries, so it needs them
    state, plan, values = _make_plan(opts, desired, store, target, max_del, read_files=preflight)
    _warn_secrets(opts, state, values, err)
    failures: list[str] = []
    if preflight:
        failures = run_preflight(opts, plan, target, values)
    _emit_plan(opts, out, plan, extra={"preflight": failures} if preflight else None, problems=failures,
               header=md_header(opts, desired), warnings=warnings)
    if plan.refusals or failures:
        return EXIT_FAIL
    if opts.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def run_preflight(opts: Options, plan: Plan, target: Target,
                  values: Mapping[Key, Mapping[str, str | None]]) -> list[str]:
    from reconciler.content import preflight as content_preflight
    from reconciler.errors import TargetError

    failures: list[str] = []
    for c in plan.actionable:
        if c.action not in (CREATE, UPDATE, REPLACE, ADOPT) or c.registry is None:
            continue
        reg = c.registry
        secrets = present(values.get(reg.key, {}))
        failures.extend(content_preflight(reg.kind, reg.spec, secrets, base_dir=opts.root, label=c.title))
        if opts.target != "local":
            try:
                target.validate(reg, secrets)
            except TargetError as exc:
                from reconciler.errors import redact

                failures.append(f"{c.title}: target validation failed: {redact(str(exc), known_values(values))}")
    return failures


def _commit_label(desired: Desired) -> str | None:
    if desired.commit is None:
        return "dirty" if desired.dirty else None
    return f"{desired.commit}-dirty" if desired.dirty else desired.commit


def _apply(opts: Options, out: TextIO, err: TextIO, desired: Desired, store: StateStore, target: Target,
           max_del: int, warnings: Sequence[str] = ()) -> int:
    from reconciler.apply import apply_plan

    state, plan, values = _make_plan(opts, desired, store, target, max_del)
    if plan.refusals:
        render.render_plan_text(plan, err)
        err.write("plan refused; nothing was changed\n")
        if opts.fmt == "markdown":
            from reconciler.markdown import render_markdown

            out.write(render_markdown(plan, header=md_header(opts, desired), warnings=warnings,
                                      title="reconcile apply: refused, nothing was changed"))
        return EXIT_FAIL
    needed = [c.registry for c in plan.actionable if c.registry is not None and not c.state_only]
    _warn_secrets(opts, state, values, err)
    if target.needs_secrets:
        resolve_all(needed, base_dir=opts.root, required=True, environ=opts.environ,
                    roots=desired.settings.secret_roots)
    else:
        unset = sorted({f"{c.title}: {p}" for c in plan.actionable if c.registry is not None
                        for p, v in values.get(c.key, {}).items() if v is None})
        for line in unset if not opts.quiet else ():
            err.write(f"note: {line} is not set; {target.description} stores no secrets, so it is not needed now\n")
    if desired.dirty and not opts.quiet:
        err.write("note: registries.d/ has uncommitted changes; the applied commit is recorded as dirty\n")
    if opts.fmt == "text":
        render.render_plan_text(plan, out)
    if not plan.has_changes:
        if opts.fmt == "json":
            render.write_json(render.plan_json(plan, extra={"applied": []}), out)
        elif opts.fmt == "markdown":
            from reconciler.markdown import render_apply_markdown

            out.write(render_apply_markdown(plan, [], header=md_header(opts, desired), warnings=warnings))
        return EXIT_OK

    def report(r: ChangeResult) -> None:
        if opts.fmt == "text":
            status = "done" if r.ok else f"FAILED: {r.error}"
            stream = err if opts.quiet and not r.ok else out  # -q: a failure is an error, still shown
            stream.write(f"{r.change.action} {r.change.title}: {status}\n")
            stream.flush()

    res = apply_plan(plan, target, store, state, values, commit=_commit_label(desired), on_result=report,
                     state_key=state_key(opts.environ))
    if opts.fmt == "json":
        render.write_json(render.plan_json(plan, extra={"applied": [
            {"action": r.change.action, "kind": r.change.kind, "name": r.change.name, "scope": r.change.scope,
             "uid": r.uid, "ok": r.ok, "error": r.error or None} for r in res.results]}), out)
    elif opts.fmt == "markdown":
        from reconciler.markdown import render_apply_markdown

        # which changes failed and why, not only the plan (issue 9.32)
        out.write(render_apply_markdown(plan, res.results, header=md_header(opts, desired), warnings=warnings))
    ok, failed = len(res.succeeded), len(res.failed)
    if res.unrecorded or any(r.skipped for r in res.results):
        titles = ", ".join(f"{r.change.action} {r.change.title}" for r in res.unrecorded) or "none"
        err.write(f"state: {store.description} could not be written; the apply stopped. Reached the target "
                  f"but not recorded: {titles}. The next plan finds them again (a created registry is adopted by name).\n")
    if failed or not opts.quiet:
        err.write(f"Apply: {ok} change(s) applied, {failed} failed\n")
    return EXIT_FAIL if failed else EXIT_OK


# ---------------------------------------------------------------- status / import

def run_status(opts: Options, out: TextIO, err: TextIO) -> int:
    result = _load(opts)
    profile = result.desired.settings.profile if not result.errors else (opts.profile or "saas")
    store = build_store(opts)
    state = store.read()
    target = build_target(opts, profile, read_only=True)  # #9.40: status writes nothing
    try:
        observed = target.list()
        by_uid = {o.uid: o for o in observed}
        rows = []
        seen: set[str] = set()
        for key, rec in sorted(state.records.items()):
            obs = by_uid.get(rec.uid)
            seen.add(rec.uid)
            sync = rec.last_sync or {}
            catalog = _catalog(target, rec.uid)
            rows.append([rec.kind, rec.name, rec.scope, rec.uid, rec.origin if obs else "MISSING on target",
                         "yes" if rec.protect else "", (rec.applied_commit or "")[:12] + ("-dirty" if (rec.applied_commit or "").endswith("-dirty") else ""),
                         sync.get("status", ""), sync.get("last_synced", "") or "", catalog])
        for o in observed:
            if o.uid in seen:
                continue
            rows.append([o.kind, o.name, o.scope, o.uid, "built-in" if o.builtin else "unmanaged", "", "", "", "",
                         _catalog(target, o.uid)])
        headers = ["KIND", "NAME", "SCOPE", "UID", "STATE", "PROTECT", "APPLIED", "SYNC", "LAST SYNCED", "CONTENT"]
        if opts.fmt == "json":
            render.write_json({"state": store.description, "target": target.description, "serial": state.serial,
                               "lineage": state.lineage, "registries": [dict(zip([h.lower() for h in headers], r, strict=True)) for r in rows]}, out)
        else:
            out.write(f"state: {store.description} (serial {state.serial}, {len(state.records)} managed)\n")
            out.write(f"target: {target.description} ({len(observed)} registries)\n")
            (render.markdown_table if opts.fmt == "markdown" else render.table)(rows, headers, out)
    finally:
        target.close()
    return EXIT_OK


def _catalog(target: Target, uid: str) -> str:
    try:
        s = target.catalog(uid)
    except Exception:  # noqa: BLE001 - the catalog is informational in status
        return ""
    if not s:
        return ""
    parts = [f"{s[k]} {k}" for k in ("charts", "versions", "repositories", "tags", "packs") if s.get(k)]
    return ", ".join(parts)


def run_import(opts: Options, names: Sequence[str], all_: bool, out: TextIO, err: TextIO) -> int:
    from reconciler.model import fingerprint

    result = _load(opts, require_definitions=True)
    _print_problems(result, err, opts.quiet)
    if result.errors:
        err.write("fix the definitions first; nothing was imported\n")
        return EXIT_FAIL
    desired = {r.key: r for r in result.desired.registries}
    store = build_store(opts)
    rows: list[dict[str, str | None]] = []
    failed = False
    with store.lock(opts.lock_timeout), _target(opts, result.desired.settings.profile, err) as target:
        state = store.read()
        _check_state_target(state, target, store)
        observed = [o for o in target.list() if not o.builtin]
        store.verify(state, {o.uid for o in observed})
        wanted = set(names)
        for name in sorted(wanted - {o.name for o in observed}):
            rows.append({"name": name, "kind": None, "scope": None, "uid": None, "result": "not found",
                         "message": f"no registry named {name!r} on {target.description}"})
            failed = True
        for o in (o for o in observed if all_ or o.name in wanted):
            row: dict[str, str | None] = {"name": o.name, "kind": o.kind, "scope": o.scope, "uid": o.uid}
            if o.key in state.records:
                rows.append({**row, "result": "already managed", "message": ""})
                continue
            if o.key not in desired:
                rows.append({**row, "result": "skipped" if all_ else "refused",
                             "message": "not declared in registries.d/; declare it first "
                                        "(otherwise the next apply would delete it)"})
                failed = failed or not all_
                continue
            state.records[o.key] = Record(uid=o.uid, kind=o.kind, name=o.name, scope=o.scope,
                                          fingerprint=fingerprint(o.spec), protect=desired[o.key].protect,
                                          origin="adopted", spec=dict(o.spec),
                                          applied_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            state.target = state.target or target.identity
            state.serial += 1
            store.write(state, f"import {key_str(o.key)}")
            rows.append({**row, "result": "imported", "message": ""})
    imported = sum(1 for r in rows if r["result"] == "imported")
    if opts.fmt == "json":
        render.write_json({"imported": imported, "registries": rows}, out)
    else:
        for r in rows:
            title = f"{r['kind']}/{r['name']}" if r["kind"] else str(r["name"])
            line = f"{title}: {r['result']}" + (f" (uid {r['uid']})" if r["result"] == "imported" else "")
            line += f": {r['message']}" if r["message"] else ""
            (err if r["result"] in ("not found", "refused") else out).write(("import: " if r["result"] in ("not found", "refused") else "= ") + line + "\n")
        out.write(f"Import: {imported} registr{'y' if imported == 1 else 'ies'} adopted\n")
    return EXIT_FAIL if failed else EXIT_OK


__all__ = ["Options", "run_reconcile", "run_status", "run_import", "build_store", "build_target", "Key"]
