#!/usr/bin/env bash
# Install everything the test suite needs: system packages (Debian/Ubuntu apt), pip packages, the container tier.
# Used by `make test` (the README's test command) and therefore by .ci/run (root on Debian: installs everything).
# Without root (a laptop, macOS): uses sudo if it works without a password, else skips the system part with a
# message and still installs the pip packages; the test run then skips the tiers whose tools are missing and
# lists them with their install command (tests/conftest.py).
# COLA_SETUP_CONTAINERS=0 skips docker/podman-setup.sh (e.g. where podman cannot run the tests' containers).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git                                 # the DVC integration tests make real git repos
  chromium                            # browser tests (playwright drives /usr/bin/chromium; no playwright install)
  prometheus prometheus-alertmanager  # monitoring tier: promtool rule tests and a live scrape + alert
  shellcheck                          # actionlint runs it on every workflow `run:` step (tests/aws/test_workflows.py)
  wrk                                 # scripts/bench_serving.py (load benchmark; not needed by the tests)
)

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  as_root=(none)
fi

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "install.sh: no apt here: skipping system packages (${APT_PACKAGES[*]}); install them with your package" \
       "manager for the tiers that need them" >&2
elif [ "${as_root[0]:-}" = none ]; then
  echo "install.sh: not root and no passwordless sudo: skipping apt (${APT_PACKAGES[*]}) and the container setup;" \
       "for every tier run: sudo apt-get install ${APT_PACKAGES[*]} && sudo bash docker/podman-setup.sh" >&2
else
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    # install what this distribution has (Ubuntu has no deb `chromium`): the tests report what stays missing
    available=()
    for pkg in "${missing[@]}"; do
      if apt-cache show "$pkg" 2>/dev/null | grep -q '^Filename:'; then available+=("$pkg")
      else echo "install.sh: apt has no package $pkg here: skipping it" >&2; fi
    done
    if [ ${#available[@]} -gt 0 ]; then
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${available[@]}"
    fi
  fi
fi

"${PYTHON:-python3}" -m pip install -q -r requirements-dev.txt
"${PYTHON:-python3}" -m pip install -q --no-deps -e .  # the project itself (pyproject.toml); the pins are above

# Template tools (make lint, tests/aws/test_templates.py, tests/serving/test_sam_local.py), each in its own venv:
# aws-sam-cli pins boto3 and a newer cfn-lint/aws-sam-translator than moto's, checkov pins older boto3/botocore.
tool_venv() {
  local name=$1; shift
  [ -x ".venv-tools/$name/bin/python" ] || "${PYTHON:-python3}" -m venv ".venv-tools/$name"
  ".venv-tools/$name/bin/python" -m pip install -q "$@"
}
tool_venv sam aws-sam-cli==1.170.0 cfn-lint==1.58.0
tool_venv checkov checkov==3.3.30
tool_venv cosmic-ray cosmic-ray==8.7.0  # make mutation (mutation.toml): its own venv keeps SQLAlchemy & co. apart

# Mermaid CLI (tests/aws/test_pr_charts.py renders the PR comment's charts), pinned with its lock in .ci/mermaid/.
# It drives the system Chromium (.ci/mermaid/puppeteer.json): PUPPETEER_SKIP_DOWNLOAD, never a browser download.
# 11.x: mermaid-cli 12 needs node >= 22.
if command -v npm >/dev/null; then
  mkdir -p .venv-tools/mermaid
  cp .ci/mermaid/package.json .ci/mermaid/package-lock.json .venv-tools/mermaid/
  PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix .venv-tools/mermaid --no-audit --no-fund --loglevel=error
else
  echo "install.sh: no npm (node >= 18.19): skipping the Mermaid CLI; the mermaid tier will be skipped" >&2
fi

# Container tier: podman + runc + a local debootstrap base image (cached) + the serving wheels. Needs root.
if [ "${COLA_SETUP_CONTAINERS:-1}" = 0 ]; then
  echo "install.sh: COLA_SETUP_CONTAINERS=0: skipping docker/podman-setup.sh (container tier)" >&2
elif [ "${as_root[0]:-}" = none ] || ! command -v apt-get >/dev/null; then
  echo "install.sh: skipping docker/podman-setup.sh (needs root on Debian/Ubuntu); container tests will be skipped" >&2
else
  "${as_root[@]}" bash docker/podman-setup.sh
fi
