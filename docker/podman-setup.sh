#!/usr/bin/env bash
# Prepare this machine for the container tier (tests marked `container`) and for local image builds:
#   - Debian packages: podman, runc, debootstrap (+ Debian's archive keyring, which Ubuntu lacks);
#   - /etc/containers/containers.conf: runc runtime, a nofile ulimit podman can set here;
#   - a local Debian bookworm base image with Python 3.11 (registries are unreachable here), cached;
#   - the serving wheels downloaded on the host (pip inside a build cannot verify certificates here).
# Idempotent and quick when everything is already there. Run as root: bash docker/podman-setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${COLA_BASE_IMAGE:-localhost/cola-base:bookworm}"
BASE_CACHE="${COLA_BASE_CACHE:-/var/cache/cola/base-bookworm-v2.tar}"  # bump when the recipe changes
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[[ -s /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)  # to verify bookworm
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# nproc too: without it podman asks runc for the host's nproc limit, which this sandbox refuses (EPERM)
CONF='[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]

[engine]
runtime = "runc"'
mkdir -p /etc/containers
if [[ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$CONF" ]]; then
  echo "$CONF" >/etc/containers/containers.conf
fi

if ! podman image exists "$BASE_IMAGE"; then
  if [[ ! -s "$BASE_CACHE" ]]; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$MIRROR" >/dev/null
    # what a server image never reads: package caches, docs, man pages, translations (~50 MB)
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/{doc,man,info,locale}/*
    mkdir -p "$(dirname "$BASE_CACHE")"
    tar -C "$rootfs" -cf "$BASE_CACHE.tmp" . && mv "$BASE_CACHE.tmp" "$BASE_CACHE"
  fi
  podman import --change 'CMD ["/bin/bash"]' "$BASE_CACHE" "$BASE_IMAGE" >/dev/null
fi

bash docker/fetch-wheels.sh
echo "podman ready: base image $BASE_IMAGE, wheels in docker/wheels/"
