"""The one place that maps asyncssh and OS exceptions to :mod:`agentkit.errors`.

:data:`SSH_ERROR_MAP` lists every mapped type; ``tests/test_executors_errors.py`` checks each.
Order matters: the first matching entry (most specific first) wins.

* connection-level failures (refused, unreachable, disconnect, lost, auth, host key) become
  :class:`ExecutorConnectionError` with a message that says what to do;
* SFTP status errors become the matching built-in ``OSError`` subclass
  (``FileNotFoundError``, ``PermissionError``, ``FileExistsError``, ...), like local file I/O;
* a refused channel to a unix socket becomes ``ConnectionRefusedError`` (like a local
  ``connect()`` on a socket nobody listens on).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from agentkit.errors import ExecutorConnectionError


@dataclass(frozen=True, slots=True)
class SSHErrorContext:
    """What the message needs to be actionable."""

    host: str
    port: int
    user: str
    known_hosts: str
    key_changed: bool = False
    path: str | None = None


def _host_key(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    hostspec = ctx.host if ctx.port == 22 else f"[{ctx.host}]:{ctx.port}"
    if ctx.key_changed:
        return ExecutorConnectionError(
            f"the SSH host key of {hostspec} does not match the one recorded in {ctx.known_hosts}"
            " - it CHANGED (a reinstalled server, or someone in the middle). Refusing to connect."
            " If the change is expected, remove the old entry with"
            f" `ssh-keygen -R '{hostspec}' -f {ctx.known_hosts}` and add the new one"
            f" (`ssh-keyscan -p {ctx.port} {ctx.host} >> {ctx.known_hosts}`, after checking"
            " its fingerprint with the server's owner)"
        )
    return ExecutorConnectionError(
        f"the SSH host key of {hostspec} is unknown: it is not in {ctx.known_hosts}. Refusing to"
        f" connect. Add it: `ssh-keyscan -p {ctx.port} {ctx.host} >> {ctx.known_hosts}` (check"
        " the fingerprint with `ssh-keygen -lf` against the server's), or set"
        " AGENTKIT_SSH_TRUST_ON_FIRST_USE=true to record it on the first connection"
        f" ({exc})"
    )


def _auth(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    return ExecutorConnectionError(
        f"SSH authentication as {ctx.user}@{ctx.host}:{ctx.port} failed ({exc}): set"
        " AGENTKIT_SSH_KEY to a private key whose public half is in the server's"
        " authorized_keys, or load one into ssh-agent (SSH_AUTH_SOCK)"
    )


def _connection(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    reason = str(exc) or type(exc).__name__
    return ExecutorConnectionError(
        f"SSH connection to {ctx.user}@{ctx.host}:{ctx.port} failed: {reason}"
    )


def _lost(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    reason = str(exc) or type(exc).__name__
    return ExecutorConnectionError(
        f"SSH connection to {ctx.host}:{ctx.port} was lost during the call: {reason}"
    )


def _channel_open(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    target = f"unix socket {ctx.path}" if ctx.path else "a channel"
    return ConnectionRefusedError(
        errno.ECONNREFUSED, f"cannot open {target} on {ctx.host} over SSH: {exc}"
    )


def _sftp(cls: type[OSError], err: int) -> Callable[[BaseException, SSHErrorContext], OSError]:
    def make(exc: BaseException, ctx: SSHErrorContext) -> OSError:
        reason = getattr(exc, "reason", "") or str(exc)
        if ctx.path is not None:
            return cls(err, reason, ctx.path)
        return cls(err, reason)

    return make


Mapper = Callable[[BaseException, SSHErrorContext], BaseException]

#: (exception type, mapper), most specific first.
SSH_ERROR_MAP: list[tuple[type[BaseException], Mapper]] = [
    (asyncssh.HostKeyNotVerifiable, _host_key),
    (asyncssh.PermissionDenied, _auth),
    (asyncssh.ConnectionLost, _lost),
    (asyncssh.DisconnectError, _connection),
    (asyncssh.ChannelOpenError, _channel_open),
    (asyncssh.SFTPNoSuchFile, _sftp(FileNotFoundError, errno.ENOENT)),
    (asyncssh.SFTPNoSuchPath, _sftp(FileNotFoundError, errno.ENOENT)),
    (asyncssh.SFTPPermissionDenied, _sftp(PermissionError, errno.EACCES)),
    (asyncssh.SFTPFileAlreadyExists, _sftp(FileExistsError, errno.EEXIST)),
    (asyncssh.SFTPFileIsADirectory, _sftp(IsADirectoryError, errno.EISDIR)),
    (asyncssh.SFTPNotADirectory, _sftp(NotADirectoryError, errno.ENOTDIR)),
    (asyncssh.SFTPNoSpaceOnFilesystem, _sftp(OSError, errno.ENOSPC)),
    (asyncssh.SFTPConnectionLost, _lost),
    (asyncssh.SFTPNoConnection, _lost),
    (asyncssh.SFTPError, _sftp(OSError, errno.EIO)),
    (BrokenPipeError, _lost),
    (ConnectionResetError, _lost),
    (TimeoutError, _connection),
    (OSError, _connection),  # refused, unreachable, name resolution (socket.gaierror)
]


def map_ssh_error(exc: BaseException, ctx: SSHErrorContext) -> BaseException:
    """The agentkit (or built-in) exception for ``exc``; ``exc`` itself if it is not mapped."""
    for cls, mapper in SSH_ERROR_MAP:
        if isinstance(exc, cls):
            mapped = mapper(exc, ctx)
            mapped.__cause__ = exc
            return mapped
    return exc


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself is gone (so a reconnect may help)."""
    return isinstance(
        exc,
        asyncssh.ConnectionLost
        | asyncssh.DisconnectError
        | asyncssh.SFTPConnectionLost
        | asyncssh.SFTPNoConnection
        | BrokenPipeError
        | ConnectionResetError,
    ) and not isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied)
