"""SSH host key policy: known_hosts verification, optional trust-on-first-use."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


class HostKeys:
    """Host key policy: known_hosts file, optional trust-on-first-use that records the key.

    The file is read (off the event loop) before each connect; asyncssh calls :meth:`validate`
    only for a key that is not trusted by it. A TOFU key is written after the connection is up.
    """

    def __init__(self, path: Path, tofu: bool) -> None:
        self.path = path
        self.tofu = tofu
        self.changed = False
        self.known = asyncssh.SSHKnownHosts()
        self.pending: str | None = None

    def load(self) -> asyncssh.SSHKnownHosts:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        self.known = asyncssh.import_known_hosts(text)
        self.changed = False
        self.pending = None
        return self.known

    def validate(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        """Called by asyncssh for a key not in known_hosts: trust it (TOFU) or refuse."""
        known = self.known.match(host, addr, port if port != 22 else None)
        has_entries = bool(known[0]) or bool(known[1])
        self.changed = has_entries
        if has_entries or not self.tofu:
            return False
        hostspec = host if port == 22 else f"[{host}]:{port}"
        keytype, blob = key.export_public_key("openssh").decode().split()[:2]
        self.pending = f"{hostspec} {keytype} {blob}\n"
        return True

    def record_pending(self) -> None:
        if self.pending is None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(self.pending)
        self.pending = None


class HostKeyClient(asyncssh.SSHClient):
    def __init__(self, keys: HostKeys) -> None:
        self._keys = keys

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        return self._keys.validate(host, addr, port, key)
