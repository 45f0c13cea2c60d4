"""How SSHExecutor turns argv/env/cwd into a remote command line and a stdin header.

The command line is built with ``shlex.join`` only; ``env`` values go in the stdin header and
never into the command line (see :data:`PROLOGUE`).
"""

from __future__ import annotations

import errno
import shlex

import asyncssh

from agentkit.executors._util import CALL_ID_VAR, RESERVED_ENV_PREFIXES, shell_status

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


#: Every remote command carries ``AGENTKIT_CALL_ID=<random>`` in its environment (set with a
#: ``NAME=value exec`` prefix, so it is inherited by everything the command starts). To kill a
#: call, this script (run as ``sh -c KILL_SCRIPT sh CALL_ID`` on a second channel; Linux /proc,
#: GNU grep) finds the processes whose environment holds that id and kills them and the process
#: groups they lead: the program, its children, even ones that left its group.
KILL_SCRIPT = r"""t="AGENTKIT_CALL_ID=$1"
pids=$(grep -lzxF -- "$t" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
[ -n "$pids" ] || exit 0
for p in $pids; do kill -KILL -- "-$p" 2>/dev/null; done
kill -KILL $pids 2>/dev/null
exit 0
"""


def build_command(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None,
    call_id: str,
    *,
    devnull_stdin: bool = False,
) -> tuple[bytes, bytes]:
    """The remote command line and the stdin header carrying ``env``.

    With ``devnull_stdin`` (no stdin, no env, no cwd) the program reads ``/dev/null``, as under
    LocalExecutor, and the caller need not send EOF. Exposed for tests: the command line never
    contains an ``env`` value.
    """
    if not call_id.isalnum():
        raise ValueError("call_id must be alphanumeric")
    prefix = f"{CALL_ID_VAR}={call_id} exec "
    if not env and cwd is None:
        suffix = " </dev/null" if devnull_stdin else ""
        return check_length(_encode(prefix + shlex.join(argv) + suffix)), b""
    command = prefix + shlex.join(["sh", "-c", PROLOGUE, "sh", cwd or "", *argv])
    header = [str(len(env))]
    for name, value in env.items():
        if name.startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(f"environment variable name {name!r} is reserved")
        lines = value.split("\n")
        header += [name, str(len(lines)), *lines]
    return check_length(_encode(command)), _encode("\n".join(header) + "\n")


def kill_command(call_id: str) -> str:
    """The command line that kills everything started by the call ``call_id``."""
    return shlex.join(["sh", "-c", KILL_SCRIPT, "sh", call_id])


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
    return None if code is None else shell_status(code)
