#!/usr/bin/env bash
# Start dockerd unless an engine already answers; wait until it does.
set -euo pipefail
if docker version >/dev/null 2>&1; then echo "dockerd already running"; exit 0; fi
mkdir -p /var/log
nohup dockerd >/var/log/agentkit-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if docker version >/dev/null 2>&1; then echo "dockerd up"; exit 0; fi
  sleep 0.5
done
echo "dockerd did not start; log:" >&2
tail -50 /var/log/agentkit-dockerd.log >&2
exit 1
