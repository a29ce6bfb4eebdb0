"""Cold start of the Lambda image (not a test): the deploy target's own latency, measured here without AWS.

Builds docker/Dockerfile.lambda with podman (local base, the real bundle), then starts it --runs times under AWS's
runtime interface emulator (`aws-lambda-rie`, the binary AWS SAM CLI ships and `sam local` runs) and times, per
start, `podman run` -> the first answered invocation, and the warm invocations after it. Also: the image size,
`podman run` of the same image doing nothing (the container's own start, which Lambda's sandbox replaces), and the
app's own init figures from its `init` log line (bundle load incl. its sha256 check, app creation incl. warm-up).

    python -m scripts.lambda_cold_start --bundle artifacts/bundle --runs 5 --out reports/serving/lambda_cold_start.json

Needs podman (`bash docker/podman-setup.sh`, which this runs) and AWS SAM CLI (.venv-tools/sam, `make setup-dev`).
Real Lambda adds what the emulator cannot show: fetching the image's layers onto the host (cached after the first
start) and the sandbox's own start.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from scripts.bench_serving import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/cola-base:bookworm"
RIE_GLOB = ".venv-tools/sam/lib/python*/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
EVENT = {"sentence": "The more books I read, the more I understand."}


def podman(*args: str, timeout: float = 900) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=True).stdout


def build_image(bundle: Path, tag: str) -> float:
    """Build the Lambda image from a copy of what its Dockerfile COPYs (and the bundle); returns its size in MB."""
    subprocess.run(["bash", "docker/podman-setup.sh"], cwd=ROOT, check=True, timeout=1800)
    with tempfile.TemporaryDirectory(prefix="lambda-context-") as tmp:
        context = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in ("app", "contract", "runtime", "docker"):
            shutil.copytree(ROOT / package, context / package, ignore=ignore)
        shutil.copytree(bundle, context / "artifacts" / "bundle")
        shutil.copyfile(ROOT / ".dockerignore", context / ".dockerignore")
        podman("build", "--format", "docker", "--from", BASE_IMAGE, "-f", "docker/Dockerfile.lambda", "-t", tag, tmp)
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip()) / 1e6


def invoke(port: int, timeout_s: float = 60) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{INVOKE_PATH}", json.dumps(EVENT).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def one_start(tag: str, rie: Path, warm: int) -> dict:
    """podman run -> first answer (ms), then `warm` invocations (p50 ms), and what the logs say about init."""
    port, name = free_port(), f"cola-coldstart-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    podman("run", "-d", "--rm", "--name", name, "--network", "host", "-v", f"{rie}:/aws-lambda-rie:ro",
           "--entrypoint", "/aws-lambda-rie", "-e", "AWS_LAMBDA_FUNCTION_NAME=cola-classifier", tag,
           "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
           "python3", "-m", "awslambdaric", "app.lambda_handler.handler")  # fmt: skip
    try:
        while True:  # until the emulator listens; the runtime starts with the first invocation
            try:
                answer = invoke(port)
                break
            except (ConnectionError, urllib.error.URLError):
                if time.perf_counter() - start > 120:
                    raise SystemExit(f"no answer within 120 s: {podman('logs', name)}") from None
                time.sleep(0.005)
        first_ms = (time.perf_counter() - start) * 1000
        if "predictions" not in answer:
            raise SystemExit(f"the function did not classify: {answer}")
        warm_ms = []
        for _ in range(warm):
            t0 = time.perf_counter()
            invoke(port)
            warm_ms.append((time.perf_counter() - t0) * 1000)
        logs = podman("logs", name)
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
    inits = [json.loads(line) for line in logs.splitlines() if line.startswith('{"') and '"event":"init"' in line]
    init: dict = inits[0] if inits else {}
    return {"start_to_first_answer_ms": round(first_ms, 1), "warm_p50_ms": round(statistics.median(warm_ms), 2),
            "app_init": {k: v for k, v in init.items() if k.endswith("_ms")}}  # fmt: skip


def empty_start_ms(tag: str) -> float:
    """`podman run` of the image doing nothing: the container's own start and removal."""
    start = time.perf_counter()
    podman("run", "--rm", "--entrypoint", "true", tag)
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    parser.add_argument("--runs", type=int, default=5, help="cold starts (each a new container)")
    parser.add_argument("--warm", type=int, default=20, help="warm invocations after each cold start")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rie = next(iter(sorted(ROOT.glob(RIE_GLOB))), None)
    if rie is None:
        raise SystemExit(f"no aws-lambda-rie under {ROOT}/.venv-tools/sam: run `make setup-dev` (it installs SAM CLI)")
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `dvc repro export_onnx` or pass --bundle")
    tag = f"localhost/cola-lambda-coldstart:{uuid.uuid4().hex[:8]}"
    size_mb = build_image(args.bundle, tag)
    try:
        empty_start_ms(tag)  # the first start also unpacks the image: not counted
        empty = [empty_start_ms(tag) for _ in range(args.runs)]
        runs = [one_start(tag, rie, args.warm) for _ in range(args.runs)]
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=300)
    firsts = [r["start_to_first_answer_ms"] for r in runs]
    app_init = {key: statistics.median(r["app_init"].get(key, 0) for r in runs) for key in runs[0]["app_init"]}
    results = {
        "image_mb": round(size_mb, 1),
        "bundle_mb": round(sum(f.stat().st_size for f in args.bundle.iterdir()) / 1e6, 1),
        "start_to_first_answer_ms": {"p50": round(statistics.median(firsts), 1), "min": min(firsts),
                                     "max": max(firsts)},
        "empty_container_start_ms_p50": round(statistics.median(empty), 1),
        "app_init_ms_p50": app_init,
        # what is left: the runtime interface client and Python starting, imports, the first invocation
        "rest_ms_p50": round(statistics.median(firsts) - statistics.median(empty) - sum(app_init.values()), 1),
        "warm_p50_ms": statistics.median(r["warm_p50_ms"] for r in runs),
        "runs": runs,
    }  # fmt: skip
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
