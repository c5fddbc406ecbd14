"""``reconcile [--dry-run]``: load, validate, plan; show the plan (dry run) or apply it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from reconciler import render
from reconciler.errors import InputError
from reconciler.lifetime import hold_until_exit
from reconciler.model import Desired, Key
from reconciler.plan import ADOPT, CREATE, REPLACE, UPDATE, Plan
from reconciler.runner import (
    EXIT_CHANGES,
    EXIT_FAIL,
    EXIT_OK,
    Options,
    _load,
    _make_plan,
    _print_problems,
    _target,
    _warn_secrets,
    build_store,
    md_header,
    one_json_document,
)
from reconciler.secrets import known_values, present
from reconciler.state.base import State, StateStore
from reconciler.targets.base import Target

if TYPE_CHECKING:
    from reconciler.markdown import Header
    from reconciler.validation import LoadResult


def run_reconcile(opts: Options, out: TextIO, err: TextIO, *, dry_run: bool, preflight: bool = False) -> int:
    loaded = False  # a JSON caller reads "valid": false when the definitions could not be read at all

    def why(error: str) -> dict[str, Any]:
        """Why nothing was planned: the plan's shape, no changes known."""
        return {"format_version": render.PLAN_FORMAT_VERSION, "has_changes": False, "valid": loaded, "errors": [],
                "error": error}

    with one_json_document(opts.fmt, out, why) as out:
        result = _load(opts, require_definitions=True)  # no registries.d/, a --ref that names no commit, ...
        loaded = True
        return _run_loaded(opts, result, out, err, dry_run=dry_run, preflight=preflight)


def _run_loaded(opts: Options, result: LoadResult, out: TextIO, err: TextIO, *, dry_run: bool, preflight: bool) -> int:
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
    # the state is read before the target is opened: a corrupt or newer one is refused with no
    # request made (VerteX asks the tenant's FIPS setting first) and no local database created
    if dry_run:
        state = store.read()
        with _target(opts, profile, err, read_only=True) as target:  # #9.40: a dry-run writes nothing
            _check_tenant_policy(desired, target)
            return _dry_run(opts, out, err, desired, store, target, max_del, preflight,
                            warnings=[str(p) for p in result.warnings], state=state)
    from reconciler.commands.apply import _apply  # a dry-run does not import apply

    # the lock comes first: a second apply must not even open the target
    with store.lock(opts.lock_timeout):
        state = store.read()
        with _target(opts, profile, err) as target:
            _check_tenant_policy(desired, target)
            return _apply(opts, out, err, desired, store, target, max_del, warnings=[str(p) for p in result.warnings],
                          state=state)


def _check_tenant_policy(desired: Desired, target: Target) -> None:
    """Refuse, before planning, definitions the target's own policy (VerteX tenant FIPS) refuses."""
    problem = target.check_tenant_policy(desired.settings, desired.registries)
    if problem:
        src = desired.settings.source
        raise InputError(f"{problem}; nothing was planned or changed",
                         *((src.file, src.line, src.col) if src else ()))


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
             max_del: int, preflight: bool, warnings: Sequence[str] = (), state: State | None = None) -> int:
    # a dry-run reads no secret file (environment values only, to show rotations); --preflight
    # sends the credentials to the registries, so it needs them
    state, plan, values = _make_plan(opts, desired, store, target, max_del, read_files=preflight, state=state)
    hold_until_exit("plan", (state, plan, values))
    _warn_secrets(opts, state, values, err)
    failures: list[str] = []
    if preflight:
        failures = run_preflight(opts, plan, target, values)
    _emit_plan(opts, out, plan, extra={"preflight": failures} if preflight else None, problems=failures,
               header=md_header(opts, desired) if opts.fmt == "markdown" else None, warnings=warnings)
    if plan.refusals or failures:
        return EXIT_FAIL
    if opts.detailed_exitcode and (plan.has_changes or plan.blocked):  # blocked: the target still differs
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
