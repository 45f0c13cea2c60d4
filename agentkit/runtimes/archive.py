"""Tar archives for copying files into and out of runs (the Engine API's ``/archive``).

Both directions are pure functions over bytes, so every runtime that moves files as tar streams
(Docker containers, a Swarm task's container) shares them:

* :func:`pack` - files (absolute path -> bytes) as one tar rooted at ``/``, with every parent
  directory, owned by the given ``uid:gid`` (what ``PUT /containers/{id}/archive?path=/``
  takes);
* :func:`unpack_one` - the content of ONE regular file from an archive a run produced. The
  archive is untrusted (the agent wrote the files): only a regular-file member with exactly the
  expected name is read, links and devices are ignored, nothing is written to disk, and the
  caller has already bounded the archive's size.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import time
from collections.abc import Mapping

from agentkit.errors import ToolError

__all__ = ["pack", "unpack_one"]


def _owner(owner: str) -> tuple[int, int]:
    uid, _, gid = owner.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise ToolError(f"invalid owner {owner!r}: use uid:gid") from None


def pack(files: Mapping[str, bytes], *, owner: str, mode: int = 0o600) -> bytes:
    """``files`` (absolute, normalised paths) as a tar rooted at ``/`` owned by ``owner``."""
    uid, gid = _owner(owner)
    now = time.time()
    dirs: set[str] = set()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
                raise ToolError(f"invalid path {path!r} to copy into a run")
            parents = []
            parent = posixpath.dirname(path)
            while parent not in ("/", ""):
                parents.append(parent)
                parent = posixpath.dirname(parent)
            for directory in reversed(parents):
                if directory in dirs:
                    continue
                dirs.add(directory)
                info = tarfile.TarInfo(directory.lstrip("/"))
                info.type, info.mode, info.uid, info.gid, info.mtime = (
                    tarfile.DIRTYPE,
                    0o700,
                    uid,
                    gid,
                    now,
                )
                tar.addfile(info)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_one(archive: bytes, name: str, *, max_bytes: int) -> bytes | None:
    """The content of the regular file ``name`` (a base name, as ``GET /archive?path=<file>``
    names its one member) in ``archive``; ``None`` if it is not a regular file there."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            for member in tar:
                if member.name != name:
                    continue
                if not member.isreg():
                    return None
                if member.size > max_bytes:
                    raise ToolError(
                        f"{name} is larger than {max_bytes} bytes ({member.size} bytes)"
                    )
                handle = tar.extractfile(member)
                return handle.read(max_bytes + 1)[:max_bytes] if handle is not None else None
    except tarfile.TarError as exc:
        raise ToolError(f"unreadable archive from the run: {exc}") from exc
    return None
