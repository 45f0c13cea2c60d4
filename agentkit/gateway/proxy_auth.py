"""squid's proxy logins, checked against the gateway's live run tokens.

Agents reach squid with ``http://<run id>:<token>@<gateway>:3128``; squid hands each login to
its Basic auth helper (``auth_param basic program``), which is this file run as a script by
squid, as squid's own user:

    python3 -I -S proxy_auth.py /run/agentkit-squid/auth.sock

The helper relays squid's lines (``<user> <password>``, URL-escaped) unchanged over the unix
socket to :class:`LoginServer` in the gateway process, and its answer (``OK`` / ``ERR``) back.
When the gateway does not answer the helper says ``BH`` (squid refuses the request): logins fail
closed. The gateway answers from memory (the same :class:`~.budgets.Runs` that checks model
requests): the token's run must be the user named, not ended and not expired. Neither side ever
logs or echoes the password.

Standard library only; the helper part must stay importable without the package (squid runs the
file by its path).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import socket
import sys
from collections.abc import Callable
from urllib.parse import unquote

__all__ = ["LoginServer", "helper_argv", "parse_login"]

logger = logging.getLogger("agentkit.gateway.proxy_auth")

#: longest line squid sends (user + password + separators), longer ones are refused
MAX_LINE = 1024

LoginCheck = Callable[[str, str], bool]


def parse_login(line: bytes) -> tuple[str, str] | None:
    """``b"user password"`` (each URL-escaped, as squid sends them) -> (user, password)."""
    if len(line) > MAX_LINE:
        return None
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    user, sep, password = text.partition(" ")
    if not sep or not user or not password or " " in password:
        return None
    return unquote(user), unquote(password)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


class LoginServer:
    """Answers the helpers' login checks on a unix socket (one line in, one line out)."""

    def __init__(self, path: str, check: LoginCheck, *, mode: int = 0o600) -> None:
        """``mode``: the socket's; with bits for others its folder must keep them out (the
        gateway image's ``/run/agentkit-auth`` is ``root:proxy 0750``: the gateway cannot
        chown, it has no CAP_CHOWN)."""
        self.path = path
        self.check = check
        self.mode = mode
        self.checked = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        if self._server is not None:
            return
        folder = os.path.dirname(self.path)
        if self.mode & 0o007:
            if os.stat(folder).st_mode & 0o001:
                raise RuntimeError(f"{folder} lets anyone reach the login socket")
        else:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE * 2)
        os.chmod(self.path, self.mode)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):
                    return
                if not line:
                    return
                login = parse_login(line)
                ok = False
                if login is not None:
                    try:
                        ok = self.check(*login)
                    except Exception:
                        logger.exception("proxy login check failed")
                self.checked += 1
                if not ok:
                    self.refused += 1
                writer.write(b"OK\n" if ok else b'ERR message="not a live agentkit run login"\n')
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._clients.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):  # the helpers' connections end with it
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def helper_argv(socket_path: str) -> list[str]:
    """How squid runs the helper (this file, by the interpreter running the gateway)."""
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), socket_path]


# --- the helper (squid runs this file) ------------------------------------------------------


def _relay(socket_path: str) -> int:
    """squid's stdin lines -> the gateway -> squid's stdout, one at a time; ``BH`` on failure."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    conn: socket.socket | None = None
    stream = None
    while True:
        line = stdin.readline(MAX_LINE + 2)
        if not line:
            return 0
        if not line.endswith(b"\n"):  # over-long: refuse it and drop the rest of the line
            while line and not line.endswith(b"\n"):
                line = stdin.readline(MAX_LINE + 2)
            stdout.write(b'ERR message="login too long"\n')
            stdout.flush()
            continue
        answer = b""
        for _attempt in range(2):  # once more on a fresh connection (the gateway restarted)
            try:
                if conn is None:
                    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    conn.settimeout(10.0)
                    conn.connect(socket_path)
                    stream = conn.makefile("rwb")
                assert stream is not None
                stream.write(line)
                stream.flush()
                answer = stream.readline(MAX_LINE)
                if answer.endswith(b"\n"):
                    break
            except OSError:
                pass
            if conn is not None:
                conn.close()
            conn, stream, answer = None, None, b""
        if not answer.startswith((b"OK", b"ERR")):
            answer = b'BH message="the agentkit gateway does not answer"\n'
        stdout.write(answer)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(_relay(sys.argv[1]) if len(sys.argv) == 2 else 2)
