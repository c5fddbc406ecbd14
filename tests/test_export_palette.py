"""`reconcile export` against the Palette emulator in its realistic configuration: a tenant
with six registries made in the UI (masked secrets on GET, built-ins that refuse detail
reads). The export validates, and the plan that follows adopts all six, only secret fields
differing; no secret or masked value is ever written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support.gitops_repo import commit_all, init_repo, run
from tests.support.palette_emulator import API_KEY, palette_emulator_factory  # noqa: F401

CA = "-----BEGIN CERTIFICATE-----\nMIIBuiMadeCAforExportTest\n-----END CERTIFICATE-----\n"
UI_SECRETS = {"jfrog": "jfrog-ui-pw-91x", "ecr-keys": "ecr-ui-secret-77q", "charts": "helm-ui-pw-55z",
              "packs": "pack-ui-token-31k"}


def ui_tenant(emu) -> None:
    emu.add("basic", "jfrog", {"endpoint": "acme.jfrog.io", "basePath": "artifactory/api/helm/charts",
                               "providerType": "helm", "baseContentPath": "charts", "isSyncSupported": True,
                               "auth": {"type": "basic", "username": "robot", "password": UI_SECRETS["jfrog"],
                                        "tls": {"enabled": True, "certificate": CA, "insecureSkipVerify": False}}})
    emu.add("ecr", "ecr-sts", {"endpoint": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "isPrivate": True,
                               "providerType": "pack", "baseContentPath": "packs", "isSyncSupported": True,
                               "credentials": {"credentialType": "sts",
                                               "sts": {"arn": "arn:aws:iam::123456789012:role/palette",
                                                       "externalId": "ext-1"}}})
    emu.add("ecr", "public-ecr", {"endpoint": "public.ecr.aws", "isPrivate": False, "providerType": "helm",
                                  "baseContentPath": "charts", "isSyncSupported": True})
    emu.add("helm", "charts", {"endpoint": "https://charts.example.com", "isPrivate": True,
                               "auth": {"type": "basic", "username": "ops", "password": UI_SECRETS["charts"]}})
    emu.add("helm", "public-charts", {"endpoint": "https://public.example.com/charts", "isPrivate": False,
                                      "auth": {"type": "noAuth"}})
    emu.add("pack", "packs", {"endpoint": "https://packs.example.com", "private": True,
                              "auth": {"type": "token", "token": UI_SECRETS["packs"]}})


def test_export_of_a_ui_made_tenant_validates_and_plans_six_adopts(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    emu = palette_emulator_factory(seed_defaults=True, realistic=True)
    ui_tenant(emu)
    root = tmp_path / "gitops"
    init_repo(root)
    (root / "registries.d").mkdir()
    (root / "registries.d/.keep").write_text("")
    commit_all(root)
    env = {"PALETTE_API_KEY": API_KEY}
    res = run(root, "export", "--target", "palette", "--endpoint", emu.url, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (root / "registries.d/exported.yaml").read_text()
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text)}
    assert set(docs) == {"jfrog", "ecr-sts", "public-ecr", "charts", "public-charts", "packs"}  # no built-in
    jfrog = docs["jfrog"]["spec"]
    assert jfrog["basePath"] == "artifactory/api/helm/charts"
    assert jfrog["auth"]["password"] == {"fromEnv": "REG_JFROG_PASSWORD"}
    assert (root / jfrog["tls"]["caFile"]).read_text() == CA  # the CA beside the output, referenced
    assert docs["public-ecr"]["spec"]["auth"] == {"type": "ecr"}  # a public ECR: no credentials
    assert docs["charts"]["spec"]["sync"] is False  # Helm isPrivate: true = sync off
    assert docs["public-charts"]["spec"]["sync"] is True
    assert docs["packs"]["spec"]["auth"]["token"] == {"fromEnv": "REG_PACKS_TOKEN"}
    written = text + res.stdout + res.stderr
    for value in UI_SECRETS.values():
        assert value not in written and value[:3] + "***" not in written
    assert "***" not in text

    assert run(root, "validate").returncode == 0
    commit_all(root, "exported")
    secrets = {"REG_JFROG_PASSWORD": "new-jfrog-pw-1", "REG_CHARTS_PASSWORD": "new-charts-pw-2",
               "REG_PACKS_TOKEN": "new-packs-token-3"}
    plan = run(root, "--dry-run", "--format", "json", "--target", "palette", "--endpoint", emu.url,
               env={**env, **secrets})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    changes = json.loads(plan.stdout)["changes"]
    assert sorted(c["name"] for c in changes if c["action"] == "adopt") == sorted(docs)
    assert all(c["action"] == "adopt" for c in changes), changes
    for c in changes:
        assert all(f["sensitive"] for f in c["fields"]), c  # only secrets differ


def test_credentials_in_an_endpoint_url_are_never_written(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    """Adversarial pass 3, item 4: an endpoint typed in the UI as https://user:pw@host was
    exported verbatim into registries.d/exported.yaml (a file users commit), exit 0. Now the
    user name becomes basic auth whose password is a reference, and the password is never
    written (nor printed); a registry with auth of its own keeps it and loses the credentials."""
    pw = "hunter2-url-5ecret"
    emu = palette_emulator_factory(seed_defaults=True, realistic=True)
    emu.add("helm", "creds-in-url", {"endpoint": f"https://alice:{pw}@charts.example.com/repo", "isPrivate": False,
                                     "auth": {"type": "noAuth"}})
    emu.add("pack", "token-too", {"endpoint": f"https://bob:{pw}@packs.example.com", "private": True,
                                  "auth": {"type": "token", "token": "pack-ui-token-88x"}})
    root = tmp_path / "gitops"
    init_repo(root)
    (root / "registries.d").mkdir()
    (root / "registries.d/.keep").write_text("")
    commit_all(root)
    env = {"PALETTE_API_KEY": API_KEY}
    res = run(root, "export", "--target", "palette", "--endpoint", emu.url, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (root / "registries.d/exported.yaml").read_text()
    assert pw not in text + res.stdout + res.stderr and "alice:" not in text
    docs = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(text)}
    assert docs["creds-in-url"]["endpoint"] == "https://charts.example.com/repo"
    assert docs["creds-in-url"]["auth"] == {"type": "basic", "username": "alice",
                                            "password": {"fromEnv": "REG_CREDS_IN_URL_PASSWORD"}}
    assert docs["token-too"]["endpoint"] == "https://packs.example.com"
    assert docs["token-too"]["auth"] == {"type": "token", "token": {"fromEnv": "REG_TOKEN_TOO_TOKEN"}}
    assert "warning: HelmRegistry/creds-in-url:" in res.stderr and "set REG_CREDS_IN_URL_PASSWORD" in res.stderr
    assert "warning: PackRegistry/token-too: the credentials in its endpoint URL were left out" in res.stderr
    assert "REG_CREDS_IN_URL_PASSWORD" in res.stdout  # in the list of variables to set
    val = run(root, "validate")
    assert val.returncode == 0, val.stdout + val.stderr


def test_a_token_in_an_endpoints_query_is_never_exported(tmp_path: Path, palette_emulator_factory):  # noqa: F811
    """Adversarial pass 4, item 8: ``?token=...`` in an endpoint typed in the UI was written
    verbatim into registries.d/exported.yaml. It is left out, and a warning says so."""
    tok = "sas-sig-5ecret-0123"
    emu = palette_emulator_factory(seed_defaults=True, realistic=True)
    emu.add("helm", "sas", {"endpoint": f"https://acct.blob.core.windows.net/charts?sv=2022&sig={tok}",
                            "isPrivate": False, "auth": {"type": "noAuth"}})
    root = tmp_path / "gitops"
    init_repo(root)
    (root / "registries.d").mkdir()
    (root / "registries.d/.keep").write_text("")
    commit_all(root)
    res = run(root, "export", "--target", "palette", "--endpoint", emu.url, env={"PALETTE_API_KEY": API_KEY})
    assert res.returncode == 0, res.stdout + res.stderr
    text = (root / "registries.d/exported.yaml").read_text()
    assert tok not in text + res.stdout + res.stderr
    docs = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(text)}
    assert docs["sas"]["endpoint"] == "https://acct.blob.core.windows.net/charts?sv=2022"
    assert "warning: HelmRegistry/sas: the credentials in its endpoint URL's query (sig) were left out" in res.stderr
    val = run(root, "validate")
    assert val.returncode == 0, val.stdout + val.stderr
