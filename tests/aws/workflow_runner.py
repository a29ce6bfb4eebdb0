"""Run a GitHub Actions workflow's jobs on this machine, step by step, the way the runner would.

    python -m tests.aws.workflow_runner .github/workflows/pr-report.yml --event pull_request \
        --event-json event.json --repository org/repo --var AWS_REGION=us-east-1 --skip Install

What is real: every `run:` step is executed as written, in order, by bash with GitHub's flags (`bash -e {0}`, or
`bash --noprofile --norc -eo pipefail {0}` for `shell: bash`), in the given checkout, with the env GitHub builds
(workflow, job and step `env:`, GITHUB_* variables, $GITHUB_OUTPUT / $GITHUB_ENV / $GITHUB_STEP_SUMMARY files) and
`${{ }}` expressions, `if:` conditions, step outputs and job `needs`/`outputs` evaluated. So the scripts, the dvc
and git commands, the S3 traffic (to whatever AWS_ENDPOINT_URL the caller sets, e.g. moto_server) are the real ones.

What is stood in for, because it cannot exist here (each replacement below says what it does instead):
- `uses:` actions run as local equivalents (LOCAL_ACTIONS): checkout = `git checkout` of the evaluated ref in the
  prepared clone; setup-python / setup-cml = nothing (this interpreter and the stubs are on PATH);
  configure-aws-credentials = the caller's dummy credentials (no OIDC here), and it fails without a role and a
  role-session-name like a misconfigured workflow would; upload-artifact = a copy into the artifacts folder.
- `cml` and `gh` (they need the GitHub API), `docker` (no engine here) and `sam` (moto's CloudFormation has no SAM
  transform, and refuses the TemplateURL `sam deploy` uploads): stubs written by `install_stubs` that record their
  arguments; `docker push` registers the tag in ECR through PutImage (the same stand-in tests/aws uses); `sam deploy`
  checks its parameters against the real template's Parameters (AllowedPattern/AllowedValues, like CloudFormation) and
  creates or updates the stack in moto with the template's outputs that only echo parameters (DeployedSha,
  DeployedImage, ModelVersion), so the next run's gate reads what is live from (moto's) CloudFormation. No traffic
  shifting, hook or alarm runs here: that is CodeDeploy's side (docs/deploy.md).
- aws-actions/amazon-ecr-login = nothing but its `registry` output (<account>.dkr.ecr.<region>.amazonaws.com).
- `--skip NAME` skips steps that only download what is already installed (pip install, the image's wheels).
The expression evaluator covers what the project's workflows use (contexts, ==, !=, &&, ||, !, success()/failure()/
always(), fromJSON()/toJSON()); anything else is an error, not a silent guess. A `strategy.matrix` (a mapping, or
one expression such as `fromJSON(needs.plan.outputs.matrix)`, keys x values or `include`) runs the job once per
combination, one after the other, each on its own fresh checkout when the caller gives `job_workdir`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(==|!=|&&|\|\||!|\(|\)|,)|([A-Za-z_][\w.\-]*(?:\[\*\])?)|(\d+))")


class WorkflowError(RuntimeError):
    pass


# The expression functions the project's workflows call (train.yml's matrix); any other call is an error.
FUNCTIONS = {"fromJSON": json.loads, "toJSON": lambda value: json.dumps(value, indent=2)}


def _lookup(context: dict, path: str):
    value = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def evaluate(expression: str, context: dict, status: str = "success"):
    """A GitHub expression -> value. Missing properties are null (''), as on GitHub."""
    out, pos = [], 0
    while pos < len(expression):
        match = TOKEN.match(expression, pos)
        if not match or match.end() == pos:
            raise WorkflowError(f"cannot evaluate expression: {expression!r}")
        pos = match.end()
        string, op, name, number = match.groups()
        if string is not None:
            out.append(repr(string[1:-1].replace("''", "'")))
        elif op:
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(op, op))
        elif number:
            out.append(number)
        elif name in FUNCTIONS:  # its call parentheses follow as tokens
            out.append(f"_{name}")
        elif name in ("true", "false", "null"):
            out.append({"true": "True", "false": "False", "null": "None"}[name])
        elif name in ("success", "failure", "always", "cancelled"):
            out.append(
                repr(
                    {
                        "success": status == "success",
                        "failure": status == "failure",
                        "always": True,
                        "cancelled": False,
                    }[name]
                )
            )
            # drop the call parentheses that follow
            following = TOKEN.match(expression, pos)
            if following and following.group(2) == "(":
                pos = TOKEN.match(expression, following.end()).end()
        else:
            out.append(f"_get({name!r})")
    # null is '' here: GitHub's loose `==` makes null == '' true (a step output never set compares equal to '').
    get = lambda p: "" if (value := _lookup(context, p)) is None else value  # noqa: E731
    functions = {f"_{name}": function for name, function in FUNCTIONS.items()}
    return eval("".join(out), {"__builtins__": {}}, {"_get": get, **functions})  # noqa: S307


def substitute(value, context: dict):
    """Replace every ${{ }} in strings (recursively in dicts/lists) by its value as a string."""
    if isinstance(value, dict):
        return {k: substitute(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context) for v in value]
    if not isinstance(value, str):
        return value

    def text(match: re.Match) -> str:
        result = evaluate(match.group(1), context)
        if result is None:
            return ""
        if isinstance(result, bool):
            return "true" if result else "false"
        return str(result)

    return EXPR.sub(text, value)


def condition(expression, context: dict, status: str) -> bool:
    if expression is None:
        return status == "success"
    if isinstance(expression, bool):
        return expression
    inner = EXPR.fullmatch(expression.strip())
    expression = inner.group(1) if inner else expression
    uses_status = re.search(r"\b(success|failure|always|cancelled)\(", expression)
    result = bool(evaluate(expression, context, status))
    return result if uses_status else (result and status == "success")


def parse_env_file(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT / $GITHUB_ENV: `key=value` lines and `key<<DELIM` ... `DELIM` blocks."""
    found, lines = {}, path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, delim = line.split("<<", 1)
            end = lines.index(delim, i + 1)
            found[key] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            found[key] = value
        i += 1
    return found


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    output: str = ""


@dataclass
class JobResult:
    name: str
    status: str  # success | failure | skipped
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    matrix: dict = field(default_factory=dict)  # this run's matrix values (a job with a strategy.matrix)
    runs: list[JobResult] = field(default_factory=list)  # a matrix job: one result per combination, in order

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name} [{s.outcome}]\n{s.output}" for s in self.steps)


@dataclass
class Runner:
    workflow: Path
    workdir: Path
    event_name: str
    event: dict
    repository: str
    sha: str
    ref: str
    host_env: dict  # the machine's environment (PATH with the stubs, AWS_ENDPOINT_URL, ...)
    aws_credentials: dict  # what configure-aws-credentials exports here (dummy keys for moto)
    variables: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    skip: set = field(default_factory=set)
    stop_before: str | None = None
    artifacts: Path | None = None
    # Every job (and every matrix combination) on a fresh machine, as on GitHub: a new checkout per job from this
    # factory (given the job's label); None = all jobs in `workdir`.
    job_workdir: Callable[[str], Path] | None = None

    def github(self) -> dict:
        pr = self.event.get("pull_request") or {}
        return {
            "event_name": self.event_name,
            "event": self.event,
            "repository": self.repository,
            "sha": self.sha,
            "ref": self.ref,
            "ref_name": self.ref.split("/", 2)[-1],
            "base_ref": pr.get("base", {}).get("ref", ""),
            "head_ref": pr.get("head", {}).get("ref", ""),
            "run_id": "4242",
            "run_attempt": "1",
            "server_url": "https://github.com",
            "api_url": self.host_env.get("GITHUB_API_URL", ""),
            "token": self.secrets.get("GITHUB_TOKEN", ""),
            "workspace": str(self.workdir),
        }

    def run(self) -> dict[str, JobResult]:
        workflow = yaml.safe_load(self.workflow.read_text())
        workflow.setdefault("on", workflow.pop(True, None))
        results: dict[str, JobResult] = {}
        for name, job in workflow["jobs"].items():  # this project's jobs are listed after what they need
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            context = self.context(workflow, results, needs)
            status = "success" if all(results[n].status == "success" for n in needs) else "failure"
            if not condition(job.get("if"), context, status):
                results[name] = JobResult(name, "skipped")
                continue
            combinations = self.matrix(job, context)
            if combinations is None:
                results[name] = self.run_job_on_a_machine(name, workflow, job, context)
                continue
            # one job per combination, one after the other (max-parallel only limits GitHub's concurrency)
            runs = []
            for values in combinations:
                label = f"{name} ({', '.join(str(v) for v in values.values())})"
                run_context = {**self.context(workflow, results, needs), "matrix": values}
                runs.append(self.run_job_on_a_machine(label, workflow, job, run_context))
                runs[-1].matrix = values
            status = "success" if runs and all(r.status == "success" for r in runs) else "failure"
            results[name] = JobResult(name, status, runs=runs, steps=[s for r in runs for s in r.steps])
        return results

    def matrix(self, job: dict, context: dict) -> list[dict] | None:
        """A job's strategy.matrix as its list of combinations (None without one): keys x values, or `include`."""
        matrix = (job.get("strategy") or {}).get("matrix")
        if matrix is None:
            return None
        if isinstance(matrix, str):
            inner = EXPR.fullmatch(matrix.strip())
            if not inner:
                raise WorkflowError(f"matrix {matrix!r} is neither a mapping nor one expression")
            matrix = evaluate(inner.group(1), context)
        if not isinstance(matrix, dict):
            raise WorkflowError(f"matrix is not a mapping: {matrix!r}")
        include = matrix.get("include") or []
        keys = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
        if keys and (include or matrix.get("exclude")):
            raise WorkflowError("matrix include/exclude beside other keys is not supported here")
        if include:
            return [dict(entry) for entry in include]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*keys.values())]

    def run_job_on_a_machine(self, label: str, workflow: dict, job: dict, context: dict) -> JobResult:
        if self.job_workdir is not None:
            self.workdir = self.job_workdir(label)
            context["github"] = self.github()  # github.workspace
        return self.run_job(label, workflow, job, context)

    def context(self, workflow: dict, results: dict, needs: list) -> dict:
        return {
            "matrix": {},
            "github": self.github(),
            "vars": self.variables,
            "secrets": self.secrets,
            "runner": {"temp": ""},
            "needs": {n: {"result": results[n].status, "outputs": results[n].outputs} for n in needs},
            "inputs": self.event.get("inputs") or {},
            "env": {},
            "steps": {},
        }

    def run_job(self, name: str, workflow: dict, job: dict, context: dict) -> JobResult:
        result = JobResult(name, "success")
        temp = Path(tempfile.mkdtemp(prefix=f"gha-{name}-"))
        summary = temp / "step_summary.md"
        summary.touch()
        env = {k: v for k, v in self.host_env.items() if not k.startswith("GITHUB_")}
        event_path = temp / "event.json"
        event_path.write_text(json.dumps(self.event))
        env.update(
            {
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": self.event_name,
                "GITHUB_EVENT_PATH": str(event_path),
                "GITHUB_REPOSITORY": self.repository,
                "GITHUB_SHA": self.sha,
                "GITHUB_REF": self.ref,
                "GITHUB_REF_NAME": self.ref.split("/", 2)[-1],
                "GITHUB_BASE_REF": context["github"]["base_ref"],
                "GITHUB_HEAD_REF": context["github"]["head_ref"],
                "GITHUB_RUN_ID": "4242",
                "GITHUB_RUN_ATTEMPT": "1",
                "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_WORKSPACE": str(self.workdir),
                "GITHUB_STEP_SUMMARY": str(summary),
                "RUNNER_TEMP": str(temp),
            }
        )
        if self.host_env.get("GITHUB_API_URL"):
            env["GITHUB_API_URL"] = self.host_env["GITHUB_API_URL"]
        context["runner"]["temp"] = str(temp)
        for scope in (workflow.get("env") or {}, job.get("env") or {}):
            context["env"] = {**env, **context["env"]}
            env.update({k: substitute(str(v), context) for k, v in scope.items()})
        shell_default = ((job.get("defaults") or workflow.get("defaults") or {}).get("run") or {}).get("shell")
        for index, step in enumerate(job["steps"]):
            step_name = step.get("name") or step.get("uses") or f"step {index}"
            if step_name == self.stop_before:
                break
            context["env"] = dict(env)
            if step_name in self.skip or not condition(step.get("if"), context, result.status):
                result.steps.append(StepResult(step_name, "skipped"))
                continue
            step_env = {**env, **{k: substitute(str(v), context) for k, v in (step.get("env") or {}).items()}}
            output_file, env_file = temp / f"output-{index}", temp / f"env-{index}"
            output_file.touch()
            env_file.touch()
            step_env.update({"GITHUB_OUTPUT": str(output_file), "GITHUB_ENV": str(env_file)})
            try:
                if "uses" in step:
                    ok, text, exported = self.action(step, context, step_env)
                    env.update(exported)
                else:
                    ok, text = self.shell(
                        substitute(step["run"], context), step.get("shell") or shell_default, step_env
                    )
            except WorkflowError as exc:
                ok, text = False, f"workflow error: {exc}"
            env.update(parse_env_file(env_file))
            if "id" in step:
                context["steps"][step["id"]] = {
                    "outputs": parse_env_file(output_file),
                    "outcome": "success" if ok else "failure",
                }
            result.steps.append(StepResult(step_name, "success" if ok else "failure", text))
            if not ok:
                result.status = "failure"
        result.summary = summary.read_text()
        context["env"] = dict(env)
        result.outputs = {k: substitute(str(v), context) for k, v in (job.get("outputs") or {}).items()}
        return result

    def shell(self, script: str, shell: str | None, env: dict) -> tuple[bool, str]:
        path = Path(env["RUNNER_TEMP"]) / "step.sh"
        path.write_text(script)
        if shell in (None, ""):
            command = ["bash", "-e", str(path)]  # GitHub's default when no shell is given
        elif shell == "bash":
            command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)]
        else:
            raise WorkflowError(f"shell {shell!r} is not supported here")
        done = subprocess.run(command, cwd=self.workdir, env=env, capture_output=True, text=True)
        return done.returncode == 0, done.stdout + done.stderr

    def action(self, step: dict, context: dict, env: dict) -> tuple[bool, str, dict]:
        action = step["uses"].split("@")[0]
        inputs = substitute(step.get("with") or {}, context)
        if action == "actions/checkout":
            ref = inputs.get("ref") or self.sha

            def git(*args: str) -> str:
                return subprocess.run(["git", *args], cwd=self.workdir, capture_output=True, text=True).stdout

            # unstaged or staged edits (an unpopulated `clone --no-checkout` has an empty index: nothing to lose)
            dirty = git("diff", "--name-only") or (git("ls-files") and git("diff", "--cached", "--name-only"))
            if dirty:  # never move someone's work tree: run in a clone
                return False, f"checkout refused: {self.workdir} has local changes; run in a fresh clone", {}
            done = subprocess.run(
                ["git", "checkout", "--quiet", "--detach", ref], cwd=self.workdir, capture_output=True, text=True
            )
            return done.returncode == 0, f"checkout {ref}\n{done.stderr}", {}
        if action in ("actions/setup-python", "iterative/setup-cml"):
            return True, f"{action}: provided by this machine / the stubs", {}
        if action == "aws-actions/amazon-ecr-login":
            import boto3  # the account behind the credentials configure-aws-credentials exported (moto's)

            session = boto3.session.Session(
                aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
                region_name=env.get("AWS_REGION"),
            )
            account = session.client("sts", endpoint_url=env.get("AWS_ENDPOINT_URL")).get_caller_identity()["Account"]
            registry = f"{account}.dkr.ecr.{env.get('AWS_REGION')}.amazonaws.com"
            with open(env["GITHUB_OUTPUT"], "a") as out:
                out.write(f"registry={registry}\n")
            return True, f"ecr-login: registry {registry} (no docker login here)", {}
        if action == "aws-actions/configure-aws-credentials":
            missing = [k for k in ("role-to-assume", "role-session-name", "aws-region") if not inputs.get(k)]
            if missing:
                return False, f"configure-aws-credentials: missing {', '.join(missing)}", {}
            exported = {
                **self.aws_credentials,
                "AWS_REGION": inputs["aws-region"],
                "AWS_DEFAULT_REGION": inputs["aws-region"],
            }
            return True, f"assumed {inputs['role-to-assume']} as {inputs['role-session-name']} (dummy keys)", exported
        if action == "actions/upload-artifact":
            target = (self.artifacts or Path(env["RUNNER_TEMP"]) / "artifacts") / inputs["name"]
            source = self.workdir / inputs["path"]
            if not source.exists():
                return False, f"upload-artifact: {source} does not exist", {}
            shutil.copytree(source, target, dirs_exist_ok=True)
            return True, f"uploaded {inputs['path']} as {inputs['name']}", {}
        raise WorkflowError(f"no local equivalent for action {action}")


CML_STUB = """#!/usr/bin/env python3
# Stand-in for `cml` (it needs the GitHub API): records its arguments and the report file it was given.
import json, os, sys
from pathlib import Path
log = Path(os.environ["STUB_LOG"])
report = Path(sys.argv[-1])
entry = {"tool": "cml", "args": sys.argv[1:], "report": report.read_text() if report.is_file() else None,
         "repo_token": bool(os.environ.get("REPO_TOKEN"))}
with log.open("a") as f:
    f.write(json.dumps(entry) + "\\n")
"""

DOCKER_STUB = """#!/usr/bin/env python3
# Stand-in for `docker` (no engine here). build: checks what the Dockerfile COPYs exists in the context and
# records the bundle it would copy; push: registers the tag in ECR with PutImage (moto), like tests/aws does.
import hashlib, json, os, sys
from pathlib import Path
log = Path(os.environ["STUB_LOG"])
args = sys.argv[1:]
entry = {"tool": "docker", "args": args}
if args[0] == "build":
    dockerfile = Path(args[args.index("-f") + 1])
    for needed in ("app", "contract", "runtime", "artifacts/bundle", dockerfile):
        if not Path(needed).exists():
            sys.exit(f"docker stub: build context lacks {needed}")
    entry["bundle_files"] = sorted(p.name for p in Path("artifacts/bundle").iterdir())
elif args[0] == "push":
    import boto3
    uri, tag = args[1].rsplit(":", 1)
    repository = uri.split("/", 1)[1]
    digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": digest}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {**layer, "mediaType": "application/vnd.docker.container.image.v1+json"},
                "layers": [layer]}
    boto3.client("ecr").put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
with log.open("a") as f:
    f.write(json.dumps(entry) + "\\n")
"""


SAM_STUB = """#!/usr/bin/env python3
# Stand-in for `sam deploy` (moto's CloudFormation cannot run the SAM transform): validates the parameter overrides
# against the real template's Parameters as CloudFormation would, then creates/updates the stack in moto with the
# template's parameter-only outputs. Records its arguments.
import json, os, re, sys
from pathlib import Path
import boto3, yaml
args = sys.argv[1:]
with Path(os.environ["STUB_LOG"]).open("a") as f:
    f.write(json.dumps({"tool": "sam", "args": args}) + "\\n")
if args[:1] != ["deploy"]:
    sys.exit(f"sam stub: only `sam deploy` is stood in for, got {args}")
def option(name):
    return args[args.index(name) + 1] if name in args else None
# what SAM CLI 1.170.0 itself refuses to run without (--image-repository: for PackageType Image functions)
for needed in ("--template-file", "--stack-name", "--s3-bucket", "--image-repository", "--capabilities"):
    if not option(needed):
        sys.exit(f"sam stub: {needed} missing")
if "--no-fail-on-empty-changeset" not in args or "--no-confirm-changeset" not in args:
    sys.exit("sam stub: a CI deploy needs --no-confirm-changeset and --no-fail-on-empty-changeset")
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !Ref, !Sub...: not evaluated here
template = yaml.load(Path(option("--template-file")).read_text(), Loader=Loader)
declared = template["Parameters"]
after = args[args.index("--parameter-overrides") + 1:]
overrides = dict(a.split("=", 1) for a in after if "=" in a and not a.startswith("--"))
for key, value in overrides.items():
    spec = declared.get(key)
    if spec is None:
        sys.exit(f"Error: Parameters: [{key}] do not exist in the template")
    if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
        sys.exit(f"Error: Parameter '{key}' must match pattern {spec['AllowedPattern']}")
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        sys.exit(f"Error: Parameter '{key}' must be one of AllowedValues")
missing = [k for k, spec in declared.items() if "Default" not in spec and k not in overrides]
if missing:
    sys.exit(f"Error: Parameters: {missing} must have values")
echo = {"DeployedSha": "GitSha", "DeployedImage": "ImageUri", "ModelVersion": "ModelVersion"}
body = {
    "Parameters": {
        k: {"Type": "String", **({"Default": str(declared[k]["Default"])} if "Default" in declared[k] else {})}
        for k in echo.values()
    },
    "Resources": {
        "Marker": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/stub/" + option("--stack-name"), "Type": "String", "Value": overrides["GitSha"]},
        }
    },
    "Outputs": {out: {"Value": {"Ref": param}} for out, param in echo.items()},
}
parameters = [{"ParameterKey": k, "ParameterValue": overrides[k]} for k in echo.values() if k in overrides]
cloudformation = boto3.client("cloudformation")
stack = option("--stack-name")
try:
    cloudformation.describe_stacks(StackName=stack)
except cloudformation.exceptions.ClientError as exc:
    if "does not exist" not in str(exc):
        raise
    cloudformation.create_stack(StackName=stack, TemplateBody=json.dumps(body), Parameters=parameters)
else:
    try:
        cloudformation.update_stack(StackName=stack, TemplateBody=json.dumps(body), Parameters=parameters)
    except cloudformation.exceptions.ClientError as exc:  # --no-fail-on-empty-changeset
        if "No updates" not in str(exc):
            raise
print(f"Successfully created/updated stack - {stack} (moto stand-in)")
"""


GH_STUB = """#!/usr/bin/env python3
# Stand-in for `gh` (the GitHub API): records its arguments.
import json, os, sys
from pathlib import Path
with Path(os.environ["STUB_LOG"]).open("a") as f:
    f.write(json.dumps({"tool": "gh", "args": sys.argv[1:], "token": bool(os.environ.get("GH_TOKEN"))}) + "\\n")
"""


def install_stubs(directory: Path) -> Path:
    """Write the `cml`, `docker`, `sam` and `gh` stubs into `directory` (put it first on PATH); returns the log they
    append to."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("cml", CML_STUB), ("docker", DOCKER_STUB), ("sam", SAM_STUB), ("gh", GH_STUB)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return directory / "stub-calls.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--event", required=True, help="event name, e.g. pull_request, workflow_run")
    parser.add_argument("--event-json", type=Path, help="the event payload (github.event)")
    parser.add_argument("--repository", default="example/cola-mlops")
    parser.add_argument("--ref", default="refs/heads/main")
    parser.add_argument("--sha", help="default: HEAD of the checkout")
    parser.add_argument("--workdir", type=Path, required=True, help="a clone to run in (its HEAD is moved)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--skip", action="append", default=[], metavar="STEP_NAME")
    parser.add_argument("--stop-before", metavar="STEP_NAME")
    args = parser.parse_args(argv)
    stubs = Path(tempfile.mkdtemp(prefix="gha-stubs-"))
    log = install_stubs(stubs)
    host_env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    sha = (
        args.sha
        or subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=args.workdir, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    runner = Runner(
        workflow=args.workflow.resolve(),
        workdir=args.workdir.resolve(),
        event_name=args.event,
        event=json.loads(args.event_json.read_text()) if args.event_json else {},
        repository=args.repository,
        sha=sha,
        ref=args.ref,
        host_env=host_env,
        aws_credentials={k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ},
        variables=dict(v.split("=", 1) for v in args.var),
        skip=set(args.skip),
        stop_before=args.stop_before,
    )
    results = runner.run()
    for job in results.values():
        print(f"=== job {job.name}: {job.status}")
        print(job.log)
    return 1 if any(job.status == "failure" for job in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
