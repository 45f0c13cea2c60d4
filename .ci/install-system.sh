#!/usr/bin/env bash
# Debian packages the tests need: Docker engine, OpenSSH server, debootstrap (base image), git,
# a Docker registry (the swarm runtime's image distribution), Chromium (the dashboard's browser
# tests drive it with Playwright; Playwright's own browser download is not used).
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v git >/dev/null || need+=(git)
command -v ip >/dev/null || need+=(iproute2)
command -v npm >/dev/null || need+=(nodejs npm)
command -v ssh >/dev/null || need+=(openssh-client)
command -v docker-registry >/dev/null || need+=(docker-registry)  # swarm image distribution tests
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "system packages ok"
