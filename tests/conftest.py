"""Shared fixtures. Helpers that tests import live in ``tests/support.py``."""

from __future__ import annotations

pytest_plugins = ["tests.sshd", "tests.agent_hosts", "tests.runtimes_support", "tests.swarm_nodes"]
