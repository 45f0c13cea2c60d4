"""Fixtures for tests that run real agents on both executors (pytest plugin, see conftest.py).

* ``agent_image`` - the agent image's tag; requires dockerd and the image (fails under CI=true).
* ``host`` - parametrized ``local`` / ``ssh``: ``(executor, make_settings)`` with the test's own
  ``tmp_path/root`` (``make_settings(**overrides) -> Settings``, no ``.env`` read).
* ``agent_cleanup`` - force-removes the containers of the test's root afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.executors.base import Executor
from agentkit.executors.local import LocalExecutor
from tests.containers_support import AGENT_IMAGE, docker_ok, image_ok, remove_containers_of_root
from tests.support import require


@pytest_asyncio.fixture(loop_scope="session")
async def agent_image() -> str:
    require(await docker_ok(), "dockerd (/var/run/docker.sock)")
    require(await image_ok(AGENT_IMAGE), f"the agent image {AGENT_IMAGE} (.ci/build-images.sh)")
    return AGENT_IMAGE


@pytest.fixture(params=["local", "ssh"])
def host(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Executor, Callable[..., Settings]]:
    """(executor, make_settings) for the local machine or the loopback SSH server."""
    root = str(tmp_path / "root")
    if request.param == "local":

        def make(**kw: Any) -> Settings:
            return Settings(_env_file=None, host=None, root=root, **kw)  # type: ignore[call-arg]

        return LocalExecutor(), make  # stateless: nothing to close
    sshd = request.getfixturevalue("sshd")
    executor: Executor = request.getfixturevalue("ssh_executor")

    def make_ssh(**kw: Any) -> Settings:
        return sshd.settings(root=root, **kw)  # type: ignore[no-any-return]

    return executor, make_ssh


@pytest_asyncio.fixture(loop_scope="session")
async def agent_cleanup(tmp_path: Path) -> AsyncIterator[None]:
    yield
    if await docker_ok():
        await remove_containers_of_root(str(tmp_path / "root"))
