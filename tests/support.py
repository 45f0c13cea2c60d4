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
