#!/usr/bin/env bash
# Install the Claude Code CLI on the host for the tests that run it outside Docker, at the same
# pinned version as the agent image (ARG CLAUDE_CODE_VERSION in docker/Dockerfile.claude-code).
# Prints the binary's path on the last line. The package's native binary runs without node.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^ARG CLAUDE_CODE_VERSION=\([0-9.]*\).*/\1/p' docker/Dockerfile.claude-code | head -1)"
[ -n "$version" ] || { echo "no CLAUDE_CODE_VERSION in the Dockerfile" >&2; exit 1; }
prefix="/opt/agentkit-ci/claude-code-$version"
case "$(uname -m)" in
  x86_64) platform=linux-x64 ;;
  aarch64|arm64) platform=linux-arm64 ;;
  *) echo "no Claude Code build for $(uname -m)" >&2; exit 1 ;;
esac
bin="$prefix/node_modules/@anthropic-ai/claude-code-$platform/claude"
if [ ! -x "$bin" ]; then
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$version" >&2
fi
"$bin" --version >&2
echo "$bin"
