"""Run records: what an agent was asked, what it printed and how it ended, kept on the host.

Layout under ``settings.runs_root`` (``AGENTKIT_ROOT/runs``), one directory per agent::

    runs/<container_id>/          mode 0700
        meta.json                 id, task preview, workspace, created, deadline, image, limits
        task.txt                  the task, byte-exact
        output.jsonl              Claude Code's stream-json (stdout), secrets redacted
        stderr.log                the container's stderr (last 64 KiB)
        stop.json                 written *before* agentkit stops a container: {"reason", "at"}
        session.jsonl             Claude Code's session transcript (redacted), saved at the end
                                  so continue_claude_agent can resume it anywhere
        result.json               the final record (one JSON line); its presence means "finished"
    runs/index.jsonl              one line per finished run, append-only; read once per
                                  controller, then only its new bytes (see run_index.py)

Everything goes through the executor, so records live on the host that runs the containers and
outlive both the container (removed once its output is safe here) and the controller process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from agentkit.errors import CommandFailed
from agentkit.executors.base import Executor

__all__ = ["RunStore"]

META, TASK, OUTPUT, STDERR, STOP, RESULT = (
    "meta.json",
    "task.txt",
    "output.jsonl",
    "stderr.log",
    "stop.json",
    "result.json",
)
SESSION = "session.jsonl"
INDEX = "index.jsonl"
# $@: result files; prints those that exist (each is one JSON line)
_CAT_EXISTING = r"""for f do if [ -f "$f" ]; then cat -- "$f"; fi; done
exit 0
"""
# $1 the index file, $2 the first byte wanted (1-based): prints its size, a newline, then the
# bytes from $2 on (a missing file has size 0)
_INDEX_TAIL = r"""if [ ! -e "$1" ]; then echo 0; exit 0; fi
stat -c %s -- "$1" && tail -c +"$2" -- "$1"
"""


def _dumps(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


class RunStore:
    """Reads and writes run records through an executor. Ids are validated by the caller."""

    def __init__(self, executor: Executor, root: str) -> None:
        self.executor = executor
        self.root = root.rstrip("/") or "/"

    def path(self, run_id: str, name: str | None = None) -> str:
        if "/" in run_id or run_id in ("", ".", ".."):
            raise ValueError(f"invalid run id {run_id!r}")
        base = f"{self.root}/{run_id}"
        return f"{base}/{name}" if name else base

    async def create(
        self, run_id: str, meta: Mapping[str, Any], task: str, *, mkdir: bool = True
    ) -> None:
        """Create the record with ``meta.json`` and ``task.txt`` (private to the user).

        ``mkdir=False``: the caller already created the directory (mode 0700).
        """
        if mkdir:
            await self.executor.run(
                ["mkdir", "-p", "-m", "700", "--", self.path(run_id)], check=True, idempotent=True
            )
        await asyncio.gather(
            self.executor.write_file(self.path(run_id, TASK), task.encode("utf-8"), mode=0o600),
            self.executor.write_file(self.path(run_id, META), _dumps(meta), mode=0o600),
        )

    async def _read(self, run_id: str, name: str) -> bytes | None:
        try:
            return await self.executor.read_file(self.path(run_id, name))
        except FileNotFoundError:
            return None

    async def _read_json(self, run_id: str, name: str) -> dict[str, Any] | None:
        raw = await self._read(run_id, name)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def exists(self, run_id: str) -> bool:
        return await self.executor.exists(self.path(run_id, META))

    async def read_meta(self, run_id: str) -> dict[str, Any] | None:
        return await self._read_json(run_id, META)

    async def read_task(self, run_id: str) -> str | None:
        raw = await self._read(run_id, TASK)
        return None if raw is None else raw.decode("utf-8", "replace")

    async def write_output(self, run_id: str, data: bytes) -> None:
        """Replace the whole stream-json output (atomic)."""
        await self.executor.write_file(self.path(run_id, OUTPUT), data, mode=0o600)

    async def append_output(self, run_id: str, data: bytes) -> None:
        """Append to the output without rewriting it (no process: ``O_APPEND`` / SFTP)."""
        await self.executor.append_file(self.path(run_id, OUTPUT), data, mode=0o600)

    async def read_output(self, run_id: str) -> bytes:
        return await self._read(run_id, OUTPUT) or b""

    async def write_stderr(self, run_id: str, data: bytes) -> None:
        await self.executor.write_file(self.path(run_id, STDERR), data, mode=0o600)

    async def read_stderr(self, run_id: str) -> bytes:
        return await self._read(run_id, STDERR) or b""

    async def write_session(self, run_id: str, data: bytes) -> None:
        await self.executor.write_file(self.path(run_id, SESSION), data, mode=0o600)

    async def read_session(self, run_id: str) -> bytes | None:
        return await self._read(run_id, SESSION)

    async def mark_stop(self, run_id: str, reason: str) -> None:
        """Record why agentkit is about to stop the container (``stopped`` / ``timed_out``)."""
        await self.executor.write_file(
            self.path(run_id, STOP), _dumps({"reason": reason, "at": time.time()}), mode=0o600
        )

    async def read_stop(self, run_id: str) -> dict[str, Any] | None:
        return await self._read_json(run_id, STOP)

    async def write_result(self, run_id: str, result: Mapping[str, Any]) -> None:
        await self.executor.write_file(self.path(run_id, RESULT), _dumps(result), mode=0o600)

    async def read_result(self, run_id: str) -> dict[str, Any] | None:
        return await self._read_json(run_id, RESULT)

    async def append_index(self, record: Mapping[str, Any]) -> None:
        """Add a finished run to ``index.jsonl`` (one line; appends are atomic)."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        await self.append_index_bytes((line + "\n").encode("utf-8"))

    async def append_index_bytes(self, lines: bytes) -> None:
        """Append whole index lines (one write: appends of one line or a few are atomic)."""
        await self.executor.append_file(f"{self.root}/{INDEX}", lines)

    async def read_index_bytes(self) -> bytes:
        try:
            return await self.executor.read_file(f"{self.root}/{INDEX}")
        except FileNotFoundError:
            return b""

    async def read_index_from(self, offset: int) -> bytes | None:
        """The index bytes after ``offset`` (one command); ``None`` if the file shrank."""
        path = f"{self.root}/{INDEX}"
        result = await self.executor.run(
            ["sh", "-c", _INDEX_TAIL, "index-tail", path, str(offset + 1)], idempotent=True
        )
        if not result.ok:
            raise CommandFailed(result)
        size, _, rest = result.stdout.partition(b"\n")
        try:
            if int(size) < offset:
                return None
        except ValueError:
            raise CommandFailed(result) from None
        return rest

    async def write_index(self, data: bytes) -> None:
        """Replace the whole index (atomic rename: readers see the old or the new file)."""
        await self.executor.run(["mkdir", "-p", "-m", "700", "--", self.root], check=True)
        await self.executor.write_file(f"{self.root}/{INDEX}", data, mode=0o600)

    async def remove(self, run_ids: list[str]) -> None:
        """Delete whole run records (directories) in one command per 200 ids."""
        paths = [self.path(run_id) for run_id in run_ids]
        for i in range(0, len(paths), 200):
            await self.executor.run(["rm", "-rf", "--", *paths[i : i + 200]], check=True)

    async def read_index(self) -> list[dict[str, Any]]:
        """Finished runs from ``index.jsonl`` (one read; a later line for an id wins)."""
        try:
            raw = await self.executor.read_file(f"{self.root}/{INDEX}")
        except FileNotFoundError:
            return []
        out: dict[str, dict[str, Any]] = {}
        for line in raw.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                out[str(data.get("id"))] = data
        return list(out.values())

    async def list_ids(self) -> list[str]:
        """Every record directory name (unordered)."""
        result = await self.executor.run(
            [
                "find",
                self.root,
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "-type",
                "d",
                "-printf",
                "%f\\n",
            ],
            idempotent=True,
        )
        if not result.ok:
            return []
        return [line for line in result.stdout_text().splitlines() if line]

    async def read_results_of(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """The ``result.json`` of these runs (those that have one), one command per 200."""
        out: list[dict[str, Any]] = []
        paths = [self.path(run_id, RESULT) for run_id in run_ids]
        for i in range(0, len(paths), 200):
            result = await self.executor.run(
                ["sh", "-c", _CAT_EXISTING, "read-results", *paths[i : i + 200]], idempotent=True
            )
            out.extend(_json_lines(result.stdout))
        return out

    async def read_results(self) -> list[dict[str, Any]]:
        """Every finished record's ``result.json`` in ONE command (each file is one JSON line)."""
        result = await self.executor.run(
            [
                "find",
                self.root,
                "-mindepth",
                "2",
                "-maxdepth",
                "2",
                "-name",
                RESULT,
                "-exec",
                "cat",
                "--",
                "{}",
                "+",
            ],
            idempotent=True,
        )
        if not result.ok and not result.stdout:
            if await self.executor.exists(self.root):
                raise CommandFailed(result)
            return []
        return _json_lines(result.stdout)


def _json_lines(raw: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in raw.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            out.append(data)
    return out
