"""The ``reconcile`` command line: parse options, call one runner function, exit.

Exit codes: 0 success / no changes, 2 changes found (``--dry-run --detailed-exitcode``),
1 invalid input, refused plan or failed apply/sync, 3 unexpected internal error,
130 interrupted. No traceback for any user error.
"""

from __future__ import annotations

import functools
import gc
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.secrets import redact_resolved

if TYPE_CHECKING:
    from reconciler.runner import Options

FORMATS = click.Choice(["text", "json", "markdown"])


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--dir", "root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                     help="Repository root holding registries.d/ (default: current directory)."),
        click.option("--ref", default=None, help="Read registries.d/ from this git commit/branch/tag instead of the work tree."),
        click.option("--target", type=click.Choice(["local", "palette"]), default=None,
                     help="Where registries live: the embedded local SQLite target (default) or the Palette API."),
        click.option("--state", default=None,
                     help="State store: a JSON file path (default .reconciler/state.json) or git:BRANCH."),
        click.option("--profile", type=click.Choice(["saas", "self-hosted", "airgap", "vertex"]), default=None,
                     help="Installation profile; overrides Settings.spec.profile."),
        click.option("--format", "fmt", type=FORMATS, default=None, help="Output format (text, json, markdown)."),
        click.option("--max-deletions", type=click.IntRange(min=0), default=None,
                     help="Refuse a plan with more deletions than this (default: Settings or 5)."),
        click.option("--allow-empty", is_flag=True, default=None, help="Allow a plan that deletes every managed registry."),
        click.option("--lock-timeout", type=click.FloatRange(min=0), default=None,
                     help="Seconds to wait for the state lock (default: fail at once)."),
        click.option("--endpoint", default=None, help="Palette API endpoint (default https://api.spectrocloud.com or $PALETTE_ENDPOINT)."),
        click.option("--project-uid", default=None, help="Palette project uid (cluster-profile look-ups only: registry calls are tenant-scoped, no ProjectUid)."),
        click.option("--ca-file", default=None, type=click.Path(dir_okay=False),
                     help="CA bundle to verify the Palette API's TLS certificate."),
        click.option("--rate-limit", type=click.FloatRange(min=0.1), default=None,
                     help="Palette API requests per second (default 10, Palette's limit)."),
        click.option("--burst", type=click.IntRange(min=1), default=None, help="Palette API burst size (default 5)."),
        click.option("--local-db", default=None, help="Local target database (default .reconciler/local.db)."),
        click.option("-v", "--verbose", count=True, default=None, help="More output."),
        click.option("-q", "--quiet", is_flag=True, default=None, help="Only errors."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


_COMMON = ("root", "ref", "target", "state", "profile", "fmt", "max_deletions", "allow_empty", "lock_timeout",
           "endpoint", "project_uid", "ca_file", "rate_limit", "burst", "local_db", "verbose", "quiet")


def _options(ctx: click.Context, kwargs: dict[str, Any]) -> Options:
    from reconciler.runner import Options

    merged: dict[str, Any] = dict(ctx.obj or {})
    for name in _COMMON:
        value = kwargs.pop(name, None)
        if value is not None and value is not False and not (name == "verbose" and value == 0):
            merged[name] = value
    o = Options()
    for name, value in merged.items():
        if value is None:
            continue
        setattr(o, name, Path(value) if name == "root" else value)
    if o.verbose:
        _setup_logging(o.verbose)
    return o


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_resolved(record.getMessage()), None
        return True


def _setup_logging(verbose: int) -> None:
    """-v: what reconcile does (INFO); -vv: every API request (DEBUG). Secrets redacted."""
    root = logging.getLogger("reconciler")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def handle_errors(f: Callable[..., int]) -> Callable[..., None]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = f(*args, **kwargs)
        except ReconcilerError as exc:
            click.echo(f"error: {redact_resolved(str(exc))}", err=True)
            code = exc.exit_code
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            code = 130
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except BrokenPipeError:
            code = 1
        except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into exit 3
            click.echo(f"internal error: {type(exc).__name__}: {redact_resolved(str(exc))}", err=True)
            click.echo("this is a bug in reconcile; please report it with the output of -v", err=True)
            if "-v" in sys.argv or "--verbose" in sys.argv:
                click.echo(redact_resolved(traceback.format_exc()), err=True)
            code = 3
        sys.exit(code)

    return wrapper


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dry-run", is_flag=True, help="Plan only: show what would change and change nothing.")
@click.option("--detailed-exitcode", is_flag=True, help="With --dry-run: exit 2 when there are changes, 0 when none.")
@click.option("--preflight", is_flag=True, help="With --dry-run: probe every added or changed registry.")
@common_options
@click.version_option(__version__, prog_name="reconcile")
@click.pass_context
def main(ctx: click.Context, /, dry_run: bool, detailed_exitcode: bool, preflight: bool, **kwargs: Any) -> None:
    """Palette registries as code: validate, plan (--dry-run) and apply registries.d/."""
    ctx.obj = {k: v for k, v in kwargs.items() if v is not None and v is not False and not (k == "verbose" and v == 0)}
    if ctx.invoked_subcommand is not None:
        return
    _main_job(ctx, dry_run, detailed_exitcode, preflight)


@handle_errors
def _main_job(ctx: click.Context, dry_run: bool, detailed_exitcode: bool, preflight: bool) -> int:
    from reconciler.runner import run_reconcile

    opts = _options(ctx, {})
    opts.detailed_exitcode = detailed_exitcode
    if preflight and not dry_run:
        raise click.UsageError("--preflight goes with --dry-run")
    return run_reconcile(opts, sys.stdout, sys.stderr, dry_run=dry_run, preflight=preflight)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@common_options
@click.pass_context
@handle_errors
def validate(ctx: click.Context, paths: tuple[Path, ...], **kwargs: Any) -> int:
    """Check definitions against the schema and policy; report every problem."""
    from reconciler.commands.validate import run_validate

    opts = _options(ctx, kwargs)
    return run_validate(list(paths) or None, opts.root, opts.profile, opts.fmt, sys.stdout, ref=opts.ref)


@main.command()
@click.option("--registry", "names", multiple=True, help="Only this managed registry (repeatable).")
@click.option("--force", is_flag=True, help="Sync even when not due (Palette: forceSync where allowed).")
@click.option("--wait/--no-wait", default=True, help="Wait for each sync to finish (default) or only trigger it.")
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True,
              help="Deadline in seconds for the whole sync run.")
@common_options
@click.pass_context
@handle_errors
def sync(ctx: click.Context, names: tuple[str, ...], force: bool, wait: bool, timeout: float, **kwargs: Any) -> int:
    """Sync the content of every managed registry that is due, and report."""
    from reconciler.sync import run_sync

    opts = _options(ctx, kwargs)
    return run_sync(opts, list(names), force=force, wait=wait, timeout=timeout, out=sys.stdout, err=sys.stderr)


@main.command()
@common_options
@click.pass_context
@handle_errors
def status(ctx: click.Context, **kwargs: Any) -> int:
    """Show the recorded state and the target's registries side by side."""
    from reconciler.runner import run_status

    return run_status(_options(ctx, kwargs), sys.stdout, sys.stderr)


@main.command(name="import")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Adopt every declared registry that exists on the target.")
@common_options
@click.pass_context
@handle_errors
def import_(ctx: click.Context, names: tuple[str, ...], all_: bool, **kwargs: Any) -> int:
    """Adopt existing registries of the target into management."""
    from reconciler.runner import run_import

    if not names and not all_:
        raise click.UsageError("name a registry to import, or pass --all")
    return run_import(_options(ctx, kwargs), list(names), all_, sys.stdout, sys.stderr)


@main.command()
@handle_errors
def schema() -> int:
    """Print the JSON Schema of the definitions format."""
    from importlib import resources

    sys.stdout.write(resources.files("reconciler").joinpath("schema/registry.schema.json").read_text("utf-8"))
    return 0


def entry() -> None:
    """Console script: like ``main()``, but usage errors exit 1 (2 means "changes found")."""
    # A short-lived process that builds many small containers (one per registry field): the
    # default cyclic-GC thresholds make it walk them over and over for nothing to free.
    gc.set_threshold(50_000, 20, 20)
    try:
        rv = main.main(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        sys.exit(1)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    entry()
