"""Palette side of impact analysis (``PaletteTarget.references``) and the VerteX tenant FIPS check
(``PaletteTarget.check_tenant_policy``), against the emulator (every request spec-checked)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.errors import ClientError, ServerError
from reconciler.model import Registry, Settings
from reconciler.state.file import FileStateStore
from reconciler.targets.base import ProfileRef
from reconciler.targets.palette import PaletteTarget
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs
from tests.support.palette_emulator import (  # noqa: F401
    API_KEY,
    PaletteEmulator,
    palette_emulator_factory,
)

PROFILE_TEMPLATES = ("/v1/dashboard/projects/metadata", "/v1/dashboard/clusterprofiles", "/v1/clusterprofiles/",
                     "/v1/users/info", "/v1/tenants/")


@contextmanager
def fast_target(emu: PaletteEmulator, **kw) -> Iterator[PaletteTarget]:
    opts = {"rate": 1000.0, "burst": 50, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 2.0,
            "deadline": 60.0, "seed": 7}
    opts.update(kw)
    target = PaletteTarget(emu.url, API_KEY, **opts)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def emu(palette_emulator_factory) -> PaletteEmulator:  # noqa: F811
    return palette_emulator_factory(rate=0, seed_defaults=True)


def helm(emu: PaletteEmulator, name: str) -> str:
    return emu.add("helm", name, {"endpoint": f"https://{name}.example.com", "isPrivate": False,
                                  "auth": {"type": "noAuth"}}).uid


def profile_requests(emu: PaletteEmulator) -> list[dict]:
    return [c for c in emu.calls() if c["path"].startswith(PROFILE_TEMPLATES)]


# ---------------------------------------------------------------- references


def test_a_project_profile_using_the_registry_is_found_named_with_its_cluster_count(emu):
    used, unused, other = helm(emu, "used"), helm(emu, "unused"), helm(emu, "other")
    data = emu.profiles
    data.add_project("team-a")
    data.add_project("team-b")
    web = data.add_profile("web", [other, used], project="team-a", clusters=3)
    data.add_profile("base", [other], project="team-b", clusters=1)
    data.add_profile("tenant-wide", [other])
    with fast_target(emu) as target:
        refs = target.references([used, unused])
    assert refs == {used: [ProfileRef(web.uid, "web (1.0.0)", "team-a", 3)], unused: []}


def test_profile_reads_carry_the_project_context_and_tenant_reads_carry_none(emu):
    used = helm(emu, "used")
    data = emu.profiles
    team = data.add_project("team-a")
    data.add_profile("web", [used], project="team-a")
    data.add_profile("shared", [used])
    with fast_target(emu) as target:
        target.references([used])
    lists = [(t, p) for m, t, p in data.calls if t == "/v1/dashboard/clusterprofiles"]
    assert lists == [("/v1/dashboard/clusterprofiles", None), ("/v1/dashboard/clusterprofiles", team)]
    reads = sorted((p or "") for m, t, p in data.calls if t == "/v1/clusterprofiles/{uid}")
    assert reads == ["", team]  # the tenant profile in tenant context, the project one in its project


def test_a_tenant_profile_listed_in_a_project_too_is_reported_once_as_tenant_scope(emu):
    used = helm(emu, "used")
    data = emu.profiles
    data.add_project("team-a")
    data.add_project("team-b")
    shared = data.add_profile("shared", [used], clusters=2)
    with fast_target(emu) as target:
        refs = target.references([used])
    assert refs[used] == [ProfileRef(shared.uid, "shared (1.0.0)", None, 2)]


def test_draft_packs_and_older_versions_count(emu):
    in_draft, in_old = helm(emu, "in-draft"), helm(emu, "in-old")
    data = emu.profiles
    data.add_project("team-a")
    drafty = data.add_profile("drafty", [], project="team-a", draft=[in_draft])
    v1 = data.add_profile("app", [in_old], project="team-a", clusters=4)
    data.add_profile("app", [], project="team-a", version="2.0.0", version_of=v1)  # the list shows only 2.0.0
    with fast_target(emu) as target:
        refs = target.references([in_draft, in_old])
    assert refs[in_draft] == [ProfileRef(drafty.uid, "drafty (1.0.0)", "team-a", 0)]
    assert refs[in_old] == [ProfileRef(v1.uid, "app (1.0.0)", "team-a", 4)]


def hide_details(emu: PaletteEmulator, *uids: str) -> list[str | None]:
    """A server on which the detail of ``uids`` answers 404 in every context though the lists
    show them (a profile deleted between the list and the read, or one hidden from this key).
    Returns the ``ProjectUid`` of each such read, as they come."""
    real = emu.profiles.handle
    tried: list[str | None] = []

    def handle(method, template, args, query, body, project_uid):
        if template == "/v1/clusterprofiles/{uid}" and args[0] in uids:
            tried.append(project_uid)
            return 404, {"code": "ResourceNotFound", "message": f"cluster profile '{args[0]}' not found"}
        return real(method, template, args, query, body, project_uid)

    emu.profiles.handle = handle
    return tried


# Whether the tenant context lists project profiles too is unverified either way: the answer
# must be the same both ways (adversarial pass 4, #1: it failed open when the tenant listed it).
@pytest.mark.parametrize("tenant_lists_all", [False, True], ids=["tenant-lists-own", "tenant-lists-all"])
def test_a_project_profile_is_found_however_the_tenant_context_lists_it(emu, tenant_lists_all):
    used = helm(emu, "used")
    data = emu.profiles
    data.add_project("team-a")
    team = data.add_project("team-b")
    web = data.add_profile("web", [used], project="team-b", clusters=3)
    data.tenant_lists_all = tenant_lists_all
    with fast_target(emu) as target:
        refs = target.references([used])
    assert refs == {used: [ProfileRef(web.uid, "web (1.0.0)", "team-b", 3)]}
    reads = [p for m, t, p in data.calls if t == "/v1/clusterprofiles/{uid}"]
    assert reads == [team]  # read in its own scope first (annotations.scope: project)


def test_a_profile_no_context_can_read_is_an_unknown_user_of_every_registry(emu):
    used, other = helm(emu, "used"), helm(emu, "other")
    data = emu.profiles
    data.add_project("team-a")
    edge = data.add_profile("edge", [used], project="team-a", clusters=3)
    data.tenant_lists_all = True
    tried = hide_details(emu, edge.uid)
    with fast_target(emu) as target:
        refs = target.references([used, other])
    why = f"GET /v1/clusterprofiles/{edge.uid} answered 404 in project team-a, tenant"
    unknown = ProfileRef(edge.uid, "edge (1.0.0)", None, unread=why)
    assert refs == {used: [unknown], other: [unknown]}  # its packs are unknown: it may use either
    assert tried == [edge.project_uid, None]  # its own scope first, then every other context that listed it


def test_a_version_no_context_can_read_is_an_unknown_user(emu):
    used = helm(emu, "used")
    data = emu.profiles
    data.add_project("team-a")
    v1 = data.add_profile("app", [used], project="team-a", clusters=4)
    data.add_profile("app", [], project="team-a", version="2.0.0", version_of=v1)  # the list shows only 2.0.0
    hide_details(emu, v1.uid)
    with fast_target(emu) as target:
        refs = target.references([used])
    assert [(r.profile_uid, r.profile_name, bool(r.unread)) for r in refs[used]] == [(v1.uid, "app (1.0.0)", True)]


@pytest.mark.parametrize("field,value,says", [
    ("spec", "packs", "a spec that is not an object"),
    ("published", ["x"], "a spec.published that is not an object"),
    ("packs", "pack-0", "a spec.published.packs that is not a list of objects"),
    ("packs", [7], "a spec.published.packs that is not a list of objects"),
])
def test_a_profile_whose_packs_come_in_an_odd_shape_is_an_unknown_user(emu, field, value, says):
    """A wrong shape where the registry uids are is not "uses none": the answer is unknown."""
    used = helm(emu, "used")
    web = emu.profiles.add_profile("web", [used], clusters=1)
    detail = emu.profiles.detail(web)
    {"spec": detail, "published": detail["spec"], "packs": detail["spec"]["published"]}[field][field] = value
    emu.answers[f"/v1/clusterprofiles/{web.uid}"] = (200, "application/json", json.dumps(detail).encode())
    with fast_target(emu) as target:
        refs = target.references([used])
    assert refs[used] == [ProfileRef(web.uid, "web (1.0.0)", None, unread=f"GET /v1/clusterprofiles/{web.uid} "
                                                                          f"answered {says}")]


def test_profile_lists_are_paged_with_continue(emu):
    used = helm(emu, "used")
    data = emu.profiles
    data.page_limit = 7
    wanted = {data.add_profile(f"p{i:02d}", [used]).uid for i in range(0, 40, 3)}
    for i in range(40):
        if i % 3:
            data.add_profile(f"p{i:02d}", [])
    with fast_target(emu) as target:
        refs = target.references([used])
    assert {r.profile_uid for r in refs[used]} == wanted
    pages = [c for c in emu.calls("POST", "/v1/dashboard/clusterprofiles")]
    assert len(pages) == 6  # 40 profiles, 7 a page
    assert [bool(c["query"].get("continue")) for c in pages] == [False] + [True] * 5


def test_a_stuck_continue_token_is_a_clear_error_within_seconds(emu):
    used = helm(emu, "used")
    emu.profiles.page_limit = 1
    for i in range(3):
        emu.profiles.add_profile(f"p{i}", [used])
    emu.profiles.stuck_continue = True
    started = time.monotonic()
    with fast_target(emu) as target, pytest.raises(ServerError, match="repeated a continue token"):
        target.references([used])
    assert time.monotonic() - started < 5
    assert len(emu.calls("POST", "/v1/dashboard/clusterprofiles")) == 2


def _edit_lists(emu: PaletteEmulator, edit) -> None:
    """A server whose profile list answers are ``edit(answer)`` of the real ones."""
    real = emu.profiles.handle

    def handle(method, template, args, query, body, project_uid):
        status, answer = real(method, template, args, query, body, project_uid)
        if method == "POST" and template == "/v1/dashboard/clusterprofiles" and status == 200:
            answer = edit(json.loads(json.dumps(answer)))
        return status, answer

    emu.profiles.handle = handle


def test_a_list_that_ends_short_of_its_count_fails_closed(emu):
    """Adversarial pass 5: a page ending with no continue token while listmeta.count says
    more: the profile on the unread page was never seen, and the registry it uses was deleted
    without --allow-in-use."""
    used = helm(emu, "used")
    emu.profiles.page_limit = 1
    emu.profiles.add_profile("a-first", [])
    emu.profiles.add_profile("b-user", [used], clusters=2)

    def cut(answer):
        answer["listmeta"]["continue"] = ""  # count still says 2
        return answer

    _edit_lists(emu, cut)
    with fast_target(emu) as target, pytest.raises(ServerError, match="ended after 1 of the 2 profiles"):
        target.references([used])


def test_a_listed_profile_without_a_uid_is_an_unknown_user(emu):
    """Adversarial pass 5: a listed profile whose metadata.uid is null was dropped, as if it
    used no registry."""
    used, other = helm(emu, "used"), helm(emu, "other")
    emu.profiles.add_profile("edge", [used], clusters=3)

    def no_uid(answer):
        for item in answer["items"]:
            item["metadata"]["uid"] = None
        return answer

    _edit_lists(emu, no_uid)
    with fast_target(emu) as target:
        refs = target.references([used, other])
    unknown = ProfileRef("", "edge (1.0.0)", None, unread="listed in tenant without a metadata.uid, so its packs "
                                                          "cannot be read")
    assert refs == {used: [unknown], other: [unknown]}


def test_no_look_up_without_uids(emu):
    emu.profiles.add_profile("p", [helm(emu, "used")])
    with fast_target(emu) as target:
        assert target.references([]) == {}
    assert profile_requests(emu) == []


@pytest.mark.parametrize("template", ["/v1/dashboard/projects/metadata", "/v1/clusterprofiles/{uid}"])
def test_a_refused_look_up_is_a_clear_error_not_no_references(emu, template):
    used = helm(emu, "used")
    emu.profiles.add_profile("web", [used])
    emu.profiles.forbidden.add(template)
    with fast_target(emu) as target, pytest.raises(ClientError) as caught:
        target.references([used])
    assert str(caught.value).startswith("cannot tell which cluster profiles use the registries to delete or "
                                        "replace: palette: GET /v1/"), caught.value
    assert "403" in str(caught.value)


@pytest.mark.parametrize("body,says", [(b"<html><body>proxy login</body></html>", "an HTML page"),
                                       (b"[]", "a JSON list"), (b'{"items": {"a": 1}}', "'items' is not a list")])
def test_an_answer_that_is_not_the_api_is_a_clear_error_not_no_references(emu, body, says):
    """A proxy's page or a list in place of the profile list must never read as "no profile uses it"."""
    used = helm(emu, "used")
    emu.profiles.add_profile("web", [used])
    ctype = "text/html" if body.startswith(b"<") else "application/json"
    emu.answers["/v1/dashboard/clusterprofiles"] = (200, ctype, body)
    with fast_target(emu) as target, pytest.raises(ServerError) as caught:
        target.references([used])
    assert str(caught.value).startswith("cannot tell which cluster profiles use the registries"), caught.value
    assert says in str(caught.value)


def test_look_ups_respect_the_targets_rate_limit(emu):
    used = helm(emu, "used")
    for i in range(8):
        emu.profiles.add_profile(f"p{i}", [used])
    rate = 20.0
    with fast_target(emu, rate=rate, burst=1) as target:
        started = time.monotonic()
        refs = target.references([used])
        elapsed = time.monotonic() - started
        sent = target.stats["requests"]
    assert len(refs[used]) == 8
    n = len(profile_requests(emu))
    assert sent == n == 1 + 1 + 8  # projects, one page, eight profiles: every one through the bucket
    assert elapsed >= (n - 1) / rate * 0.9, f"{n} requests in {elapsed:.2f}s at {rate}/s"


def test_the_emulators_profile_answers_match_the_spec(emu):
    used = helm(emu, "used")
    data = emu.profiles
    data.add_project("team-a")
    prof = data.add_profile("web", [used], project="team-a", draft=[used], clusters=2)
    spec = emu.spec
    answers = {
        ("GET", "/v1/dashboard/projects/metadata"): data.handle("GET", "/v1/dashboard/projects/metadata", [], {}, None,
                                                                None),
        ("POST", "/v1/dashboard/clusterprofiles"): data._list({}, prof.project_uid),
        ("GET", f"/v1/clusterprofiles/{prof.uid}"): (200, data.detail(prof)),
        ("GET", f"/v1/clusterprofiles/{prof.uid}/packs"): data.handle(
            "GET", "/v1/clusterprofiles/{uid}/packs", [prof.uid], {}, None, prof.project_uid),
        ("GET", "/v1/users/info"): data.handle("GET", "/v1/users/info", [], {}, None, None),
        ("GET", f"/v1/tenants/{data.tenant_uid}/preferences/fips"): data.handle(
            "GET", "/v1/tenants/{tenantUid}/preferences/fips", [data.tenant_uid], {}, None, None),
    }
    for (method, path), (status, body) in answers.items():
        op, _, known = spec.route(method, path)
        assert op is not None and known, path
        assert status == 200, (path, body)
        assert spec.check_response(op, status, body) == [], path


# ---------------------------------------------------------------- tenant FIPS policy


def reg(name: str, fips: bool, scope: str = "system") -> Registry:
    return Registry("OciRegistry", name, scope, {"endpoint": f"{name}.example.com", "fips": fips})


@pytest.mark.parametrize(("mode", "allow", "registries", "expected"), [
    ("nonFipsDisabled", True, [reg("addons", False)],
     "tenant {tenant} has fipsPackConfig.mode nonFipsDisabled (non-FIPS packs not allowed), but 1 declared "
     "registry is not FIPS: addons (Settings allowNonFips is true)"),
    ("nonFipsDisabled", True, [reg("fips-packs", True)],
     "Settings allowNonFips is true, but tenant {tenant} has fipsPackConfig.mode nonFipsDisabled (non-FIPS packs "
     "not allowed)"),
    ("nonFipsEnabled", False, [reg("fips-packs", True)],
     "Settings allowNonFips is false, but tenant {tenant} has fipsPackConfig.mode nonFipsEnabled (non-FIPS packs "
     "allowed)"),
    ("nonFipsEnabled", True, [reg("addons", False)], None),
    ("nonFipsDisabled", False, [reg("fips-packs", True)], None),
])
def test_vertex_tenant_fips_setting_must_agree(emu, mode, allow, registries, expected):
    emu.profiles.fips_pack_mode = mode
    with fast_target(emu) as target:
        problem = target.check_tenant_policy(Settings("vertex", allow_non_fips=allow), registries)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected.format(tenant=emu.profiles.tenant_uid)), problem
    assert [t for _, t, _ in emu.profiles.calls] == ["/v1/users/info", "/v1/tenants/{tenantUid}/preferences/fips"]


def test_an_unreadable_tenant_setting_is_a_clear_error(emu):
    emu.profiles.forbidden.add("/v1/tenants/{tenantUid}/preferences/fips")
    with fast_target(emu) as target, pytest.raises(ClientError, match="^vertex: cannot read the tenant's FIPS "
                                                                      "setting: palette: GET /v1/tenants/.*403"):
        target.check_tenant_policy(Settings("vertex", allow_non_fips=False), [])


def test_no_tenant_check_outside_vertex(emu):
    with fast_target(emu) as target:
        assert target.check_tenant_policy(Settings("self-hosted", allow_non_fips=True), [reg("x", False)]) is None
    assert profile_requests(emu) == []


# ---------------------------------------------------------------- CLI


VERTEX_SETTINGS = "apiVersion: reconciler/v1\nkind: Settings\nmetadata: {name: settings}\n" \
                  "spec: {profile: vertex, allowNonFips: true}\n"
ADDONS = registry_doc("OciRegistry", "addons", """
    endpoint: addons.example.com
    provider: helm
    baseContentPath: charts
    sync: false
""", extra_meta="scope: system")


def cli_args(emu: PaletteEmulator) -> list[str]:
    return ["--target", "palette", "--endpoint", emu.url]


def test_cli_refuses_a_vertex_plan_the_tenant_does_not_allow(tmp_path: Path, emu):
    root = tmp_path / "repo"
    init_repo(root)
    write_defs(root, {"settings.yaml": VERTEX_SETTINGS, "addons.yaml": ADDONS})
    commit_all(root, "vertex")
    env = {"PALETTE_API_KEY": API_KEY}
    before = len(emu.store.records)
    for extra in (["--dry-run"], []):
        res = run(root, *cli_args(emu), *extra, env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert "registries.d/settings.yaml:1:1: " in res.stderr, res.stderr
        assert "fipsPackConfig.mode nonFipsDisabled" in res.stderr and "allowNonFips is true" in res.stderr
        assert "addons" in res.stderr
    assert len(emu.store.records) == before
    assert [c for c in emu.calls() if c["method"] != "GET"] == []
    assert not (root / ".reconciler/state-palette.json").exists()
    # the tenant allows non-FIPS packs: the same definitions plan and apply
    emu.profiles.fips_pack_mode = "nonFipsEnabled"
    res = run(root, *cli_args(emu), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert emu.store.by_name("basic", "addons", "system") is not None


def _keep_and_gone_applied(tmp_path: Path, emu):
    """HelmRegistries keep and gone declared and applied to ``emu``: (root, keep's document, env)."""
    root = tmp_path / "repo"
    init_repo(root)
    keep = registry_doc("HelmRegistry", "keep", "endpoint: https://keep.example.com\nsync: true")
    gone = registry_doc("HelmRegistry", "gone", "endpoint: https://gone.example.com\nsync: true")
    write_defs(root, {"keep.yaml": keep, "gone.yaml": gone})
    commit_all(root, "two")
    env = {"PALETTE_API_KEY": API_KEY}
    assert run(root, *cli_args(emu), env=env).returncode == 0
    return root, keep, env


# End to end: the runner calls Target.references for deletes and replaces; ``--allow-in-use``.
def test_cli_h1_delete_of_a_registry_a_project_profile_uses_is_refused_then_allowed(tmp_path: Path, emu):
    root, keep, env = _keep_and_gone_applied(tmp_path, emu)
    assert profile_requests(emu) == []  # creates only: no look-up
    records = FileStateStore(root / ".reconciler/state-palette.json").read().records
    uid = records[("tenant", "HelmRegistry", "gone")].uid
    emu.profiles.add_project("team-a")
    emu.profiles.add_profile("web-stack", [uid], project="team-a", clusters=2)
    write_defs(root, {"keep.yaml": keep})
    commit_all(root, "drop gone")
    res = run(root, *cli_args(emu), env=env)
    # blocked as protect blocks a delete: shown with its reason, never executed (exit 1: the
    # target still differs from the definitions)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "delete blocked: used by cluster profile web-stack (1.0.0) (project team-a, 2 clusters)" in res.stdout
    assert emu.store.by_name("helm", "gone") is not None
    res = run(root, *cli_args(emu), "--allow-in-use", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert emu.store.by_name("helm", "gone") is None
    assert emu.store.by_name("helm", "keep") is not None


def test_cli_a_delete_whose_users_cannot_be_checked_is_blocked_then_allowed(tmp_path: Path, emu):
    """The look-up fails closed: a profile whose packs cannot be read blocks the delete as a
    user does, saying it could not be checked; --allow-in-use lets a reviewed delete through."""
    root, keep, env = _keep_and_gone_applied(tmp_path, emu)
    emu.profiles.add_project("team-a")
    edge = emu.profiles.add_profile("edge", [], project="team-a", clusters=3)
    hide_details(emu, edge.uid)
    write_defs(root, {"keep.yaml": keep})
    commit_all(root, "drop gone")
    for extra, code in ((["--dry-run"], 0), ([], 1)):  # a blocked change: the target still differs
        res = run(root, *cli_args(emu), *extra, env=env)
        assert res.returncode == code, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert ("delete blocked: could not check whether cluster profile edge (1.0.0) (GET /v1/clusterprofiles/"
                f"{edge.uid} answered 404 in project team-a) uses it; deleting may break them; pass --allow-in-use "
                "once reviewed") in res.stdout, res.stdout
        assert emu.store.by_name("helm", "gone") is not None
    res = run(root, *cli_args(emu), "--allow-in-use", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert emu.store.by_name("helm", "gone") is None


def test_names_palette_users_choose_cannot_forge_or_erase_plan_lines(tmp_path: Path, emu):
    """Adversarial pass 6, item 2: a cluster profile's name (anyone who may create one in
    Palette picks it) went raw into the text plan's blocked line: ESC, CR and LF erased the real
    "- HelmRegistry/gone" line and forged "No changes." in a terminal and the CI log. Every
    line quoting a target's names is escaped."""
    root, keep, env = _keep_and_gone_applied(tmp_path, emu)
    uid = emu.store.by_name("helm", "gone").uid
    evil = "web\x1b[2K\r~ HelmRegistry/gone  (in place)\nNo changes. 0 to create, 0 to update, 0 to replace, 0 to delete"
    emu.profiles.add_profile(evil, [uid], clusters=3)
    write_defs(root, {"keep.yaml": keep})
    commit_all(root, "drop gone")
    for extra in ([], ["--allow-in-use"]):
        res = run(root, *cli_args(emu), "--dry-run", *extra, env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "\x1b" not in res.stdout and "\r" not in res.stdout, repr(res.stdout)
        lines = res.stdout.splitlines()
        assert not any(line.startswith("No changes.") for line in lines), lines  # not forged
        assert not any(line.startswith("~ HelmRegistry/gone") for line in lines), lines
        assert "web\\x1b[2K\\x0d~ HelmRegistry/gone" in res.stdout, res.stdout  # shown, escaped


def test_project_uid_adds_a_project_the_project_list_does_not_name(emu):
    """Left alone last rounds: --project-uid was kept and never used, the look-ups taking their
    projects from GET /v1/dashboard/projects/metadata alone. A key that can read a project's
    profiles but is not shown that project (the list answers none of it) found no user there,
    and a registry that project's clusters use could be deleted. The project given is looked in
    too; one the list names is not read twice."""
    used = helm(emu, "used")
    data = emu.profiles
    team = data.add_project("team-a")
    web = data.add_profile("web", [used], project="team-a", clusters=2)
    emu.answers["/v1/dashboard/projects/metadata"] = (200, "application/json", json.dumps({"items": []}).encode())
    with fast_target(emu) as target:
        assert target.references([used]) == {used: []}  # the project unseen: no user found
    with fast_target(emu, project_uid=team) as target:
        refs = target.references([used])
    assert [(r.profile_uid, r.clusters) for r in refs[used]] == [(web.uid, 2)], refs
    del emu.answers["/v1/dashboard/projects/metadata"]
    data.calls.clear()
    with fast_target(emu, project_uid=team) as target:
        refs = target.references([used])
    assert refs == {used: [ProfileRef(web.uid, "web (1.0.0)", "team-a", 2)]}  # named as the list names it
    lists = [p for m, t, p in data.calls if t == "/v1/dashboard/clusterprofiles"]
    assert sorted(lists, key=str) == sorted([None, team], key=str)  # the tenant, then team-a once
