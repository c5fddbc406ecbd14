"""Adversarial pass 9: bad input gets a clear error with its location and exit 1, and
changes nothing; never a crash or an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gitops_repo import commit_all, git, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import palette_emulator_factory  # noqa: F401
from tests.test_cli_errors import _repo  # one seeded repository for the input tests


@pytest.mark.parametrize("text", [
    "a: " + "[" * 30_000 + "]" * 30_000 + "\n",
    "a: " + "{b: " * 30_000 + "x" + "}" * 30_000 + "\n",
    "- " * 30_000 + "x\n",
], ids=["flow-sequences", "flow-mappings", "block-sequences"])
@pytest.mark.parametrize("args", [["validate"], ["--dry-run"], []], ids=["validate", "plan", "apply"])
def test_yaml_nested_tens_of_thousands_deep_is_a_located_error_not_a_crash(tmp_path: Path, text: str, args):
    """A 60 KB file of ``[[[...`` (or ``{b: {b: ...``, or ``- - - ...``) crashed the process
    with a segmentation fault (exit -11/139, no message): libyaml's composer recurses once per
    level in C, past the stack, before the builder's 64-level bound could say anything."""
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "deep.yaml").write_text(text)
    res = run(root, *args)
    assert res.returncode == 1, (res.returncode, res.stdout[-500:], res.stderr[-500:])
    assert "registries.d/deep.yaml:1:" in res.stdout + res.stderr
    assert "nesting deeper than 64 levels" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert not (root / ".reconciler").exists()


@pytest.mark.parametrize("kind, endpoint, needle", [
    ("HelmRegistry", "http://127.0.0.1:99999/charts", "port"),
    ("HelmRegistry", "http://127.0.0.1:abc/charts", "port"),
    ("HelmRegistry", "http://[::1/charts", "IPv6"),
    ("HelmRegistry", "http://[zz]/charts", "IPv6"),
    ("HelmRegistry", "http://a..b/charts", "host name"),
    ("HelmRegistry", "http://" + "a" * 64 + ".example.com/", "host name"),
    ("HelmRegistry", "http://:80/charts", "no host"),
    ("PackRegistry", "https://packs.example.com:123456", "port"),
    ("OciRegistry", "127.0.0.1:99999", "port"),
    ("OciRegistry", "registry..example.com/v2", "host name"),
])
@pytest.mark.parametrize("args", [["validate"], ["--dry-run", "--preflight"]], ids=["validate", "preflight"])
def test_an_endpoint_whose_host_or_port_cannot_be_read_is_a_located_error(tmp_path: Path, kind, endpoint, needle,
                                                                          args):
    """An endpoint with a port out of range or not a number, an unclosed or invalid IPv6
    bracket, or an empty host label passed validation and was applied; then `--dry-run
    --preflight` and `sync` of it were an internal error (exit 3: ValueError "Port out of
    range", InvalidURL, UnicodeError from the idna codec)."""
    root = _repo(tmp_path / "repo")
    spec = f"endpoint: '{endpoint}'\nsync: false" if kind != "OciRegistry" else (
        f"endpoint: '{endpoint}'\nprovider: helm\nsync: false")
    (root / "registries.d" / "bad.yaml").write_text(registry_doc(kind, "bad", spec))
    res = run(root, *args)
    both = res.stdout + res.stderr
    assert res.returncode == 1, both
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert "registries.d/bad.yaml:6:13: spec.endpoint:" in both and needle in both, both
    assert not (root / ".reconciler").exists()


@pytest.mark.parametrize("endpoint, needle", [
    ("http://1.2.3.999/charts", "IPv4"),
    ("http://\u2603.example/charts", "IDNA"),
    ("http://\uff21.example/charts", "IDNA"),
    ("http://xn--zz.example/charts", "IDNA"),
])
def test_a_host_the_http_client_refuses_is_a_located_error(tmp_path: Path, endpoint, needle):
    """Hosts that urllib and the resolver take but httpx refuses (an IPv4-looking host out of
    range, a name IDNA 2008 refuses, a bad xn-- label) passed validation, and a sync or
    preflight of them was an internal error (InvalidURL, IDNAError)."""
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "bad.yaml").write_text(
        registry_doc("HelmRegistry", "bad", f"endpoint: '{endpoint}'\nsync: false"), encoding="utf-8")
    res = run(root, "validate")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "registries.d/bad.yaml:6:13: spec.endpoint:" in res.stdout and needle in res.stdout, res.stdout


@pytest.mark.parametrize("endpoint", ["https://charts.example.com:8443/a", "http://127.0.0.1:5000/x",
                                      "https://[::1]:443/x", "https://ex\u00e4mple.com/", "https://xn--bcher-kva.com/",
                                      "https://a.b./x", "https://h:/x"])
def test_endpoints_that_can_be_read_still_pass(tmp_path: Path, endpoint):
    root = _repo(tmp_path / "repo")
    (root / "registries.d" / "ok.yaml").write_text(
        registry_doc("HelmRegistry", "ok", f"endpoint: '{endpoint}'\nsync: false"), encoding="utf-8")
    res = run(root, "validate")
    assert res.returncode == 0, res.stdout + res.stderr


NOT_UTF8 = "\udcff\udcfe"  # os.fsencode: the bytes ff fe, as a shell can export them


@pytest.mark.parametrize("args", [[], ["import", "--all"]], ids=["apply", "import"])
@pytest.mark.parametrize("env, message", [
    ({"GIT_COMMITTER_NAME": "CI " + NOT_UTF8}, "the committer name"),
    ({"GIT_COMMITTER_EMAIL": NOT_UTF8 + "@example.com"}, "the committer email"),
    ({"RECONCILER_LEASE_SECONDS": "nan"}, "RECONCILER_LEASE_SECONDS must be a number"),
    ({"RECONCILER_LEASE_SECONDS": NOT_UTF8}, "RECONCILER_LEASE_SECONDS must be a number"),
], ids=["name-not-utf8", "email-not-utf8", "lease-nan", "lease-not-utf8"])
def test_a_bad_committer_or_lease_for_the_git_state_is_refused_before_any_lock(tmp_path: Path, env, message, args):
    """A committer name or email whose bytes are not UTF-8 was an internal error (exit 3:
    UnicodeEncodeError while the lease commit was written); a bad RECONCILER_LEASE_SECONDS was
    refused, but only after the clone's lock file (.git/reconciler/st.lock) was created.
    Both are now refused first: exit 1, no lock file, no branch, nothing applied."""
    root = _repo(tmp_path / "repo")
    res = run(root, "--state", "git:st", *args, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert message in res.stderr, res.stderr
    assert not (root / ".git" / "reconciler").exists()
    assert git(root, "for-each-ref", "--format=%(refname)", "refs/heads/st") == ""
    assert not (root / ".reconciler" / "local.db").exists()


def test_a_ci_run_url_that_is_not_utf8_is_escaped_in_the_lease(tmp_path: Path):
    """GITHUB_SERVER_URL (or _REPOSITORY, _RUN_ID) of bytes that are not UTF-8 made the lease
    commit fail: an internal error (UnicodeEncodeError), exit 3. The holder is escaped."""
    root = _repo(tmp_path / "repo")
    env = {"GITHUB_SERVER_URL": "https://gh" + NOT_UTF8, "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7"}
    res = run(root, "--state", "git:st", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    log = git(root, "log", "--format=%B", "st")
    assert "https://gh\\udcff\\udcfe/o/r/actions/runs/7" in log, log


@pytest.mark.parametrize("args", [[], ["import", "--all"], ["sync"]], ids=["apply", "import", "sync"])
@pytest.mark.parametrize("state", ["{}", "{not json", '{"version": 99}'], ids=["no-version", "not-json", "newer"])
def test_a_corrupt_state_creates_no_local_target(tmp_path: Path, args, state):
    """With a corrupt (or newer) state file, apply, import and sync refused it, but only after
    the local target was opened for writing: .reconciler/local.db was created (seeded with the
    profile's built-in registries). The state is read before the target is opened now."""
    root = _repo(tmp_path / "repo")
    (root / ".reconciler").mkdir()
    (root / ".reconciler" / "state.json").write_text(state)
    res = run(root, *args)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "state" in res.stderr and "internal error" not in res.stderr, res.stderr
    assert not (root / ".reconciler" / "local.db").exists()
    assert (root / ".reconciler" / "state.json").read_text() == state


@pytest.mark.parametrize("args", [["--dry-run"], []], ids=["plan", "apply"])
def test_a_corrupt_state_makes_no_palette_request_in_vertex(tmp_path: Path, palette_emulator_factory, args):
    """VerteX: the tenant's FIPS setting was asked of Palette (GET .../preferences) before the
    state was read; a corrupt state then failed the run, a request already made."""
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"h.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://charts.example.com\nfips: true"),
                      "s.yaml": "apiVersion: reconciler/v1\nkind: Settings\nspec: {profile: vertex}\n"})
    commit_all(root)
    (root / ".reconciler").mkdir()
    (root / ".reconciler" / "state-palette.json").write_text("{}")
    emu = palette_emulator_factory(seed_defaults=True)
    res = run(root, "--target", "palette", "--endpoint", emu.url, *args, env={"PALETTE_API_KEY": emu.api_key})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "state has no integer 'version'" in res.stderr, res.stderr
    assert emu.calls() == []
