#!/usr/bin/env bash
# Build the images the tests use (idempotent; run after dockerd is up):
#   1. agentkit-base:bookworm  a minimal Debian from debootstrap (no Docker Hub here), if missing;
#   2. the agent image (AGENTKIT_IMAGE, default agentflow-claude-code:latest) through the
#      library's own builder (Engine API), rebuilt only when its inputs hash changed;
#   3. the gateway image (AGENTKIT_GATEWAY_IMAGE, default agentkit-gateway:latest) the same way.
# The host's extra CA certificates (an intercepting TLS proxy's) are trusted in the image.
#
# Tests and the runtime must use the same build inputs, or ensure_image() sees another hash and
# rebuilds: export AGENTKIT_BASE_IMAGE and AGENTKIT_EXTRA_CA_DIR as printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${AGENTKIT_BASE_IMAGE:-agentkit-base:bookworm}"
MIRROR="${AGENTKIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_DIR="${AGENTKIT_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
PY="${PYTHON:-.venv/bin/python}"

t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE: present"
else
  echo "base image $BASE_IMAGE: building with debootstrap from $MIRROR"
  t=$(date +%s)
  root="$(mktemp -d /tmp/agentkit-debootstrap.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/tmp/agentkit-debootstrap.log 2>&1 || {
    echo "debootstrap failed; log tail:" >&2; tail -30 /tmp/agentkit-debootstrap.log >&2; exit 1; }
  # Keep the image small: no apt lists or package caches from the bootstrap.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"; trap - EXIT
  echo "base image $BASE_IMAGE: built in $(elapsed "$t")"
fi

ca_args=()
if compgen -G "$CA_DIR/*.crt" >/dev/null; then
  echo "extra CA certificates from $CA_DIR: $(cd "$CA_DIR" && ls -- *.crt | tr '\n' ' ')"
  ca_args=(--extra-ca-dir "$CA_DIR")
else
  echo "no extra CA certificates in $CA_DIR"
  CA_DIR=""
fi

t=$(date +%s)
"$PY" -m agentkit.runtimes.image --base-image "$BASE_IMAGE" "${ca_args[@]}" --progress steps
echo "agent image: ready in $(elapsed "$t")"

t=$(date +%s)
"$PY" -m agentkit.runtimes.image --gateway --base-image "$BASE_IMAGE" "${ca_args[@]}" --progress steps
echo "gateway image: ready in $(elapsed "$t") (total $(elapsed "$t0"))"
echo "use: AGENTKIT_BASE_IMAGE=$BASE_IMAGE AGENTKIT_EXTRA_CA_DIR=$CA_DIR"
