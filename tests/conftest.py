"""Shared fixtures. Helpers that tests import live in ``tests/support.py``."""

from __future__ import annotations

import os

# Every gateway a test starts would make AGENTKIT_AGENT_NETWORK_SPARES networks ahead (16 by
# default): dozens of gateway starts would spend minutes of engine time on networks no test
# uses. Two still hand spares to the runs of every gateway test; the pool's own tests set more.
os.environ.setdefault("AGENTKIT_AGENT_NETWORK_SPARES", "2")

pytest_plugins = ["tests.sshd", "tests.agent_hosts", "tests.runtimes_support", "tests.swarm_nodes"]
