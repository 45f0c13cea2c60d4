"""The executor contract, run against LocalExecutor and SSHExecutor (a real sshd on loopback).

Both executors reach this same machine, so the test can look at files and /proc directly.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentkit.errors import CommandFailed, CommandTimeout
from agentkit.executors import (
    CommandResult,
    Executor,
    LocalExecutor,
    SSHExecutor,
    StreamExit,
    StreamLine,
)
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def local_executor() -> AsyncIterator[LocalExecutor]:
    async with LocalExecutor() as executor:
        yield executor


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest, local_executor: LocalExecutor) -> Executor:
    if request.param == "local":
        return local_executor
    ssh: SSHExecutor = request.getfixturevalue("ssh_executor")
    return ssh


def hostile_corpus(marker: Path) -> list[str]:
    """Strings that break naive quoting; any of them running ``touch`` creates ``marker``."""
    m = str(marker)
    return [
        "'",
        '"',
        "'\"'\"'",
        "\\",
        "\\'",
        f"$(touch {m})",
        f"`touch {m}`",
        f"; touch {m}",
        f"&& touch {m}",
        f"|| touch {m}",
        f"| touch {m}",
        f"\ntouch {m}\n",
        f"'; touch {m}; '",
        f'"; touch {m}; "',
        f"$'\\n'touch {m}",
        "a\nb\r\nc",
        "*",
        "?",
        "[a-z]*",
        "/*",
        "~",
        "~root",
        "{a,b}",
        "$HOME",
        "${HOME}",
        "$((1+1))",
        "!!",
        "#not a comment",
        ">out.txt",
        "<in.txt",
        "2>&1",
        "-n",
        "-e",
        "--help",
        "--",
        "-",
        "",
        " ",
        "\t",
        "  leading and trailing  ",
        "%s%n%%",
        "ünïcødé ☃ 日本語 🙂",
        "\x01\x02\x1b[31m\x7f",
        os.fsdecode(bytes(range(1, 256))),  # every byte but NUL, non-UTF-8 included
        "x" * 100_000,  # 100 KB argument
    ]


async def test_run_basic(executor: Executor) -> None:
    result = await executor.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(result, CommandResult)
    assert result.exit_status == 3
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"
    assert result.argv == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert result.duration > 0
    assert not result.ok


async def test_check_raises_with_result(executor: Executor) -> None:
    with pytest.raises(CommandFailed) as info:
        await executor.run(["sh", "-c", "echo boom >&2; exit 4"], check=True)
    assert info.value.result.exit_status == 4
    assert "boom" in str(info.value)
    ok = await executor.run(["true"], check=True)
    assert ok.ok


async def test_missing_program_and_cwd(executor: Executor, tmp_path: Path) -> None:
    missing = await executor.run(["agentkit-no-such-program-xyz"])
    assert missing.exit_status == 127
    bad_cwd = await executor.run(["true"], cwd=str(tmp_path / "nope"))
    assert bad_cwd.exit_status != 0


async def test_argv_rejects_shell_strings(executor: Executor) -> None:
    with pytest.raises(TypeError):
        await executor.run("echo hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await executor.run([])


async def test_oversized_argument_is_e2big(executor: Executor) -> None:
    # one argument over Linux's MAX_ARG_STRLEN (128 KiB) fails the same way on both executors
    with pytest.raises(OSError) as info:
        await executor.run(["printf", "%s", "z" * 200_000])
    assert info.value.errno == errno.E2BIG


async def test_no_stdin_means_closed_stdin(executor: Executor) -> None:
    result = await executor.run(["cat"], timeout=10)
    assert result.stdout == b""
    assert result.exit_status == 0


async def test_hostile_args_arrive_byte_exact(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    corpus = hostile_corpus(marker)
    result = await executor.run(["printf", "%s\\0", *corpus], cwd=None, timeout=30)
    assert result.exit_status == 0, result.stderr
    expected = b"".join(os.fsencode(arg) + b"\0" for arg in corpus)
    assert result.stdout == expected
    assert not marker.exists()
    # the same through the env/cwd prologue path
    result = await executor.run(
        ["printf", "%s\\0", *corpus], cwd=str(tmp_path), env={"X": "1"}, timeout=30
    )
    assert result.stdout == expected
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ">out.txt" redirection either


async def test_hostile_stdin_arrives_byte_exact(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = bytes(range(256)) * 64 + "\n".join(hostile_corpus(marker)).encode(
        "utf-8", "surrogateescape"
    )
    plain = await executor.run(["cat"], stdin=blob, timeout=30)
    assert plain.stdout == blob
    # with env the header shares the channel's stdin; the program must see only its own bytes
    with_env = await executor.run(
        ["cat"], stdin=blob, env={"A": "x\ny\n", "B": ""}, cwd=str(tmp_path), timeout=30
    )
    assert with_env.stdout == blob
    text = await executor.run(["cat"], stdin="ünï\n", timeout=10)
    assert text.stdout == "ünï\n".encode()
    assert not marker.exists()


async def test_large_stdin_and_output(executor: Executor) -> None:
    blob = os.urandom(4 << 20)
    result = await executor.run(["cat"], stdin=blob, timeout=60)
    assert result.stdout == blob
    ignored = await executor.run(["true"], stdin=blob, timeout=60)  # nobody reads it
    assert ignored.exit_status == 0


async def test_output_beyond_the_capture_bound_is_dropped_in_the_middle(
    executor: Executor,
) -> None:
    """A command printing 100 MB (as a hostile remote or workspace can make git do) leaves the
    controller with the bounded head and tail only, and still finishes with its status."""
    from agentkit.executors._util import MAX_CAPTURE

    script = (
        "import sys; w = sys.stdout.buffer.write; w(b'HEAD'); "
        "[w(b'x' * 1048576) for _ in range(100)]; w(b'TAIL'); "
        "sys.stderr.write('e' * 30000000 + 'END'); sys.exit(3)"
    )
    result = await executor.run([sys.executable, "-c", script], timeout=60)
    assert result.exit_status == 3
    assert result.stdout.startswith(b"HEAD")
    assert result.stdout.endswith(b"TAIL")
    assert len(result.stdout) <= MAX_CAPTURE + 100
    assert b"bytes of output dropped" in result.stdout
    assert len(result.stderr) <= MAX_CAPTURE + 100
    assert result.stderr.endswith(b"END")


async def test_hostile_env_values_arrive_exact(executor: Executor, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    values = [v for v in hostile_corpus(marker) if len(v) < 5000]
    env = {f"AK_V{i}": v for i, v in enumerate(values)}
    env["AK_TRAILING_NL"] = "line1\nline2\n\n"
    env["AK_EMPTY"] = ""
    result = await executor.run(["env", "-0"], env=env, timeout=30)
    assert result.exit_status == 0, result.stderr
    seen: dict[str, bytes] = {}
    for item in result.stdout.split(b"\0"):
        name, _, value = item.partition(b"=")
        seen[name.decode("utf-8", "surrogateescape")] = value
    for name, value in env.items():
        assert seen.get(name) == os.fsencode(value), name
    assert not any(name.startswith("__agentkit") for name in seen)
    assert not marker.exists()


async def test_env_names_are_validated(executor: Executor) -> None:
    with pytest.raises(ValueError):
        await executor.run(["true"], env={"BAD NAME": "x"})
    with pytest.raises(ValueError):
        await executor.run(["true"], env={"A": "nul\0byte"})


async def test_cwd_with_hostile_name(executor: Executor, tmp_path: Path) -> None:
    weird = tmp_path / "-dir 'with' \"quotes\" $(x) ünï\nline"
    weird.mkdir()
    result = await executor.run(["pwd", "-P"], cwd=str(weird), timeout=10)
    assert result.stdout == os.fsencode(str(weird.resolve())) + b"\n"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


async def _wait_gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        await asyncio.sleep(0.05)
    return _gone(pid)


async def test_timeout_kills_process_group(executor: Executor, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    marker = tmp_path / "survived"
    script = f"sleep 600 & echo $$ $! > {pids}; wait; touch {marker}"
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        await executor.run(["sh", "-c", script], timeout=1.0)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 120  # at the timeout, not when the 600 s sleep ends
    shell_pid, sleep_pid = (int(p) for p in pids.read_text().split())
    assert await _wait_gone(shell_pid), "the command survived its timeout"
    assert await _wait_gone(sleep_pid), "the command's child survived the timeout"
    assert not marker.exists()


async def test_timeout_kills_children_that_left_the_group(
    executor: Executor, tmp_path: Path
) -> None:
    """A child that started its own session (setsid) still carries the call id and dies."""
    pidfile = tmp_path / "pid"
    script = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & wait"
    with pytest.raises(CommandTimeout):
        await executor.run(["sh", "-c", script], timeout=1.0)
    pid = int(pidfile.read_text())
    assert await _wait_gone(pid), "the setsid child survived the timeout"


async def test_stream_early_close_kills_setsid_children(executor: Executor, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & sleep 0.2; echo go; wait"
    stream = executor.stream(["sh", "-c", script])
    first = await anext(stream)
    assert isinstance(first, StreamLine)
    pid = int(pidfile.read_text())
    await stream.aclose()  # type: ignore[attr-defined]
    assert await _wait_gone(pid), "the setsid child survived closing the stream"


async def test_cancel_kills(executor: Executor, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(
        executor.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], env={"AK": "1"})
    )
    await wait_until(
        lambda: pidfile.exists() and pidfile.read_text().strip(), "the command's pid file"
    )
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_gone(pid), "cancelling the call did not kill the process"


async def test_stream_lines_then_exit(executor: Executor) -> None:
    items = [
        item
        async for item in executor.stream(
            ["sh", "-c", "echo one; echo two >&2; printf 'no-newline'; exit 5"]
        )
    ]
    assert isinstance(items[-1], StreamExit)
    assert items[-1].exit_status == 5
    lines = [i for i in items[:-1] if isinstance(i, StreamLine)]
    assert len(lines) == len(items) - 1
    assert [(i.stream, i.data) for i in lines if i.stream == "stdout"] == [
        ("stdout", b"one\n"),
        ("stdout", b"no-newline"),
    ]
    assert [i.text() for i in lines if i.stream == "stderr"] == ["two"]


async def test_stream_many_lines_in_order(executor: Executor) -> None:
    count = 0
    async for item in executor.stream(["seq", "1", "50000"], timeout=60):
        if isinstance(item, StreamLine):
            count += 1
            assert item.data == f"{count}\n".encode()
            if count % 10000 == 0:
                await asyncio.sleep(0.05)  # a slow consumer: the producer must wait, not drop
        else:
            assert item.exit_status == 0
    assert count == 50000


async def test_stream_yields_as_it_goes(executor: Executor) -> None:
    stream = executor.stream(["sh", "-c", "echo first; sleep 600; echo never"], timeout=900)
    start = time.monotonic()
    first = await anext(stream)
    assert isinstance(first, StreamLine)
    assert first.data == b"first\n"
    assert time.monotonic() - start < 120  # before the command ends (600 s), not after
    await stream.aclose()  # type: ignore[attr-defined]


async def test_stream_early_close_kills(executor: Executor) -> None:
    stream = executor.stream(["sh", "-c", "echo $$; exec sleep 30"], env={"AK": "1"})
    first = await anext(stream)
    assert isinstance(first, StreamLine)
    pid = int(first.data)
    assert not _gone(pid)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await _wait_gone(pid), "closing the stream did not kill the process"


async def test_stream_timeout(executor: Executor) -> None:
    with pytest.raises(CommandTimeout):
        async for _item in executor.stream(["sleep", "30"], timeout=0.5):
            pass


async def test_write_file_atomic_and_mode(executor: Executor, tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    data = bytes(range(256)) * 1000
    await executor.write_file(str(target), data, mode=0o600)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # atomic replace: a reader holding the old file keeps the old content (a new inode)
    with open(target, "rb") as old:
        old_inode = os.fstat(old.fileno()).st_ino
        await executor.write_file(str(target), b"new", mode=0o777)  # umask must not apply
        assert old.read() == data
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != old_inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temp left behind
    assert await executor.read_file(str(target)) == b"new"


async def test_append_file_appends_in_place_and_creates_private(
    executor: Executor, tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    await executor.append_file(str(target), b"one\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    inode = target.stat().st_ino
    await executor.append_file(str(target), b"")  # nothing to add: untouched
    big = b"x" * 200_000 + b"\n"
    await executor.append_file(str(target), b"two\n")
    await executor.append_file(str(target), big)
    assert target.read_bytes() == b"one\ntwo\n" + big
    assert target.stat().st_ino == inode  # appended, never rewritten
    # appends from several writers at once: every line arrives whole
    lines = [f"writer {i} line {j}\n".encode() for i in range(8) for j in range(20)]
    await asyncio.gather(*(executor.append_file(str(target), line) for line in lines))
    tail = target.read_bytes()[len(b"one\ntwo\n" + big) :]
    assert sorted(tail.splitlines(keepends=True)) == sorted(lines)
    with pytest.raises(FileNotFoundError):
        await executor.append_file(str(tmp_path / "no-dir" / "f"), b"x")


async def test_file_errors(executor: Executor, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await executor.read_file(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        await executor.write_file(str(tmp_path / "no-dir" / "f"), b"x")
    assert not await executor.exists(str(tmp_path / "missing"))
    await executor.makedirs(str(tmp_path / "a" / "b"))
    assert await executor.exists(str(tmp_path / "a" / "b"))


async def _echo_server(path: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(b"echo:" + line)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path, limit=1 << 20)


async def test_open_unix_connection(executor: Executor, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    server = await _echo_server(path)
    try:
        conn = await executor.open_unix_connection(path)
        assert isinstance(conn.reader, asyncio.StreamReader)
        assert isinstance(conn.writer, asyncio.StreamWriter)
        for i in range(3):
            conn.writer.write(f"ping {i}\n".encode())
            await conn.writer.drain()
            assert await conn.reader.readline() == f"echo:ping {i}\n".encode()
        big = b"y" * 300_000 + b"\n"
        conn.writer.write(big)
        await conn.writer.drain()
        assert await conn.reader.readexactly(len(big) + 5) == b"echo:" + big
        conn.writer.write_eof()
        assert await conn.reader.read() == b""
        await conn.aclose()
    finally:
        server.close()
    with pytest.raises(OSError):
        await executor.open_unix_connection(str(tmp_path / "nobody.sock"))


async def test_forward_unix_socket(executor: Executor, tmp_path: Path) -> None:
    path = str(tmp_path / "fwd.sock")
    server = await _echo_server(path)
    try:
        local = await executor.forward_unix_socket(path)
        assert await executor.forward_unix_socket(path) == local  # one forward per path
        if executor.kind == "local":
            assert local == path
        clients = [await asyncio.open_unix_connection(local) for _ in range(3)]
        for i, (_reader, writer) in enumerate(clients):
            writer.write(f"hello {i}\n".encode())
            await writer.drain()
        for i, (reader, writer) in enumerate(clients):
            assert await reader.readline() == f"echo:hello {i}\n".encode()
            writer.close()
    finally:
        server.close()


async def test_concurrent_calls(executor: Executor) -> None:
    results = await asyncio.gather(
        *(executor.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(30))
    )
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(30)]


def _proc_cmdlines() -> list[bytes]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return out


def _procs_with_env(needle: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def test_secret_env_never_in_any_cmdline(executor: Executor) -> None:
    secret = f"sk-ant-test-{os.getpid()}-{time.time_ns()}-SECRET"
    stream = executor.stream(
        ["sh", "-c", "echo ready; exec sleep 20"], env={"AGENTKIT_TEST_SECRET": secret}
    )
    first = await anext(stream)
    assert isinstance(first, StreamLine)
    assert first.data == b"ready\n"
    try:
        # the command really holds the secret in its environment (the test can fail)...
        assert _procs_with_env(f"AGENTKIT_TEST_SECRET={secret}".encode())
        # ...and no process on this host shows it in its argv
        assert not [c for c in _proc_cmdlines() if secret.encode() in c]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def test_python_runs_here() -> None:
    # the corpus uses os.fsdecode round trips that assume a UTF-8 filesystem encoding
    assert sys.getfilesystemencoding() == "utf-8"
