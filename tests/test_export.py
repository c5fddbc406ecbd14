"""`reconcile export`: definitions for the registries a target already has, that validate
clean and plan as adopts only; secrets as deterministic `fromEnv` names, never values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reconciler.commands.export import env_base, export_docs
from reconciler.model import ObservedRegistry
from tests.support.gitops_repo import commit_all, init_repo, registry_doc, run, write_defs

SECRETS = {"OCI_PW": "oci-pw-5ecret-1", "AWS_SK": "aws-sk-5ecret-2", "HELM_TOKEN": "helm-tok-5ecret-3",
           "PACK_PW": "pack-pw-5ecret-4"}
CA = "-----BEGIN CERTIFICATE-----\nMIIBexportTESTca\n-----END CERTIFICATE-----\n"

SIX = "---\n".join([
    registry_doc("OciRegistry", "jfrog", """
        endpoint: jfrog.example.com
        provider: helm
        baseContentPath: charts
        sync: true
        auth: {type: basic, username: robot, password: {fromEnv: OCI_PW}}
        tls: {caFile: certs/ca.pem}
    """),
    registry_doc("OciRegistry", "ecr-sts", """
        endpoint: 123456789012.dkr.ecr.us-east-1.amazonaws.com
        provider: pack
        baseContentPath: packs
        sync: true
        auth: {type: ecr, credentials: {credentialType: sts, arn: "arn:aws:iam::123456789012:role/palette", externalId: ext-1}}
    """),
    registry_doc("OciRegistry", "ecr-keys", """
        endpoint: 123456789012.dkr.ecr.eu-west-1.amazonaws.com
        provider: helm
        baseContentPath: charts
        sync: true
        auth: {type: ecr, credentials: {credentialType: secret, accessKey: AKIAEXAMPLE, secretKey: {fromEnv: AWS_SK}}}
    """),
    registry_doc("HelmRegistry", "private-charts", """
        endpoint: https://charts.example.com
        sync: false
        auth: {type: token, token: {fromEnv: HELM_TOKEN}}
    """),
    registry_doc("HelmRegistry", "public charts", """
        endpoint: https://public.example.com/charts
        auth: {type: noAuth}
    """),
    registry_doc("PackRegistry", "legacy", """
        endpoint: https://packs.example.com
        auth: {type: basic, username: ops, password: {fromEnv: PACK_PW}}
    """),
])


@pytest.fixture
def tenant(tmp_path: Path) -> Path:
    """A local target holding six registries made elsewhere (the "UI"), plus the built-ins."""
    maker = tmp_path / "maker"
    init_repo(maker)
    (maker / "certs").mkdir()
    (maker / "certs/ca.pem").write_text(CA)
    write_defs(maker, {"six.yaml": SIX})
    commit_all(maker)
    db = tmp_path / "tenant.db"
    res = run(maker, "--local-db", str(db), env=SECRETS)
    assert res.returncode == 0, res.stdout + res.stderr
    return db


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "gitops"
    init_repo(root)
    write_defs(root, {"declared.yaml": registry_doc("HelmRegistry", "public charts", """
        endpoint: https://public.example.com/charts
        auth: {type: noAuth}
    """)})
    commit_all(root)
    return root


def test_export_validates_clean_and_plans_only_adopts(repo: Path, tenant: Path):
    res = run(repo, "export", "--local-db", str(tenant))
    assert res.returncode == 0, res.stdout + res.stderr
    out = repo / "registries.d/exported.yaml"
    text = out.read_text()
    docs = list(yaml.safe_load_all(text))
    # five: the declared Helm registry and the built-ins are left out
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("HelmRegistry", "private-charts"), ("OciRegistry", "ecr-keys"), ("OciRegistry", "ecr-sts"),
        ("OciRegistry", "jfrog"), ("PackRegistry", "legacy")]
    by = {d["metadata"]["name"]: d["spec"] for d in docs}
    assert by["jfrog"]["auth"]["password"] == {"fromEnv": "REG_JFROG_PASSWORD"}
    assert by["ecr-keys"]["auth"]["credentials"]["secretKey"] == {"fromEnv": "REG_ECR_KEYS_SECRET_KEY"}
    assert by["private-charts"]["auth"]["token"] == {"fromEnv": "REG_PRIVATE_CHARTS_TOKEN"}
    assert by["private-charts"]["sync"] is False
    assert "secretKey" not in by["ecr-sts"]["auth"]["credentials"]
    for var in ("REG_JFROG_PASSWORD", "REG_ECR_KEYS_SECRET_KEY", "REG_PRIVATE_CHARTS_TOKEN", "REG_LEGACY_PASSWORD"):
        assert var in res.stdout  # the list of names to set, at the end
    for value in SECRETS.values():
        assert value not in text + res.stdout + res.stderr
    assert "***" not in text
    assert text.startswith("# yaml-language-server: $schema=../schema/registry.schema.json\n")

    assert run(repo, "validate").returncode == 0
    env = {"REG_JFROG_PASSWORD": "x" * 12, "REG_ECR_KEYS_SECRET_KEY": "y" * 12,
           "REG_PRIVATE_CHARTS_TOKEN": "z" * 12, "REG_LEGACY_PASSWORD": "w" * 12}
    plan = run(repo, "--dry-run", "--format", "json", "--local-db", str(tenant), env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    changes = json.loads(plan.stdout)["changes"]
    assert sorted((c["action"], c["name"]) for c in changes) == [
        ("adopt", "ecr-keys"), ("adopt", "ecr-sts"), ("adopt", "jfrog"), ("adopt", "legacy"),
        ("adopt", "private-charts"), ("adopt", "public charts")]
    for c in changes:
        assert all(f["sensitive"] or f["path"].startswith("auth.") and "fromEnv" in json.dumps(f)
                   for f in c["fields"]), c


def test_an_existing_file_is_never_overwritten_without_force(repo: Path, tenant: Path):
    out = repo / "registries.d/exported.yaml"
    out.write_text("# mine\n")
    res = run(repo, "export", "--local-db", str(tenant))
    assert res.returncode == 1 and "exists; pass --force" in res.stderr
    assert out.read_text() == "# mine\n"
    res = run(repo, "export", "--local-db", str(tenant), "--force")
    assert res.returncode == 0, res.stderr
    assert "kind: OciRegistry" in out.read_text()
    # exporting again over its own output: what that file declares is not "already declared"
    res = run(repo, "export", "--local-db", str(tenant), "--force")
    assert res.returncode == 0 and "exported 5 registries" in res.stdout


def test_nothing_to_export_writes_nothing(repo: Path, tmp_path: Path):
    res = run(repo, "export", "--local-db", str(tmp_path / "fresh.db"))
    assert res.returncode == 0 and "nothing to export" in res.stdout
    assert not (repo / "registries.d/exported.yaml").exists()
    assert not (tmp_path / "fresh.db").exists()  # export reads the target, never creates it


def test_invalid_definitions_refuse_the_export(repo: Path, tenant: Path):
    (repo / "registries.d/bad.yaml").write_text("apiVersion: reconciler/v1\nkind: Nope\n")
    res = run(repo, "export", "--local-db", str(tenant))
    assert res.returncode == 1 and "bad.yaml:2:" in res.stderr
    assert not (repo / "registries.d/exported.yaml").exists()


def test_ca_reported_by_the_target_goes_to_a_file_beside_the_output():
    obs = ObservedRegistry(uid="u1", kind="OciRegistry", name="jfrog", scope="tenant",
                           spec={"endpoint": "j.example.com", "provider": "helm", "baseContentPath": "c", "sync": True,
                                 "auth": {"type": "basic", "username": "robot", "password": "abc***def"},
                                 "tls": {"insecureSkipVerify": False}}, ca_pem=CA)
    res = export_docs([obs], [], ca_dir="registries.d/exported-ca")
    spec = res.docs[0]["spec"]
    assert spec["tls"] == {"caFile": "registries.d/exported-ca/jfrog.pem"}
    assert res.ca_files == {"registries.d/exported-ca/jfrog.pem": CA}
    assert spec["auth"]["password"] == {"fromEnv": "REG_JFROG_PASSWORD"}  # never the masked value


def test_names_that_clean_to_one_ca_file_get_a_file_each():
    """Adversarial pass: "team a" and "team-a" both became exported-ca/team-a.pem, one CA
    overwrote the other, and the adopt plan then sent the wrong CA to a production registry.
    "Team" and "team" share a file where the file system ignores case (macOS, Windows)."""
    def oci(name: str, kind: str = "OciRegistry") -> ObservedRegistry:
        return ObservedRegistry(uid=f"u-{name}-{kind}", kind=kind, name=name, scope="tenant",
                                spec={"endpoint": "https://r.example.com", "auth": {"type": "noAuth"},
                                      "tls": {"insecureSkipVerify": False}}, ca_pem=f"-----BEGIN CERTIFICATE-----\n{name}{kind}\n")
    observed = [oci("team a"), oci("team-a"), oci("team/a"), oci("Team-A"), oci("team-a", "HelmRegistry"), oci("team-a-2")]
    res = export_docs(observed, [], ca_dir="registries.d/exported-ca")
    files = [d["spec"]["tls"]["caFile"] for d in res.docs]
    assert len({f.casefold() for f in files}) == len(observed), files
    by_name = {(d["kind"], d["metadata"]["name"]): res.ca_files[d["spec"]["tls"]["caFile"]] for d in res.docs}
    for o in observed:
        assert by_name[(o.kind, o.name)] == o.ca_pem  # each definition names its own CA


def test_a_long_name_gets_a_ca_file_the_file_system_takes(tmp_path: Path):
    """A registry name may have 253 characters; its CA file's name was the name plus
    "-system" and ".pem": longer than a file system's 255 bytes, so the export stopped with
    "File name too long" after writing some CA files. Long names are cut, with a digest of
    the whole name: two long names that share a beginning keep a file each."""
    long_a, long_b = "a" * 240 + "-one", "a" * 240 + "-two"
    observed = [ObservedRegistry(uid=f"u{i}", kind="OciRegistry", name=name, scope=scope,
                                 spec={"endpoint": "https://r.example.com", "auth": {"type": "noAuth"},
                                       "tls": {"insecureSkipVerify": False}}, ca_pem=f"{CA}{i}")
                for i, (name, scope) in enumerate([(long_a, "system"), (long_b, "system"), ("b" * 253, "tenant")])]
    res = export_docs(observed, [], ca_dir="registries.d/exported-ca")
    files = [d["spec"]["tls"]["caFile"] for d in res.docs]
    assert len(set(files)) == 3, files
    for rel in files:
        name = rel.rsplit("/", 1)[1]
        assert len(name.encode()) <= 128, name
        (tmp_path / name).write_text(res.ca_files[rel])  # the file system takes it
    assert sorted(res.ca_files.values()) == sorted(o.ca_pem for o in observed)


@pytest.mark.parametrize("scope,name,var", [
    ("tenant", "jfrog", "REG_JFROG"), ("tenant", "My Registry-2", "REG_MY_REGISTRY_2"),
    ("system", "mirror", "REG_SYSTEM_MIRROR"), ("tenant", "---", "REG_REGISTRY"),
])
def test_env_names_are_deterministic(scope, name, var):
    assert env_base(scope, name) == var


def test_colliding_env_names_get_a_numbered_suffix():
    mk = lambda n: ObservedRegistry(uid=n, kind="PackRegistry", name=n, scope="tenant",  # noqa: E731
                                    spec={"endpoint": "https://p", "auth": {"type": "basic", "username": "u"}})
    res = export_docs([mk("a_b"), mk("a-b")], [], ca_dir="x")
    assert [v for v, _ in res.env] == ["REG_A_B_PASSWORD", "REG_A_B_2_PASSWORD"]


def test_built_in_and_declared_registries_are_left_out():
    mk = lambda n, builtin=False: ObservedRegistry(uid=n, kind="HelmRegistry", name=n, scope="tenant",  # noqa: E731
                                                   spec={"endpoint": "https://h", "sync": True,
                                                         "auth": {"type": "noAuth"}}, builtin=builtin)
    res = export_docs([mk("mine"), mk("declared"), mk("Bitnami", builtin=True)],
                      [("tenant", "HelmRegistry", "declared")], ca_dir="x")
    assert [d["metadata"]["name"] for d in res.docs] == ["mine"]


def test_endpoint_credentials_are_dropped_where_they_cannot_become_basic_auth():
    """Adversarial pass 3, item 4: a registry with auth of its own (ECR here), or a URL with no
    usable user name, loses the credentials from its endpoint, keeps its auth, and is named in
    a warning that holds no password."""
    ecr = ObservedRegistry(uid="u1", kind="OciRegistry", name="ecr", scope="tenant",
                           spec={"endpoint": "bob:pw-5ecret-9@123456789012.dkr.ecr.us-east-1.amazonaws.com",
                                 "provider": "helm", "baseContentPath": "c", "sync": True,
                                 "auth": {"type": "ecr", "credentials": {"credentialType": "sts", "arn": "a"}}})
    anon = ObservedRegistry(uid="u2", kind="HelmRegistry", name="anon", scope="tenant",
                            spec={"endpoint": "https://:pw-5ecret-9@h.example.com", "auth": {"type": "noAuth"}})
    res = export_docs([ecr, anon], [], ca_dir="x")
    by = {d["metadata"]["name"]: d["spec"] for d in res.docs}
    assert by["ecr"]["endpoint"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert by["ecr"]["auth"] == {"type": "ecr", "credentials": {"credentialType": "sts", "arn": "a"}}
    assert by["anon"] == {"endpoint": "https://h.example.com", "auth": {"type": "noAuth"}}
    assert res.env == []
    assert [w.split(":")[0] for w in res.warnings] == ["HelmRegistry/anon", "OciRegistry/ecr"]
    assert "pw-5ecret-9" not in json.dumps(res.docs) + "".join(res.warnings)


def test_target_names_are_escaped_in_every_export_line(repo: Path, tenant: Path):
    """Adversarial pass 3, item 11 (export's share): a name the target gave (ESC, OSC, CR)
    reaches the terminal only escaped, in the list of variables and in the warnings."""
    import sqlite3

    evil = "legacy\x1b]0;owned\x07\x1b[2J\rname"
    with sqlite3.connect(tenant) as conn:
        conn.execute("UPDATE registries SET name = ?, spec = json_set(spec, '$.endpoint', ?) WHERE name = 'legacy'",
                     (evil, "https://ops:pw-5ecret-7@packs.example.com"))
    res = run(repo, "export", "--local-db", str(tenant))
    assert res.returncode == 0, res.stdout + res.stderr
    shown = res.stdout + res.stderr
    assert "\x1b" not in shown and "\r" not in shown and "\x07" not in shown
    assert "PackRegistry/legacy\\x1b]0;owned\\x07\\x1b[2J\\x0dname spec.auth.password" in res.stdout, res.stdout
    assert "warning: PackRegistry/legacy\\x1b]0;owned\\x07\\x1b[2J\\x0dname: the credentials" in res.stderr, res.stderr
    assert "pw-5ecret-7" not in shown + (repo / "registries.d/exported.yaml").read_text()


def test_export_does_not_write_through_a_planted_temp_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review (this round): ``_write_new`` wrote a fixed, guessable temp name (.NAME.tmp-PID)
    with Path.write_text, which follows a symbolic link planted there (a committed one): a
    file outside the export was overwritten, and the export became a link to it."""
    import os

    from reconciler.commands import export
    from reconciler.errors import InputError

    monkeypatch.setattr(os, "getpid", lambda: 4242)  # CI containers give small, repeatable pids
    out_dir = tmp_path / "repo" / "registries.d"
    out_dir.mkdir(parents=True)
    victim = tmp_path / "users-file"
    victim.write_text("precious\n")
    os.symlink(victim, out_dir / ".exported.yaml.tmp-4242")
    try:
        export._write_new(out_dir / "exported.yaml", "apiVersion: reconciler/v1\n", force=False)
    except (OSError, InputError):
        pass
    assert victim.read_text() == "precious\n", "export overwrote a file it was never asked to write"
    assert not (out_dir / "exported.yaml").is_symlink()
    assert (out_dir / "exported.yaml").read_text() == "apiVersion: reconciler/v1\n"
    mask = os.umask(0)
    os.umask(mask)
    assert (out_dir / "exported.yaml").stat().st_mode & 0o777 == 0o666 & ~mask  # as a plain write makes it
    assert sorted(p.name for p in out_dir.iterdir()) == [".exported.yaml.tmp-4242", "exported.yaml"]  # no temp left
