"""Decide whether the deploy workflow deploys, which commit, and under which model version.

Writes `deploy=true|false`, `sha=`, `version=` (the GTO version the bundle is or will be) and `register=true|false`
(a new bundle: the release job registers `version` on `sha` after the deploy succeeded) to $GITHUB_OUTPUT.
Run by .github/workflows/deploy.yml with the env GitHub sets (docs/deploy.md):

- `workflow_run` (ci completed): only a successful `push` to main of this repository deploys; the commit is the run's
  head_sha (not github.sha, which is whatever main points at now). Then the commit is compared with what is LIVE --
  LIVE_SHA, the serving stack's `DeployedSha` output, read with the read-only role -- not with its parent: a commit
  whose ci was cancelled or whose deploy failed or was replaced in the queue is deployed by the next one. Nothing live,
  or a live commit this history does not contain -> deploy. Otherwise deploy only when something the image or its
  deployment is built from changed between the two (IMAGE_INPUTS, and the bundle's md5 in dvc.lock).
  After a rollback (GTO's `prod` stage on a version older than the newest one), these automatic deploys are held --
  main still contains what was rolled back -- until someone deploys on purpose: Run workflow (main's head, or a
  version), which moves `prod` again.
- `workflow_dispatch`: refused (exit 1) unless run on refs/heads/main. With VERSION (a registered GTO version, e.g.
  v1.2.0): deploys exactly that version's commit (rollback / promote). Without: deploys main's head, only if ci
  succeeded on it (asked of the GitHub API). A dispatch always deploys, whatever is live.

Stdlib and git only: the gate job installs nothing but this checkout (full history and tags).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

MAIN = "refs/heads/main"
CI_WORKFLOW = "ci.yml"
BUNDLE = "artifacts/bundle"
ARTIFACT = "cola-classifier"  # the bundle's name in dvc.yaml `artifacts:` (GTO tags: cola-classifier@v1.2.0)
VERSION_TAG = re.compile(rf"^{re.escape(ARTIFACT)}@v(\d+)\.(\d+)\.(\d+)$")
STAGE_TAG = re.compile(rf"^{re.escape(ARTIFACT)}#prod#(\d+)$")  # what `gto assign --stage prod` creates
# What the image is built from (docker/Dockerfile.lambda COPYs app/ incl. app/requirements.txt, contract/, runtime/,
# the wheels from docker/requirements-lambda.txt via fetch-wheels.sh, artifacts/bundle; .dockerignore filters the
# context) and what decides how it is deployed (the template, its hook, the workflow that passes the parameters). The
# bundle is compared by its md5 in dvc.lock, so a dvc.lock change in another stage (a re-run benchmark) does not
# redeploy.
IMAGE_INPUTS = (
    "app/",
    "contract/",
    "runtime/",
    "docker/Dockerfile.lambda",
    "docker/requirements-lambda.txt",
    "docker/fetch-wheels.sh",
    ".dockerignore",
    "deploy/template.yaml",
    "deploy/hooks/",
    ".github/workflows/deploy.yml",
)


class Refused(RuntimeError):
    pass


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def is_commit(rev: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True).returncode == 0


def is_ancestor(older: str, newer: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], capture_output=True).returncode == 0


def bundle_md5(rev: str) -> str | None:
    """The bundle's md5 in dvc.lock at `rev` (DVC writes path, hash, md5 in this order)."""
    try:
        lock = git("show", f"{rev}:dvc.lock")
    except subprocess.CalledProcessError:
        return None
    found = re.search(rf"- path: {re.escape(BUNDLE)}\n(?:\s+\w+: .*\n)*?\s+md5: (\S+)", lock)
    return found.group(1) if found else None


def image_changes(live: str, sha: str) -> list[str]:
    """What between the live commit and `sha` can change the deployed image or its deployment."""
    changed = git("diff", "--name-only", live, sha).split()
    # a folder (ending in /) covers what is under it, a file only itself (not docker/Dockerfile.lambda.orig)
    hits = [path for path in changed if any(path.startswith(p) if p.endswith("/") else path == p for p in IMAGE_INPUTS)]
    if bundle_md5(live) != bundle_md5(sha):
        hits.append(f"dvc.lock: {BUNDLE}")
    return hits


def registered_versions() -> list[tuple[tuple[int, int, int], str, str]]:
    """(semver, 'vX.Y.Z', commit) of every registered version, newest first."""
    found = []
    for tag in git("tag", "--list", f"{ARTIFACT}@v*").split():
        match = VERSION_TAG.match(tag)
        if match:
            major, minor, patch = (int(part) for part in match.groups())
            found.append(((major, minor, patch), tag.split("@", 1)[1], git("rev-list", "-n1", tag).strip()))
    return sorted(found, reverse=True)


def prod_version() -> str | None:
    """The version GTO's latest `prod` assignment points at (the highest cola-classifier#prod#N), or None."""
    stages = [
        (int(m.group(1)), tag)
        for tag in git("tag", "--list", f"{ARTIFACT}#prod#*").split()
        if (m := STAGE_TAG.match(tag))
    ]
    if not stages:
        return None
    commit = git("rev-list", "-n1", max(stages)[1]).strip()
    on_commit = [version for _, version, tagged in registered_versions() if tagged == commit]
    return on_commit[0] if on_commit else None


def model_version(sha: str) -> tuple[str, bool]:
    """(version, new?): the newest registered version whose commit records the same bundle md5 as `sha`; else the
    next minor version (a new bundle; v1.0.0 for the first). Majors are registered by hand (docs/deploy.md)."""
    versions = registered_versions()
    md5 = bundle_md5(sha)
    for _, version, commit in versions:
        if md5 is not None and bundle_md5(commit) == md5:
            return version, False
    if not versions:
        return "v1.0.0", True
    major, minor, _ = versions[0][0]
    return f"v{major}.{minor + 1}.0", True


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
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response).get("total_count", 0) > 0
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:  # HTTPError is a URLError; ValueError: not JSON
        where = url.split("?")[0]
        raise Refused(f"deploy refused: could not ask GitHub whether ci passed on {sha} ({where}): {exc}") from None


def decide(env: dict) -> dict:
    """{deploy, sha, version, register, why}. Raises Refused for a run that must fail."""
    event = env.get("GITHUB_EVENT_NAME")
    if event == "workflow_dispatch":
        head, ref = env["GITHUB_SHA"], env.get("GITHUB_REF", "")
        if ref != MAIN:
            raise Refused(f"deploy refused: dispatched on {ref}; only {MAIN} deploys")
        wanted = env.get("VERSION", "").strip()
        if wanted:
            tag = f"{ARTIFACT}@{wanted}"
            if not VERSION_TAG.match(tag) or not is_commit(tag):
                raise Refused(f"deploy refused: {tag} is not a registered version (list them: gto show {ARTIFACT})")
            sha = git("rev-list", "-n1", tag).strip()
            if not is_ancestor(sha, head):
                raise Refused(f"deploy refused: {tag} is on {sha}, which is not on main")
            # The registration is the evidence: versions are registered after a green deploy (or by a maintainer).
            return _result(True, sha, wanted, False, f"deploying {tag} (commit {sha}): dispatched rollback/promote")
        if not ci_succeeded_on(head):
            raise Refused(f"deploy refused: no successful ci run (push to main) for {head}")
        return _result(True, head, *model_version(head), f"manual dispatch of main at {head}, ci green")
    if event == "workflow_run":
        sha = env["CI_HEAD_SHA"]
        facts = (env.get("CI_CONCLUSION"), env.get("CI_EVENT"), env.get("CI_HEAD_BRANCH"), env.get("CI_HEAD_REPO"))
        if facts != ("success", "push", "main", env.get("GITHUB_REPOSITORY")):
            why = (
                "not deploying: ci run was conclusion={} event={} branch={} repo={}; "
                "only a successful push to main of this repository deploys"
            ).format(*facts)
            return _result(False, sha, "", False, why)
        versions, prod = registered_versions(), prod_version()
        if prod and versions and versions[0][1] != prod:
            why = (
                f"not deploying {sha}: {ARTIFACT} prod was rolled back to {prod} (newest: {versions[0][1]}); automatic "
                "deploys resume after a deliberate one: Run workflow on main (its head, or a version)"
            )
            return _result(False, sha, "", False, why)
        live = env.get("LIVE_SHA", "").strip()
        if not live:
            why = f"deploying {sha}: nothing is live (no serving stack, or it records no DeployedSha)"
        elif live == sha:
            return _result(False, sha, "", False, f"not deploying {sha}: it is what is live")
        elif not is_commit(live) or not is_ancestor(live, sha):
            why = f"deploying {sha}: the live commit {live} is not in main's history before it"
        else:
            hits = image_changes(live, sha)
            if not hits:
                why = (
                    f"not deploying {sha}: nothing the image depends on changed since the live commit {live} "
                    f"({', '.join(IMAGE_INPUTS)}, {BUNDLE} in dvc.lock)"
                )
                return _result(False, sha, "", False, why)
            why = f"deploying {sha}: since the live commit {live}, changed {', '.join(hits)}"
        return _result(True, sha, *model_version(sha), why)
    raise Refused(f"deploy refused: unexpected event {event!r}")


def _result(deploy: bool, sha: str, version: str, register: bool, why: str) -> dict:
    return {"deploy": deploy, "sha": sha, "version": version, "register": register, "why": why}


def main() -> int:
    try:
        result = decide(dict(os.environ))
    except Refused as exc:
        print(f"::error::{exc}")
        return 1
    print(result["why"] if result["deploy"] else f"::notice::{result['why']}")
    if result["register"]:
        print(f"new bundle: the release job registers {ARTIFACT}@{result['version']} after a successful deploy")
    with open(os.environ["GITHUB_OUTPUT"], "a") as out:
        for key in ("deploy", "register"):
            out.write(f"{key}={'true' if result[key] else 'false'}\n")
        out.write(f"sha={result['sha']}\nversion={result['version']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
