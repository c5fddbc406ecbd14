"""The installed ``reconcile`` console script, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, init_repo, reconcile_cmd, registry_doc, run, write_defs

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_validate_the_repositorys_own_definitions():
    res = run(REPO_ROOT, "validate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 errors" in res.stdout


def test_dry_run_on_the_repositorys_own_definitions(tmp_path: Path):
    res = run(REPO_ROOT, "--dry-run", "--local-db", str(tmp_path / "l.db"), "--state", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Plan:" in res.stdout and "to create" in res.stdout
    assert not (tmp_path / "s.json").exists()  # a dry-run writes no state


def test_schema_command_prints_the_shipped_schema():
    res = run(REPO_ROOT, "schema")
    assert res.returncode == 0
    assert json.loads(res.stdout) == json.loads((REPO_ROOT / "schema/registry.schema.json").read_text())


def test_usage_error_exits_1_without_traceback(tmp_path: Path):
    res = run(tmp_path, "--no-such-option")
    assert res.returncode == 1 and "No such option" in res.stderr and "Traceback" not in res.stderr


def test_validate_reports_location_and_exit_1(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("HelmRegistry", "h", """
        endpoint: https://h.example.com
        auth: {type: basic, username: u, password: hunter2-literal}
    """)})
    res = run(tmp_path, "validate")
    assert res.returncode == 1
    assert "registries.d/x.yaml:7:" in res.stdout + res.stderr
    assert "hunter2-literal" not in res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    js = run(tmp_path, "validate", "--format", "json")
    assert js.returncode == 1
    problems = json.loads(js.stdout)["problems"]
    assert problems and problems[0]["file"].endswith("x.yaml") and problems[0]["line"] == 7


def test_dry_run_formats_and_detailed_exitcode(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("OciRegistry", "o", """
        endpoint: reg.example.com
        auth: {type: basic, username: u, password: {fromEnv: O_PW}}
    """)})
    commit_all(tmp_path)
    text = run(tmp_path, "--dry-run", "--detailed-exitcode")
    assert text.returncode == 2 and "+ OciRegistry/o" in text.stdout
    assert "auth.password: (sensitive)" in text.stdout
    js = run(tmp_path, "--dry-run", "--format", "json", env={"O_PW": "pw-value-123"})
    data = json.loads(js.stdout)
    assert data["format_version"] == 1 and data["summary"]["create"] == 1
    assert data["changes"][0]["action"] == "create" and data["changes"][0]["name"] == "o"
    assert "pw-value-123" not in js.stdout
    md = run(tmp_path, "--dry-run", "--format", "markdown", env={"O_PW": "pw-value-123"})
    assert md.returncode == 0 and "OciRegistry/o" in md.stdout and "pw-value-123" not in md.stdout


def test_status_and_import(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(tmp_path)
    assert run(tmp_path).returncode == 0
    # forget the state: the registry still exists on the target
    (tmp_path / ".reconciler/state.json").unlink()
    st = run(tmp_path, "status")
    assert "unmanaged" in st.stdout
    imp = run(tmp_path, "import", "h")
    assert imp.returncode == 0 and "imported" in imp.stdout, imp.stdout + imp.stderr
    st = run(tmp_path, "status", "--format", "json")
    rows = {r["name"]: r for r in json.loads(st.stdout)["registries"]}
    assert rows["h"]["state"] == "adopted"
    assert rows["Bitnami"]["state"] == "built-in"
    assert run(tmp_path, "--dry-run", "--detailed-exitcode").returncode == 0
    missing = run(tmp_path, "import", "nope")
    assert missing.returncode == 1 and "no registry named 'nope'" in missing.stderr


def test_json_output_on_invalid_definitions_and_sync_refuses(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("HelmRegistry", "h", "endpoint: 42")})
    res = run(tmp_path, "--dry-run", "--format", "json")
    assert res.returncode == 1
    data = json.loads(res.stdout)
    assert data["valid"] is False and data["errors"][0]["line"] == 6
    sync = run(tmp_path, "sync")
    assert sync.returncode == 1 and "nothing was synced" in sync.stderr


def test_import_json(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(tmp_path)
    assert run(tmp_path).returncode == 0
    (tmp_path / ".reconciler/state.json").unlink()
    res = run(tmp_path, "import", "--all", "--format", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["imported"] == 1 and data["registries"][0]["result"] == "imported"


def test_the_tools_own_credentials_are_never_a_registry_secret(tmp_path: Path):
    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("OciRegistry", "o", """
        endpoint: reg.example.com
        auth: {type: basic, username: u, password: {fromEnv: PALETTE_API_KEY}}
    """)})
    commit_all(tmp_path)
    res = run(tmp_path, "--dry-run", "--preflight", env={"PALETTE_API_KEY": "the-api-key-0000"})
    assert res.returncode == 1 and "registries.d/x.yaml:7:" in res.stderr and "PALETTE_API_KEY is reserved" in res.stderr
    assert "the-api-key-0000" not in res.stdout + res.stderr
    # and at the edge too, whatever reached it
    from reconciler.model import Registry
    from reconciler.secrets import resolve

    reg = Registry("OciRegistry", "o", "tenant", {"auth": {"password": {"fromEnv": "GITHUB_TOKEN"}}})
    values, problems = resolve(reg, base_dir=tmp_path, environ={"GITHUB_TOKEN": "gh-token-1234"})
    assert values == {"auth.password": None} and "reserved" in problems[0]


def _workflow_commands(text: str) -> list[str]:
    """Lines GitHub's runner would execute: `::cmd` after leading whitespace, or `##[cmd]`."""
    return [line for line in text.splitlines() if line.lstrip().startswith("::") or "##[" in line]


def test_output_in_ci_cannot_inject_workflow_commands(tmp_path: Path):
    """Issue 9.29: a file name or a field with a newline printed `::error ...` (or `##[...]`) at
    the start of a log line, which GitHub executes as a workflow command."""
    init_repo(tmp_path)
    write_defs(tmp_path, {"ok.yaml": registry_doc("HelmRegistry", "h", """
        endpoint: https://h.example.com
        "x\\n::add-mask::hide\\n  ::error file=a::injected\\n##[warning]v1": 1
    """)})
    try:
        (tmp_path / "registries.d" / "a\n::error file=x::pwned\n##[set-output name=a]b.yaml").write_text("- a\n")
    except OSError:
        pass
    for args in (["validate"], ["--dry-run"], ["validate", "--format", "json"], ["--dry-run", "--format", "markdown"]):
        res = run(tmp_path, *args, env={"GITHUB_ACTIONS": "true"})
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "injected" in res.stdout + res.stderr  # still shown, as text
        assert _workflow_commands(res.stdout + res.stderr) == [], (args, res.stdout + res.stderr)


def test_ci_safe_stream_catches_commands_split_across_writes():
    import io

    from reconciler.cli import CISafeStream

    sink = io.StringIO()
    stream = CISafeStream(sink)
    for chunk in ["ok\n", ":", ":error::x\n  ", "::warning::y", "\nz ##", "[cmd]\nend"]:
        stream.write(chunk)
    stream.flush()
    assert _workflow_commands(sink.getvalue()) == []
    assert sink.getvalue().splitlines()[0] == "ok" and sink.getvalue().endswith("end")


def test_apply_markdown_says_which_changes_failed_and_why(tmp_path: Path, monkeypatch):
    """Issue 9.32: `reconcile --format markdown` (what apply.yml writes to the job summary) left
    out which changes failed and why. One create fails on the target; the other is applied."""
    from click.testing import CliRunner

    from reconciler import cli
    from reconciler.errors import TargetError
    from reconciler.targets.local import LocalTarget

    init_repo(tmp_path)
    write_defs(tmp_path, {"x.yaml": registry_doc("HelmRegistry", "good", "endpoint: https://g.example.com")
                          + "---\n" + registry_doc("HelmRegistry", "bad", "endpoint: https://b.example.com")})
    sha = commit_all(tmp_path)
    real_create = LocalTarget.create

    def create(self, registry, secrets):
        if registry.name == "bad":
            raise TargetError("quota exceeded:\nat most 1 registry on this tenant", status=403)
        return real_create(self, registry, secrets)

    monkeypatch.setattr(LocalTarget, "create", create)
    res = CliRunner().invoke(cli.main, ["--dir", str(tmp_path), "--format", "markdown"])
    assert res.exit_code == 1, res.output
    text = res.stdout
    assert text.startswith("<!-- reconcile-plan -->\n### reconcile apply")
    assert "**Apply: 1 change(s) applied, 1 failed**" in text
    assert "create `HelmRegistry/bad`: quota exceeded: at most 1 registry on this tenant" in text
    assert f"**commit** `{sha[:7]}`" in text and "**target** `local`" in text


PACKS = registry_doc("PackRegistry", "legacy", """
    endpoint: https://packs.example.com
    auth: {type: noAuth}
""")  # valid, with a warning (legacy Pack registry)


def _quiet_repo(root: Path) -> Path:
    init_repo(root)
    write_defs(root, {"p.yaml": PACKS, "h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    commit_all(root)
    return root


def test_quiet_prints_nothing_for_every_command_that_succeeds(tmp_path: Path):
    """Issue 12.5: `-q` ("only errors") still printed the whole plan on apply."""
    root = _quiet_repo(tmp_path)
    for args in (["-q", "validate"], ["validate", "-q"], ["-q", "--dry-run"], ["--dry-run", "--detailed-exitcode", "-q"],
                 ["-q"], ["-q", "status"], ["status", "-q"], ["-q", "--dry-run"], ["-q"],
                 ["import", "--all", "-q"]):
        res = run(root, *args)
        assert res.returncode in (0, 2), (args, res.stdout, res.stderr)
        assert (res.stdout, res.stderr) == ("", ""), args
    assert json.loads((root / ".reconciler/state.json").read_text())["registries"]  # the apply did happen


def test_quiet_still_prints_errors(tmp_path: Path, monkeypatch):
    root = _quiet_repo(tmp_path)
    write_defs(root, {"p.yaml": PACKS, "bad.yaml": registry_doc("HelmRegistry", "b", "endpoint: https://b.example.com\ncolour: red")})
    for args in (["-q", "validate"], ["-q", "--dry-run"], ["-q"]):
        res = run(root, *args)
        assert res.returncode == 1
        out = res.stdout + res.stderr
        assert "registries.d/bad.yaml:" in out and "colour" in out, args
        assert "legacy Pack" not in out and "OCI is recommended" not in out  # warnings are not errors
    # a failed sync (no network here): the failure line only, no table
    write_defs(root, {"p.yaml": PACKS, "h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    assert run(root).returncode == 0
    res = run(root, "-q", "sync", "--registry", "legacy")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == ["sync failed for: PackRegistry/legacy (Failed)"], res.stderr
    # a failed change during apply is an error: shown on stderr, the successful one is not
    root = _quiet_repo(tmp_path / "again")
    from click.testing import CliRunner

    from reconciler import cli
    from reconciler.errors import TargetError
    from reconciler.targets.local import LocalTarget

    write_defs(root, {"p.yaml": PACKS, "h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    real_create = LocalTarget.create

    def create(self, registry, secrets):
        if registry.kind == "HelmRegistry":
            raise TargetError("boom: the tenant refused it")
        return real_create(self, registry, secrets)

    monkeypatch.setattr(LocalTarget, "create", create)
    res = CliRunner().invoke(cli.main, ["--dir", str(root), "-q"])
    assert res.exit_code == 1
    assert res.stdout == ""
    assert "create HelmRegistry/h: FAILED: boom: the tenant refused it" in res.stderr
    assert "PackRegistry/legacy" not in res.stderr and "Apply: 1 change(s) applied, 1 failed" in res.stderr


def _many(root: Path, n: int) -> None:
    init_repo(root)
    write_defs(root, {f"r{i:03d}.yaml": registry_doc("HelmRegistry", f"h{i:03d}", f"endpoint: https://h{i}.example.com")
                      for i in range(n)})


def test_a_plan_builds_none_of_the_subcommands_and_help_lists_them_all(tmp_path: Path):
    """Each subcommand is built when first asked for: a plan pays for no option of another
    command; ``--help`` and "Did you mean" still see every one."""
    _many(tmp_path, 2)
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom reconciler import cli\n"
             "res = CliRunner().invoke(cli.main, sys.argv[1:])\n"
             "print(res.exit_code, sorted(cli.main.commands))\nprint(res.output)")
    built = subprocess.run([sys.executable, "-c", probe, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert built.stdout.splitlines()[0] == "0 []", built.stdout + built.stderr
    every = ["catalog", "export", "import", "schema", "status", "sync", "unlock", "validate"]
    helped = subprocess.run([sys.executable, "-c", probe, "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert helped.stdout.splitlines()[0] == f"0 {every}"
    assert all(f"\n  {name} " in helped.stdout for name in every)
    typo = run(tmp_path, "valdate")
    assert typo.returncode == 1 and "Did you mean 'validate'?" in typo.stderr


def _env_buffered(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "CI", "GITHUB_ACTIONS")}
    return {**env, **extra}


@pytest.mark.parametrize("ci", [False, True], ids=["terminal", "ci"])
def test_output_that_cannot_be_written_is_an_error_in_words(tmp_path: Path, ci: bool):
    """A full disk under the output: exit 1 with the system's words, never the interpreter's
    'Exception ignored' and exit 120, nor 2 ("changes found") for a plan nobody can read."""
    _many(tmp_path, 3)
    with open("/dev/full", "w") as full:
        res = subprocess.run([*reconcile_cmd(), "--dry-run", "--detailed-exitcode"], cwd=tmp_path, stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=60,
                             env=_env_buffered(**({"CI": "true"} if ci else {})))
    assert res.returncode == 1, res.stderr
    assert "error: cannot write the output: No space left on device" in res.stderr
    assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr


def test_a_reader_gone_is_exit_1_without_a_word(tmp_path: Path):
    """`reconcile --dry-run | head -1`, the reader gone before the plan is written: exit 1,
    as a broken pipe during the command is, with nothing on stderr but the command's own."""
    _many(tmp_path, 3)
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen([*reconcile_cmd(), "--dry-run"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, env=_env_buffered())
        assert proc.stdout is not None
        proc.stdout.close()  # before the process has written anything: it takes far longer to start
        code = proc.wait(timeout=60)
        stderr.seek(0)
        err = stderr.read()
    assert code == 1, err
    assert "Exception ignored" not in err and "Broken pipe" not in err and "Traceback" not in err


def test_a_closed_standard_output_is_an_error_and_changes_nothing(tmp_path: Path):
    """Started with stdout closed (`reconcile >&-`): nothing to show a plan or an apply on, so
    nothing is done; before, an internal error once the plan was made."""
    _many(tmp_path, 3)
    for args in (["--dry-run"], []):
        res = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *reconcile_cmd(), *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env=_env_buffered())
        assert res.returncode == 1, res.stderr
        assert "error: standard output is closed: nothing was done" in res.stderr
        assert "internal error" not in res.stderr
        assert not (tmp_path / ".reconciler").exists()


_HELD_PROBE = ("import atexit, sys\n"
               "import reconciler.cli as cli, reconciler.lifetime as lifetime\n"
               "def show():\n"
               "    held = lifetime.held()\n"
               "    load = held.get('load')\n"
               "    sys.stderr.write('held %s; %s registries, %s documents\\n' % (sorted(held),\n"
               "        len(load[0].desired.registries) if load else '-', len(load[1][0][1]) if load else '-'))\n"
               "atexit.register(show)\n"
               "sys.argv = ['reconcile', *sys.argv[1:]]\n")


def test_the_console_script_frees_nothing_it_exits_with(tmp_path: Path) -> None:
    """A dry run keeps what it built (the documents, the registries, the record, the listing, the
    plan) until its hard exit instead of freeing it object by object as each function returns:
    about 4 % of a cold plan of 5,000 registries (bench/plan.py). In-process callers hold nothing."""
    _many(tmp_path, 3)
    res = subprocess.run([sys.executable, "-c", _HELD_PROBE + "cli.entry()\n", "--dry-run"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env=_env_buffered())
    assert res.returncode == 0, res.stderr
    assert "held ['load', 'observed', 'plan']; 3 registries, 3 documents" in res.stderr, res.stderr
    # validate holds what it loaded; an apply holds its plan too
    for args, held in ((["validate"], "['load']"), ([], "['load', 'observed', 'plan']")):
        res = subprocess.run([sys.executable, "-c", _HELD_PROBE + "cli.entry()\n", *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env=_env_buffered())
        assert res.returncode == 0, res.stderr
        assert f"held {held}; 3 registries, 3 documents" in res.stderr, (args, res.stderr)
    # the same run in the same process as its caller (a test, a library user): nothing held, all freed
    probe = _HELD_PROBE + "from click.testing import CliRunner\nCliRunner().invoke(cli.main, sys.argv[1:])\n"
    res = subprocess.run([sys.executable, "-c", probe, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=_env_buffered())
    assert res.returncode == 0, res.stderr
    assert "held []; -" in res.stderr, res.stderr


def test_the_fast_exit_still_runs_atexit_handlers_and_flushes_what_they_write(tmp_path: Path) -> None:
    """The console script leaves with os._exit once its output is flushed (no teardown of the
    plan object by object), but after the atexit handlers (logging's flush, temporary files'
    finalizers) have run, and with what they write flushed too."""
    code = ("import atexit, sys\n"
            "import reconciler.cli as cli\n"
            "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
            "sys.argv = ['reconcile', 'schema']\n"
            "cli.entry()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in CI
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("atexit ran") and '"$schema"' in res.stdout, res.stdout[-300:]
