"""The ``reconcile`` command line: parse options, call one runner function, exit.

Exit codes: 0 success / no changes, 2 changes found (``--dry-run --detailed-exitcode``),
1 invalid input, refused plan or failed apply/sync, 3 unexpected internal error,
130 interrupted. No traceback for any user error.
"""

from __future__ import annotations

import atexit
import functools
import gc
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

import click

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.lifetime import hold_until_exit_starts
from reconciler.secrets import redact_resolved
from reconciler.text import lazy_pattern

if TYPE_CHECKING:
    from reconciler.runner import Options

FORMATS = click.Choice(["text", "json", "markdown"])


class Bounded(click.ParamType[float]):
    """A number that is finite and within [lo, hi]: ``nan``, ``inf``, ``1e999`` and
    out-of-range values are a usage error (exit 1), never a wait that lasts for ever."""

    def __init__(self, kind: type[int] | type[float], lo: float, hi: float) -> None:
        self.kind, self.lo, self.hi = kind, lo, hi
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number: float = value
        else:
            text = str(value).strip()
            try:
                number = self.kind(text)
            except (TypeError, ValueError, OverflowError):
                self.fail(f"{text!r} is not a valid {self.name}", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite {self.name}", param, ctx)
        if not self.lo <= number <= self.hi:
            self.fail(f"{value} is not between {_num(self.lo)} and {_num(self.hi)}", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"[{_num(self.lo)}..{_num(self.hi)}]"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


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
        click.option("--max-deletions", type=Bounded(int, 0, 1_000_000), default=None,
                     help="Refuse a plan with more deletions than this (default: Settings or 5)."),
        click.option("--allow-empty", is_flag=True, default=None, help="Allow a plan that deletes every managed registry."),
        click.option("--allow-in-use", is_flag=True, default=None,
                     help="Let through deletes and replaces of registries that cluster profiles use."),
        click.option("--lock-timeout", type=Bounded(float, 0, 86_400), default=None,
                     help="Seconds to wait for the state lock (default: fail at once)."),
        click.option("--endpoint", default=None, help="Palette API endpoint (default https://api.spectrocloud.com or $PALETTE_ENDPOINT)."),
        click.option("--project-uid", default=None,
                     help="Palette project uid whose cluster profiles are looked in too when the project list does not "
                          "name it (registry calls are tenant-scoped, no ProjectUid)."),
        click.option("--ca-file", default=None, type=click.Path(dir_okay=False),
                     help="CA bundle to verify the Palette API's TLS certificate."),
        click.option("--rate-limit", type=Bounded(float, 0.1, 1000), default=None,
                     help="Palette API requests per second (default 10, Palette's limit)."),
        click.option("--burst", type=Bounded(int, 1, 1000), default=None, help="Palette API burst size (default 5)."),
        click.option("--local-db", default=None, help="Local target database (default .reconciler/local.db)."),
        click.option("-v", "--verbose", count=True, default=None, help="More output."),
        click.option("-q", "--quiet", is_flag=True, default=None, help="Only errors."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


_COMMON = ("root", "ref", "target", "state", "profile", "fmt", "max_deletions", "allow_empty", "lock_timeout",
           "endpoint", "project_uid", "ca_file", "rate_limit", "burst", "local_db", "verbose", "quiet",
           "allow_in_use")


class _Discard:
    """stdout under -q: text output is dropped; errors go to stderr as always."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _options(ctx: click.Context, kwargs: dict[str, Any], *, quiet_stdout: bool = True) -> Options:
    """Merge group and command options. ``-q`` means only errors, for every command: with the
    text format, whatever a command prints on stdout is dropped (json and markdown are
    documents the caller asked for and are still written); errors and failures go to stderr."""
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
    if o.quiet and o.fmt == "text" and quiet_stdout:
        sys.stdout = cast(TextIO, _Discard())
    return o


def _setup_logging(verbose: int) -> None:
    """-v: what reconcile does (INFO); -vv: every API request (DEBUG). Secrets redacted.
    (logging is imported here: a run without -v does not pay for it.)"""
    import logging

    class _RedactingFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = redact_resolved(record.getMessage()), None
            return True

    root = logging.getLogger("reconciler")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def _verbosity(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The -v count however it was given (``-v``, ``-vv``, ``--verbose``, before or after the
    subcommand), read from what click parsed rather than from ``sys.argv``."""
    count = kwargs.get("verbose") or 0
    ctx = next((a for a in args if isinstance(a, click.Context)), None) or click.get_current_context(silent=True)
    while ctx is not None:
        count = max(count, ctx.params.get("verbose") or 0, (ctx.obj or {}).get("verbose") or 0)
        ctx = ctx.parent
    return int(count)


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
            if isinstance(exc, OSError) and exc.strerror:
                # the system refused a path the user gave (a name too long, no permission, ...):
                # their input or their machine, said as the system says it, not a bug
                where = f"{exc.filename}: " if exc.filename else ""
                click.echo(f"error: {redact_resolved(where + exc.strerror)}", err=True)
                sys.exit(1)
            click.echo(f"internal error: {type(exc).__name__}: {redact_resolved(str(exc))}", err=True)
            click.echo("this is a bug in reconcile; please report it with the output of -v", err=True)
            if _verbosity(args, kwargs):
                import traceback

                click.echo(redact_resolved(traceback.format_exc()), err=True)
            code = 3
        sys.exit(code)

    return wrapper


class _Commands(click.Group):
    """The root command, whose subcommands are built the first time one is asked for (to run
    it, or to list them all in ``--help``): a plan does not pay for the 150-odd options of
    the others (4 ms of a run). Each is registered with ``@main.lazy(name)`` on a function
    that builds it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.factories: dict[str, Callable[[], click.Command]] = {}

    def lazy(self, name: str) -> Callable[[Callable[[], click.Command]], Callable[[], click.Command]]:
        def register(factory: Callable[[], click.Command]) -> Callable[[], click.Command]:
            self.factories[name] = factory
            return factory

        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.factories})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        factory = self.factories.pop(cmd_name, None)
        if factory is not None:
            self.add_command(factory(), cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand:
            for name in self.list_commands(ctx):  # "Did you mean ...?" looks among every command
                self.get_command(ctx, name)
            return super().resolve_command(ctx, args)


@click.group(cls=_Commands, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
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
        _refuse_plan_options(ctx.invoked_subcommand, dry_run=dry_run, detailed_exitcode=detailed_exitcode,
                             preflight=preflight)
        return
    _main_job(ctx, dry_run, detailed_exitcode, preflight)


# Subcommands that change nothing, where a leading --dry-run is harmless; every other one
# (sync, import, unlock, export, ...) refuses it rather than silently doing the real thing.
READ_ONLY_COMMANDS = frozenset({"validate", "status", "schema", "catalog"})


def _refuse_plan_options(command: str, **given: bool) -> None:
    """--dry-run, --detailed-exitcode and --preflight belong to the plan (``reconcile
    --dry-run``). Given before a subcommand they would be dropped, and ``reconcile --dry-run
    sync`` would really sync: refuse them instead (a usage error, exit 1, nothing done)."""
    flags = [f"--{name.replace('_', '-')}" for name, on in given.items() if on]
    if not flags or (command in READ_ONLY_COMMANDS and flags == ["--dry-run"]):
        return
    raise click.UsageError(
        f"{', '.join(flags)} {'is an option' if len(flags) == 1 else 'are options'} of the plan "
        f"(reconcile --dry-run), not of `reconcile {command}`; nothing was done"
    )


@handle_errors
def _main_job(ctx: click.Context, dry_run: bool, detailed_exitcode: bool, preflight: bool) -> int:
    from reconciler.commands.plan import run_reconcile

    opts = _options(ctx, {})
    opts.detailed_exitcode = detailed_exitcode
    if preflight and not dry_run:
        raise click.UsageError("--preflight goes with --dry-run")
    return run_reconcile(opts, sys.stdout, sys.stderr, dry_run=dry_run, preflight=preflight)


@main.lazy("validate")
def _validate_command() -> click.Command:
    @click.command("validate")
    @click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
    @common_options
    @click.pass_context
    @handle_errors
    def validate(ctx: click.Context, paths: tuple[Path, ...], **kwargs: Any) -> int:
        """Check definitions against the schema and policy; report every problem."""
        from reconciler.commands.validate import run_validate

        opts = _options(ctx, kwargs, quiet_stdout=False)  # its errors are its output: -q drops the rest
        if not paths:
            from reconciler.runner import check_definitions_present

            try:
                check_definitions_present(opts)  # the same rule as plan and apply
            except ReconcilerError as exc:
                if opts.fmt == "json":  # a JSON caller reads why from stdout; stderr says it too
                    from reconciler.commands.validate import write_json_error

                    write_json_error(exc, sys.stdout)
                raise
        return run_validate(list(paths) or None, opts.root, opts.profile, opts.fmt, sys.stdout, ref=opts.ref,
                            quiet=opts.quiet)

    return validate


@main.lazy("sync")
def _sync_command() -> click.Command:
    @click.command("sync")
    @click.option("--registry", "names", multiple=True, help="Only this managed registry (repeatable).")
    @click.option("--force", is_flag=True, help="Sync even when not due (Palette: forceSync where allowed).")
    @click.option("--wait/--no-wait", default=True, help="Wait for each sync to finish (default) or only trigger it.")
    @click.option("--timeout", type=Bounded(float, 1, 86_400), default=900.0, show_default=True,
                  help="Deadline in seconds for the whole sync run.")
    @common_options
    @click.pass_context
    @handle_errors
    def sync(ctx: click.Context, names: tuple[str, ...], force: bool, wait: bool, timeout: float, **kwargs: Any) -> int:
        """Sync the content of every managed registry that is due, and report."""
        from reconciler.sync import run_sync

        opts = _options(ctx, kwargs)
        return run_sync(opts, list(names), force=force, wait=wait, timeout=timeout, out=sys.stdout, err=sys.stderr)

    return sync


@main.lazy("status")
def _status_command() -> click.Command:
    @click.command("status")
    @common_options
    @click.pass_context
    @handle_errors
    def status(ctx: click.Context, **kwargs: Any) -> int:
        """Show the recorded state and the target's registries side by side."""
        from reconciler.commands.status import run_status

        return run_status(_options(ctx, kwargs), sys.stdout, sys.stderr)

    return status


@main.lazy("import")
def _import_command() -> click.Command:
    @click.command("import")
    @click.argument("names", nargs=-1)
    @click.option("--all", "all_", is_flag=True, help="Adopt every declared registry that exists on the target.")
    @common_options
    @click.pass_context
    @handle_errors
    def import_(ctx: click.Context, names: tuple[str, ...], all_: bool, **kwargs: Any) -> int:
        """Adopt existing registries of the target into management."""
        from reconciler.commands.import_ import run_import

        if not names and not all_:
            raise click.UsageError("name a registry to import, or pass --all")
        return run_import(_options(ctx, kwargs), list(names), all_, sys.stdout, sys.stderr)

    return import_


@main.lazy("unlock")
def _unlock_command() -> click.Command:
    @click.command("unlock")
    @click.argument("lock_id", metavar="[ID]", required=False)
    @click.option("--corrupt", is_flag=True,
                  help="Remove a lock record that cannot be read (not JSON, wrong fields), whatever its id.")
    @common_options
    @click.pass_context
    @handle_errors
    def unlock(ctx: click.Context, lock_id: str | None, corrupt: bool, **kwargs: Any) -> int:
        """Release the state lock with this id, left by a run that is gone (git:BRANCH state);
        --corrupt removes a lock record that cannot be read."""
        from reconciler.commands.unlock import run_unlock

        if corrupt == (lock_id is not None):
            raise click.UsageError("give the lock id (reconcile unlock ID), or --corrupt for a lock record that "
                                   "cannot be read; nothing was changed")
        return run_unlock(_options(ctx, kwargs), lock_id, sys.stdout)

    return unlock


@main.lazy("export")
def _export_command() -> click.Command:
    @click.command("export")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="File to write (default registries.d/exported.yaml).")
    @click.option("--force", is_flag=True, help="Overwrite the file (and its CA files) if they exist.")
    @common_options
    @click.pass_context
    @handle_errors
    def export(ctx: click.Context, out_path: Path | None, force: bool, **kwargs: Any) -> int:
        """Write definitions for the target's registries that are neither built-in nor declared."""
        from reconciler.commands.export import run_export

        return run_export(_options(ctx, kwargs), out_path, force, sys.stdout, sys.stderr)

    return export


@main.lazy("catalog")
def _catalog_command() -> click.Command:
    @click.command("catalog")
    @click.argument("query", required=False)
    @click.option("--version", "version", default=None,
                  help="Only this version or tag (exact, or a glob such as '1.2.*').")
    @click.option("--registry", "names", multiple=True, help="Only this registry (repeatable).")
    @click.option("--kind", "kinds", multiple=True, type=click.Choice(["helm", "oci", "pack"]),
                  help="Only this kind of content (repeatable).")
    @common_options
    @click.pass_context
    @handle_errors
    def catalog(ctx: click.Context, query: str | None, version: str | None, names: tuple[str, ...],
                kinds: tuple[str, ...], **kwargs: Any) -> int:
        """Query the content the last syncs stored: charts, OCI repositories and tags, packs.

        QUERY matches names: a substring, or a glob with * ? [ ]. Exit 1 when nothing matches.
        """
        from reconciler.commands.catalog import run_catalog
        from reconciler.runner import local_db_path

        opts = _options(ctx, kwargs)
        return run_catalog(local_db_path(opts), target=opts.target, pattern=query,
                           version=version, names=names, kinds=kinds, fmt=opts.fmt, out=sys.stdout, err=sys.stderr)

    return catalog


@main.lazy("schema")
def _schema_command() -> click.Command:
    @click.command("schema")
    @handle_errors
    def schema() -> int:
        """Print the JSON Schema of the definitions format."""
        from importlib import resources

        sys.stdout.write(resources.files("reconciler").joinpath("schema/registry.schema.json").read_text("utf-8"))
        return 0

    return schema


_COMMAND_START = lazy_pattern(r"^(\s*)::")  # GitHub runner: a line that starts with `::` after leading spaces
_COMMAND_V1 = lazy_pattern(r"##(\[|vso\[)")  # the older `##[cmd]` form (and Azure's `##vso[`), anywhere


def neutralise_ci_line(line: str) -> str:
    """A printed line that cannot be read as a CI workflow command (``::error ...``,
    ``::add-mask::``, ``##[set-output]``): a file name with a newline, an endpoint or a server
    message must not inject one into the log. The text stays readable: ``\\::error``."""
    line = _COMMAND_START.sub(lambda m: f"{m.group(1)}\\::", line)
    return _COMMAND_V1.sub(lambda m: f"#\\#{m.group(1)}", line)


class CISafeStream:
    """Wraps stdout/stderr in CI: whole lines are neutralised before they reach the runner
    (line-buffered, so a command split across two writes is still caught)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self._pending = ""
        # click writes to a stream with these attributes as it is (no re-wrapping of a buffer)
        self.encoding: str = getattr(inner, "encoding", None) or "utf-8"
        self.errors: str = getattr(inner, "errors", None) or "strict"

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, self._pending = self._pending.rsplit("\n", 1)
            self.inner.write("\n".join(neutralise_ci_line(line) for line in done.split("\n")) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            # a partial line is written as it stands once neutralised; what follows continues it
            self.inner.write(neutralise_ci_line(self._pending))
            self._pending = ""
        self.inner.flush()

    def isatty(self) -> bool:
        return bool(self.inner.isatty())

    def fileno(self) -> int:
        return self.inner.fileno()

    def writable(self) -> bool:
        return True


def in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true" or environ.get("CI") == "true"


def entry() -> None:
    """Console script: like ``main()``, but usage errors exit 1 (2 means "changes found").
    Output that cannot be written is said (``_flush_output``), not left to the interpreter's
    "Exception ignored" and exit 120."""
    if sys.stdout is None or sys.stderr is None:  # started with a standard stream closed (`>&-`)
        if sys.stderr is not None:
            sys.stderr.write("error: standard output is closed: nothing was done\n")
        sys.exit(1)
    hold_until_exit_starts()  # this process ends with _exit_now: nothing it built is freed
    try:
        _entry_streams()
    except SystemExit as exc:
        if exc.code is None or type(exc.code) is int:
            _exit_now(_flush_output(exc.code or 0))
        raise


def _exit_now(code: int) -> NoReturn:
    """Exit once the output is flushed, without freeing the run's objects one by one: the
    interpreter's teardown of a large plan (every registry, record and listed registry) costs
    a few percent of the run and frees nothing the kernel does not take back at once. The
    ``atexit`` handlers still run (logging's flush, finalizers of temporary files). mypy exits
    the same way (``util.hard_exit``). A run with other threads still alive exits as usual."""
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _flush_output(code: int) -> int:
    """Flush both streams (and the real ones, which ``-q`` and CI wrap); the exit code once
    they are: a stream that cannot take its output (a reader gone, ``| head``; a full disk)
    makes the exit 1, and is pointed at the null device so that the interpreter's own flush
    at exit cannot fail again (the Python docs' recipe, signal module, "Note on SIGPIPE").
    A reader gone is not worth a word, as during the command (``handle_errors``); any
    other failure is said on stderr if it can be."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError) as exc:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, stream.fileno())
                finally:
                    os.close(null)
            except (OSError, ValueError, AttributeError):
                pass
            err = sys.__stderr__
            if not isinstance(exc, BrokenPipeError) and err is not None and stream is not err:
                what = "output" if stream in (sys.stdout, sys.__stdout__) else "errors"
                try:
                    err.write(f"error: cannot write the {what}: {getattr(exc, 'strerror', None) or exc}\n")
                    err.flush()
                except (OSError, ValueError):
                    pass
            code = 1 if code in (0, 2) else code
    return code


def _entry_streams() -> None:
    if in_ci(os.environ):
        sys.stdout = cast(TextIO, CISafeStream(sys.stdout))
        sys.stderr = cast(TextIO, CISafeStream(sys.stderr))
        try:
            _entry()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
    else:
        _entry()


def _entry() -> None:
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
