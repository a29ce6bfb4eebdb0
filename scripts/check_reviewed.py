"""Reviewed = deployed: the checks the PR report and the deploy workflows run (no training, ever).

    python -m scripts.check_reviewed pr --remote s3     # same-repository PR: outputs pushed, dvc.lock current
    python -m scripts.check_reviewed pr --no-remote     # fork PR: no AWS; only what git alone can show, as warnings
    python -m scripts.check_reviewed bundle             # deploy: the workspace bundle is the one dvc.lock records

`pr` downloads nothing: `dvc data status --not-in-remote -r REMOTE` lists the outputs recorded in dvc.lock and
*.dvc that are not in the remote (DVC asks the remote which objects exist; a directory counts as pushed when its
`.dir` manifest is there, which `dvc push` uploads last), and fails on any (the author ran the pipeline but never ran
`dvc push`). Then it fails when dvc.lock is stale in what git shows without the data: a stage whose command, code or
params changed since dvc.lock was written (`dvc status`; deps that are other stages' outputs, absent here, are not
evidence). Either way the author fixes it on their machine; CI never retrains. `bundle` (the deploy, which does pull
the bundle) recomputes DVC's md5 of artifacts/bundle and compares it with dvc.lock, so the image is built from
exactly the bundle the merged commit records, whatever the remote or workspace holds. Errors are one `::error::`
line (a GitHub annotation) plus detail; exit status 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

BUNDLE = "artifacts/bundle"


class CheckError(RuntimeError):
    pass


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise CheckError(f"`dvc {' '.join(args)}` failed (exit {result.returncode}):\n{tail}")
    return result


def tracked_outputs(root: Path) -> dict[str, str]:
    """path -> md5 of every cached output that dvc.lock and the *.dvc files record."""
    found: dict[str, str] = {}
    lock = root / "dvc.lock"
    if lock.exists():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("cache", True) and "md5" in out:
                    found[out["path"]] = out["md5"]
    listed = subprocess.run(["git", "ls-files", "*.dvc"], cwd=root, capture_output=True, text=True, check=True)
    for name in listed.stdout.split():
        for out in (yaml.safe_load((root / name).read_text()) or {}).get("outs", []):
            if out.get("cache", True) and "md5" in out:
                found[(Path(name).parent / out["path"]).as_posix()] = out["md5"]
    return found


def not_in_remote(remote: str) -> list[str]:
    """Tracked outputs whose objects are not in `remote`, by listing (nothing is downloaded)."""
    listed = json.loads(dvc("data", "status", "--not-in-remote", "-r", remote, "--json").stdout or "{}")
    return sorted(path.rstrip("/") for path in listed.get("not_in_remote", []))


def stale_stages(root: Path) -> dict[str, list[str]]:
    """Stages whose command or git-visible deps (code, params) changed since dvc.lock was written: stage -> 'what'.

    Without the data, `dvc status` also reports every output and every dep that is another stage's output (or a
    *.dvc-tracked path) as deleted; that is absence, not staleness, so those are left out."""
    status = json.loads(dvc("status", "--json").stdout or "{}")
    outputs = set(tracked_outputs(root))
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        for change in changes:
            if change == "changed command":  # dvc.yaml's cmd is not the one dvc.lock recorded
                stale.setdefault(stage, []).append("cmd changed")
            if not isinstance(change, dict):  # that, or "always changed" (not evidence of anything)
                continue
            for path, state in (change.get("changed deps") or {}).items():
                if path not in outputs and state != "deleted":
                    stale.setdefault(stage, []).append(f"{path} {state if isinstance(state, str) else 'modified'}")
    return stale


def check_pr(root: Path, remote: str) -> None:
    outputs = tracked_outputs(root)
    missing = not_in_remote(remote)
    if missing:
        raise CheckError(
            f"outputs recorded in dvc.lock are not in the DVC remote '{remote}': {', '.join(missing)} -- "
            f"run the pipeline on your branch (`dvc repro`) and `dvc push -r {remote}`, then re-run this job"
        )
    stale = stale_stages(root)
    if stale:
        raise CheckError(
            "dvc.lock is stale: `dvc repro` would change it (stages: "
            f"{', '.join(sorted(stale))}) -- run `dvc repro` on your branch, commit dvc.lock, "
            f"`dvc push -r {remote}`\n"
            + "\n".join(f"  {stage}: {'; '.join(items)}" for stage, items in sorted(stale.items()))
        )
    print(f"check_reviewed: all {len(outputs)} outputs are in '{remote}' (listed, not downloaded); dvc.lock is current")


def check_pr_without_remote(root: Path) -> list[str]:
    """Fork PRs: no remote access, so only the git-visible staleness, as warnings."""
    warnings = [
        f"dvc.lock is stale for {stage}: {', '.join(items)}" for stage, items in sorted(stale_stages(root).items())
    ]
    warnings.append(
        "fork PR: no access to the DVC remote, so whether the outputs in dvc.lock were pushed is not checked; "
        "a maintainer must `dvc push` them before merging (the deploy refuses a bundle it cannot pull)"
    )
    return warnings


def dir_md5(path: Path) -> str:
    """DVC 3's md5 of a directory: md5 of its sorted (relpath, md5) listing as JSON, suffixed '.dir'."""
    entries = [
        {"md5": hashlib.md5(file.read_bytes()).hexdigest(), "relpath": file.relative_to(path).as_posix()}
        for file in path.rglob("*")
        if file.is_file()
    ]
    entries.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def check_bundle(root: Path, bundle: str, locked_only: bool) -> None:
    locked = tracked_outputs(root).get(bundle)
    if locked is None:
        raise CheckError(
            f"{bundle} is not an output recorded in dvc.lock: nothing to verify the deploy against; refusing to deploy"
        )
    if locked_only:
        print(f"check_reviewed: dvc.lock records {bundle} as {locked}")
        return
    if not (root / bundle).is_dir():
        raise CheckError(f"{bundle} is missing: `dvc pull` did not fetch the bundle that dvc.lock records ({locked})")
    actual = dir_md5(root / bundle)
    if actual != locked:
        raise CheckError(
            f"{bundle} is not the bundle this commit's dvc.lock records: md5 {actual} != {locked} -- refusing to deploy"
        )
    print(f"check_reviewed: {bundle} matches dvc.lock ({locked})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("pr", help="outputs pushed and dvc.lock current")
    group = pr.add_mutually_exclusive_group(required=True)
    group.add_argument("--remote", help="DVC remote to check (CI: s3)")
    group.add_argument("--no-remote", action="store_true", help="fork PR: git-visible checks only, warnings")
    bundle = sub.add_parser("bundle", help="the workspace bundle equals the one dvc.lock records")
    bundle.add_argument("--path", default=BUNDLE)
    bundle.add_argument(
        "--locked-only", action="store_true", help="only check that dvc.lock records it (before a pull)"
    )
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        if args.command == "bundle":
            check_bundle(root, args.path, args.locked_only)
        elif args.no_remote:
            for warning in check_pr_without_remote(root):
                print(f"::warning::{warning}")
        else:
            check_pr(root, args.remote)
    except CheckError as exc:
        first, _, rest = str(exc).partition("\n")
        print(f"::error::{first}")
        if rest:
            print(rest)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
