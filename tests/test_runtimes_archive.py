"""Tar archives for copying files into and out of runs: exact layout in, one regular file out."""

from __future__ import annotations

import io
import tarfile

import pytest

from agentkit.errors import ToolError
from agentkit.runtimes.archive import pack, unpack_one


def test_pack_makes_every_parent_owned_by_the_agent() -> None:
    data = pack({"/home/claude/.claude/projects/-workspace/s.jsonl": b"{}\n"}, owner="1001:1001")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar}
    assert list(members) == [
        "home",
        "home/claude",
        "home/claude/.claude",
        "home/claude/.claude/projects",
        "home/claude/.claude/projects/-workspace",
        "home/claude/.claude/projects/-workspace/s.jsonl",
    ]
    assert {(m.uid, m.gid) for m in members.values()} == {(1001, 1001)}
    assert members["home/claude/.claude/projects/-workspace/s.jsonl"].mode == 0o600


@pytest.mark.parametrize("path", ["relative.txt", "/a/../etc/passwd", "/", "/a//b"])
def test_pack_refuses_paths_that_are_not_plain_absolute(path: str) -> None:
    with pytest.raises(ToolError, match="invalid path"):
        pack({path: b"x"}, owner="1001:1001")


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_unpack_takes_only_the_named_regular_file() -> None:
    link = tarfile.TarInfo("s.jsonl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    assert unpack_one(_tar((link, None)), "s.jsonl", max_bytes=100) is None
    archive = _tar(_file("other", b"no"), _file("s.jsonl", b"yes"))
    assert unpack_one(archive, "s.jsonl", max_bytes=100) == b"yes"
    assert unpack_one(archive, "missing", max_bytes=100) is None
    with pytest.raises(ToolError, match="larger than 2 bytes"):
        unpack_one(archive, "s.jsonl", max_bytes=2)
    with pytest.raises(ToolError, match="unreadable archive"):
        unpack_one(b"not a tar at all" * 40, "s.jsonl", max_bytes=100)
