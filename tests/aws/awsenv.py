"""Constants and helpers shared by the AWS tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def script(name: str, *args: str) -> list[str]:
    """The command the workflows run, `python -m scripts.<name> ...`; run it with `checkout_env()`."""
    return [sys.executable, "-m", f"scripts.{name}", *args]


def checkout_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's env) with this checkout first on the import path: the scripts run in a
    throwaway repository, and must be this checkout's code, whichever copy of the project pip installed."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env
