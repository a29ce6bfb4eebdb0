"""The hashed locks the images install with --require-hashes --no-deps: app/requirements.lock (the serving set)
and docker/requirements-lambda.txt (what the Lambda image adds). They must pin what app/requirements.txt and
docker/requirements-lambda.in ask for, carry a sha256 for every package, and cover every dependency of every
locked package (else --no-deps would build an image missing one). The container tier checks that the images hold
exactly the locked packages."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cola.paths import ROOT

SERVING_LOCK = ROOT / "app" / "requirements.lock"
LAMBDA_LOCK = ROOT / "docker" / "requirements-lambda.txt"
WHEELS = ROOT / "docker" / "wheels"
# Locked without their dependencies, on purpose (docker/fetch-wheels.sh says why).
NO_DEPS = {"tokenizers"}
LINUX_CP311 = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}  # fmt: skip


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes)."""
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        if block.startswith("#") or not block.strip():
            block = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
            if not block.strip():
                continue
        name, version = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block).groups()
        entries[canonicalize_name(name)] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines if "==" in line}


SERVING, LAMBDA = locked(SERVING_LOCK), locked(LAMBDA_LOCK)


@pytest.mark.parametrize(
    "wanted,lock",
    [(ROOT / "app" / "requirements.txt", SERVING), (ROOT / "docker" / "requirements-lambda.in", LAMBDA)],
    ids=["serving", "lambda"],
)
def test_the_lock_pins_what_the_requirements_ask_for_with_hashes(wanted, lock):
    for name, version in pins(wanted).items():
        assert lock.get(name, ("missing",))[0] == version, f"{name}: run bash docker/fetch-wheels.sh --lock"
    assert all(hashes for _, hashes in lock.values())
    assert not set(SERVING) & set(LAMBDA)  # one home per package


def requirements_of(name: str, version: str, hashes: list[str]) -> list[Requirement]:
    """From the locked wheel in docker/wheels/ (its sha256 checked against the lock) when it is there
    (`bash docker/fetch-wheels.sh`), else from this machine's installed copy of the package."""
    for wheel in WHEELS.glob("*.whl"):
        if canonicalize_name(wheel.name.split("-")[0]) == name and wheel.name.split("-")[1] == version:
            assert hashlib.sha256(wheel.read_bytes()).hexdigest() in hashes, f"{wheel.name} does not match the lock"
            with zipfile.ZipFile(wheel) as archive:
                metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                message = Parser().parsestr(archive.read(metadata).decode())
            return [Requirement(r) for r in message.get_all("Requires-Dist") or []]
    return [Requirement(r) for r in importlib.metadata.requires(name) or []]


@pytest.mark.parametrize("lock", [SERVING, {**SERVING, **LAMBDA}], ids=["serving", "lambda"])
def test_the_lock_covers_every_dependency_of_what_it_locks(lock):
    missing = [
        f"{name} needs {requirement}"
        for name, (version, hashes) in lock.items()
        if name not in NO_DEPS
        for requirement in requirements_of(name, version, hashes)
        if (requirement.marker is None or requirement.marker.evaluate(LINUX_CP311))
        and canonicalize_name(requirement.name) not in lock
    ]
    assert missing == [], "run bash docker/fetch-wheels.sh --lock"


def test_dependabot_bumps_the_serving_pins():
    import yaml

    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert {("pip", "/app"), ("pip", "/docker")} <= {(u["package-ecosystem"], u["directory"]) for u in updates}
