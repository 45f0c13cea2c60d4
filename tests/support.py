"""Test support shared by all test modules.

Components (dockerd, sshd, the agent image, git) are real. When one is missing, a test skips
with the reason on a laptop, but under ``CI=true`` it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip (locally) or fail (under CI=true) when a component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing", pytrace=False)
    pytest.skip(f"{what} is not available")


#: The twelve product tools: names are a public contract.
TOOL_NAMES = frozenset(
    {
        "spawn_claude_agent",
        "get_claude_status",
        "get_claude_output",
        "stop_claude_agent",
        "list_claude_agents",
        "wait_for_claude_agent",
        "clone_repo",
        "create_workspace",
        "list_workspaces",
        "push_workspace",
        "create_branch",
        "delete_workspace",
    }
)
