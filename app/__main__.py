"""`python -m app [--host H] [--port P]`: verify and load the bundle, then serve the API with uvicorn.

A missing, incomplete or tampered bundle stops the process before it listens, with one clear line
(and exit code 2) instead of a traceback. SIGTERM (or Ctrl-C) drains: /ready turns 503 and new work is
refused, the listener closes, in-flight requests finish within COLA_DRAIN_SECONDS, then exit code 0.
"""

from __future__ import annotations

import argparse
import signal
import sys

import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server

from app.connections import BoundedHttpTools
from app.main import create_app, load_predictor
from app.settings import Settings
from app.telemetry import LOG_CONFIG, log_event
from contract.bundle import BundleError


class DrainingServer(uvicorn.Server):
    """uvicorn's graceful shutdown, plus the app's drain state, and a clean exit after it.

    uvicorn (>= 0.29) re-raises the captured signal once it has shut down, so a drained process would
    still die "killed by SIGTERM" (exit 143); a drain that finished is a clean stop, so the signal is not
    recorded for re-raising (uvicorn's own handle_exit minus that line).
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.fastapi_app = app

    def handle_exit(self, sig: int, frame) -> None:
        self.fastapi_app.state.service.begin_drain()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
        else:
            self.should_exit = True


def serve(app: FastAPI, settings: Settings, host: str, port: int) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=LOG_CONFIG,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=settings.drain_seconds,
        http=BoundedHttpTools.configured(settings),  # header/body timeouts, header limits, connection cap
    )
    if settings.metrics_port:  # a private listener for Prometheus (a thread; the image's API port has no /metrics)
        try:
            start_http_server(settings.metrics_port, addr=host, registry=app.state.service.metrics.registry)
        except OSError as exc:
            print(f"cannot start the CoLA API: COLA_METRICS_PORT={settings.metrics_port}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        log_event("metrics_listening", host=host, port=settings.metrics_port)
    DrainingServer(config, app).run()
    log_event("stopped", drained=app.state.service.draining)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="listen address (default: COLA_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: COLA_PORT, else 8000)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()  # COLA_HOST/COLA_PORT read and checked here, like every COLA_* setting
        predictor = load_predictor(settings)
    except (BundleError, ValueError) as exc:
        print(f"cannot start the CoLA API: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    serve(create_app(predictor, settings), settings, host, args.port or settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
