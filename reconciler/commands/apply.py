"""The apply half of ``reconcile``: run a plan change by change, recording each success."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from reconciler import render
from reconciler.lifetime import hold_until_exit
from reconciler.model import Desired
from reconciler.runner import EXIT_FAIL, EXIT_OK, Options, _make_plan, _warn_secrets, md_header
from reconciler.secrets import redact_resolved, resolve_all, state_key
from reconciler.state.base import State, StateStore
from reconciler.targets.base import Target
from reconciler.text import escape

if TYPE_CHECKING:
    from reconciler.apply import ChangeResult
    from reconciler.plan import Plan


def _commit_label(desired: Desired) -> str | None:
    if desired.commit is None:
        return "dirty" if desired.dirty else None
    return f"{desired.commit}-dirty" if desired.dirty else desired.commit


def _apply(opts: Options, out: TextIO, err: TextIO, desired: Desired, store: StateStore, target: Target,
           max_del: int, warnings: Sequence[str] = (), state: State | None = None) -> int:
    from reconciler.apply import EndWriteFailed, apply_plan

    state, plan, values = _make_plan(opts, desired, store, target, max_del, state=state)
    hold_until_exit("plan", (state, plan, values))
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
        return _blocked_exit(plan, err)

    def report(r: ChangeResult) -> None:
        if opts.fmt == "text":
            status = "done" if r.ok else f"FAILED: {r.error}"
            stream = err if opts.quiet and not r.ok else out  # -q: a failure is an error, still shown
            stream.write(escape(f"{r.change.action} {r.change.title}: {status}") + "\n")  # a target's words
            stream.flush()

    try:
        res = apply_plan(plan, target, store, state, values, commit=_commit_label(desired), on_result=report,
                         state_key=state_key(opts.environ))
    except EndWriteFailed as exc:
        if opts.fmt == "json":  # the changes that reached the target, not "has_changes": false and nothing applied
            render.write_json(render.plan_json(plan, extra={"applied": _applied_json(exc.results),
                                                            "error": redact_resolved(str(exc))}), out)
        elif opts.fmt == "markdown":  # the job summary and the PR comment: what was done, and the error
            from reconciler.markdown import render_apply_markdown

            out.write(render_apply_markdown(plan, exc.results, header=md_header(opts, desired), warnings=warnings,
                                            error=redact_resolved(str(exc))))
        raise
    if opts.fmt == "json":
        render.write_json(render.plan_json(plan, extra={"applied": _applied_json(res.results)}), out)
    elif opts.fmt == "markdown":
        from reconciler.markdown import render_apply_markdown

        # which changes failed and why, not only the plan (issue 9.32)
        out.write(render_apply_markdown(plan, res.results, header=md_header(opts, desired), warnings=warnings))
    ok, failed = len(res.succeeded), len(res.failed)
    for r in res.results:
        if r.note:  # its line above said FAILED, NOT recorded: the write at the end stored it
            err.write(escape(f"{r.change.action} {r.change.title}: done, {r.note}") + "\n")
    if res.unrecorded:
        titles = ", ".join(f"{r.change.action} {r.change.title}" for r in res.unrecorded)
        err.write(f"state: {store.description} could not be written; the apply stopped. Reached the target "
                  f"but not recorded: {titles}. The next plan finds them again (a created registry is adopted "
                  "by name).\n")
    elif res.end_write_error:
        err.write(f"state: {store.description} could not be written during the apply, so it stopped, nor at its end "
                  f"({res.end_write_error}): a change said not recorded above is not in the state.\n")
    elif any(r.skipped for r in res.results):
        err.write(f"state: {store.description} could not be written during the apply, so it stopped; the write at "
                  "its end recorded every change that reached the target. Run it again for the rest.\n")
    if failed or not opts.quiet:
        err.write(f"Apply: {ok} change(s) applied, {failed} failed\n")
    return EXIT_FAIL if failed else _blocked_exit(plan, err)


def _applied_json(results: Sequence[ChangeResult]) -> list[dict[str, Any]]:
    return [{"action": r.change.action, "kind": r.change.kind, "name": r.change.name, "scope": r.change.scope,
             "uid": r.uid, "ok": r.ok,
             "error": r.error or ("reached the target but is NOT recorded in the state" if r.unrecorded else None)}
            for r in results]


def _blocked_exit(plan: Plan, err: TextIO) -> int:
    """Exit 1 when a change is blocked (as Terraform's ``prevent_destroy`` fails its apply): the
    target still differs from the definitions, and a green run would hide it for good."""
    if not plan.blocked:
        return EXIT_OK
    n = len(plan.blocked)
    err.write(f"error: {n} change{'' if n == 1 else 's'} blocked (the ! lines): the target still differs from "
              "the definitions\n")
    return EXIT_FAIL
