"""SSHExecutor specifics against a real sshd: reconnects, host key policy, auth, wiring."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.errors import ExecutorConnectionError
from agentkit.executors import LocalExecutor, SSHExecutor, StreamLine, make_executor
from agentkit.executors.ssh import CALL_ID_VAR, PROLOGUE, build_command
from tests.sshd import SSHServer

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture(loop_scope="session")
async def own_executor(ssh_settings: Settings) -> AsyncIterator[SSHExecutor]:
    """An executor of this test's own (the drop tests must not disturb the shared one)."""
    executor = SSHExecutor(ssh_settings)
    await executor.connect()
    try:
        yield executor
    finally:
        await executor.aclose()


def test_command_line_never_holds_env_values() -> None:
    secret = "s3cr3t value; $(touch /tmp/x)\nline2"
    command, header = build_command(["printenv", "TOKEN"], {"TOKEN": secret}, "/tmp", "abc123")
    assert secret.encode() not in command
    assert b"s3cr3t" not in command
    assert b"s3cr3t" in header
    # the prologue is a constant; argv travels quoted after it
    assert shlex.quote(PROLOGUE).encode() in command
    assert command.startswith(f"{CALL_ID_VAR}=abc123 exec sh -c ".encode())
    assert command.endswith(b" sh /tmp printenv TOKEN")
    plain, no_header = build_command(["echo", "a b"], {}, None, "abc123")
    assert plain == f"{CALL_ID_VAR}=abc123 exec echo 'a b'".encode()
    assert no_header == b""
    devnull, _ = build_command(["cat"], {}, None, "abc123", devnull_stdin=True)
    assert devnull.endswith(b"exec cat </dev/null")
    for reserved in ("__agentkit_n", CALL_ID_VAR):
        with pytest.raises(ValueError):
            build_command(["true"], {reserved: "1"}, None, "abc123")
    with pytest.raises(ValueError):
        build_command(["true"], {}, None, "x; rm -rf /")


async def test_one_connection_for_many_calls(own_executor: SSHExecutor) -> None:
    before = own_executor.connections_made
    await asyncio.gather(*(own_executor.run(["true"]) for _ in range(40)))
    assert own_executor.connections_made == before == 1


async def test_drop_then_reconnect_on_next_call(own_executor: SSHExecutor, sshd: SSHServer) -> None:
    assert (await own_executor.run(["echo", "before"])).stdout == b"before\n"
    await asyncio.to_thread(sshd.restart)
    result = await own_executor.run(["echo", "after"])
    assert result.stdout == b"after\n"
    assert own_executor.connections_made == 2


async def _wait_for_file(path: Path, within: float = 60.0) -> None:
    for _ in range(int(within / 0.02)):
        if path.exists():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_in_flight_non_idempotent_call_reports(
    own_executor: SSHExecutor, sshd: SSHServer, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    script = f"touch {shlex.quote(str(started))}; sleep 3"
    task = asyncio.create_task(own_executor.run(["sh", "-c", script]))
    await _wait_for_file(started)
    await asyncio.to_thread(sshd.restart)
    with pytest.raises(ExecutorConnectionError) as info:
        await asyncio.wait_for(task, 10)
    assert "not marked idempotent" in str(info.value)
    assert (await own_executor.run(["echo", "next"])).stdout == b"next\n"


async def test_in_flight_idempotent_call_is_retried(
    own_executor: SSHExecutor, sshd: SSHServer, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    script = f"echo run >> {shlex.quote(str(runs))}; sleep 1; echo done"
    task = asyncio.create_task(own_executor.run(["sh", "-c", script], idempotent=True))
    await _wait_for_file(runs)
    await asyncio.to_thread(sshd.restart)
    result = await asyncio.wait_for(task, 15)
    assert result.stdout == b"done\n"
    assert runs.read_text() == "run\nrun\n"  # ran twice: once per connection
    assert own_executor.connections_made == 2


async def test_stream_reports_a_drop(own_executor: SSHExecutor, sshd: SSHServer) -> None:
    stream = own_executor.stream(["sh", "-c", "echo started; sleep 5"])
    first = await anext(stream)
    assert isinstance(first, StreamLine)
    await asyncio.to_thread(sshd.restart)
    with pytest.raises(ExecutorConnectionError):
        async for _item in stream:
            pass
    assert (await own_executor.run(["echo", "again"])).stdout == b"again\n"


async def test_file_io_survives_a_drop(
    own_executor: SSHExecutor, sshd: SSHServer, tmp_path: Path
) -> None:
    path = str(tmp_path / "f")
    await own_executor.write_file(path, b"one")
    await asyncio.to_thread(sshd.restart)
    assert await own_executor.read_file(path) == b"one"


async def test_forward_survives_a_drop(
    own_executor: SSHExecutor, sshd: SSHServer, tmp_path: Path
) -> None:
    sock = str(tmp_path / "s.sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, sock)
    try:
        local = await own_executor.forward_unix_socket(sock)
        for word in (b"a\n", None, b"b\n"):
            if word is None:
                await asyncio.to_thread(sshd.restart)
                continue
            reader, writer = await asyncio.open_unix_connection(local)
            writer.write(word)
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 10) == word
            writer.close()
    finally:
        server.close()


async def test_unknown_host_key_is_refused(sshd: SSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    executor = SSHExecutor(sshd.settings(known_hosts=empty))
    with pytest.raises(ExecutorConnectionError) as info:
        await executor.connect()
    message = str(info.value)
    assert "unknown" in message
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> {empty}" in message
    assert empty.read_text() == ""  # nothing recorded without TOFU
    await executor.aclose()


async def test_changed_host_key_is_refused_even_with_tofu(sshd: SSHServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    proc = await asyncio.create_subprocess_exec(
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)
    )
    assert await proc.wait() == 0
    keytype, blob = (tmp_path / "other_key.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {keytype} {blob}\n")
    for tofu in (False, True):
        executor = SSHExecutor(sshd.settings(known_hosts=wrong, ssh_trust_on_first_use=tofu))
        with pytest.raises(ExecutorConnectionError) as info:
            await executor.run(["true"])
        assert "CHANGED" in str(info.value)
        assert "ssh-keygen -R" in str(info.value)
        await executor.aclose()
    assert wrong.read_text() == f"[{sshd.host}]:{sshd.port} {keytype} {blob}\n"


async def test_trust_on_first_use_records_the_key(sshd: SSHServer, tmp_path: Path) -> None:
    path = tmp_path / "dir" / "known_hosts"  # neither the file nor its directory exists
    async with SSHExecutor(sshd.settings(known_hosts=path, ssh_trust_on_first_use=True)) as ex:
        assert (await ex.run(["echo", "hi"])).stdout == b"hi\n"
    assert path.read_text() == sshd.host_key_line + "\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    # the recorded key is now trusted without TOFU
    async with SSHExecutor(sshd.settings(known_hosts=path)) as ex:
        assert (await ex.run(["true"])).ok


async def test_wrong_client_key_fails_with_advice(sshd: SSHServer, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    proc = await asyncio.create_subprocess_exec(
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)
    )
    assert await proc.wait() == 0
    executor = SSHExecutor(sshd.settings(ssh_key=key))
    with pytest.raises(ExecutorConnectionError) as info:
        await executor.connect()
    assert "AGENTKIT_SSH_KEY" in str(info.value)
    await executor.aclose()


async def test_unreachable_port_fails_after_bounded_retries(sshd: SSHServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    executor = SSHExecutor(sshd.settings(ssh_port=port), reconnect_attempts=2)
    with pytest.raises(ExecutorConnectionError) as info:
        await executor.run(["true"])
    assert str(port) in str(info.value)
    await executor.aclose()


async def test_closed_executor_refuses(ssh_settings: Settings) -> None:
    executor = SSHExecutor(ssh_settings)
    await executor.aclose()
    with pytest.raises(ExecutorConnectionError):
        await executor.run(["true"])


def test_make_executor_picks_by_host(ssh_settings: Settings) -> None:
    assert isinstance(make_executor(Settings(host=None)), LocalExecutor)
    remote = make_executor(ssh_settings)
    assert isinstance(remote, SSHExecutor)
    assert (
        remote.description
        == f"ssh {ssh_settings.ssh_user}@{ssh_settings.host}:{ssh_settings.ssh_port}"
    )
    with pytest.raises(ValueError):
        SSHExecutor(Settings(host=None))


def test_default_known_hosts_is_the_users(ssh_settings: Settings) -> None:
    executor = SSHExecutor(ssh_settings.model_copy(update={"known_hosts": None}))
    assert executor.known_hosts == Path(os.path.expanduser("~/.ssh/known_hosts"))


async def test_agent_auth_without_key_file(
    sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.support import require, wait_until

    require(shutil.which("ssh-agent") is not None, "ssh-agent (apt install openssh-client)")
    sock = tmp_path / "agent.sock"
    agent = await asyncio.create_subprocess_exec(
        "ssh-agent", "-D", "-a", str(sock), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_until(sock.exists, "the ssh-agent socket")
        add = await asyncio.create_subprocess_exec(
            "ssh-add", "-q", str(sshd.client_key), env={**os.environ, "SSH_AUTH_SOCK": str(sock)}
        )
        assert await add.wait() == 0
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        without = SSHExecutor(sshd.settings(ssh_key=None), reconnect_attempts=1)
        with pytest.raises(ExecutorConnectionError):
            await without.connect()
        await without.aclose()
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        async with SSHExecutor(sshd.settings(ssh_key=None)) as executor:
            assert (await executor.run(["echo", "via agent"])).stdout == b"via agent\n"
    finally:
        agent.kill()
        await agent.wait()


def _max_concurrency(log: str) -> int:
    running = peak = 0
    for line in log.split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    return peak


async def test_sessions_are_capped_not_refused(ssh_settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
    async with SSHExecutor(ssh_settings, max_sessions=2) as executor:
        results = await asyncio.gather(*(executor.run(["sh", "-c", script]) for _ in range(6)))
    assert all(r.ok for r in results)
    assert _max_concurrency(log.read_text()) == 2


async def test_server_session_limit_is_waited_out(tmp_path: Path) -> None:
    """A server with a lower MaxSessions than max_sessions: refused opens are retried."""
    from tests.sshd import start_sshd

    server = await asyncio.to_thread(start_sshd, tmp_path / "sshd")
    try:
        server.config.write_text(
            server.config.read_text().replace("MaxSessions 64", "MaxSessions 3")
        )
        await asyncio.to_thread(server.restart)
        log = tmp_path / "log"
        script = f"echo start >> {log}; sleep 0.2; echo end >> {log}"
        async with SSHExecutor(server.settings(), max_sessions=8) as executor:
            results = await asyncio.gather(*(executor.run(["sh", "-c", script]) for _ in range(8)))
        assert all(r.ok for r in results)
        assert _max_concurrency(log.read_text()) <= 3
    finally:
        await asyncio.to_thread(server.stop)
