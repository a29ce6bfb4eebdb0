"""`python -m app [--host H] [--port P]`: verify and load the bundle, then serve the API with uvicorn.

A missing, incomplete or tampered bundle stops the process before it listens, with one clear line
(and exit code 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from app.bundle import BundleError
from app.main import create_app
from app.predictor import BundlePredictor
from app.settings import Settings
from app.telemetry import LOG_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("COLA_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("COLA_PORT", "8000")))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        predictor = BundlePredictor(settings.bundle_dir, threads=settings.ort_threads)
    except (BundleError, ValueError) as exc:
        print(f"cannot start the CoLA API: {exc}", file=sys.stderr)
        return 2
    app = create_app(predictor, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_config=LOG_CONFIG, access_log=False, server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
