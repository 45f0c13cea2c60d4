"""How SSHExecutor turns argv/env/cwd into a remote command line and a stdin header.

The command line is built with ``shlex.join`` only; ``env`` values go in the stdin header and
never into the command line (see :data:`PROLOGUE`).
"""

from __future__ import annotations

import errno
import shlex

import asyncssh

#: The constant ``sh -c`` script used when a call has ``env`` or ``cwd``. Its arguments are the
#: working directory ("" for none) and then argv. stdin starts with a header: a line with the
#: number of variables, then per variable its name, the number of lines of its value, and those
#: lines. ``read`` reads a pipe byte by byte, so the program gets exactly the rest of stdin.
PROLOGUE = r"""if [ -n "$1" ]; then cd -- "$1" || exit 1; fi; shift
__agentkit_nl='
'
IFS= read -r __agentkit_n || exit 125
while [ "$__agentkit_n" -gt 0 ]; do
  IFS= read -r __agentkit_name || exit 125
  IFS= read -r __agentkit_k || exit 125
  IFS= read -r __agentkit_v || exit 125
  while [ "$__agentkit_k" -gt 1 ]; do
    IFS= read -r __agentkit_l || exit 125
    __agentkit_v="$__agentkit_v$__agentkit_nl$__agentkit_l"
    __agentkit_k=$((__agentkit_k - 1))
  done
  export "$__agentkit_name=$__agentkit_v"
  __agentkit_n=$((__agentkit_n - 1))
done
unset __agentkit_nl __agentkit_n __agentkit_name __agentkit_k __agentkit_v __agentkit_l
exec "$@"
"""


#: Printed on stderr by the login shell before it ``exec``\ s: the remote pid, which is also the
#: process group sshd created for the session (killed on timeout). Stripped from the output.
PID_MARKER = b"\x1eagentkit-pid="
_PID_PREFIX = 'printf "\\036agentkit-pid=%s\\n" "$$" >&2; exec '


def build_command(argv: list[str], env: dict[str, str], cwd: str | None) -> tuple[bytes, bytes]:
    """The remote command line and the stdin header carrying ``env``.

    Exposed for tests: the command line never contains an ``env`` value.
    """
    if not env and cwd is None:
        return check_length(_encode(_PID_PREFIX + shlex.join(argv))), b""
    command = _PID_PREFIX + shlex.join(["sh", "-c", PROLOGUE, "sh", cwd or "", *argv])
    header = [str(len(env))]
    for name, value in env.items():
        if name.startswith("__agentkit_"):
            raise ValueError(f"environment variable name {name!r} is reserved")
        lines = value.split("\n")
        header += [name, str(len(lines)), *lines]
    return check_length(_encode(command)), _encode("\n".join(header) + "\n")


#: sshd hands the command line to the login shell as ONE argument (``-c``): Linux caps a single
#: argument at MAX_ARG_STRLEN (32 pages)
MAX_COMMAND_BYTES = 131072 - 1


def check_length(command: bytes) -> bytes:
    if len(command) > MAX_COMMAND_BYTES:
        raise OSError(
            errno.E2BIG,
            f"Argument list too long: the quoted SSH command line is {len(command)} bytes, over"
            f" the {MAX_COMMAND_BYTES} a single argument may have; pass large data on stdin or"
            " in a file (write_file)",
        )
    return command


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def exit_status(proc: asyncssh.SSHClientProcess[bytes]) -> int | None:
    code = proc.returncode
    if code is None:
        return None
    return code if code >= 0 else 128 - code


async def read_pid(proc: asyncssh.SSHClientProcess[bytes]) -> tuple[int | None, bytes]:
    """Read stderr up to the pid marker; return the pid and whatever stderr came before it."""
    early = b""
    while True:
        line = await proc.stderr.readline()
        if not line:
            return None, early
        if line.startswith(PID_MARKER):
            try:
                return int(line[len(PID_MARKER) :].strip()), early
            except ValueError:
                return None, early
        early += line
