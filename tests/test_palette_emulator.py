"""The Palette API emulator itself: spec checks, paging, masking, 429, built-ins, sync."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.palette_emulator import (  # noqa: F401
    API_KEY,
    Behaviour,
    PaletteEmulator,
    palette_emulator_factory,
)


@pytest.fixture
def palette_emulator(palette_emulator_factory):
    """No rate limit here: these tests fire raw requests back to back."""
    return palette_emulator_factory(seed_defaults=True, rate=0)


@pytest.fixture
def palette_emulator_raw():
    emu = PaletteEmulator(seed_defaults=True, rate=0).start()
    yield emu
    emu.stop()


def client(emu: PaletteEmulator, **kw: object) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"ApiKey": API_KEY}, timeout=5, **kw)  # type: ignore[arg-type]


def basic_body(name: str, password: str = "s3cret-pw", **spec: object) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"endpoint": "oci.example.com", "providerType": "helm", "baseContentPath": "charts",
                 "isSyncSupported": True, "scope": "tenant",
                 "auth": {"type": "basic", "username": "bot", "password": password}, **spec},
    }


def helm_body(name: str, **spec: object) -> dict:
    return {"metadata": {"name": name},
            "spec": {"endpoint": "https://charts.example.com", "name": name, "isPrivate": False,
                     "scope": "tenant", "auth": {"type": "token", "token": "tok-123456"}, **spec}}


def test_auth_required(palette_emulator):
    with httpx.Client(base_url=palette_emulator.url) as c:
        r = c.get("/v1/registries/oci/summary")
    assert r.status_code == 401
    assert set(r.json()) == {"code", "message"}


def test_bad_body_rejected_and_recorded(palette_emulator_raw):
    emu = palette_emulator_raw
    with client(emu) as c:
        bad = basic_body("x")
        bad["spec"]["isPrivate"] = True  # v1BasicOciRegistrySpec has no isPrivate
        r1 = c.post("/v1/registries/oci/basic", json=bad)
        r2 = c.post("/v1/registries/oci/basic", json={"metadata": {"name": "y"}, "spec": {"endpoint": "e"}})
        r3 = c.post("/v1/registries/oci/basic", json=basic_body("z", providerType="docker"))
        r4 = c.get("/v1/registries/helm", params={"page": "2"})
        r5 = c.get("/v1/registries/helm", params={"limit": "many"})
        r6 = c.post("/v1/registries/oci/summary")
        r7 = c.get("/v1/registries/bogus/things")
    assert [r.status_code for r in (r1, r2, r3, r4, r5)] == [400] * 5
    assert "isPrivate" in r1.json()["message"]
    assert "auth" in r2.json()["message"]
    assert r6.status_code == 405 and r7.status_code == 404
    assert len(emu.violations) == 7
    assert emu.store.count("basic") == 0


def test_responses_match_spec_and_defaults(palette_emulator):
    emu = palette_emulator
    with client(emu) as c:
        uid = c.post("/v1/registries/oci/basic", json=basic_body("one")).json()["uid"]
        assert len(uid) == 24 and int(uid, 16) >= 0
        obj = c.get(f"/v1/registries/oci/{uid}/basic").json()
        op, _, _ = emu.spec.route("GET", f"/v1/registries/oci/{uid}/basic")
        assert emu.spec.check_response(op, 200, obj) == []
        summary = c.get("/v1/registries/oci/summary").json()
        op, _, _ = emu.spec.route("GET", "/v1/registries/oci/summary")
        assert emu.spec.check_response(op, 200, summary) == []
    spec = obj["spec"]
    assert spec["auth"]["tls"] == {"enabled": False, "insecureSkipVerify": False, "ca": "", "certificate": "", "key": ""}
    assert spec["basePath"] == "" and spec["containsSpectroManifest"] is False
    assert obj["metadata"]["creationTimestamp"] and "syncStatus" in obj["status"]


def test_secrets_are_masked(palette_emulator):
    emu = palette_emulator
    with client(emu) as c:
        uid = c.post("/v1/registries/oci/basic", json=basic_body("m", password="hunter2-pw")).json()["uid"]
        c.post("/v1/registries/helm", json=helm_body("h"))
        ecr = {"metadata": {"name": "e"}, "spec": {"endpoint": "1.dkr.ecr.us-east-1.amazonaws.com",
                                                    "isPrivate": True, "scope": "tenant",
                                                    "credentials": {"credentialType": "secret", "accessKey": "AK",
                                                                    "secretKey": "sk-987654"}}}
        c.post("/v1/registries/oci/ecr", json=ecr)
        texts = [c.get(f"/v1/registries/oci/{uid}/basic").text, c.get("/v1/registries/helm").text,
                 c.get(f"/v1/registries/oci/{emu.store.by_name('ecr', 'e').uid}/ecr").text]
    for secret in ("hunter2-pw", "tok-123456", "sk-987654"):
        assert all(secret not in t for t in texts)
        assert all(secret not in line for line in emu.request_lines())
    # but the store has them (write-only, not dropped)
    assert emu.store.by_name("basic", "m").obj["spec"]["auth"]["password"] == "hunter2-pw"


def test_duplicate_name_conflict(palette_emulator):
    with client(palette_emulator) as c:
        assert c.post("/v1/registries/oci/basic", json=basic_body("dup")).status_code == 201
        r = c.post("/v1/registries/oci/basic", json=basic_body("dup"))
        assert r.status_code == 409 and r.json()["code"] == "DuplicateRegistryName"
        system = basic_body("dup")
        system["spec"]["scope"] = "system"
        assert c.post("/v1/registries/oci/basic", json=system).status_code == 201


def test_paging_with_continue(palette_emulator):
    emu = palette_emulator
    for i in range(120):
        emu.add("helm", f"h{i:03}", {"endpoint": f"https://c{i}.example.com", "auth": {"type": "noAuth"}})
    names, token, pages = [], None, 0
    with client(emu) as c:
        while True:
            params = {"limit": 100, "scope": "tenant"}
            if token:
                params["continue"] = token
            data = c.get("/v1/registries/helm", params=params).json()
            pages += 1
            assert len(data["items"]) <= 50
            names += [i["metadata"]["name"] for i in data["items"]]
            token = data["listmeta"]["continue"]
            if not token:
                break
    assert pages == 3 and names == [f"h{i:03}" for i in range(120)]


def test_rate_limit_429(palette_emulator_factory):
    emu = palette_emulator_factory(rate=5, burst=3)
    with client(emu) as c:
        codes = [c.get("/v1/registries/oci/summary").status_code for _ in range(8)]
    assert codes.count(429) >= 3 and emu.count_429 == codes.count(429)
    r429 = next(e for e in emu.requests if e["status"] == 429)
    assert r429["fault"] == "ratelimit"


def test_builtins_are_protected(palette_emulator):
    emu = palette_emulator
    bitnami = emu.store.by_name("helm", "Bitnami")
    with client(emu) as c:
        meta = c.get("/v1/registries/metadata").json()["items"]
        assert {m["name"] for m in meta if m["isDefault"]} == {"Bitnami", "Public Repo", "Palette Registry"}
        assert c.delete(f"/v1/registries/helm/{bitnami.uid}").status_code == 403
        body = c.get(f"/v1/registries/helm/{bitnami.uid}").json()
        del body["status"]
        assert c.put(f"/v1/registries/helm/{bitnami.uid}", json=body).status_code == 403
        assert c.delete(f"/v1/registries/{bitnami.uid}").status_code == 403
    assert emu.store.by_name("helm", "Bitnami") is not None


def test_sync_state_machine_and_force(palette_emulator):
    emu = palette_emulator
    emu.faults.sync_polls = 2
    with client(emu) as c:
        uid = c.post("/v1/registries/oci/basic", json=basic_body("s")).json()["uid"]
        base = f"/v1/registries/oci/{uid}/basic/sync"
        assert c.get(base + "/status").json()["status"] == ""
        assert c.post(base).status_code == 202
        seen = [c.get(base + "/status").json()["status"] for _ in range(3)]
        assert seen == ["InProgress", "InProgress", "Completed"]
        st = c.get(base + "/status").json()
        assert st["lastSyncedTime"] and st["isSyncSupported"] is True
        r = c.post(base, params={"forceSync": "true"})
        assert r.status_code == 409 and "hour" in r.json()["message"]
        emu.clock.advance(3601)
        assert c.post(base, params={"forceSync": "true"}).status_code == 202


def test_sync_failure_and_hang(palette_emulator):
    emu = palette_emulator
    emu.faults.sync_polls = 0
    emu.faults.sync_mode_by_name = {"bad": "fail", "stuck": "hang"}
    with client(emu) as c:
        bad = c.post("/v1/registries/helm", json=helm_body("bad")).json()["uid"]
        stuck = c.post("/v1/registries/helm", json=helm_body("stuck")).json()["uid"]
        for uid in (bad, stuck):
            c.post(f"/v1/registries/helm/{uid}/sync")
        st = c.get(f"/v1/registries/helm/{bad}/sync/status").json()
        assert st["status"] == "Failed" and "401" in st["message"]
        for _ in range(3):
            assert c.get(f"/v1/registries/helm/{stuck}/sync/status").json()["status"] == "InProgress"


def test_validate_rule(palette_emulator):
    with client(palette_emulator) as c:
        ok = basic_body("v")["spec"]
        assert c.post("/v1/registries/oci/basic/validate", json=ok).status_code == 204
        r = c.post("/v1/registries/oci/basic/validate", json={**ok, "endpoint": "invalid.example.com"})
        assert r.status_code == 400 and r.json()["code"] == "RegistryValidationFailed"
        wrong = basic_body("v", password="wrong")["spec"]
        assert c.post("/v1/registries/oci/basic/validate", json=wrong).status_code == 400


def test_faults(palette_emulator_factory):
    emu = palette_emulator_factory(rate=0)
    emu.faults.p500 = 1.0
    with client(emu) as c:
        assert c.get("/v1/registries/oci/summary").status_code == 500
        emu.faults.clear()
        emu.faults.p429 = 1.0
        r = c.get("/v1/registries/oci/summary")
        assert r.status_code == 429 and float(r.headers["Retry-After"]) > 0
        emu.faults.clear()
        emu.faults.p_drop = 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/v1/registries/oci/summary")
        emu.faults.clear()
        emu.faults.p_timeout = 1.0
        emu.faults.timeout_sleep = 0.5
        with pytest.raises(httpx.ReadTimeout):
            c.get("/v1/registries/oci/summary", timeout=0.2)
        emu.faults.clear()
        emu.faults.after_effect, emu.faults.after_effect_count = "500", 1
        assert c.post("/v1/registries/oci/basic", json=basic_body("ae")).status_code == 500
        assert emu.store.by_name("basic", "ae") is not None  # applied anyway
        assert c.post("/v1/registries/oci/basic", json=basic_body("ae2")).status_code == 201


# ---------------------------------------------------------------- switchable behaviours (each its evidence)


def emu_with(factory, **behaviour) -> PaletteEmulator:
    return factory(seed_defaults=True, rate=0, behaviour=Behaviour(**behaviour))


def test_sync_flag_only_in_status(palette_emulator_factory):
    emu = emu_with(palette_emulator_factory, sync_in_status_only=True)
    with client(emu) as c:
        uid = c.post("/v1/registries/oci/basic", json=basic_body("s")).json()["uid"]
        obj = c.get(f"/v1/registries/oci/{uid}/basic").json()
    assert "isSyncSupported" not in obj["spec"] and obj["status"]["syncStatus"]["isSyncSupported"] is True


def test_secrets_masked_on_get(palette_emulator_factory):
    emu = emu_with(palette_emulator_factory, secrets_on_get="masked")
    with client(emu) as c:
        uid = c.post("/v1/registries/oci/basic", json=basic_body("m", password="hunter2-pw")).json()["uid"]
        obj = c.get(f"/v1/registries/oci/{uid}/basic").json()
    assert obj["spec"]["auth"]["password"] == "hun***-pw"
    assert emu.store.records[uid].obj["spec"]["auth"]["password"] == "hunter2-pw"
    assert all("hunter2-pw" not in line for line in emu.request_lines())  # the log is masked
    assert any("hunter2-pw" in e["body"] for e in emu.raw)  # the raw request is not


def test_builtin_detail_read_refused(palette_emulator_factory):
    emu = emu_with(palette_emulator_factory, builtin_detail_403=True)
    ecr = emu.store.by_name("ecr", "Palette Registry")
    with client(emu) as c:
        assert c.get(f"/v1/registries/oci/{ecr.uid}/ecr").status_code == 403
        summary = c.get("/v1/registries/oci/summary").json()["items"]
    assert ecr.uid in {i["metadata"]["uid"] for i in summary}


@pytest.mark.parametrize("replaces", [True, False])
def test_put_replaces_the_object_or_keeps_what_it_leaves_out(palette_emulator_factory, replaces):
    emu = emu_with(palette_emulator_factory, put_replaces=replaces, future_fields={"futureField": "f"})
    rec = emu.add("basic", "ui", {"endpoint": "acme.jfrog.io", "basePath": "artifactory/api/oci/x",
                                  "containsSpectroManifest": True, "auth": {"type": "noAuth"}})
    with client(emu) as c:
        got = c.get(f"/v1/registries/oci/{rec.uid}/basic").json()
        assert got["spec"]["futureField"] == "f"
        # sending the object back as it came is accepted (future fields are not spec violations)
        back = {"metadata": got["metadata"], "spec": got["spec"]}
        assert c.put(f"/v1/registries/oci/{rec.uid}/basic", json=back).status_code == 204
        assert emu.lost == [] and not emu.violations
        thin = {"metadata": {"name": "ui"}, "spec": {"endpoint": "acme.jfrog.io", "auth": {"type": "noAuth"}}}
        assert c.put(f"/v1/registries/oci/{rec.uid}/basic", json=thin).status_code == 204
    spec = emu.store.records[rec.uid].obj["spec"]
    if replaces:
        assert len(emu.lost) == 3 and spec["basePath"] == "" and "futureField" not in spec
    else:
        assert emu.lost == [] and spec["basePath"] == "artifactory/api/oci/x" and spec["futureField"] == "f"


def test_stuck_continue_token(palette_emulator_factory):
    emu = emu_with(palette_emulator_factory, stuck_continue=True, page_limit=2)
    for i in range(5):
        emu.add("helm", f"h{i}", {"endpoint": f"https://h{i}.example.com", "auth": {"type": "noAuth"}})
    with client(emu) as c:
        first = c.get("/v1/registries/helm").json()["listmeta"]["continue"]
        second = c.get("/v1/registries/helm", params={"continue": first}).json()["listmeta"]["continue"]
    assert first and first == second


def test_summary_timestamps_switch(palette_emulator_factory):
    emu = emu_with(palette_emulator_factory, summary_timestamps=False)
    with client(emu) as c:
        items = c.get("/v1/registries/oci/summary").json()["items"]
        assert all("lastModifiedTimestamp" not in i["metadata"] for i in items)
        emu.behaviour.summary_timestamps = True
        items = c.get("/v1/registries/oci/summary").json()["items"]
        assert all(i["metadata"]["lastModifiedTimestamp"] for i in items)


def test_ui_edit_changes_the_stamp(palette_emulator):
    emu = palette_emulator
    rec = emu.add("basic", "e", {"endpoint": "e.example.com", "auth": {"type": "noAuth"}})
    stamp = rec.obj["metadata"]["lastModifiedTimestamp"]
    emu.edit("e", lambda spec: spec.update(endpoint="f.example.com"))
    assert rec.obj["metadata"]["lastModifiedTimestamp"] > stamp and rec.obj["spec"]["endpoint"] == "f.example.com"


def test_redirects_and_raw_answers(palette_emulator):
    emu = palette_emulator
    emu.redirects["/v1/registries/helm"] = [301, "https://elsewhere.example.com/", 1]
    emu.answers["/v1/registries/pack"] = (200, "text/html", b"<html>login</html>")
    with client(emu) as c:
        r = c.get("/v1/registries/helm")
        assert r.status_code == 301 and r.headers["Location"] == "https://elsewhere.example.com/"
        assert c.get("/v1/registries/helm").status_code == 200  # once only
        r = c.get("/v1/registries/pack")
        assert r.status_code == 200 and r.text == "<html>login</html>"


def test_dripping_answers(palette_emulator):
    emu = palette_emulator
    emu.faults.drip = 0.005  # one byte every 5 ms: the listing's few hundred bytes take seconds
    with client(emu) as c:
        start = time.monotonic()
        r = c.get("/v1/registries/metadata")
    assert r.status_code == 200 and r.json()["items"]
    assert time.monotonic() - start >= 0.005 * len(r.content)  # the body alone, byte by byte


def test_no_builtin_annotation_is_invented(palette_emulator):
    with client(palette_emulator) as c:
        text = c.get("/v1/registries/helm").text + c.get("/v1/registries/oci/summary").text
    assert "palette.spectrocloud.com/builtin" not in text
