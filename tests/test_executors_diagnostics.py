"""diagnose(): which executor, latency, git/docker presence, docker socket reachability."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agentkit.config import Settings
from agentkit.executors import LocalExecutor, SSHExecutor
from agentkit.executors.diagnostics import diagnose

pytestmark = pytest.mark.timeout(60)


async def _fake_docker_socket(path: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path)


async def test_diagnose_local(tmp_path: Path) -> None:
    sock = str(tmp_path / "docker.sock")
    server = await _fake_docker_socket(sock)
    try:
        async with LocalExecutor() as executor:
            diag = await diagnose(executor, samples=3, docker_socket=sock)
    finally:
        server.close()
    assert diag.ok
    assert diag.kind == "local"
    assert diag.latency_ms_p50 is not None
    assert diag.latency_ms_p50 > 0
    assert len(diag.latency_samples_ms) == 3
    assert diag.git.found == (shutil.which("git") is not None)
    if diag.git.found:
        assert diag.git.version is not None
        assert "git version" in diag.git.version
    assert diag.docker_socket_reachable
    assert any("executor: local" in line for line in diag.lines())


async def test_diagnose_ssh_reports_missing_socket(
    ssh_executor: SSHExecutor, tmp_path: Path
) -> None:
    diag = await diagnose(ssh_executor, samples=3, docker_socket=str(tmp_path / "none.sock"))
    assert diag.ok
    assert diag.kind == "ssh"
    assert diag.executor.startswith("ssh ")
    assert not diag.docker_socket_reachable
    assert diag.docker_socket_error


async def test_diagnose_unreachable_host_does_not_raise(
    ssh_settings: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "kh"
    empty.write_text("")
    executor = SSHExecutor(ssh_settings.model_copy(update={"known_hosts": empty}))
    diag = await diagnose(executor)
    await executor.aclose()
    assert not diag.ok
    assert diag.error is not None
    assert "ssh-keyscan" in diag.error
    assert "unreachable" in diag.lines()[1]
