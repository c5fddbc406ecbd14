"""Adversarial command lines: every bad input is one clear error line, exit 1, no traceback,
and changes nothing (no state written, no API call)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, git, init_repo, reconcile_cmd, registry_doc, run, write_defs

HELM = registry_doc("HelmRegistry", "h", "endpoint: http://127.0.0.1:9/charts")


def _repo(root: Path) -> Path:
    init_repo(root)
    write_defs(root, {"h.yaml": HELM})
    commit_all(root)
    return root


def _fails(res: subprocess.CompletedProcess, *needles: str) -> None:
    both = res.stdout + res.stderr
    assert res.returncode == 1, both
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    for n in needles:
        assert n in both, both


# ---------------------------------------------------------------- --dir and registries.d/

@pytest.mark.parametrize("args", [[], ["validate"]])
def test_dir_that_does_not_exist_is_an_error_and_is_not_created(tmp_path: Path, args: list[str]):
    missing = tmp_path / "nope"
    _fails(run(tmp_path, "--dir", str(missing), *args), "--dir", "does not exist")
    assert not missing.exists()


@pytest.mark.parametrize("args", [[], ["import", "--all"], ["validate"], ["validate", "--format", "json"]])
def test_repository_without_registries_d_is_an_error(tmp_path: Path, args: list[str]):
    (tmp_path / "repo").mkdir()
    _fails(run(tmp_path, "--dir", "repo", *args), "no registries.d/ directory in repo")
    assert not (tmp_path / "repo/.reconciler").exists()


@pytest.mark.parametrize("args, keys", [
    (["validate", "--format", "json"], {"error", "problems", "files", "registries"}),
    (["--dry-run", "--format", "json"], {"format_version", "has_changes", "valid", "errors", "error"}),
    (["--format", "json"], {"format_version", "has_changes", "valid", "errors", "error"}),
])
def test_without_registries_d_a_json_caller_gets_a_json_document_saying_why(tmp_path: Path, args, keys):
    """Adversarial pass 6, item 5: with --format json and no registries.d/, stdout was empty
    (rc 1, the error on stderr only): validate's JSON error branch came after the check, and
    a plan's invalid-definitions document was never reached. Same shapes as those."""
    (tmp_path / "repo").mkdir()
    res = run(tmp_path, "--dir", "repo", *args)
    _fails(res, "no registries.d/ directory in repo")
    doc = json.loads(res.stdout)
    assert set(doc) == keys and "no registries.d/ directory in repo" in doc["error"], doc
    assert doc.get("valid", False) is False  # a plan's: the definitions were never read
    assert "no registries.d/ directory in repo" in res.stderr  # the log says it too


def test_empty_registries_d_is_fine(tmp_path: Path):
    (tmp_path / "registries.d").mkdir()
    res = run(tmp_path, "--dry-run")
    assert res.returncode == 0 and "No changes" in res.stdout, res.stderr


def test_ref_without_registries_d_is_an_error(tmp_path: Path):
    root = _repo(tmp_path / "r")
    git(root, "rm", "-rq", "registries.d")
    git(root, "commit", "-qm", "rm")
    _fails(run(root, "--dry-run", "--ref", "HEAD"), "no registries.d/ directory in commit HEAD")
    _fails(run(root, "--dry-run", "--ref", "HEAD~1", "--dir", str(tmp_path)), "not in a git repository")


@pytest.mark.parametrize("ref", ["nosuch", "--help", "0" * 40, "1" * 40, "deadbeef"])
def test_bad_ref(tmp_path: Path, ref: str):
    """The all-zero SHA is GitHub's ``github.event.before`` on a branch's first push: a full SHA
    gitpython takes without reading was an internal error (ValueError) once its tree was read."""
    root = _repo(tmp_path)
    for args in (["--dry-run"], ["validate"]):
        _fails(run(root, *args, "--ref", ref), f"--ref {ref}: no such commit")
    if ref == "0" * 40:
        _fails(run(root, "--dry-run", "--ref", ref), "the all-zero SHA is what GitHub gives")


def _link(d: Path, name: str, to: str) -> None:
    os.symlink(to, d / name)


BAD_FILES = [
    (lambda d: (_link(d, "a.yaml", "b.yaml"), _link(d, "b.yaml", "a.yaml")), "symlink loop"),
    (lambda d: _link(d, "gone.yaml", "missing.yaml"), "registries.d/gone.yaml:1:1: dangling symlink"),
    (lambda d: (d / "bin.yaml").write_bytes(b"\x00\xff\xfe" * 100), "registries.d/bin.yaml:1:2: not UTF-8"),
    (lambda d: (d / "big.yaml").write_text("# " + "a" * 2_000_000), "big.yaml:1:1: file is too large"),
    (lambda d: (d / "t.yaml").write_text("kind: HelmRegistry\nmetadata:\n\tname: t\n"), "t.yaml:3:1: YAML syntax error"),
    (lambda d: (d / "l.yaml").write_text("- a\n- b\n"), "l.yaml:1:1: a document must be a mapping"),
    (lambda d: (d / "s.yaml").write_text("hello\n"), "s.yaml:1:1: a document must be a mapping"),
    (lambda d: (d / "bomb.yaml").write_text(
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))),
     "aliases expand to more than"),
    (lambda d: (d / "set.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Settings\nmetadata: {name: a}\nspec: {profile: saas}\n---\n"
        "apiVersion: reconciler/v1\nkind: Settings\nmetadata: {name: b}\nspec: {profile: saas}\n"),
     "set.yaml:7:7: a second Settings document"),
    (lambda d: (d / "tag.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata: {name: tag}\nspec:\n  endpoint: https://t\n"
        "  sync: !!bool maybe\n"), "tag.yaml:6:9: the value is not a valid bool (explicit tag !!bool)"),
]


def test_bad_definition_files_each_reported_in_one_run(tmp_path: Path):
    root = _repo(tmp_path)
    for make, _ in BAD_FILES:
        make(root / "registries.d")
    # two more errors than files: the symlink loop has two ends, and the schema also refuses 'maybe'
    _fails(run(root), *(m for _, m in BAD_FILES), f"{len(BAD_FILES) + 2} error(s) in the definitions; nothing was planned")
    assert not (root / ".reconciler/state.json").exists()


def test_directory_named_like_a_yaml_file_is_walked(tmp_path: Path):
    root = _repo(tmp_path)
    (root / "registries.d/x.yaml").mkdir()
    res = run(root, "--dry-run")
    assert res.returncode == 0 and "+ HelmRegistry/h" in res.stdout, res.stderr


# ---------------------------------------------------------------- --state

def test_state_in_an_unwritable_directory(tmp_path: Path):
    root = _repo(tmp_path)
    blocker = root / "blocker"
    blocker.write_text("a file, not a directory")
    _fails(run(root, "--state", "blocker/sub/s.json"), "cannot create the state lock")
    assert blocker.read_text() == "a file, not a directory"


@pytest.mark.parametrize("args", [["--dry-run"], [], ["sync"]])
def test_state_that_is_a_directory(tmp_path: Path, args: list[str]):
    root = _repo(tmp_path)
    (root / "sd").mkdir()
    _fails(run(root, "--state", "sd", *args), "sd")
    assert list((root / "sd").iterdir()) == [] and not (root / "sd.lock").exists()


@pytest.mark.parametrize(("state", "args", "message"), [
    ("git:st", ["--dry-run"], "not inside a git repository"),
    ("git:bad..name", [], "not a valid branch name"),
    ("git:-x", ["--dry-run"], "not a valid branch name"),
    ("git:HEAD", ["--dry-run"], "not a valid branch name"),  # a ref git accepts, no branch: refs/heads/HEAD
    ("git:@", [], "not a valid branch name"),
    ("git:refs/heads/x", ["--dry-run"], "not a valid branch name"),
    ("file:", ["--dry-run"], "--state file: needs a path"),  # was an internal error (PosixPath('.'))
    ("file:", ["status"], "--state file: needs a path"),
])
def test_git_state_errors(tmp_path: Path, state: str, args: list[str], message: str):
    root = tmp_path / "plain"
    write_defs(root, {"h.yaml": HELM})
    if "st" not in state:
        init_repo(root)
        commit_all(root)
    _fails(run(root, "--state", state, *args), message)
    if "st" not in state:
        assert git(root, "for-each-ref", "--format=%(refname)") == "refs/heads/main"  # no branch made


@pytest.mark.parametrize("args", [["--dry-run", "--ref", "HEAD"], ["validate", "--ref", "HEAD"], ["--state", "git:st"]])
def test_a_repository_git_refuses_is_said_in_gits_words(tmp_path: Path, args: list[str]):
    """A .git/config git rejects killed gitpython's git process: a silent exit 1 (a broken
    pipe taken for a closed stdout), 'no such commit', or an internal error (exit code 128)."""
    root = _repo(tmp_path)
    with open(root / ".git/config", "a") as fh:
        fh.write('[user]\n\tname = "a\\qb"\n')
    _fails(run(root, *args), "git failed: fatal: bad config line")
    assert not (root / ".reconciler/local.db").exists()


@pytest.mark.parametrize(("name", "email", "message"), [
    ("CI Bot", "<ci@example.com>", None),  # taken without its brackets, as git does
    ("CI <Bot>", "ci@example.com", "the committer name 'CI <Bot>'"),
    ("CI Bot", "ci@exa>mple.com", "the committer email 'ci@exa>mple.com'"),
    ("CI\nBot", "ci@example.com", "must not contain '<', '>' or a line feed"),
])
def test_committer_identity_for_the_git_state(tmp_path: Path, name: str, email: str, message: str | None):
    root = _repo(tmp_path)
    res = run(root, "--state", "git:st", "-q", env={"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email})
    if message is None:
        assert res.returncode == 0, res.stderr
        assert git(root, "log", "-1", "--format=%cn <%ce>", "st") == "CI Bot <ci@example.com>"
    else:
        _fails(res, message, "nothing was changed")  # was an internal error (ValueError from gitpython)
        assert git(root, "for-each-ref", "--format=%(refname)", "refs/heads/st") == ""
        assert not (root / ".reconciler/local.db").exists() or "create" not in res.stdout


def _good_state(root: Path) -> dict:
    assert run(root).returncode == 0
    return json.loads((root / ".reconciler/state.json").read_text())


def _mutations():
    def rec(field, value):
        def f(s):
            s["registries"][0][field] = value
        return f

    def top(field, value):
        def f(s):
            s[field] = value
        return f

    return [
        (lambda s: [], "not a JSON object"),
        (lambda s: {}, "no integer 'version'"),
        (top("version", 99), "newer than this reconcile understands"),
        (top("version", True), "no integer 'version'"),
        (top("serial", "x"), "'serial' must be a non-negative integer"),
        (lambda s: s.pop("lineage") and s, "missing field 'lineage'"),
        (lambda s: s["registries"].append(dict(s["registries"][0])), "recorded twice"),
        (rec("last_sync", "x"), "'last_sync' must be an object"),
        (rec("last_sync", {"last_success": 5}), "'last_sync.last_success' must be a string"),
        (rec("spec", 5), "'spec' must be an object"),
        (rec("secret_hashes", []), "'secret_hashes' must be an object"),
        (rec("scope", 7), "'scope' must be a string"),
        (rec("protect", "yes"), "'protect' must be true or false"),
        (rec("colour", "red"), "unknown field 'colour'"),
    ]


MUTATIONS = _mutations()


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _repo(tmp_path_factory.mktemp("applied"))
    assert run(root).returncode == 0
    return root


@pytest.mark.parametrize(("mutate", "message"), MUTATIONS, ids=[m for _, m in MUTATIONS])
def test_corrupt_state_is_refused_by_every_command(applied: Path, tmp_path: Path, mutate, message: str):
    root = tmp_path / "r"
    shutil.copytree(applied, root, symlinks=True)
    path = root / ".reconciler/state.json"
    data = json.loads(path.read_text())
    result = mutate(data)
    data = data if result is None or result is data else result
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    every = (["--dry-run"], ["status"], ["sync", "--no-wait"], [], ["import", "--all"])
    for args in every if "last_sync" in message else (["status"] if "spec" in message else ["--dry-run"],):
        _fails(run(root, *args), ".reconciler/state.json", message)
    assert path.read_bytes() == before


def test_truncated_state_and_corrupt_local_db(applied: Path, tmp_path: Path):
    root = tmp_path / "r"
    shutil.copytree(applied, root, symlinks=True)
    state = root / ".reconciler/state.json"
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    _fails(run(root, "--dry-run"), "state is not valid JSON")
    state.write_bytes(good)
    (root / ".reconciler/local.db").write_bytes(os.urandom(4096))
    for args in (["--dry-run"], ["status"]):
        _fails(run(root, *args), "local target", "file is not a database")
    assert state.read_bytes() == good


@pytest.mark.parametrize(("damage", "message"), [
    ("{\"endpoint\": ", "is not valid JSON"), ("{} trailing", "is not valid JSON (Extra data"),
    ("not json", "is not valid JSON"), ("[]", "'spec' must be an object, not list"),
    ("null", "'spec' must be an object"), ('"x"', "'spec' must be an object, not str"),
    ('{"auth": "basic"}', "'spec.auth' must be an object, not str"),
    ('{"auth": {"type": 5}}', "'spec.auth.type' must be a string"),
    ("[" * 5000 + "]" * 5000, "is not valid JSON (maximum recursion depth"),  # RecursionError in the decoder
], ids=lambda v: str(v)[:24])
def test_a_hand_edited_row_of_the_local_database_is_a_clear_error(applied: Path, tmp_path: Path, damage: str,
                                                                  message: str):
    """A row whose spec is not JSON, or not a spec the planner can diff (edited with sqlite3 by
    hand), is refused in words by every command that reads specs, and changes nothing; each
    was an 'internal error' (exit 3) in the plan."""
    import sqlite3

    root = tmp_path / "r"
    shutil.copytree(applied, root, symlinks=True)
    db = root / ".reconciler/local.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE registries SET spec = ? WHERE name = 'h'", (damage,))
    conn.close()
    state = root / ".reconciler/state.json"
    before, rows = state.read_bytes(), db.read_bytes()
    for args in (["--dry-run"], [], ["status"], ["export"]):
        _fails(run(root, *args), "the spec", "HelmRegistry/h", message, "changed outside reconcile")
    assert state.read_bytes() == before and db.read_bytes() == rows


LONG = "a" * 300  # one path component over the file system's 255 bytes: ENAMETOOLONG


@pytest.mark.parametrize("args", [
    ["validate", f"{LONG}.yaml"], ["export", "--out", f"{LONG}.yaml"], ["--dry-run", "--local-db", f"{LONG}.db"],
    ["--state", f"{LONG}.json"], ["--dry-run", "--state", f"{LONG}/s.json"],
], ids=["validate-path", "export-out", "local-db", "state", "state-dir"])
def test_a_path_the_system_refuses_is_an_error_not_a_bug(applied: Path, tmp_path: Path, args: list[str]):
    """Each was 'internal error: OSError: [Errno 36] File name too long'; now the system's own
    words, with the path, and exit 1."""
    root = tmp_path / "r"
    shutil.copytree(applied, root, symlinks=True)
    before = (root / ".reconciler/state.json").read_bytes()
    _fails(run(root, *args), "File name too long")
    assert (root / ".reconciler/state.json").read_bytes() == before


def test_a_cache_directory_the_system_refuses_only_turns_the_cache_off(tmp_path: Path):
    root = _repo(tmp_path)
    res = run(root, "validate", env={"RECONCILER_CACHE_DIR": str(tmp_path / LONG)})
    assert res.returncode == 0 and "1 registry: 0 errors" in res.stdout, res.stderr


# ---------------------------------------------------------------- --target palette

@pytest.mark.parametrize(("extra", "env", "message"), [
    ([], {}, "PALETTE_API_KEY"),
    (["--ca-file", "missing.pem"], {"PALETTE_API_KEY": "k-123-secret"}, "--ca-file missing.pem: cannot read"),
    (["--ca-file", "junk.pem"], {"PALETTE_API_KEY": "k-123-secret"}, "--ca-file junk.pem: not a PEM CA bundle"),
    (["--endpoint", "http://[::1"], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https:// URL"),
    (["--endpoint", "127.0.0.1:1"], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https:// URL"),
    (["--endpoint", "ftp://127.0.0.1/"], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https:// URL"),
    (["--endpoint", "http://"], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https:// URL"),
    (["--endpoint", "http://127.0.0.1:99999"], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https://"),
    (["--endpoint", ""], {"PALETTE_API_KEY": "k-123-secret"}, "is not an http:// or https:// URL"),
    ([], {"PALETTE_API_KEY": "k-123-secret", "PALETTE_ENDPOINT": "not a url"}, "is not an http:// or https:// URL"),
], ids=["no-key", "ca-missing", "ca-junk", "bad-port", "no-scheme", "ftp", "no-host", "port-range", "empty", "env-endpoint"])
def test_palette_options_fail_before_any_request(tmp_path: Path, extra, env, message):
    root = _repo(tmp_path)
    (root / "junk.pem").write_text("not a certificate\n")
    env = {"PALETTE_ENDPOINT": "http://127.0.0.1:1", **env}
    res = run(root, "--target", "palette", *extra, "--dry-run", env=env, timeout=20)
    _fails(res, message)
    assert "k-123-secret" not in res.stdout + res.stderr
    assert not (root / ".reconciler/state-palette.json").exists()


# ---------------------------------------------------------------- other commands and options

@pytest.mark.parametrize(("args", "message"), [
    (["--max-deletions", "-1"], "Invalid value for '--max-deletions'"),
    (["--lock-timeout", "abc"], "Invalid value for '--lock-timeout'"),
    (["--format", "yaml"], "Invalid value for '--format'"),
    (["import"], "name a registry to import, or pass --all"),
    (["import", "nosuch"], "no registry named 'nosuch'"),
    (["sync", "--registry", "nosuch"], "not a managed registry: nosuch"),
    (["--preflight"], "--preflight goes with --dry-run"),
])
def test_usage_errors(tmp_path: Path, args: list[str], message: str):
    _fails(run(_repo(tmp_path), *args), message)


@pytest.mark.parametrize("args", [["status", "--format", "json"], ["sync", "--format", "json"]])
def test_fresh_repository_status_and_sync(tmp_path: Path, args: list[str]):
    res = run(_repo(tmp_path), *args)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    if "json" in args:
        json.loads(res.stdout)


# ---------------------------------------------------------------- group options before a subcommand

def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / ".reconciler").rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args", [
    ["--dry-run", "sync", "--force"],
    ["--dry-run", "sync", "--no-wait"],
    ["--dry-run", "import", "--all"],
    ["--detailed-exitcode", "sync"],
    ["--preflight", "import", "h"],
])
def test_plan_options_before_a_subcommand_are_refused_and_change_nothing(tmp_path: Path, args: list[str]):
    """`reconcile --dry-run sync` used to drop --dry-run and really sync (issue 9.24)."""
    root = _repo(tmp_path)
    assert run(root).returncode == 0
    if "import" in args:
        (root / ".reconciler/state.json").unlink()  # something to import
    before = _snapshot(root)
    res = run(root, *args)
    _fails(res, f"not of `reconcile {args[1]}`", "nothing was done")
    assert _snapshot(root) == before


def test_dry_run_before_a_read_only_subcommand_is_harmless(tmp_path: Path):
    res = run(_repo(tmp_path), "--dry-run", "validate")
    assert res.returncode == 0 and "0 errors" in res.stdout, res.stderr


# ---------------------------------------------------------------- --ref, failpoints, -vv

@pytest.mark.parametrize(("ref", "ok"), [
    ("HEAD@{10 years ago}", True),   # gitpython: NotImplementedError; git rev-parse resolves it
    ("HEAD@{0}", True),
    ("HEAD@{99}", False),            # gitpython: IndexError
    ("HEAD@{not a date at all}", False),
    ("main@{upstream}", False),
])
def test_reflog_refs_resolve_or_fail_clearly(tmp_path: Path, ref: str, ok: bool):
    root = _repo(tmp_path)
    res = run(root, "--dry-run", "--ref", ref)
    if ok:
        assert res.returncode == 0 and "+ HelmRegistry/h" in res.stdout, res.stderr
    else:
        _fails(res, f"--ref {ref}: no such commit")
    for args in (["validate", "--ref", ref], ["--ref", ref, "validate"]):
        res = run(root, *args)
        assert res.returncode == (0 if ok else 1) and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("value", ["x", "-1", "0", "1.5", "\u00b2", "99999999999999999999"])
def test_crash_failpoint_values_never_break_a_run(tmp_path: Path, value: str):
    """RECONCILER_CRASH_AT is a test hook: junk is ignored, never a ValueError (issue 9.22)."""
    root = _repo(tmp_path)
    res = run(root, env={"RECONCILER_CRASH_AT": value.encode().decode("unicode_escape")})
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "(1 applied" in res.stderr or "1 change(s) applied" in res.stderr, res.stderr


def test_crash_failpoint_is_inert_unless_the_test_suite_arms_it(tmp_path: Path):
    """A user's RECONCILER_CRASH_AT=1 does nothing: only RECONCILER_TESTHOOKS=1 (conftest) arms it."""
    root = _repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_TESTHOOKS"}
    env["RECONCILER_CRASH_AT"] = "1"
    res = subprocess.run([*reconcile_cmd()], cwd=root, env=env, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    armed = run(root, "--dry-run", env={"RECONCILER_CRASH_AT": "1"})
    assert run(_repo(tmp_path / "second"), env={"RECONCILER_CRASH_AT": "1"}).returncode == -9
    assert armed.returncode == 0  # a dry run passes no checkpoint


def test_an_os_error_is_said_in_the_systems_words_and_one_without_them_is_a_bug(monkeypatch: pytest.MonkeyPatch,
                                                                                   tmp_path: Path):
    from click.testing import CliRunner

    from reconciler import cli
    from reconciler.commands import status

    root = _repo(tmp_path)
    for exc, code, says in ((PermissionError(13, "Permission denied", "/x/y"), 1, "error: /x/y: Permission denied"),
                            (OSError("no errno"), 3, "internal error: OSError: no errno")):
        def boom(*_a, _exc=exc, **_k):
            raise _exc

        monkeypatch.setattr(status, "run_status", boom)
        res = CliRunner().invoke(cli.main, ["status", "--dir", str(root)])
        assert res.exit_code == code and says in res.output, res.output  # an OSError with no words escaped raw
        assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize("flags", [["-v"], ["-vv"], ["--verbose"], ["-v", "-v"], ["--verbose", "--verbose"]])
@pytest.mark.parametrize("where", ["group", "command"])
def test_internal_error_traceback_with_any_verbosity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     flags: list[str], where: str):
    """The internal-error message asks for the -v output: -v, -vv, --verbose all print the traceback."""
    from click.testing import CliRunner

    from reconciler import cli
    from reconciler.commands import status

    def boom(*_a, **_k):
        raise RuntimeError("deliberate bug")

    monkeypatch.setattr(status, "run_status", boom)
    root = _repo(tmp_path)
    argv = [*flags, "status", "--dir", str(root)] if where == "group" else ["status", "--dir", str(root), *flags]
    res = CliRunner().invoke(cli.main, argv)
    assert res.exit_code == 3
    assert "internal error: RuntimeError: deliberate bug" in res.output
    assert "Traceback (most recent call last)" in res.output and "in boom" in res.output
    quiet = CliRunner().invoke(cli.main, ["status", "--dir", str(root)])
    assert quiet.exit_code == 3 and "Traceback" not in quiet.output


@pytest.mark.parametrize("died", [BrokenPipeError, lambda: __import__("git").GitCommandError("cat-file", 128)])
def test_a_git_process_that_dies_early_is_left_to_discover_git_to_explain(tmp_path: Path, monkeypatch, died):
    """Whether gitpython's git process died before or after it was written to decides what it
    raises (the flake the test above once showed: a broken pipe taken for a closed stdout, a
    silent exit 1): either way the presence check says no, and discover_git says git's words."""
    from reconciler import loader

    def dead(repo, ref):
        raise died()

    root = _repo(tmp_path)
    monkeypatch.setattr(loader, "resolve_commit", dead)
    assert loader.definitions_present(root, "HEAD") is False


# ---------------------------------------------------------------- files we write: not git's, not definitions

@pytest.mark.parametrize("option,value", [
    ("--state", ".git/index"), ("--state", ".git/HEAD"), ("--state", "file:.git/reconciler.json"),
    ("--state", "registries.d/s.yaml"), ("--state", "registries.d/sub/state.json"),
    ("--local-db", ".git/local.db"), ("--local-db", "registries.d/local.db"),
])
@pytest.mark.parametrize("args", [[], ["--dry-run"], ["sync", "--timeout", "5"]])
def test_a_state_or_database_among_gits_files_or_the_definitions_is_refused(tmp_path: Path, option: str,
                                                                            value: str, args: list[str]):
    """``--state .git/index`` exited 1 but left ``.git/index.lock`` (our lock is NAME.lock, as
    git's is), after which ``git commit`` failed; ``--state registries.d/s.yaml`` was written,
    then every later run failed on it as a definition."""
    root = _repo(tmp_path / "r")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    _fails(run(root, option, value, *args), option, ".reconciler/")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before  # nothing written
    git(root, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "still works")


def test_a_state_in_a_separate_git_dir_is_refused(tmp_path: Path):
    """Adversarial pass 5: ``git init --separate-git-dir=gd``; ``--state gd/index`` was
    accepted and left ``index.lock`` behind, after which ``git add`` failed."""
    root = tmp_path / "r"
    root.mkdir()
    gd = tmp_path / "gd"
    subprocess.run(["git", "init", "-q", f"--separate-git-dir={gd}", str(root)], check=True)
    write_defs(root, {"h.yaml": HELM})
    _fails(run(root, "--state", str(gd / "index")), "--state", "inside a git directory")
    assert not (gd / "index.lock").exists()
    git(root, "add", "-A")


def _json_after_a_corrupt_state(tmp_path: Path, args) -> tuple[Path, subprocess.CompletedProcess, dict]:
    """``args`` (a --format json command) on a repository whose state is not JSON: exit 1 and
    one JSON document on stdout; (the repository, the run, the document)."""
    root = _repo(tmp_path / "repo")
    (root / ".reconciler").mkdir(exist_ok=True)
    (root / ".reconciler" / "state.json").write_text("{not json")
    res = run(root, *args)
    assert res.returncode == 1, res.stdout + res.stderr
    return root, res, json.loads(res.stdout)


@pytest.mark.parametrize("args", [("--dry-run", "--format", "json"), ("--format", "json")], ids=["plan", "apply"])
def test_a_json_caller_gets_a_json_document_when_the_state_or_target_fails(tmp_path: Path, args):
    """Left open by the fix above: a failure after loading (a corrupt state here; an API error,
    the lock) left stdout empty under --format json. It holds one document saying why now (the
    definitions were valid); nothing was planned or changed."""
    root, res, doc = _json_after_a_corrupt_state(tmp_path, args)
    assert doc["valid"] is True and doc["has_changes"] is False and "state" in doc["error"], doc
    assert doc["error"] in res.stderr  # the log says it too
    assert (root / ".reconciler" / "state.json").read_text() == "{not json"  # never overwritten


@pytest.mark.parametrize("args, keys", [
    (["import", "--all", "--format", "json"], {"imported", "registries", "error"}),
    (["sync", "--format", "json"], {"registries", "failed", "error"}),
    (["status", "--format", "json"], {"state", "target", "serial", "lineage", "registries", "error"}),
])
def test_import_sync_and_status_give_a_json_caller_a_document_when_they_fail(tmp_path: Path, args, keys):
    """Left alone last round: import, sync and status under --format json left stdout empty on
    an error (stderr said why, exit 1). Each writes its own document's shape with an ``error``
    now (what it had done by then: nothing here), and exits 1 as before; the state is untouched."""
    root, res, doc = _json_after_a_corrupt_state(tmp_path, args)
    assert set(doc) == keys and "state" in doc["error"] and doc["registries"] == [], doc
    assert doc["error"] in res.stderr  # the log says it too
    assert (root / ".reconciler" / "state.json").read_text() == "{not json"  # never overwritten


@pytest.mark.parametrize("args", [["import", "--all", "--format", "json"], ["sync", "--format", "json"]])
def test_import_and_sync_give_a_json_caller_the_definitions_errors(tmp_path: Path, args):
    """Invalid definitions: nothing imported or synced, and the JSON caller reads why (the
    problems, as a plan's document gives them), not an empty stdout."""
    root = _repo(tmp_path / "repo")
    write_defs(root, {"bad.yaml": "apiVersion: reconciler/v1\nkind: HelmRegistry\nmetadata:\n  name: x\nspec: {}\n"})
    res = run(root, *args)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["registries"] == [] and doc["errors"] and doc["errors"][0]["file"].endswith("bad.yaml"), doc


def test_a_submodule_under_registries_d_at_a_ref_is_an_error_said_in_words(tmp_path: Path):
    """With --ref, a gitlink (a submodule) under registries.d/ crashed the loader (GitPython's
    Submodule.name, with no .gitmodules: an internal error). Its files are not in this commit:
    an error at its path, so a plan deletes nothing on the word of a partial tree."""
    root = _repo(tmp_path / "r")
    sha = git(root, "rev-parse", "HEAD")
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{sha},registries.d/vendored")
    git(root, "commit", "-qm", "submodule")
    for args in (["--dry-run", "--ref", "HEAD"], ["validate", "--ref", "HEAD"]):
        _fails(run(root, *args), "registries.d/vendored", "submodule")
    git(root, "rm", "-q", "--cached", "registries.d/vendored")
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendored")
    (root / "registries.d" / "link").symlink_to("../vendored")
    git(root, "add", "registries.d/link")
    git(root, "commit", "-qm", "a link to a submodule")
    _fails(run(root, "--dry-run", "--ref", "HEAD"), "registries.d/link", "submodule")  # was skipped silently


@pytest.mark.parametrize("where", ["registries.d/vendored", "registries.d"])
def test_a_submodule_not_checked_out_under_registries_d_is_an_error(tmp_path: Path, where: str):
    """A checkout without its submodules (actions/checkout's default) leaves each one an empty
    directory: its definitions were read as none, and a plan deleted what they declare (all of
    it when registries.d/ itself is the submodule). An empty directory git records as a
    submodule is an error at its path; any other empty directory is still nothing."""
    root = _repo(tmp_path / "r")
    assert run(root).returncode == 0  # h.yaml applied
    sha = git(root, "rev-parse", "HEAD")
    if where == "registries.d":
        git(root, "rm", "-rq", "registries.d")
        (root / "registries.d").mkdir()
    git(root, "update-index", "--add", "--cacheinfo", f"160000,{sha},{where}")
    git(root, "commit", "-qm", "definitions in a submodule")
    (root / where).mkdir(exist_ok=True)  # what a checkout without submodules leaves
    for args in (["--dry-run"], [], ["validate"]):
        _fails(run(root, *args), where, "submodule")
    (root / "registries.d" / "empty").mkdir(exist_ok=True)  # not a submodule: nothing to say
    git(root, "rm", "-q", "--cached", where)
    git(root, "commit", "-qm", "no submodule")
    assert run(root, "validate").returncode == 0
