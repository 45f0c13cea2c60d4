#!/usr/bin/env bash
# Set up this machine to run agentkit locally: Debian packages (Docker engine, OpenSSH, git,
# debootstrap), a virtualenv with agentkit and its extras, a running dockerd, and the agent image
# built from a local Debian base (no Docker Hub needed). Idempotent. Needs root (apt, dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."
export AGENTKIT_BASE_IMAGE="${AGENTKIT_BASE_IMAGE:-agentkit-base:bookworm}"
if [ -z "${AGENTKIT_EXTRA_CA_DIR:-}" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  export AGENTKIT_EXTRA_CA_DIR=/usr/local/share/ca-certificates
fi
bash .ci/install-system.sh
bash .ci/install-python.sh
bash .ci/start-dockerd.sh
bash .ci/build-images.sh
# Remember the image inputs, so later `agentkit image build` / doctor see the same build.
touch .env
for name in AGENTKIT_BASE_IMAGE AGENTKIT_EXTRA_CA_DIR; do
  value="${!name:-}"
  if [ -n "$value" ] && ! grep -q "^$name=" .env; then
    echo "$name=$value" >> .env
    echo "recorded $name=$value in .env"
  fi
done
echo
echo "ready: .venv/bin/agentkit demo"
