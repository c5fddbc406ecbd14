"""A registry whose fields come back in the wrong shape (an ``auth`` that is a string, a list, a
number; a ``tls`` or ``credentials`` that is no object; a ``spec`` or ``metadata`` that is no
object) is read as absent, never an internal error: plan, status and export exit 0 or 1.

Adversarial pass 4, #6: ``auth: "noAuth"`` on a Helm registry was ``internal error:
AttributeError`` (exit 3) in all three. The odd answers are the emulator's raw ``answers`` (what a
proxy or a server bug could send), not a behaviour of the emulator."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitops_repo import init_repo, run
from tests.support.palette_emulator import API_KEY, PaletteEmulator, palette_emulator_factory  # noqa: F401

HOSTILE = ["noAuth", ["x", {"type": "basic"}], 7, True]

# (flavour, name, dotted field of the GET answer made hostile)
ODD = [
    ("helm", "h-auth", "spec.auth"), ("helm", "h-tls", "spec.auth.tls"), ("helm", "h-spec", "spec"),
    ("helm", "h-endpoint", "spec.endpoint"), ("helm", "h-type", "spec.auth.type"), ("helm", "h-meta", "metadata"),
    ("pack", "p-auth", "spec.auth"), ("pack", "p-tls", "spec.auth.tls"), ("pack", "p-name", "metadata.name"),
    ("basic", "o-auth", "spec.auth"), ("basic", "o-tls", "spec.auth.tls"), ("basic", "o-status", "status"),
    ("ecr", "e-creds", "spec.credentials"), ("ecr", "e-sts", "spec.credentials.sts"), ("ecr", "e-tls", "spec.tls"),
]
SPECS: dict[str, dict[str, Any]] = {
    "helm": {"endpoint": "https://charts.example.com", "isPrivate": False,
             "auth": {"type": "noAuth", "tls": {"enabled": True, "insecureSkipVerify": False}}},
    "pack": {"endpoint": "https://packs.example.com", "private": False,
             "auth": {"type": "noAuth", "tls": {"enabled": True, "insecureSkipVerify": False}}},
    "basic": {"endpoint": "oci.example.com", "providerType": "helm", "isSyncSupported": False,
              "auth": {"type": "noAuth", "tls": {"enabled": True, "insecureSkipVerify": False}}},
    "ecr": {"endpoint": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "isPrivate": True, "providerType": "helm",
            "isSyncSupported": False,
            "credentials": {"credentialType": "sts", "sts": {"arn": "arn:aws:iam::123456789012:role/p",
                                                             "externalId": "x"}},
            "tls": {"enabled": True, "insecureSkipVerify": False}},
}
PATHS = {"helm": "/v1/registries/helm/{uid}", "pack": "/v1/registries/pack/{uid}",
         "basic": "/v1/registries/oci/{uid}/basic", "ecr": "/v1/registries/oci/{uid}/ecr"}


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj[key]
    obj[last] = value


def serve_odd_answers(emu: PaletteEmulator) -> None:
    """A registry for each field of ``ODD`` and each shape of ``HOSTILE``, answering that field in
    that shape, in the lists and in detail (all at once: one run of each command sees them all)."""
    lists: dict[str, list[Any]] = {"helm": [], "pack": []}
    for (flavour, name, field), (i, value) in itertools.product(ODD, enumerate(HOSTILE)):
        rec = emu.add(flavour, f"{name}-{i}", copy.deepcopy(SPECS[flavour]))
        view = emu.view(rec)
        _set(view, field, copy.deepcopy(value))
        emu.answers[PATHS[flavour].format(uid=rec.uid)] = (200, "application/json", json.dumps(view).encode())
        if flavour in lists:
            lists[flavour].append(view)
    for flavour, items in lists.items():
        emu.answers[f"/v1/registries/{flavour}"] = (200, "application/json", json.dumps({"items": items}).encode())


@pytest.mark.parametrize("command", [["--dry-run"], ["status"], ["export", "--out", "exported.yaml"]],
                         ids=["plan", "status", "export"])
def test_odd_shapes_in_a_registry_answer_are_never_an_internal_error(tmp_path: Path, command,
                                                                      palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, rate=0)
    serve_odd_answers(emu)
    root = tmp_path / "repo"
    init_repo(root)
    (root / "registries.d").mkdir(exist_ok=True)
    res = run(root, *command[:1], "--target", "palette", "--endpoint", emu.url, "--rate-limit", "1000",
              "--burst", "100", *command[1:],
              env={"PALETTE_API_KEY": API_KEY})
    said = res.stdout + res.stderr
    assert res.returncode in (0, 1), said
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, said
    # the registry with no object for metadata has no uid: left out, in one line
    assert res.stderr.strip().splitlines()[:1] == [
        "warning: palette: GET /v1/registries/helm: 4 item(s) without a metadata.uid left out"], said


@pytest.mark.parametrize("ctype,body", [
    ("application/json", json.dumps({"code": "Bad\n::error title=forged::all good\n\x1b[1A\x1b[2KNo changes.",
                                      "message": "x\x1b]8;;https://evil.example/\x07link\x1b]8;;\x07 \u202eevil\r"})),
    ("text/plain", "plain \x1b[2K\r\x1b[1AEVIL\u202e\x07"),
])
def test_a_palette_error_cannot_forge_or_erase_lines(tmp_path: Path, ctype: str, body: str,
                                                     palette_emulator_factory):  # noqa: F811
    """Adversarial pass 7, item 1: an error answer's code kept its newlines and its message kept
    ESC, BEL, CR, OSC 8 links and bidi overrides, printed raw after "error:" on stderr: a server
    (or a name Palette echoes) forged whole log lines, a "No changes." among them. The server's
    words are one line, every such character escaped."""
    emu = palette_emulator_factory(seed_defaults=True, rate=0)
    emu.answers["/v1/registries/helm"] = (400, ctype, body.encode())
    root = tmp_path / "repo"
    init_repo(root)
    (root / "registries.d").mkdir(exist_ok=True)
    res = run(root, "status", "--target", "palette", "--endpoint", emu.url, env={"PALETTE_API_KEY": API_KEY})
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert not any(c in said for c in "\x1b\x07\r\u202e"), repr(said)
    errors = [line for line in res.stderr.splitlines() if "GET /v1/registries/helm" in line]
    assert len(errors) == 1 and not any(line.startswith(("No changes", "::error", "\\::error"))
                                        for line in res.stderr.splitlines()), repr(res.stderr)
