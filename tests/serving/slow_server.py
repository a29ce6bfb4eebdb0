"""`python -m tests.serving.slow_server PORT SECONDS`: the real `python -m app` server (app.__main__.serve,
its SIGTERM drain included) on COLA_BUNDLE_DIR, with every model call made SECONDS slower.

Only the model's speed is changed: the tiny test bundle answers in a millisecond, too fast for a test to have
requests in flight when it sends SIGTERM. Used by the serving and container tiers.
"""

from __future__ import annotations

import sys
import time

from app.__main__ import serve
from app.main import create_app, load_predictor
from app.settings import Settings


def main(port: int, seconds: float) -> int:
    settings = Settings.from_env()
    predictor = load_predictor(settings)
    infer = predictor.infer

    def slow_infer(encoded):
        time.sleep(seconds)
        return infer(encoded)

    predictor.infer = slow_infer
    serve(create_app(predictor, settings), settings, "127.0.0.1", port)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2])))
