"""Secrets under attack (issue 9 items 6, 8-12, 26, 31; issue 10 item 4): which files a
definition may make us read, how reads are bounded, redaction of server messages, short and
empty secrets, pasted secrets, credentials in URLs, and the cost of guessing a recorded hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from reconciler import secrets as secrets_mod
from reconciler.errors import ClientError, redact
from reconciler.model import HASH_KEYED, HASH_SCRYPT, Registry, secret_hash, secret_matches
from reconciler.secrets import FileRefused, read_bounded, resolve
from reconciler.targets.palette import PaletteTarget
from reconciler.validation import load_and_validate
from tests.support import leaks
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import (  # noqa: F401
    API_KEY,
    palette_emulator,
    palette_emulator_factory,  # noqa: F401
)

PW = "s3cret-value-for-h4-tests"


def helm(name: str, password_ref: str, extra: str = "") -> str:
    return registry_doc("HelmRegistry", name, f"""
        endpoint: https://{name}.example.com
        auth: {{type: basic, username: u, password: {password_ref}}}
        {extra}
    """)


def repo_with(tmp_path: Path, *docs: str, settings: str = "") -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    files = {"r.yaml": "---\n".join(docs)}
    if settings:
        files["settings.yaml"] = f"apiVersion: reconciler/v1\nkind: Settings\nspec:\n{settings}"
    write_defs(root, files)
    commit_all(root)
    return root


def errors_of(root: Path) -> list[str]:
    return [str(p) for p in load_and_validate(root).errors]


# ---------------------------------------------------------------- #9.6: which files may be read


@pytest.mark.parametrize("ref, why", [
    ("/proc/self/environ", "is under /proc"),
    ("../../../../../../../../proc/self/environ", "is under /proc"),
    (".git/config", "inside .git/"),
    ("/dev/zero", "is under /dev"),
    ("/sys/kernel/notes", "is under /sys"),
    ("fifo", "is a FIFO, not a regular file"),
    ("link-out", "outside the repository (through a symbolic link)"),
    ("/etc/hostname", "outside the repository"),
    ("registries.d", "is a directory"),
])
def test_file_references_refused_at_validation(tmp_path: Path, ref: str, why: str):
    root = repo_with(tmp_path, helm("a", f"{{fromFile: '{ref}'}}"),
                     helm("b", "{fromEnv: B_PW}", f"tls: {{caFile: '{ref}'}}"))
    os.mkfifo(root / "fifo")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for registries\n")
    (root / "link-out").symlink_to(outside)
    started = time.monotonic()
    errors = errors_of(root)
    assert time.monotonic() - started < 1.0
    assert len(errors) == 2, errors
    assert errors[0].startswith("registries.d/r.yaml:7:") and "spec.auth.password.fromFile" in errors[0]
    assert "spec.tls.caFile" in errors[1]
    assert all(why in e for e in errors), errors


def test_refused_file_changes_nothing_and_exits_1(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromFile: ../../../../../../../../proc/self/environ}"))
    for args in ([], ["--dry-run"]):
        res = run(root, *args, env={"SOME_TOKEN": "tok-should-never-leave-1234"}, timeout=20)
        assert res.returncode == 1, res.stderr
        assert "registries.d/r.yaml:7:" in res.stderr and "is under /proc" in res.stderr
        assert "Traceback" not in res.stderr
        assert "tok-should-never-leave-1234" not in res.stdout + res.stderr
    assert not (root / ".reconciler" / "state.json").exists()
    assert not (root / ".reconciler" / "local.db").exists()


def test_files_inside_the_repo_and_under_secret_roots_are_read(tmp_path: Path):
    roots = tmp_path / "run-secrets"
    roots.mkdir()
    (roots / "pw").write_text(PW + "\n")
    root = repo_with(tmp_path, helm("a", "{fromFile: secrets/pw}"), helm("b", f"{{fromFile: {roots}/pw}}"),
                     settings=f"  secretRoots: [{roots}]\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "pw").write_text(PW + "\n")
    assert errors_of(root) == []
    desired = load_and_validate(root).desired
    assert desired.settings.secret_roots == (str(roots),)
    for reg in desired.registries:
        values, problems = resolve(reg, base_dir=root, environ={}, roots=desired.settings.secret_roots)
        assert problems == [] and values == {"auth.password": PW}
    # without the Settings entry the same path is refused
    (root / "registries.d" / "settings.yaml").unlink()
    assert [e for e in errors_of(root) if "outside the repository" in e]


def test_secret_roots_cannot_be_pseudo_filesystems(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"), settings="  secretRoots: [/proc, /dev/shm, /]\n")
    errors = errors_of(root)
    assert len(errors) == 3 and all("secretRoots" in e and "must be an absolute directory" in e for e in errors)


@pytest.mark.parametrize("ref", [".git/config", "certs/registry-token", "{repo}/.git/config", "{outer}/bare.git/config",
                                 "{outer}/other/.GIT/config"])
def test_no_git_directory_is_read_whatever_the_roots(tmp_path: Path, ref: str):
    """Adversarial pass 6, item 1: with a secretRoots entry that holds the repository (its
    parent), the ".git/ is never read" rule was skipped: a fromFile of .git/config, or of an
    innocent-looking link to it, sent the whole git config (where actions/checkout keeps the
    job's token, http.extraheader) to a registry the pull request named. A git directory, the
    repository's or any other (bare, another checkout), is never read, whatever the roots."""
    outer = tmp_path
    root = repo_with(tmp_path, helm("a", "{fromFile: '" + ref.format(repo=tmp_path / "repo", outer=outer) + "'}"),
                     settings=f"  secretRoots: ['{outer}']\n")
    (root / "certs").mkdir()
    (root / "certs" / "registry-token").symlink_to("../.git/config")
    subprocess.run(["git", "init", "-q", "--bare", str(outer / "bare.git")], check=True)
    (outer / "other" / ".GIT").mkdir(parents=True)
    (outer / "other" / ".GIT" / "config").write_text("[http]\n\textraheader = AUTHORIZATION: basic dG9rZW4=\n")
    errors = errors_of(root)
    assert len(errors) == 1 and "spec.auth.password.fromFile" in errors[0] and "inside .git/" in errors[0], errors
    assert load_and_validate(root).desired.registries == []
    if ref == "certs/registry-token":  # end to end: nothing planned, applied or synced
        for args in (["validate"], [], ["sync"]):
            res = run(root, *args, timeout=30)
            assert res.returncode == 1 and "inside .git/" in res.stderr + res.stdout, (args, res.stdout, res.stderr)
        assert not (root / ".reconciler" / "state.json").exists()


@pytest.mark.parametrize("spelling", ["/.", "//", "///", "/tmp/..", "/usr/../proc", "/./dev/shm", "{link}"])
def test_a_secret_root_that_is_slash_however_spelled_is_refused(tmp_path: Path, spelling: str):
    """Adversarial pass 6, item 1: the schema refused the root "/" as written, but "/.", "//" and
    "/tmp/.." (all /) passed, and so did "/usr/../proc": every file of the runner readable."""
    link = tmp_path / "to-slash"
    link.symlink_to("/")
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"), settings=f"  secretRoots: ['{spelling.format(link=link)}']\n")
    errors = errors_of(root)
    assert len(errors) == 1 and "secretRoots" in errors[0] and ("is / (every file" in errors[0] or "under /" in errors[0]
                                                              or "must be an absolute directory" in errors[0]), errors


def test_a_root_that_is_slash_is_not_used_at_read_either(tmp_path: Path):
    (tmp_path / "pw").write_text(PW)
    values, problems = resolve(Registry("HelmRegistry", "a", "tenant", {
        "endpoint": "https://a.example.com", "auth": {"type": "basic", "username": "u",
                                                      "password": {"fromFile": str(tmp_path / "pw")}}}),
        base_dir=tmp_path / "repo", environ={}, roots=("//",))
    assert values == {"auth.password": None} and "outside the repository" in problems[0], problems


def test_symlink_swapped_after_validation_is_refused_at_read(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromFile: pw}"))
    (root / "pw").write_text(PW)
    reg = load_and_validate(root).desired.registries[0]
    (root / "pw").unlink()
    (root / "pw").symlink_to("/proc/self/environ")
    values, problems = resolve(reg, base_dir=root, environ={}, roots=())
    assert values == {"auth.password": None}
    assert len(problems) == 1 and "is under /proc" in problems[0]


# ---------------------------------------------------------------- #9.12: bounded, regular-file reads


def _in_thread(fn, timeout: float = 5.0):
    box: dict[str, object] = {}

    def go() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the read hung"
    return box


def test_read_bounded_refuses_devices_fifos_and_large_files(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2049)
    for path, why in [("/dev/zero", "a device"), ("/dev/urandom", "a device"), (str(fifo), "a FIFO"),
                      (str(big), "larger than 2048 bytes"), (str(tmp_path), "a directory")]:
        box = _in_thread(lambda p=path: read_bounded(p, 2048))
        assert isinstance(box.get("error"), FileRefused), (path, box)
        assert why in str(box["error"].strerror)
    ok = tmp_path / "ok"
    ok.write_bytes(b"y" * 2048)
    assert read_bounded(ok, 2048) == b"y" * 2048


def test_proc_files_that_stat_as_empty_are_read_bounded(tmp_path: Path):
    # /proc files claim st_size 0; the read itself must stop at the bound
    box = _in_thread(lambda: read_bounded("/proc/self/maps", 16))
    assert isinstance(box.get("error"), FileRefused) and "larger than 16" in str(box["error"])


@pytest.mark.parametrize("what", ["dev", "fifo"])
def test_state_file_that_is_not_regular_is_a_clear_error(tmp_path: Path, what: str):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    path = "/dev/zero"
    if what == "fifo":
        path = str(tmp_path / "state-fifo")
        os.mkfifo(path)
    for args in (["--dry-run"], ["status"]):
        res = run(root, "--state", path, *args, timeout=20)
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert "not a regular file" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "empty"])
def test_ca_file_option_that_is_not_a_bundle_is_a_clear_error(tmp_path: Path, what: str):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    path = what
    if what == "fifo":
        path = str(tmp_path / "ca-fifo")
        os.mkfifo(path)
    elif what == "empty":
        path = str(tmp_path / "empty.pem")
        Path(path).write_text("")
    res = run(root, "--target", "palette", "--endpoint", "https://127.0.0.1:9", "--ca-file", path, "--dry-run",
              env={"PALETTE_API_KEY": "k-for-ca-test-1234"}, timeout=20)
    assert res.returncode == 1, res.stderr
    assert f"--ca-file {path}:" in res.stderr and "Traceback" not in res.stderr


def test_dry_run_reads_no_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from reconciler import runner
    from reconciler.commands import plan as plan_command

    root = repo_with(tmp_path, helm("a", "{fromFile: pw}"))
    (root / "pw").write_text(PW)
    reads: list[str] = []
    real = secrets_mod.read_bounded
    monkeypatch.setattr(secrets_mod, "read_bounded", lambda p, n, *rest: reads.append(str(p)) or real(p, n, *rest))
    opts = runner.Options(root=root, environ={})
    out, err = _Buf(), _Buf()
    assert plan_command.run_reconcile(opts, out, err, dry_run=True) == 0, err.text
    assert not [r for r in reads if r.endswith("/pw")]
    assert plan_command.run_reconcile(opts, out, err, dry_run=False) == 0, err.text
    assert [r for r in reads if r.endswith("/pw")]


class _Buf:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------- #9.8, #10.4: redaction


def test_redact_covers_every_form_of_a_value():
    value = 'p@ss "wo\\rd"/ü+&='
    forms = [value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]
    from urllib.parse import quote, quote_plus
    forms += [quote(value, safe=""), quote(value), quote_plus(value), quote(value, safe="").lower()]
    for form in forms:
        text = redact(f"server said: {form} (end)", {value})
        assert text == "server said: (sensitive) (end)", (form, text)


GO_PW = "Sup3r&Secret<pw>/\u2028x"


@pytest.mark.parametrize("form", [
    "Sup3r\\u0026Secret\\u003cpw\\u003e/\\u2028x",  # Go's encoding/json: &, <, >, U+2028 escaped
    "Sup3r\\u0026Secret\\u003Cpw\\u003E/\\u2028x",  # the same, upper-case hex
    "Sup3r\\u0026Secret\\u003cpw\\u003e\\/\\u2028x",  # and '/' written '\\/'
    "Sup3r&Secret<pw>\\/\u2028x",  # '\\/' alone
    "Sup3r&amp;Secret&lt;pw&gt;/\u2028x",  # HTML-escaped, in an error page
], ids=["go", "go-upper", "go-slash", "slash", "html"])
def test_redact_covers_the_forms_other_encoders_write(form: str):
    """Palette is a Go service: a body it marshals and quotes in an error or a sync message
    shows a password with & or < as \\u0026 and \\u003c, which was printed unmasked."""
    assert redact(f'upstream said {{"password":"{form}"}} end', {GO_PW}) == 'upstream said {"password":"(sensitive)"} end'


def _b64url(raw: bytes, pad: bool) -> str:
    token = base64.urlsafe_b64encode(raw).decode()
    assert token != base64.b64encode(raw).decode(), "the case must hold a - or _"
    return token if pad else token.rstrip("=")


def _wrapped(raw: bytes, width: int, brk: str) -> str:
    """``raw`` (the value between other bytes) as MIME or PEM base64, the value's own
    characters across a line break (so that no line holds them whole)."""
    token = base64.b64encode(raw).decode()
    return brk.join(token[i:i + width] for i in range(0, len(token), width))


def _refs(value: str, ref) -> str:
    return "".join(c if c.isascii() and c.isalnum() else ref(ord(c)) for c in value)


URL_PW = "Sup3r>>>Secret???pw~~"  # its base64 holds + and /, base64url - and _
REF_PW = "P+ss w&rd<1>'q\"=`ä"  # what HTML and XML escapers write as references
CTRL_PW = "Sup3r\bSecret\fpw\n\t\r1"
BYTES_PW = "pässwort\\Sup3r'"  # a repr escapes its backslash, backslashreplace does not
_MIME_RAW = b"x" * 50 + GO_PW.encode() + b"y" * 60
_PEM_RAW = b"x" * 40 + GO_PW.encode() + b"y" * 60


@pytest.mark.parametrize("value, form, masked", [
    (URL_PW, _b64url(f"bob:{URL_PW}".encode(), pad=True), "(sensitive)"),
    (URL_PW, _b64url(f"bob:{URL_PW}".encode(), pad=False), "(sensitive)"),
    (URL_PW, _b64url(f"bo:{URL_PW}".encode(), pad=False), "(sensitive)"),
    (URL_PW, _b64url(f"u:{URL_PW}".encode(), pad=False), "(sensitive)"),
    (GO_PW, GO_PW.encode().hex(), "(sensitive)"),
    (GO_PW, GO_PW.encode().hex().upper(), "(sensitive)"),
    (GO_PW, f"deadbeef{GO_PW.encode().hex()}00", "deadbeef(sensitive)00"),  # the value inside a longer hex
    (REF_PW, _refs(REF_PW, lambda n: f"&#{n};"), "(sensitive)"),  # decimal: Spring's htmlEscapeDecimal
    (REF_PW, _refs(REF_PW, lambda n: f"&#x{n:x};"), "(sensitive)"),  # hex: Spring's htmlEscapeHex
    (REF_PW, _refs(REF_PW, lambda n: f"&#x{n:X};"), "(sensitive)"),  # JS he's &#xE4;
    (REF_PW, _refs(REF_PW, lambda n: f"&#X{n:X};"), "(sensitive)"),
    # Go's html/template: &amp; &lt; &gt;, &#34; &#39; &#43;, and (unquoted attribute) &#32; &#61; &#96;
    (REF_PW, "P&#43;ss&#32;w&amp;rd&lt;1&gt;&#39;q&#34;&#61;&#96;ä", "(sensitive)"),
    (REF_PW, html.escape(REF_PW).encode("ascii", "xmlcharrefreplace").decode(), "(sensitive)"),  # Python, ASCII
    (REF_PW, "P+ss w&amp;rd&lt;1&gt;&#039;q&quot;=`&auml;", "(sensitive)"),  # PHP's &#039;, Java's &auml;
    (GO_PW, quote(quote(GO_PW, safe=""), safe=""), "(sensitive)"),  # %2526
    (GO_PW, quote(re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(GO_PW))), "(sensitive)"),  # %253c
    (GO_PW, _wrapped(_MIME_RAW, 76, "\n"), "(sensitive)"),
    (GO_PW, _wrapped(_MIME_RAW, 76, "\r\n"), "(sensitive)"),
    (GO_PW, _wrapped(_PEM_RAW, 64, "\n"), "(sensitive)"),
    (GO_PW, _wrapped(_PEM_RAW, 64, "\\n"), "(sensitive)"),  # in a JSON string
    (GO_PW, _wrapped(_MIME_RAW, 60, "\n"), "(sensitive)"),  # other widths (left alone in pass 7)
    (GO_PW, _wrapped(_PEM_RAW, 72, "\r\n"), "(sensitive)"),
    (GO_PW, _wrapped(_MIME_RAW, 20, "\n"), "(sensitive)"),
    (CTRL_PW, "Sup3r\\u0008Secret\\u000cpw\\n\\t\\r1", "(sensitive)"),  # Go's encoding/json before 1.22
    (CTRL_PW, "Sup3r\\u0008Secret\\u000Cpw\\u000A\\u0009\\u000D1", "(sensitive)"),  # every control as \u00XX
    (CTRL_PW, "Sup3r\\bSecret\\fpw\\n\\t\\r1", "(sensitive)"),  # the short forms (Python, Go 1.22)
    (BYTES_PW, repr(BYTES_PW.encode())[2:-1], "(sensitive)"),  # b"p\xc3\xa4sswort\\Sup3r'"
    (BYTES_PW, repr(BYTES_PW.encode() + b'"')[2:-2], "(sensitive)"),  # b'p\xc3\xa4sswort\\Sup3r\''
    (BYTES_PW, BYTES_PW.encode().decode("ascii", "backslashreplace"), "(sensitive)"),  # p\xc3\xa4sswort\Sup3r'
    (BYTES_PW, "p\\xC3\\xA4sswort\\Sup3r'", "(sensitive)"),
    # every byte escaped, letters and digits too (left alone in pass 7): a fully percent-encoded
    # query string, every character a reference, a C-style dump of a buffer; hex in either case
    (GO_PW, "".join(f"%{b:02X}" for b in GO_PW.encode()), "(sensitive)"),
    (BYTES_PW, "".join(f"%{b:02x}" for b in BYTES_PW.encode()), "(sensitive)"),
    (REF_PW, "".join(f"&#{ord(c)};" for c in REF_PW), "(sensitive)"),
    (REF_PW, "".join(f"&#x{ord(c):X};" for c in REF_PW), "(sensitive)"),
    (GO_PW, "".join(f"\\x{b:02x}" for b in GO_PW.encode()), "(sensitive)"),
    (BYTES_PW, "".join(f"\\x{b:02X}" for b in BYTES_PW.encode()), "(sensitive)"),
    (GO_PW, "".join("".join(f"%{b:02x}" for b in c.encode()) if i % 2 else f"&#{ord(c)};"
                    for i, c in enumerate(GO_PW)), "(sensitive)"),
    # a hex dump, bytes apart; Go's %v of a []byte (decimal, apart), inside a longer slice too
    (GO_PW, " ".join(f"{b:02x}" for b in GO_PW.encode()), "(sensitive)"),
    (BYTES_PW, ":".join(f"{b:02X}" for b in BYTES_PW.encode()), "(sensitive)"),
    (GO_PW, "[" + " ".join(str(b) for b in GO_PW.encode()) + "]", "[(sensitive)]"),
    (GO_PW, "[7 " + " ".join(str(b) for b in GO_PW.encode()) + " 10]", "[7 (sensitive) 10]"),
], ids=["b64url", "b64url-nopad", "b64url-offset1", "b64url-offset2", "hex", "hex-upper", "hex-inside",
        "ref-dec", "ref-hex", "ref-hex-upper", "ref-X", "ref-go-template", "ref-python-ascii", "ref-php-java",
        "pct-twice", "pct-twice-lower", "mime", "mime-crlf", "pem", "pem-json", "wrap-60", "wrap-72-crlf", "wrap-20", "json-go-controls",
        "json-long-controls", "json-short-controls", "bytes-repr", "bytes-repr-sq", "bytes-x", "bytes-X",
        "pct-every-byte", "pct-every-byte-lower", "ref-every-char", "ref-every-char-hex", "x-every-byte",
        "x-every-byte-upper", "pct-and-refs-mixed", "hex-dump-spaces", "hex-dump-colons", "go-bytes",
        "go-bytes-inside"])
def test_redact_covers_the_forms_more_encoders_write(value: str, form: str, masked: str):
    """Adversarial pass 6: a server or a proxy that echoes a secret in an error body writes it
    in one of these, which were printed, and stored in the state that git:BRANCH pushes."""
    assert value not in form
    assert redact(f"upstream said [{form}] end", {value}) == f"upstream said [{masked}] end"
    assert redact(f"upstream said [{form}] end", {"an0ther-Secret-value"}) == f"upstream said [{form}] end"


def test_redact_of_many_base64_matches_is_linear():
    """Adversarial pass 6: each match was replaced by a new copy of the text: 50,000 echoed
    Basic headers took 5.2 s; one alternation and one join take a few hundredths."""
    token = base64.b64encode(f"bob:{GO_PW}".encode()).decode()
    text = " ".join(f"Basic {token}" for _ in range(50_000))
    t0 = time.perf_counter()
    out = redact(text, {GO_PW})
    assert time.perf_counter() - t0 < 1.0
    assert out == " ".join("Basic (sensitive)" for _ in range(50_000))


def test_a_message_holding_no_form_stays_cheap_with_many_values():
    """The forms added in adversarial pass 6 are looked for only in a message that can hold
    them (hex, a reference, %25): a plain message costs a look or two per value."""
    values = {f"pw-{i:05d}-s3cret" for i in range(5000)}
    for text in ("sync of charts failed: HTTP 500 from the registry", "pulled sha256:" + "ab12" * 16,
                 "bad &#34;name&#34; for charts-prod_x\nline 2 %2520"):
        redact(text, values)
        t0 = time.perf_counter()
        for _ in range(5):
            redact(text, values)
        assert (time.perf_counter() - t0) / 5 < 0.02, text  # 1.4 to 3.5 ms here; 5.5 ms before them


@pytest.mark.parametrize("prefix", ["", "u:", "bo:", "bob:", "a-user:"])
def test_redact_masks_a_value_inside_base64_at_any_offset(prefix: str):
    """An echoed "Authorization: Basic base64(user:password)" header: the whole token goes,
    whatever the user name's length (the password starts at any of base64's three offsets)."""
    token = base64.b64encode(f"{prefix}{GO_PW}".encode()).decode()
    assert redact(f"sent Authorization: Basic {token}, refused", {GO_PW}) == "sent Authorization: Basic (sensitive), refused"


def test_short_values_are_not_searched_for_in_base64():
    token = base64.b64encode(b"bob:pw12345").decode()  # "pw12345" is 7 bytes: it is searched for
    assert redact(f"Basic {token}", {"pw12345"}) == "Basic (sensitive)"
    token = base64.b64encode(b"bob:pw1234").decode()  # 6 bytes: as likely to match by chance as not
    assert redact(f"Basic {token}", {"pw1234"}) == f"Basic {token}"
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert redact(f"pulled {digest} ok", {"abcdefgh", "0123456789"}) == f"pulled {digest} ok"


def test_redact_always_masks_the_tools_own_credentials(monkeypatch):
    """Whatever secrets the caller passed (a registry's, or none): the API key and the state
    key, remembered where they were read or found in the environment, never pass."""
    secrets_mod.remember_secret("remembered-api-key-4f1e")
    monkeypatch.setenv("RECONCILER_STATE_KEY", "state-key-from-env-77a0")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "x" * 36)
    text = 'a {"k":"remembered-api-key-4f1e"} b state-key-from-env-77a0 c ' + "ghs_" + "x" * 36
    assert redact(text, []) == 'a {"k":"(sensitive)"} b (sensitive) c (sensitive)'
    assert redact(text, {GO_PW}) == redact(text, [])
    assert secrets_mod.redact_resolved(text) == redact(text, [])


@pytest.mark.parametrize("value, shown", [
    ('Tok en"with\\quote', "{'token': 'Tok en\"with\\\\quote'}"),
    ("it's\\a secret", "{'token': \"it's\\\\a secret\"}"),
    ("both'and\"q", "{'token': 'both\\'and\"q'}"),
], ids=["single-quoted", "double-quoted", "escaped-quote"])
def test_redact_finds_a_value_inside_a_python_repr(value: str, shown: str):
    """A server or a library that prints a dict shows its values as Python writes them."""
    assert shown == repr({"token": value})  # the forms above, written out by hand
    assert redact(f"rejected: {shown}", {value}) in ("rejected: {'token': '(sensitive)'}",
                                                     "rejected: {'token': \"(sensitive)\"}")


def test_short_values_are_not_searched_for_in_free_text():
    assert redact("state is ready, registry error", {"e", "re", "ady"}) == "state is ready, registry error"
    assert redact("token abcd leaked", {"abcd"}) == "token (sensitive) leaked"


def _palette(answers: list[httpx.Response]) -> PaletteTarget:
    return PaletteTarget("https://palette.test", "k-secret-key", transport=httpx.MockTransport(lambda r: answers.pop(0)),
                         sleep=lambda s: None, rate=1000.0, burst=10)


@pytest.mark.parametrize("message, secret", [
    ("x" * 290 + f" {PW} tail", PW),  # the value straddles the 300-character cut
    (f"bad value: {PW.replace('-', '  ')} end", PW.replace("-", "  ")),  # whitespace the shortening collapses
    ("rejected " + json.dumps({"password": 'p"w\\' + PW}), 'p"w\\' + PW),  # JSON-escaped in the message
])
def test_server_messages_are_redacted_before_they_are_shortened(message: str, secret: str):
    target = _palette([httpx.Response(400, json={"code": "Bad", "message": message})])
    with pytest.raises(ClientError) as info:
        target._request("POST", "/v1/registries/helm", json={}, secrets=[secret])
    text = str(info.value)
    assert len(text) < 400
    collapsed = " ".join(secret.split())
    for piece in (secret[:8], secret[-8:], json.dumps(secret)[1:9], collapsed[:8], collapsed[-8:]):
        assert piece not in text, text


def test_short_secret_warns_and_leaves_messages_readable(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    res = run(root, "--dry-run", env={"A_PW": "pw"})
    assert res.returncode == 0, res.stderr
    assert "HelmRegistry/a: auth.password is shorter than 4 characters, too short to be a real secret" in res.stderr
    assert "(sensitive)" not in res.stderr.replace("auth.password", "")


# ---------------------------------------------------------------- #9.26: empty is missing


def test_empty_secret_is_refused_at_apply_and_nothing_is_created(tmp_path: Path, palette_emulator):  # noqa: F811
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"), helm("b", "{fromEnv: B_PW}"))
    env = {"PALETTE_API_KEY": API_KEY, "A_PW": "", "B_PW": PW}
    res = run(root, "--target", "palette", "--endpoint", palette_emulator.url, env=env)
    assert res.returncode == 1, res.stderr
    assert "environment variable A_PW is empty" in res.stderr and "nothing was changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert palette_emulator.calls("POST", "/v1/registries") == []
    assert palette_emulator.calls("PUT") == []


NOT_UTF8 = b"pw\xff\xfe-rest-of-it".decode("utf-8", "surrogateescape")  # as os.environ holds such bytes


def test_a_secret_that_is_not_utf8_is_refused_at_apply_before_any_request(tmp_path: Path,
                                                                         palette_emulator):  # noqa: F811
    """An environment value of bytes that are not UTF-8 can go in no request and no hash: it
    was planned, sent to the target and then crashed the state write (exit 1, a traceback,
    the change not recorded). Now it is refused with the other missing secrets."""
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    env = {"PALETTE_API_KEY": API_KEY, "A_PW": NOT_UTF8}
    res = run(root, "--target", "palette", "--endpoint", palette_emulator.url, env=env)
    assert res.returncode == 1, res.stderr
    assert "environment variable A_PW is not valid UTF-8 (the value is not shown)" in res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert palette_emulator.calls("POST", "/v1/registries") == [] and palette_emulator.calls("PUT") == []
    assert not (root / ".reconciler/state.json").exists()
    reg = load_and_validate(root).desired.registries[0]
    values, problems = resolve(reg, base_dir=root, environ={"A_PW": NOT_UTF8})
    assert values == {"auth.password": None} and "not valid UTF-8" in problems[0] and NOT_UTF8 not in problems[0]
    assert secrets_mod.redact_resolved(f"echo {NOT_UTF8}!") == "echo (sensitive)!"  # still masked, no crash


@pytest.mark.parametrize("key", ["S3cr3t-PLANT-9f2\u00e9-api-key", "S3cr3t-PLANT-9f2\napi-key", " S3cr3t-PLANT-9f2-api-key",
                                 "S3cr3t-PLANT-9f2\x7f-api-key"], ids=["non-ascii", "newline", "leading-blank", "del"])
def test_an_api_key_no_header_can_carry_is_a_clear_error_and_changes_nothing(tmp_path: Path, key: str,
                                                                          palette_emulator):  # noqa: F811
    """Adversarial pass: a non-ASCII PALETTE_API_KEY was an internal error (exit 3, "a bug")."""
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    for args in (["--dry-run"], [], ["-vv", "--dry-run"]):
        res = run(root, "--target", "palette", "--endpoint", palette_emulator.url, *args,
                  env={"A_PW": PW, "PALETTE_API_KEY": key})
        assert res.returncode == 1, res.stdout + res.stderr
        assert "PALETTE_API_KEY holds a character an HTTP header cannot carry" in res.stderr, res.stderr
        assert "internal error" not in res.stderr and "S3cr3t-PLANT" not in res.stdout + res.stderr
    assert palette_emulator.requests == []  # nothing was sent
    assert not (root / ".reconciler/state.json").exists()


def test_a_state_key_that_is_not_utf8_is_a_clear_error_and_changes_nothing(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    for args in (["--dry-run"], []):
        res = run(root, *args, env={"A_PW": PW, "RECONCILER_STATE_KEY": NOT_UTF8})
        assert res.returncode == 1, res.stderr
        assert "RECONCILER_STATE_KEY is not valid UTF-8 (the value is not shown)" in res.stderr
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert not (root / ".reconciler/state.json").exists()


def test_redact_takes_values_that_are_not_utf8():
    other = b"pwd\xff".decode("utf-8", "surrogateescape")
    assert redact(f"a {NOT_UTF8} b pwd%FF", [NOT_UTF8, other]) == "a (sensitive) b (sensitive)"


def test_empty_secret_file_counts_as_missing(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromFile: pw}"))
    (root / "pw").write_text("\n")
    reg = load_and_validate(root).desired.registries[0]
    values, problems = resolve(reg, base_dir=root, environ={}, roots=())
    assert values == {"auth.password": None} and "is empty" in problems[0]


# ---------------------------------------------------------------- #9.11 / #9.10: pasted secrets, URLs


def test_secret_pasted_as_env_name_is_not_echoed(tmp_path: Path):
    pasted = "ghp_R3alL00king$ecret!Token"
    leaks.note_secret(pasted)
    root = repo_with(tmp_path, helm("a", f"{{fromEnv: '{pasted}'}}"))
    for args in (["validate"], ["--dry-run"], ["--dry-run", "--format", "json"]):
        res = run(root, *args)
        assert res.returncode == 1
        assert "registries.d/r.yaml:7:" in res.stderr + res.stdout
        assert pasted not in res.stdout + res.stderr and pasted[:10] not in res.stdout + res.stderr
    # a Registry built by hand (no validation) is caught at resolution, without echo either
    reg = Registry("HelmRegistry", "a", "tenant", {"auth": {"password": {"fromEnv": pasted}}})
    values, problems = resolve(reg, base_dir=tmp_path, environ={pasted: "x"})
    assert values == {"auth.password": None} and len(problems) == 1 and pasted not in problems[0]


PASTED = {  # made up, in the published formats (the same as in reconciler/secrets.py)
    "ghp": "ghp_" + "R3alL00kingT0ken" * 2 + "AbCd",
    "github_pat": "github_pat_" + "11AB" * 5 + "CD_" + "x9Y8" * 14 + "Zz1",
    "aws": "AKIA" + "Q7XM2RPL4KD9WZ3H",
}


@pytest.mark.parametrize("what", list(PASTED))
def test_a_credential_that_looks_like_a_variable_name_is_refused_without_echo(tmp_path: Path, what: str):
    """A GitHub token or an AWS key id pasted as a fromEnv name is a valid identifier: the
    schema takes it. It is refused by its format, without being shown, before it could be
    named in "is not set", recorded in the state or sent anywhere."""
    pasted = PASTED[what]
    assert secrets_mod.pasted_credential(pasted) is not None and len(pasted) in (40, 93, 20)
    leaks.note_secret(pasted)
    root = repo_with(tmp_path, helm("a", f"{{fromEnv: {pasted}}}"), helm("b", "{fromEnv: GHCR_MEDIA_PW}"))
    errors = errors_of(root)
    assert len(errors) == 1 and errors[0].startswith("registries.d/r.yaml:7:") and "fromEnv: this is a" in errors[0]
    for args in (["validate"], ["--dry-run"], [], ["--dry-run", "--format", "json"]):
        res = run(root, *args, env={pasted: "x", "GHCR_MEDIA_PW": "y"})
        assert res.returncode == 1, res.stdout + res.stderr
        assert pasted not in res.stdout + res.stderr and pasted[:12] not in res.stdout + res.stderr
    assert not (root / ".reconciler" / "state.json").exists()


@pytest.mark.parametrize("endpoint", ["https://admin:hunter2-pw-h4@o.example.com",
                                      "https://admin@o.example.com/base", "admin:hunter2-pw-h4@o.example.com"])
def test_credentials_in_an_endpoint_are_a_literal_secret(tmp_path: Path, endpoint: str):
    leaks.note_secret("hunter2-pw-h4")
    root = repo_with(tmp_path, registry_doc("OciRegistry", "o", f"""
        endpoint: {endpoint}
        auth: {{type: basic, username: u, password: {{fromEnv: O_PW}}}}
    """))
    errors = errors_of(root)
    assert [e for e in errors if e.startswith("registries.d/r.yaml:6:13: spec.endpoint: credentials in an endpoint URL "
                                              "are a literal secret")], errors
    res = run(root, "--dry-run", env={"O_PW": PW})
    assert res.returncode == 1 and "hunter2-pw-h4" not in res.stdout + res.stderr
    assert not (root / ".reconciler" / "state.json").exists()


# ---------------------------------------------------------------- #9.9: offline guessing cost


def test_each_offline_guess_costs_tens_of_milliseconds():
    salt = "0123456789abcdef0123456789abcdef"
    recorded = secret_hash(salt, "auth.password", "Summer2024")
    assert recorded.startswith(HASH_SCRYPT) and "Summer2024" not in recorded
    guesses = [f"Summer20{n:02d}" for n in range(5)]
    started = time.perf_counter()
    hits = [g for g in guesses if secret_matches(recorded, salt, "auth.password", g)]
    per_guess = (time.perf_counter() - started) / len(guesses)
    assert hits == []
    assert per_guess >= 0.02, f"a guess costs {per_guess * 1000:.1f} ms"
    # the old scheme (HMAC keyed by the salt that sits beside it) no longer verifies it
    old = "hmac-sha256:" + hmac.new(salt.encode(), b"auth.password\0Summer2024", hashlib.sha256).hexdigest()
    assert old != recorded


def test_keyed_hashes_need_the_key():
    salt = "s" * 32
    keyed = secret_hash(salt, "auth.password", PW, key="k" * 32)
    assert keyed.startswith(HASH_KEYED)
    assert secret_matches(keyed, salt, "auth.password", PW, key="k" * 32) is True
    assert secret_matches(keyed, salt, "auth.password", PW, key="other-key-xxxxxxxxxxxxxxx") is False
    assert secret_matches(keyed, salt, "auth.password", PW) is None  # cannot tell without the key
    # the salt alone (what the state holds) does not verify it
    assert keyed.split(":", 1)[1] != hmac.new(salt.encode(), f"auth.password\0{PW}".encode(),
                                              hashlib.sha256).hexdigest()


def _state(root: Path) -> dict:
    return json.loads((root / ".reconciler" / "state.json").read_text())


def test_old_hashes_plan_one_update_then_nothing(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    env = {"A_PW": PW}
    assert run(root, env=env).returncode == 0
    state = _state(root)
    rec = state["registries"][0]
    assert rec["secret_hashes"]["auth.password"].startswith(HASH_SCRYPT)
    # a state written by the old version: HMAC keyed by the salt
    old = "hmac-sha256:" + hmac.new(state["salt"].encode(), f"auth.password\0{PW}".encode(), hashlib.sha256).hexdigest()
    text = (root / ".reconciler" / "state.json").read_text().replace(rec["secret_hashes"]["auth.password"], old)
    (root / ".reconciler" / "state.json").write_text(text)
    plan = run(root, "--dry-run", "--detailed-exitcode", env=env)
    assert plan.returncode == 2 and "auth.password: (sensitive) -> (sensitive)" in plan.stdout
    assert run(root, env=env).returncode == 0
    assert run(root, "--dry-run", "--detailed-exitcode", env=env).returncode == 0
    assert old not in (root / ".reconciler" / "state.json").read_text()


def test_state_key_keys_the_hashes_and_a_dry_run_without_it_plans_no_false_update(tmp_path: Path):
    root = repo_with(tmp_path, helm("a", "{fromEnv: A_PW}"))
    key = "state-key-from-an-actions-secret-0042"
    leaks.note_secret(key)
    keyed = {"A_PW": PW, "RECONCILER_STATE_KEY": key}
    assert run(root, env=keyed).returncode == 0
    text = (root / ".reconciler" / "state.json").read_text()
    assert HASH_KEYED in text and key not in text
    assert run(root, "--dry-run", "--detailed-exitcode", env=keyed).returncode == 0
    unkeyed = run(root, "--dry-run", "--detailed-exitcode", env={"A_PW": PW})
    assert unkeyed.returncode == 0
    assert "keyed with RECONCILER_STATE_KEY, which is not set: a changed secret behind them is not detected" in unkeyed.stderr
    rotated = run(root, "--dry-run", "--detailed-exitcode", env=dict(keyed, A_PW="rotated-" + PW))
    assert rotated.returncode == 2


def test_prehash_computes_the_compared_hashes_once_in_parallel(monkeypatch):
    import concurrent.futures
    import os

    from reconciler.model import _scrypt
    from reconciler.secrets import prehash

    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # the same on a 1-core runner
    pools: list[int] = []

    class Pool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Pool)  # prehash imports it when it has work

    salt = "p" * 32
    keys = [("tenant", "HelmRegistry", f"r{i}") for i in range(4)]
    values = {k: {"auth.password": f"value-{i}-of-four"} for i, k in enumerate(keys)}
    recorded = {k: {"auth.password": secret_hash(salt, "auth.password", v["auth.password"])} for k, v in values.items()}
    _scrypt.cache_clear()
    prehash(salt, recorded, values, None)
    assert _scrypt.cache_info().misses == 4
    assert pools == [4]  # in parallel, one worker per secret here
    for k, v in values.items():
        assert secret_matches(recorded[k]["auth.password"], salt, "auth.password", v["auth.password"]) is True
    assert _scrypt.cache_info().misses == 4  # the plan's comparisons found them cached
    prehash(salt, recorded, {k: {"auth.password": "other-value"} for k in keys}, "a-state-key")  # keyed: nothing
    assert _scrypt.cache_info().misses == 4


def test_a_tampered_hash_does_not_crash_the_comparison():
    assert secret_matches(HASH_SCRYPT + "\u00e9\u00e9", "salt", "auth.password", PW) is False


def test_credentials_in_an_endpoint_are_masked_in_other_messages_too(tmp_path: Path):
    root = repo_with(tmp_path, registry_doc("HelmRegistry", "h", """
        endpoint: ftp://admin:hunter2-pw-h4@h.example.com
        auth: {type: noAuth}
    """))
    errors = errors_of(root)
    # one error at the endpoint (the schema's for the same node is not added), the value never quoted
    assert len(errors) == 1 and "literal secret" in errors[0], errors
    assert not [e for e in errors if "hunter2" in e]
    # and wherever a message quotes a value, user-info is masked
    from reconciler.validation import show

    assert show("ftp://admin:hunter2-pw-h4@h.example.com") == "'ftp://(credentials)@h.example.com'"


def _secret_refs_reference(spec, prefix=""):
    """iter_secret_refs as it was: nested generators."""
    from reconciler.model import SECRET_FIELDS

    for k, v in spec.items():
        if type(v) is dict:
            path = f"{prefix}{k}"
            if k in SECRET_FIELDS and len(v) == 1 and ("fromEnv" in v or "fromFile" in v):
                yield path, v
            else:
                yield from _secret_refs_reference(v, path + ".")


@pytest.mark.parametrize("spec", [
    {},
    {"auth": {"type": "basic", "username": "u", "password": {"fromEnv": "PW"}}, "tls": {"caFile": "ca.pem"}},
    {"auth": {"type": "ecr", "credentials": {"accessKey": "a", "secretKey": {"fromFile": "k"}}, "token": {"fromEnv": "T"}}},
    {"password": {"fromEnv": "A", "extra": 1}, "x": {"token": {"fromFile": "f"}, "y": {"secretKey": {"fromEnv": "B"}}}},
    {"a": {"b": {"c": {"password": {"fromEnv": "DEEP"}}}}, "token": "literal", 5: {"password": {"fromEnv": "K"}}},
])
def test_iter_secret_refs_yields_what_the_generator_yielded(spec):
    from reconciler.model import iter_secret_refs

    got = list(iter_secret_refs(spec))
    assert got == list(_secret_refs_reference(spec))
    assert list(iter_secret_refs(spec, "spec.")) == list(_secret_refs_reference(spec, "spec."))
    assert all(ref is dict(_secret_refs_reference(spec))[path] for path, ref in got)  # the spec's own objects


def test_validation_tells_a_registry_it_names_no_secret_and_the_rest_walk_their_spec(tmp_path: Path, monkeypatch):
    """A registry whose document names no ``fromEnv``/``fromFile`` key is built with its
    ``secret_refs`` known empty (no walk); every other one finds exactly the walk's refs, so
    the secret resolution sees every reference, cached or cold."""
    from reconciler.model import iter_secret_refs

    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    root = repo_with(
        tmp_path,
        registry_doc("HelmRegistry", "plain", "endpoint: https://plain.example.com\nauth: {type: noAuth}"),
        registry_doc("HelmRegistry", "env", "endpoint: https://env.example.com\n"
                     "auth: {type: basic, username: u, password: {fromEnv: ENV_PW}}"),
        registry_doc("OciRegistry", "file", "endpoint: reg.example.com\nprovider: helm\n"
                     "auth: {type: basic, username: u, password: {fromFile: secrets/pw}}"),
    )
    for run_ in ("cold", "warm"):  # the warm run restores documents from the cache (no strings kept)
        regs = {r.name: r for r in load_and_validate(root).desired.registries}
        assert set(regs) == {"plain", "env", "file"}, run_
        if run_ == "cold":
            assert regs["plain"].__dict__.get("secret_refs") == ()  # known, never walked
            assert "secret_refs" not in regs["env"].__dict__ and "secret_refs" not in regs["file"].__dict__
        for reg in regs.values():
            assert reg.secret_refs == tuple(iter_secret_refs(reg.spec)), (run_, reg.name)
        assert [p for p, _ in regs["env"].secret_refs] == ["auth.password"]
        assert [p for p, _ in regs["file"].secret_refs] == ["auth.password"]
        values, missing = resolve(regs["env"], base_dir=root, environ={"ENV_PW": "pw-1"})
        assert values == {"auth.password": "pw-1"} and not missing


def test_redact_covers_gos_html_escaping():
    """Adversarial pass 5: Go's html.EscapeString writes ' and " as &#39; and &#34; (Python:
    &#x27; and &quot;), so a Go service's error page showed such a password in clear."""
    pw = """it's "Sup3r" & <x>"""
    page = "<p>bad password it&#39;s &#34;Sup3r&#34; &amp; &lt;x&gt;</p>"
    assert redact(page, {pw}) == "<p>bad password (sensitive)</p>"


def test_redact_stays_fast_past_thousands_of_secrets():
    """Adversarial pass 5: the forms' cache held 4,096 values; a sync that redacts each message
    with 5,000 resolved values missed it for every one (94 ms a message, minutes a sync)."""
    import time

    values = {f"pw-{i:05d}-s3cret" for i in range(5000)}
    redact("warm", values)
    t0 = time.perf_counter()
    for _ in range(5):
        redact("sync of charts failed: HTTP 500 from the registry", values)
    per_call = (time.perf_counter() - t0) / 5
    assert per_call < 0.05, per_call  # about 94 ms per call with a cache of 4,096


# ------------------------------------------- adversarial pass 6: the API key in an old state

OLD_KEY = "palette-api-key-of-an-old-run-7f3a9c"


def _plant_old_sync(doc: dict) -> dict:
    """What a state written before the API key was masked in sync messages holds: the key in
    a record's last sync, its message, its status and a key an older version stored there."""
    for rec in doc["registries"]:
        rec["last_sync"] = {"status": f"Failed {OLD_KEY}", "message": f'sync failed: {{"apiKey":"{OLD_KEY}"}}',
                            "last_run": "2020-01-01T00:00:00Z", "fingerprint": rec["fingerprint"],
                            "errors": [f"key={OLD_KEY}"]}
    doc["serial"] += 1
    return doc


def _masked_sync(rec: dict) -> None:
    assert rec["last_sync"]["message"] == 'sync failed: {"apiKey":"(sensitive)"}', rec
    assert rec["last_sync"]["status"] == "Failed (sensitive)" and rec["last_sync"]["errors"] == ["key=(sensitive)"]


def test_an_old_state_file_holding_the_api_key_loses_it_at_the_next_write_and_its_journal_never_holds_it(
        tmp_path: Path):
    root = repo_with(tmp_path, registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com"))
    env = {"PALETTE_API_KEY": OLD_KEY}
    assert run(root, env=env).returncode == 0
    path = root / ".reconciler/state.json"
    path.write_text(json.dumps(_plant_old_sync(json.loads(path.read_text()))))
    write_defs(root, {"r.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h2.example.com")})
    commit_all(root)
    # the update, killed once its journal line (the record, with its last sync) is written
    log = tmp_path / "crash.log"
    res = run(root, env={**env, "RECONCILER_CRASH_AT": "4", "RECONCILER_CRASH_LOG": str(log)})
    assert res.returncode != 0 and log.read_text().split() == ["4", "update:after-state"], res.stderr
    journal = path.with_name("state.json.journal").read_text()
    assert '"op":"put"' in journal and OLD_KEY not in journal and OLD_KEY not in path.read_text()
    _masked_sync(json.loads(journal.splitlines()[-1])["record"])
    res = run(root, env=env)  # reads the document and the journal: the update is recorded, nothing to do
    assert res.returncode == 0 and "No changes" in res.stdout, res.stdout + res.stderr
    stored = path.read_text()
    assert OLD_KEY not in stored
    _masked_sync(json.loads(stored)["registries"][0])


def test_an_old_state_on_a_git_branch_holding_the_api_key_loses_it_at_the_next_write(tmp_path: Path, monkeypatch):
    import subprocess

    from reconciler.state.git import GitBranchStateStore
    from tests.support.gitops_repo import seeded_clone

    def git(cwd: Path, *argv: str, input: str | None = None) -> str:
        return subprocess.run(["git", *argv], cwd=cwd, input=input, check=True, capture_output=True,
                              text=True).stdout.strip()

    origin, work = seeded_clone(tmp_path, {"r.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h.example.com")})
    args, env = ("--state", "git:reconciler-state"), {"PALETTE_API_KEY": OLD_KEY}
    assert run(work, *args, env=env).returncode == 0
    # the old state, pushed on top of the branch as an older reconcile pushed it
    planted = json.dumps(_plant_old_sync(json.loads(git(origin, "show", "reconciler-state:state.json"))), indent=1)
    others = [line.split("\t") for line in git(origin, "ls-tree", "reconciler-state").splitlines()]
    entries = [f"{meta}\t{name}" for meta, name in others if name != "state.json"]
    entries.append(f"100644 blob {git(origin, 'hash-object', '-w', '--stdin', input=planted)}\tstate.json")
    tree = git(origin, "mktree", input="\n".join(entries) + "\n")
    tip = git(origin, "commit-tree", tree, "-p", "reconciler-state", "-m", "an older reconcile's sync")
    git(origin, "update-ref", "refs/heads/reconciler-state", tip)
    assert OLD_KEY in git(origin, "show", "reconciler-state:state.json")
    write_defs(work, {"r.yaml": registry_doc("HelmRegistry", "h", "endpoint: https://h2.example.com")})
    commit_all(work)
    res = run(work, *args, env=env)
    assert res.returncode == 0, res.stderr
    stored = git(origin, "show", "reconciler-state:state.json")
    assert OLD_KEY not in stored
    _masked_sync(json.loads(stored)["registries"][0])
    # a commit message ("sync h: <the server's status>") is redacted too
    monkeypatch.setenv("PALETTE_API_KEY", OLD_KEY)
    store = GitBranchStateStore(work, branch="reconciler-state")
    with store.lock():
        state = store.read()
        state.serial += 1
        store.write(state, f"sync HelmRegistry/h: Failed {OLD_KEY}")
    subjects = git(origin, "log", "-3", "--format=%s", "reconciler-state").splitlines()
    assert "sync HelmRegistry/h: Failed (sensitive)" in subjects, subjects
    assert OLD_KEY not in git(origin, "log", "-3", "--format=%B", "reconciler-state")
    assert OLD_KEY not in git(origin, "show", "reconciler-state:state.json")


def test_a_huge_error_page_is_redacted_only_where_it_can_be_shown():
    """Adversarial pass 7, item 5: an error answer was redacted whole before it was cut to the
    300 characters shown: a 1 MiB page against 5,000 resolved secrets took seconds per message
    (and per retry). Only what can reach the shown part is searched now, with room for the
    longest value in its longest form; a value at the start is still masked."""
    values = [f"value-{i:05d}-{'x' * 20}" for i in range(5000)]
    page = values[17] + " " + "lorem ipsum " * 90_000  # 1 MiB
    target = PaletteTarget("https://palette.test", "k-secret-key", sleep=lambda s: None, rate=1000.0, burst=10,
                           transport=httpx.MockTransport(lambda r: httpx.Response(400, text=page)))
    started = time.process_time()
    err = target._error("GET", "/v1/registries/helm", httpx.Response(400, text=page), values)
    assert time.process_time() - started < 1.0
    assert values[17] not in str(err) and "(sensitive)" in str(err), str(err)[:200]


@pytest.mark.parametrize("where", ["message after blanks", "message after newlines", "code", "code after blanks",
                                   "text/plain after blanks"])
def test_no_part_of_a_value_is_shown_when_it_straddles_the_searched_part(where):
    """Adversarial pass 8, item 1: only the start of an error answer is redacted (pass 7, item
    5), measured in characters of the answer, while what is shown is cut after its whitespace
    is collapsed, and a code was not cut at all. A value placed just across the end of the
    searched part, after a run of blanks (or, in a code, after any text), was not masked, and
    all of it but its last characters was shown in the error."""
    key, pw = "k-secret-key-0123456789abcdef", "s3cr3t-Registry-Passw0rd-XYZ123"
    target = PaletteTarget("https://palette.test", key, sleep=lambda s: None, rate=1000.0, burst=10,
                           transport=httpx.MockTransport(lambda r: httpx.Response(400, text="")))
    for value in (pw, key):
        for at in range(4000, 6000, 7):  # wherever the searched part ends, the value straddles it once
            pad = {"message after blanks": " ", "message after newlines": "\n", "code": "x",
                   "code after blanks": " ", "text/plain after blanks": " "}[where] * at
            body = (json.dumps({"code": pad + value, "message": "m"}) if where.startswith("code")
                    else pad + value if where.startswith("text") else json.dumps({"code": "Bad", "message": pad + value}))
            shown = str(target._error("POST", "/v1/registries/helm", httpx.Response(400, text=body), [pw]))
            assert value[:8] not in shown, (at, shown[-120:])


def test_read_ref_checks_what_it_opened_not_only_the_path(tmp_path, monkeypatch) -> None:
    """Review (this round): the path was checked, then resolved again to be opened; a link
    swapped in between (by anyone who can write the checkout during the run) read a file
    outside the repository and every secret root. What was opened is checked too."""
    from reconciler import secrets as secrets_mod

    repo = tmp_path / "repo"
    (repo / "secrets").mkdir(parents=True)
    (repo / "secrets" / "pw").write_text("inside-the-repo\n")
    outside = tmp_path / "outside-secret"
    outside.write_text("OUTSIDE-credential-9f3a\n")
    real_check = secrets_mod.path_problem
    swapped = []

    def check_then_swap(ref, base_dir, roots, *, limit):
        problem = real_check(ref, base_dir, roots, limit=limit)
        if not swapped:  # once, between the check and the open
            swapped.append(1)
            os.unlink(repo / "secrets" / "pw")
            os.symlink(outside, repo / "secrets" / "pw")
        return problem

    assert secrets_mod.read_ref("secrets/pw", repo, [], limit=secrets_mod.MAX_SECRET_FILE) == b"inside-the-repo\n"
    monkeypatch.setattr(secrets_mod, "path_problem", check_then_swap)
    with pytest.raises(secrets_mod.FileRefused, match="outside the repository.*changed after it was checked"):
        secrets_mod.read_ref("secrets/pw", repo, [], limit=secrets_mod.MAX_SECRET_FILE)
