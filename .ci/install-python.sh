#!/usr/bin/env bash
# A virtualenv with the package (editable) and every extra the tests exercise.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import agentkit, anthropic, asyncssh, aiodocker, mcp, fastapi, uvicorn, playwright; print('python env ok')"
