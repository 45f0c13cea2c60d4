"""Host git on the mirrors is bounded: a tiny hostile pack cannot exhaust the host's memory.

A pack object of type "delta" declares the size of its result and git allocates it: each 1 MiB
"copy" instruction costs 2 bytes, so a bundle of a few kilobytes can claim gigabytes. Code the
workspace's own configuration runs inside the push sandbox can hand the host such a bundle. The
host's git runs under ``AGENTKIT_GIT_HOST_MEMORY`` and must fail cleanly, recording nothing.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import Settings
from agentkit.errors import ToolError
from agentkit.executors.base import Executor
from agentkit.redact import Redactor
from agentkit.workspaces.git import Git
from agentkit.workspaces.mirror import INCOMING, Mirrors
from tests.gitserver import git_available
from tests.support import require

MIB = 1 << 20


def _oid(kind: str, size: int, chunks: list[bytes] | None = None, zeros: int = 0) -> bytes:
    h = hashlib.sha1(f"{kind} {size}\0".encode())
    for chunk in chunks or []:
        h.update(chunk)
    block = b"\0" * MIB
    left = zeros
    while left:
        step = min(left, MIB)
        h.update(block[:step])
        left -= step
    return h.digest()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _header(kind: int, size: int) -> bytes:
    first, size = (kind << 4) | (size & 15), size >> 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first, size = size & 0x7F, size >> 7
    out.append(first)
    return bytes(out)


def _offset(distance: int) -> bytes:
    out = bytearray([distance & 0x7F])
    distance >>= 7
    while distance:
        distance -= 1
        out.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(out)


def delta_bomb_bundle(result_mib: int) -> bytes:
    """A valid git bundle whose commit holds a blob of ``result_mib`` MiB of zeros, stored as
    one delta of ~2 bytes per MiB against a 1 MiB base."""
    base = b"\0" * MIB
    big = _oid("blob", result_mib * MIB, zeros=result_mib * MIB)
    tree = b"100644 big\0" + big
    commit = (
        b"tree "
        + _oid("tree", len(tree), [tree]).hex().encode()
        + b"\nauthor a <a@b> 0 +0000\ncommitter a <a@b> 0 +0000\n\nbomb\n"
    )
    commit_id = _oid("commit", len(commit), [commit])
    delta = _varint(MIB) + _varint(result_mib * MIB) + bytes([0x80 | 0x40, 0x10]) * result_mib
    objects = bytearray(_header(3, MIB) + zlib.compress(base, 9))
    delta_at = 12 + len(objects)
    objects += _header(6, len(delta)) + _offset(delta_at - 12) + zlib.compress(delta, 9)
    objects += _header(2, len(tree)) + zlib.compress(tree)
    objects += _header(1, len(commit)) + zlib.compress(commit)
    pack = b"PACK" + struct.pack(">II", 2, 4) + bytes(objects)
    pack += hashlib.sha1(pack).digest()
    return b"# v2 git bundle\n" + commit_id.hex().encode() + b" HEAD\n\n" + pack


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "local":
        from agentkit.executors.local import LocalExecutor

        return LocalExecutor()
    ssh: Executor = request.getfixturevalue("ssh_executor")
    return ssh


def mirrors(executor: Executor, tmp_path: Path, **overrides: Any) -> Mirrors:
    settings = Settings(_env_file=None, root=str(tmp_path / "root"), **overrides)  # type: ignore[call-arg]
    return Mirrors(executor, settings, Git(executor, settings, Redactor()))


async def test_a_delta_bomb_bundle_fails_cleanly_under_the_heap_limit(
    executor: Executor, tmp_path: Path
) -> None:
    require(git_available(), "git")
    bundle = tmp_path / "bomb.bundle"
    bundle.write_bytes(delta_bomb_bundle(768))  # ~1.5 KB that unpacks to 768 MiB
    assert bundle.stat().st_size < 4096
    m = mirrors(executor, tmp_path, git_host_memory="256m")
    await m.ensure("w")
    with pytest.raises(ToolError):
        await m.take_bundle("w", str(bundle))
    assert not await m.has_commit("w", INCOMING), "the mirror recorded the bomb"


async def test_the_same_bundle_is_taken_without_the_limit(
    executor: Executor, tmp_path: Path
) -> None:
    """The control: the bundle is valid, so only the limit stopped it above."""
    require(git_available(), "git")
    bundle = tmp_path / "bomb.bundle"
    bundle.write_bytes(delta_bomb_bundle(64))
    m = mirrors(executor, tmp_path, git_host_memory="0")
    await m.ensure("w")
    sha = await m.take_bundle("w", str(bundle))
    assert await m.has_commit("w", sha)
