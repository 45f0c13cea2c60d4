"""Every exception type in the SSH error map is mapped, to the documented type."""

from __future__ import annotations

import asyncssh
import pytest

from agentkit.errors import ExecutorConnectionError
from agentkit.executors._errors import SSH_ERROR_MAP, SSHErrorContext, map_ssh_error

CTX = SSHErrorContext(host="h.example", port=2222, user="root", known_hosts="/k", path="/p")

EXPECTED: dict[type[BaseException], type[BaseException]] = {
    asyncssh.HostKeyNotVerifiable: ExecutorConnectionError,
    asyncssh.PermissionDenied: ExecutorConnectionError,
    asyncssh.ConnectionLost: ExecutorConnectionError,
    asyncssh.DisconnectError: ExecutorConnectionError,
    asyncssh.ChannelOpenError: ConnectionRefusedError,
    asyncssh.SFTPNoSuchFile: FileNotFoundError,
    asyncssh.SFTPNoSuchPath: FileNotFoundError,
    asyncssh.SFTPPermissionDenied: PermissionError,
    asyncssh.SFTPFileAlreadyExists: FileExistsError,
    asyncssh.SFTPFileIsADirectory: IsADirectoryError,
    asyncssh.SFTPNotADirectory: NotADirectoryError,
    asyncssh.SFTPNoSpaceOnFilesystem: OSError,
    asyncssh.SFTPConnectionLost: ExecutorConnectionError,
    asyncssh.SFTPNoConnection: ExecutorConnectionError,
    asyncssh.SFTPError: OSError,
    BrokenPipeError: ExecutorConnectionError,
    ConnectionResetError: ExecutorConnectionError,
    TimeoutError: ExecutorConnectionError,
    OSError: ExecutorConnectionError,
}


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, asyncssh.DisconnectError | asyncssh.ChannelOpenError | asyncssh.SFTPError):
        if cls in (asyncssh.DisconnectError, asyncssh.ChannelOpenError, asyncssh.SFTPError):
            return cls(1, "reason")  # type: ignore[call-arg]
        return cls("reason")  # type: ignore[call-arg]
    return cls("reason")


def test_every_mapped_type_has_an_expectation() -> None:
    assert {cls for cls, _ in SSH_ERROR_MAP} == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_type_is_mapped(cls: type[BaseException]) -> None:
    exc = _instance(cls)
    mapped = map_ssh_error(exc, CTX)
    assert type(mapped) is EXPECTED[cls]
    assert mapped is not exc
    assert mapped.__cause__ is exc


def test_messages_are_actionable() -> None:
    unknown = str(map_ssh_error(asyncssh.HostKeyNotVerifiable("x"), CTX))
    assert "ssh-keyscan -p 2222 h.example >> /k" in unknown
    assert "AGENTKIT_SSH_TRUST_ON_FIRST_USE" in unknown
    changed_ctx = SSHErrorContext("h.example", 2222, "root", "/k", key_changed=True)
    changed = str(map_ssh_error(asyncssh.HostKeyNotVerifiable("x"), changed_ctx))
    assert "CHANGED" in changed
    assert "ssh-keygen -R '[h.example]:2222' -f /k" in changed
    auth = str(map_ssh_error(asyncssh.PermissionDenied("x"), CTX))
    assert "AGENTKIT_SSH_KEY" in auth
    missing = map_ssh_error(asyncssh.SFTPNoSuchFile("no such file"), CTX)
    assert isinstance(missing, FileNotFoundError)
    assert missing.filename == "/p"


def test_unmapped_exceptions_pass_through() -> None:
    exc = ValueError("programming error")
    assert map_ssh_error(exc, CTX) is exc
