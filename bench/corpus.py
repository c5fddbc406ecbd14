"""A varied corpus of registry definitions for the benchmarks (issue 11.5).

Not five templates repeated (the best case of any shape cache): every definition draws its
kind, its optional fields (present or absent), its key order, block or flow style, comments
and quoting from a seeded random generator; files hold one to three documents and sit in
nested folders up to three levels deep. Everything generated is valid, so that a tool's exit
code says whether it agreed; only ``fromEnv`` references are used (no file is read).

    from corpus import generate
    paths = generate(root, 5000)                  # 5,000 definitions under root/registries.d
    generate(root, 5000, changed={0, 100, ...})   # the same, with those definitions edited
"""

from __future__ import annotations

import random
from collections.abc import Collection
from pathlib import Path

FOLDERS = ["platform", "teams", "edge", "partners", "mirrors", "sandbox"]


def _scalar(rnd: random.Random, text: str) -> str:
    style = rnd.random()
    if style < 0.15:
        return f'"{text}"'
    if style < 0.25:
        return f"'{text}'"
    return text


def _mapping(rnd: random.Random, items: list[tuple[str, object]], indent: int, flow_ok: bool = True) -> str:
    """YAML for a mapping: block (keys shuffled) or, for small mappings of scalars, flow."""
    items = list(items)
    rnd.shuffle(items)
    pad = " " * indent
    scalars = all(isinstance(v, str) for _, v in items)
    if flow_ok and scalars and len(items) <= 3 and rnd.random() < 0.4:
        return " {" + ", ".join(f"{k}: {v}" for k, v in items) + "}\n"
    out = "\n"
    for k, v in items:
        if rnd.random() < 0.05:
            out += f"{pad}# {k} as agreed with the owning team\n"
        if isinstance(v, list) and v and isinstance(v[0], list):  # a list of mappings
            out += f"{pad}{k}:\n"
            for entry in v:
                body = _mapping(rnd, entry, indent + 4)
                if body.startswith(" {"):
                    out += f"{pad}  -{body}"
                else:
                    lines = body.lstrip("\n").splitlines(keepends=True)
                    out += f"{pad}  - {lines[0].lstrip()}" + "".join(lines[1:])
        elif isinstance(v, str):
            out += f"{pad}{k}: {v}\n"
        else:
            out += f"{pad}{k}:" + _mapping(rnd, v, indent + 2)  # type: ignore[arg-type]
    return out


def _secret(rnd: random.Random, i: int, what: str) -> list[tuple[str, object]]:
    return [("fromEnv", f"{what}_{i}")]


def _tls(rnd: random.Random) -> list[tuple[str, object]] | None:
    if rnd.random() < 0.6:
        return None
    return [("insecureSkipVerify", rnd.choice(["false", "true"]))]


def definition(i: int, changed: bool = False, seed: int = 0) -> str:
    rnd = random.Random(seed * 1_000_003 + i)
    suffix = "-v2" if changed else ""
    kind = rnd.choices(["OciRegistry", "HelmRegistry", "PackRegistry"], [0.55, 0.38, 0.07])[0]
    meta: list[tuple[str, object]] = [("name", _scalar(rnd, f"{kind[:4].lower()}-{i:05d}"))]
    if rnd.random() < 0.3:
        meta.append(("scope", rnd.choice(["tenant", "system"])))
    if rnd.random() < 0.2:
        meta.append(("protect", rnd.choice(["true", "false"])))
    spec: list[tuple[str, object]] = []
    if kind == "OciRegistry":
        ecr = rnd.random() < 0.25
        account = 100000000000 + i
        if ecr:
            spec.append(("endpoint", f"{account}.dkr.ecr.{rnd.choice(['us-east-1', 'eu-west-1'])}.amazonaws.com{suffix}"))
        else:
            port = rnd.choice(["", ":5000", ":443"])
            spec.append(("endpoint", _scalar(rnd, f"oci-{i}{suffix}.example.com{port}")))
        provider = rnd.choice(["helm", "pack", "zarf"]) if not ecr else rnd.choice(["helm", "pack"])
        sync = provider == "pack" or rnd.random() < 0.5
        if provider != "helm" or rnd.random() < 0.5:
            spec.append(("provider", provider))
        if sync:
            spec.append(("sync", "true"))
            spec.append(("baseContentPath", _scalar(rnd, rnd.choice(["charts", f"production/{i}", "packs/edge"]))))
        elif rnd.random() < 0.3:
            spec.append(("sync", "false"))
        if ecr:
            if rnd.random() < 0.5:
                creds: list[tuple[str, object]] = [("credentialType", "sts"),
                                                   ("arn", f'"arn:aws:iam::{account}:role/palette"'),
                                                   ("externalId", f"ext-{i}")]
            else:
                creds = [("credentialType", "secret"), ("accessKey", f"AKIA{i:016d}"),
                         ("secretKey", _secret(rnd, i, "ECR_SECRET"))]
            spec.append(("auth", [("type", "ecr"), ("credentials", creds)]))
        elif provider != "zarf" and rnd.random() < 0.5 or rnd.random() < 0.3:
            spec.append(("auth", [("type", "basic"), ("username", f"bot-{i}"),
                                  ("password", _secret(rnd, i, "OCI_PASSWORD"))]))
        elif rnd.random() < 0.5:
            spec.append(("auth", [("type", "noAuth")]))
    else:
        spec.append(("endpoint", _scalar(rnd, f"https://{kind[:4].lower()}-{i}{suffix}.example.org/{rnd.choice(['', 'stable', 'charts/x'])}")))
        if kind == "HelmRegistry" and rnd.random() < 0.5:
            spec.append(("sync", rnd.choice(["true", "false"])))
        r = rnd.random()
        if r < 0.3:
            spec.append(("auth", [("type", "token"), ("token", _secret(rnd, i, "TOKEN"))]))
        elif r < 0.5:
            spec.append(("auth", [("type", "basic"), ("username", f"u{i}"), ("password", _secret(rnd, i, "PW"))]))
        elif r < 0.6:
            spec.append(("auth", [("type", "noAuth")]))
        if kind == "HelmRegistry" and rnd.random() < 0.3:
            charts = []
            for c in rnd.sample(["nginx", "redis", "postgresql", "kafka", "grafana"], rnd.randint(1, 3)):
                entry: list[tuple[str, object]] = [("name", c)]
                if rnd.random() < 0.6:
                    entry.append(("version", f'"{rnd.randint(1, 9)}.{rnd.randint(0, 20)}.{i % 50}"'))
                charts.append(entry)
            spec.append(("requiredCharts", charts))
    tls = _tls(rnd)
    if tls:
        spec.append(("tls", tls))
    if rnd.random() < 0.2:
        spec.append(("fips", rnd.choice(["true", "false"])))
    top: list[tuple[str, object]] = [("apiVersion", "reconciler/v1"), ("kind", kind), ("metadata", meta), ("spec", spec)]
    head = [top[0], top[1]]
    rest = [top[2], top[3]]
    if rnd.random() < 0.3:
        head.reverse()
    if rnd.random() < 0.2:
        rest.reverse()
    out = ""
    if rnd.random() < 0.3:
        out += f"# {kind} {i}: owned by team {i % 37}\n"
    for k, v in head + rest:
        if isinstance(v, str):
            out += f"{k}: {v}\n"
        else:
            out += f"{k}:" + _mapping(rnd, v, 2)  # type: ignore[arg-type]
    return out


def layout(n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """(relative file path, definition numbers) for n definitions."""
    rnd = random.Random(seed)
    files: list[tuple[str, list[int]]] = []
    i = 0
    while i < n:
        count = min(n - i, rnd.choices([1, 2, 3], [0.7, 0.2, 0.1])[0])
        depth = rnd.choice([0, 1, 1, 2, 3])
        parts = [rnd.choice(FOLDERS) if d == 0 else f"{rnd.choice(FOLDERS)[:3]}-{rnd.randint(0, 9)}" for d in range(depth)]
        suffix = ".yml" if rnd.random() < 0.2 else ".yaml"
        files.append(("/".join([*parts, f"reg-{i:05d}{suffix}"]), list(range(i, i + count))))
        i += count
    return files


def generate(root: Path, n: int, changed: Collection[int] = (), seed: int = 0) -> list[Path]:
    """Write n definitions under ``root/registries.d``; return the files written."""
    d = root / "registries.d"
    d.mkdir(parents=True, exist_ok=True)
    # system scope exists only on self-hosted Palette and VerteX: the corpus declares which
    settings = d / "settings.yaml"
    settings.write_text("apiVersion: reconciler/v1\nkind: Settings\nspec: {profile: self-hosted, maxDeletions: 100000}\n",
                        encoding="utf-8")
    paths = [settings]
    for rel, numbers in layout(n, seed):
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(
            ("---\n" if k or (i % 7 == 0) else "") + definition(i, i in changed, seed)
            for k, i in enumerate(numbers)
        )
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


def compiled_bytecode() -> None:
    """Make the runs measure an installed package: pip compiles its bytecode at install, so the
    modules must not be compiled again by each run (PYTHONDONTWRITEBYTECODE would do that for
    every module changed since the last run)."""
    import compileall
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "reconciler"), quiet=1)
