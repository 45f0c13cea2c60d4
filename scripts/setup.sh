#!/usr/bin/env bash
# Set up this machine to run agentkit locally: Debian packages (Docker engine, OpenSSH, git,
# debootstrap), a virtualenv with agentkit and its extras, a running dockerd, and the agent image.
# Idempotent: re-running skips what is already there. Needs root (apt-get, dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-system.sh
bash .ci/install-python.sh
bash .ci/start-dockerd.sh
bash .ci/build-images.sh
echo
echo "ready: .venv/bin/agentkit demo"
