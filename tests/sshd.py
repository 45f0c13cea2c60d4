"""A real OpenSSH server on 127.0.0.1 for tests and benchmarks.

Registered as a pytest plugin from ``tests/conftest.py`` (``pytest_plugins = ["tests.sshd"]``), so
every test module can use these **session-scoped** fixtures:

``sshd``
    an :class:`SSHServer`: ``host`` ("127.0.0.1"), ``port``, ``user`` (the current user),
    ``client_key`` (private key path), ``known_hosts`` (file pinning the server's host key),
    ``host_key_line`` (that pinned line), ``dir`` (its scratch directory) and ``restart()``
    (kills the listener *and* every established connection, then starts again on the same port
    with the same keys: for connection-drop tests). Skips locally / fails under ``CI=true``
    when ``/usr/sbin/sshd`` is missing (``apt install openssh-server``).
``ssh_settings``
    a :class:`agentkit.config.Settings` pointing at it (host, port, user, key, known_hosts).
``ssh_executor``
    a connected :class:`agentkit.executors.SSHExecutor` over that server, shared by the session.
    It reconnects by itself after a drop; do not ``aclose`` it.

Outside pytest (``bench/``), use :func:`start_sshd` / :meth:`SSHServer.stop` directly.

Server setup (facts from DESIGN.md): generated ed25519 host and client keys in a temp dir, a free
high port, ``UsePAM no``, ``StrictModes no``, ``MaxSessions 64``, ``MaxStartups 100:30:200``,
``AllowStreamLocalForwarding yes``, ``SetEnv SHLVL=1``, ``PermitRootLogin yes``, ``/run/sshd``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.support import require

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.ssh import SSHExecutor

SSHD = "/usr/sbin/sshd"
SFTP_SERVER_CANDIDATES = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")


def sshd_available() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (by walking /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass
class SSHServer:
    """A running sshd. See the module docstring."""

    dir: Path
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_line: str
    config: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.proc.returncode}: "
                    + (self.dir / "sshd.log").read_text(errors="replace")[-2000:]
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen on {self.host}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the listener and every sshd process serving a connection."""
        if self.proc is None:
            return
        for pid in _children(self.proc.pid):
            if _comm(pid).startswith("sshd"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Drop every established connection, then listen again (same port and keys)."""
        self.stop()
        self.start()

    def settings(self, **overrides: object) -> Settings:
        """A :class:`Settings` pointing at this server (keyword arguments override fields)."""
        from agentkit.config import Settings

        values: dict[str, object] = {
            "host": self.host,
            "ssh_port": self.port,
            "ssh_user": self.user,
            "ssh_key": self.client_key,
            "known_hosts": self.known_hosts,
            "ssh_trust_on_first_use": False,
            "ssh_connect_timeout": 5.0,
            "ssh_keepalive_interval": 5.0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]


def start_sshd(directory: Path | None = None) -> SSHServer:
    """Generate keys and config in ``directory`` (a new temp dir by default) and start sshd."""
    d = Path(directory or tempfile.mkdtemp(prefix="agentkit-sshd-"))
    d.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (d / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(d / name)],
                check=True,
            )
    shutil.copyfile(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    host = "127.0.0.1"
    key_type, key_b64 = (d / "host_key.pub").read_text().split()[:2]
    host_key_line = f"[{host}]:{port} {key_type} {key_b64}"
    (d / "known_hosts").write_text(host_key_line + "\n")
    sftp = next((p for p in SFTP_SERVER_CANDIDATES if os.path.exists(p)), "internal-sftp")
    config = d / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {host}",
                f"HostKey {d / 'host_key'}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin yes",
                "MaxSessions 64",
                "MaxStartups 100:30:200",
                "AllowStreamLocalForwarding yes",
                "AllowTcpForwarding yes",
                "SetEnv SHLVL=1",
                "LogLevel ERROR",
                f"Subsystem sftp {sftp}",
                "",
            ]
        )
    )
    server = SSHServer(
        dir=d,
        host=host,
        port=port,
        user=getpass.getuser(),
        client_key=d / "client_key",
        known_hosts=d / "known_hosts",
        host_key_line=host_key_line,
        config=config,
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    require(sshd_available(), "OpenSSH server (apt install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ssh_settings(sshd: SSHServer) -> Settings:
    return sshd.settings()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ssh_executor(ssh_settings: Settings) -> AsyncIterator[SSHExecutor]:
    from agentkit.executors.ssh import SSHExecutor

    executor = SSHExecutor(ssh_settings)
    await executor.connect()
    try:
        yield executor
    finally:
        await executor.aclose()
