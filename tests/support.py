"""Test support shared by all test modules.

Components (dockerd, sshd, the agent image, git) are real. When one is missing, a test skips
with the reason on a laptop, but under ``CI=true`` it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip (locally) or fail (under CI=true) when a component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing", pytrace=False)
    pytest.skip(f"{what} is not available")


#: The fifteen product tools: names are a public contract.
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
        "continue_claude_agent",
        "send_to_claude_agent",
        "approve_claude_agent",
    }
)


async def wait_until(
    condition: Callable[[], object | Awaitable[object]],
    what: str,
    *,
    timeout: float = 60.0,
    interval: float = 0.02,
) -> Any:
    """Wait until ``condition()`` (sync or async) returns something truthy; return it.

    This is how tests synchronise with another process or task: on a state they can observe,
    with a generous ``timeout`` that only matters when something is broken (then the test fails
    saying what it waited for), never on a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        await asyncio.sleep(interval)


async def wait_past(moment: float) -> None:
    """Return once the wall clock (``time.time()``) has passed ``moment`` (e.g. a deadline)."""
    while time.time() <= moment:
        await asyncio.sleep(min(max(moment - time.time(), 0.0) + 0.01, 1.0))


#: Under mutation testing (scripts/mutation.py; mutmut sets MUTANT_UNDER_TEST) every mutant
#: reruns the property tests: they draw fewer examples there, the full number everywhere else.
UNDER_MUTATION = "MUTANT_UNDER_TEST" in os.environ


def examples(n: int) -> int:
    """How many examples a property test draws: ``n``, or a tenth of it under mutation."""
    return max(n // 10, 10) if UNDER_MUTATION else n
