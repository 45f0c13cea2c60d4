"""The Docker Engine client, and the ONE place aiodocker/aiohttp errors become agentkit errors.

:func:`open_docker` returns an :class:`aiodocker.Docker` talking to the host's Engine API through
the executor: locally the socket itself, over SSH a local socket forwarded through the one
persistent SSH connection (each HTTP connection is one multiplexed channel; aiohttp keeps them
alive). No ``docker`` CLI process is ever started.

Every call into aiodocker goes through :func:`docker_errors` (a context manager) or
:func:`map_docker_error`, so callers only ever see :mod:`agentkit.errors` types:

=====================================================  ==========================================
backend exception                                      agentkit error
=====================================================  ==========================================
``DockerError`` 900 (cannot connect), ``OSError``,    :class:`RuntimeUnavailable` (says how to
``aiohttp.ClientConnectionError``/``PayloadError``     start dockerd / check the socket)
``DockerError`` 404                                    :class:`NotFoundError`
``DockerError`` 409 (and 304 "already stopped")        :class:`ConflictError`
``DockerError`` 401 / 403                              :class:`PermissionDeniedError`
``DockerError`` 400                                    :class:`ConfigError` (a setting is wrong)
``DockerError`` other (5xx)                            :class:`ToolError` (engine refused)
``DockerStreamError`` (build/pull stream error)        :class:`ImageBuildError`
``DockerContextError``                                 :class:`ConfigError`
=====================================================  ==========================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerContextError, DockerError, DockerStreamError

from agentkit.errors import (
    AgentkitError,
    ConfigError,
    ConflictError,
    ImageBuildError,
    NotFoundError,
    PermissionDeniedError,
    RuntimeUnavailable,
    ToolError,
)

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.base import Executor

__all__ = ["docker_errors", "map_docker_error", "open_docker", "unavailable_advice"]


def unavailable_advice(socket: str, where: str = "the host") -> str:
    """The fix-it text shown whenever the Docker Engine cannot be reached."""
    return (
        f"Docker Engine is not reachable at {socket} on {where}. Start it "
        "(`sudo systemctl start docker`, or `dockerd > /tmp/dockerd.log 2>&1 &`), check that "
        "the socket exists and that this user may use it (group `docker` or root), or set "
        "AGENTKIT_DOCKER_SOCKET. `agentkit doctor` checks all of this."
    )


def map_docker_error(
    exc: BaseException, *, what: str = "Docker request", socket: str = "the Docker socket"
) -> AgentkitError:
    """Translate an aiodocker / aiohttp / OS exception into an agentkit error.

    ``what`` names the operation for the message (e.g. ``"inspect claude-agent-..."``).
    Exceptions that are already agentkit errors are returned unchanged.
    """
    if isinstance(exc, AgentkitError):
        return exc
    if isinstance(exc, DockerStreamError):
        return ImageBuildError(f"{what} failed: {exc.message}", log=exc.message)
    if isinstance(exc, DockerContextError):
        return ConfigError(f"{what}: invalid Docker context configuration: {exc.message}")
    if isinstance(exc, DockerError):
        status, message = exc.status, str(exc.message).strip()
        if status == 900:
            return RuntimeUnavailable(f"{what} failed: {unavailable_advice(socket)} ({message})")
        if status == 404:
            return NotFoundError(f"{what}: not found ({message})")
        if status in (409, 304):
            return ConflictError(f"{what}: conflicts with the current state ({message})")
        if status in (401, 403):
            return PermissionDeniedError(f"{what}: refused by the Docker Engine ({message})")
        if status == 400:
            return ConfigError(
                f"{what}: the Docker Engine rejected the request ({message}); "
                "check the container settings (AGENTKIT_CONTAINER_*, AGENTKIT_IMAGE)"
            )
        return ToolError(f"{what}: the Docker Engine failed with HTTP {status}: {message}")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return RuntimeUnavailable(
            f"{what} failed: the connection to the Docker Engine was lost mid-response "
            f"({exc!r}); it is reopened on the next call"
        )
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return RuntimeUnavailable(f"{what} failed: {unavailable_advice(socket)} ({exc!r})")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ToolError(f"{what}: unexpected HTTP {exc.status} from the Docker Engine")
    if isinstance(exc, aiohttp.ClientError):
        return RuntimeUnavailable(f"{what} failed: {unavailable_advice(socket)} ({exc!r})")
    raise TypeError(f"not a Docker backend exception: {exc!r}")


#: the backend exception types :func:`docker_errors` translates (everything else propagates).
BACKEND_ERRORS: tuple[type[BaseException], ...] = (DockerError, aiohttp.ClientError, OSError)


@contextlib.contextmanager
def docker_errors(
    what: str = "Docker request", socket: str = "the Docker socket"
) -> Iterator[None]:
    """``with docker_errors("inspect x"): ...`` re-raises backend exceptions as agentkit errors.

    ``TimeoutError`` (an ``OSError`` subclass) and cancellation propagate untouched: a caller's
    ``asyncio.timeout`` must keep working.
    """
    try:
        yield
    except TimeoutError:
        raise
    except BACKEND_ERRORS as exc:
        if isinstance(exc, AgentkitError):
            raise
        raise map_docker_error(exc, what=what, socket=socket) from exc


async def open_docker(executor: Executor, settings: Settings) -> aiodocker.Docker:
    """An Engine API client for the executor's host, checked with one ``/_ping``.

    The client owns its connector; close it with ``await docker.close()``. The executor must
    stay open as long as the client is used (over SSH the forward lives in its connection).

    Raises:
        RuntimeUnavailable: the socket is missing or dockerd does not answer, with how to fix.
    """
    socket = settings.docker_socket
    where = executor.description
    try:
        local_path = await executor.forward_unix_socket(socket)
    except (OSError, aiohttp.ClientError) as exc:
        raise RuntimeUnavailable(f"{unavailable_advice(socket, where)} ({exc})") from exc
    except AgentkitError as exc:
        if isinstance(exc, RuntimeUnavailable):
            raise
        raise RuntimeUnavailable(f"{unavailable_advice(socket, where)} ({exc})") from exc
    docker = aiodocker.Docker(url=f"unix://{local_path}")
    try:
        with docker_errors(f"ping the Docker Engine on {where}", socket):
            resp = await docker._do_query("_ping", "GET", versioned_api=False)
            try:
                await resp.read()
            finally:
                resp.release()
            await docker._check_version()
    except BaseException as exc:
        await docker.close()
        if isinstance(exc, AgentkitError) and not isinstance(exc, RuntimeUnavailable):
            raise RuntimeUnavailable(f"{unavailable_advice(socket, where)} ({exc})") from exc
        raise
    return docker
