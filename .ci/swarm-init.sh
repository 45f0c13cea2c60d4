#!/usr/bin/env bash
# Make the engine a single-node swarm manager (for the Swarm runtime's tests), unless it already
# is one. Idempotent; never leaves a swarm. Advertises on loopback: nothing outside this machine.
set -euo pipefail
state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)"
manager="$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null || true)"
if [ "$state" = "active" ] && [ "$manager" = "true" ]; then
  echo "swarm manager already"
  exit 0
fi
if [ "$state" = "active" ]; then
  echo "this engine is a swarm worker, not a manager: the Swarm runtime tests need a manager" >&2
  exit 1
fi
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
echo "swarm initialised (single node, 127.0.0.1)"
