"""Decide whether the deploy workflow deploys, and which commit: `deploy=true|false` and `sha=...` to $GITHUB_OUTPUT.

Run by .github/workflows/deploy.yml (env as GitHub sets it; docs/deploy.md):
- `workflow_run` (ci completed): deploy only when that ci run was a `push` to main of this repository and
  succeeded; the commit is the run's head_sha (not github.sha, which is whatever main points at now). A ci run
  of a fork PR whose branch is also called main is not a push and is skipped. Then skip, green, when the commit
  changes nothing the image or its deployment depends on (IMAGE_INPUTS, and the bundle's md5 in dvc.lock).
- `workflow_dispatch`: refused (exit 1) unless run on refs/heads/main and ci succeeded on that exact commit
  (asked of the GitHub API); a dispatch always deploys (the manual way to redeploy), no path skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

MAIN = "refs/heads/main"
CI_WORKFLOW = "ci.yml"
BUNDLE = "artifacts/bundle"
# What the image is built from (docker/Dockerfile.lambda COPYs app/ incl. app/requirements.txt, contract/, the wheels
# from docker/requirements-lambda.txt via fetch-wheels.sh, artifacts/bundle; .dockerignore filters the context) and
# what decides how it is deployed (the workflow, deploy_lambda.py's function settings). The bundle itself is
# compared by its md5 in dvc.lock, so a dvc.lock change in another stage (a re-run benchmark) does not redeploy.
IMAGE_INPUTS = (
    "app/",
    "contract/",
    "docker/Dockerfile.lambda",
    "docker/requirements-lambda.txt",
    "docker/fetch-wheels.sh",
    ".dockerignore",
    ".github/workflows/deploy.yml",
    "scripts/deploy_lambda.py",
)


class Refused(RuntimeError):
    pass


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def bundle_md5(rev: str) -> str | None:
    """The bundle's md5 in dvc.lock at `rev` (DVC writes path, hash, md5 in this order; stdlib only: the gate job
    installs nothing)."""
    try:
        lock = git("show", f"{rev}:dvc.lock")
    except subprocess.CalledProcessError:
        return None
    found = re.search(rf"- path: {re.escape(BUNDLE)}\n(?:\s+\w+: .*\n)*?\s+md5: (\S+)", lock)
    return found.group(1) if found else None


def image_changes(sha: str) -> list[str]:
    """What in `sha` vs its first parent can change the deployed image; ['(no parent)'] for a root commit.

    First parent: main takes PR merges (merge or squash), one commit per push, so that is the whole change.
    """
    try:
        git("rev-parse", "--verify", f"{sha}^1")
    except subprocess.CalledProcessError:
        return ["(no parent commit: first deploy)"]
    changed = git("diff", "--name-only", f"{sha}^1", sha).split()
    hits = [path for path in changed if any(path == p or path.startswith(p) for p in IMAGE_INPUTS if p)]
    if bundle_md5(f"{sha}^1") != bundle_md5(sha):
        hits.append(f"dvc.lock: {BUNDLE}")
    return hits


def ci_succeeded_on(sha: str) -> bool:
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    url = (
        f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}/actions/workflows/{CI_WORKFLOW}/runs"
        f"?head_sha={sha}&branch=main&event=push&status=success&per_page=1"
    )
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": f"Bearer {os.environ.get('GITHUB_TOKEN', '')}",
            "Accept": "application/vnd.github+json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response).get("total_count", 0) > 0


def decide(env: dict) -> tuple[bool, str, str]:
    """(deploy?, sha, why). Raises Refused for a dispatch that must not run."""
    event = env.get("GITHUB_EVENT_NAME")
    if event == "workflow_dispatch":
        sha, ref = env["GITHUB_SHA"], env.get("GITHUB_REF", "")
        if ref != MAIN:
            raise Refused(f"deploy refused: dispatched on {ref}; only {MAIN} deploys")
        if not ci_succeeded_on(sha):
            raise Refused(f"deploy refused: no successful ci run (push to main) for {sha}")
        return True, sha, f"manual dispatch of main at {sha}, ci green"
    if event == "workflow_run":
        sha = env["CI_HEAD_SHA"]
        facts = (env.get("CI_CONCLUSION"), env.get("CI_EVENT"), env.get("CI_HEAD_BRANCH"), env.get("CI_HEAD_REPO"))
        if facts != ("success", "push", "main", env.get("GITHUB_REPOSITORY")):
            return (
                False,
                sha,
                (
                    "not deploying: ci run was conclusion={} event={} branch={} repo={}; "
                    "only a successful push to main of this repository deploys"
                ).format(*facts),
            )
        hits = image_changes(sha)
        if not hits:
            return (
                False,
                sha,
                f"not deploying {sha}: nothing the image depends on changed ({', '.join(IMAGE_INPUTS)}, "
                f"{BUNDLE} in dvc.lock)",
            )
        return True, sha, f"deploying {sha}: changed {', '.join(hits)}"
    raise Refused(f"deploy refused: unexpected event {event!r}")


def main() -> int:
    try:
        deploy, sha, why = decide(dict(os.environ))
    except Refused as exc:
        print(f"::error::{exc}")
        return 1
    print(why if deploy else f"::notice::{why}")
    with open(os.environ["GITHUB_OUTPUT"], "a") as out:
        out.write(f"deploy={'true' if deploy else 'false'}\nsha={sha}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
