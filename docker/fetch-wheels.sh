#!/usr/bin/env bash
# Download the images' Python wheels on the host into docker/wheels/ (git-ignored); the Dockerfiles install
# them with --no-index, so builds need no network and no certificates. Python 3.11, x86_64 glibc.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -r ../app/requirements.txt -r requirements-lambda.txt -d wheels 2> >(grep -v "^WARNING: Location" >&2)
