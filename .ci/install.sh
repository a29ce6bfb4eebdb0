#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine (as root): system packages, then pip.
# Used by `make test` (the README's test command) and therefore by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git                                 # the DVC integration tests make real git repos
  chromium                            # browser tests (playwright drives /usr/bin/chromium; no playwright install)
  prometheus prometheus-alertmanager  # monitoring tier: promtool rule tests and a live scrape + alert
  wrk                                 # scripts/bench_serving.py (load benchmark; not needed by the tests)
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q -r requirements-dev.txt

# Container tier: podman + runc + a local debootstrap base image (cached) + the serving wheels.
bash docker/podman-setup.sh
