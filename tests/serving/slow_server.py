"""`python -m tests.serving.slow_server PORT SECONDS`: the real `python -m app` server (app.__main__.serve,
its SIGTERM drain included) on COLA_BUNDLE_DIR, with every model call made SECONDS slower.
`python -m tests.serving.slow_server PORT hold`: every model call after the warm-up prints `held N` (its
sentences) to stderr and waits for a line on stdin (or its end), so a test decides when each call finishes.

Only the model's speed is changed: the tiny test bundle answers in a millisecond, too fast for a test to have
requests in flight when it sends SIGTERM. Used by the serving and container tiers.
"""

from __future__ import annotations

import sys
import time

from app.__main__ import serve
from app.main import create_app, load_predictor
from app.settings import Settings


def main(port: int, seconds: str) -> int:
    settings = Settings.from_env()
    predictor = load_predictor(settings)
    if seconds == "hold":
        app = create_app(predictor, settings)  # the warm-up measures the real model, unheld
        batcher = app.state.service.batcher
        infer = batcher.infer

        def held_infer(encoded):
            print(f"held {len(encoded.ids)}", file=sys.stderr, flush=True)
            sys.stdin.readline()
            return infer(encoded)

        batcher.infer = held_infer
    else:
        infer = predictor.infer

        def slow_infer(encoded):
            time.sleep(float(seconds))
            return infer(encoded)

        predictor.infer = slow_infer
        app = create_app(predictor, settings)
    serve(app, settings, "127.0.0.1", port)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
