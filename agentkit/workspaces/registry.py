"""The workspace registry: trusted facts about each workspace, kept OUTSIDE the workspace.

An agent can rewrite anything under its workspace, ``.git/config`` included, so the origin a
workspace pushes to is never read back from it. :class:`OriginRegistry` keeps one small JSON
file per workspace at ``<AGENTKIT_ROOT>/state/workspaces/<name>.json`` (directory mode 0700,
written atomically through the executor, so it works the same over SSH). Only agentkit writes
it: ``clone_repo`` and ``create_workspace`` pin the origin they set up, and
:meth:`~agentkit.workspaces.service.WorkspaceService.set_origin` changes it explicitly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from agentkit.config import Settings
from agentkit.errors import ConfigError
from agentkit.executors.base import Executor
from agentkit.workspaces.names import validate_workspace_name

__all__ = ["Origin", "OriginRegistry"]

_MAX_BYTES = 64 << 10


# $1 the registry folder, then workspace names (validated): "<name><TAB><entry>" for each entry
# (entries are single-line JSON written by agentkit).
_READ_MANY = r"""dir=$1; shift
for n in "$@"; do
  if [ -f "$dir/$n.json" ]; then printf '%s\t' "$n"; head -c 65536 "$dir/$n.json"; printf '\n'; fi
done
"""


@dataclass(frozen=True, slots=True)
class Origin:
    """The pinned origin of one workspace."""

    url: str
    source: str  # clone_repo | create_workspace | push_workspace | set_origin
    set_at: float


def _parse(raw: bytes) -> Origin | None:
    try:
        if len(raw) > _MAX_BYTES:
            return None
        data = json.loads(raw)
        url, source, set_at = data["origin"], data["source"], data["set_at"]
        if not isinstance(url, str) or not isinstance(source, str):
            return None
        return Origin(url, source, float(set_at))
    except (ValueError, KeyError, TypeError):
        return None


class OriginRegistry:
    """Pinned origins by workspace name, on the executor's host."""

    def __init__(self, executor: Executor, settings: Settings) -> None:
        self.executor = executor
        self.directory = f"{settings.state_root}/workspaces"

    def path(self, name: str) -> str:
        return f"{self.directory}/{validate_workspace_name(name)}.json"

    async def get(self, name: str) -> Origin | None:
        """The pinned origin of ``name``; ``None`` if none was ever pinned."""
        try:
            raw = await self.executor.read_file(self.path(name))
        except FileNotFoundError:
            return None
        origin = _parse(raw)
        if origin is None:
            raise ConfigError(
                f"the workspace registry entry {self.path(name)} is damaged; delete it and pin "
                "the origin again (WorkspaceService.set_origin)"
            )
        return origin

    async def get_many(self, names: list[str]) -> dict[str, Origin]:
        """The pinned origins of ``names`` that have one, in one host command (damaged entries
        are left out; :meth:`get` reports them)."""
        if not names:
            return {}
        out = await self.executor.run(
            ["sh", "-c", _READ_MANY, "read-origins", self.directory]
            + [validate_workspace_name(n) for n in names],
            idempotent=True,
        )
        found: dict[str, Origin] = {}
        for line in out.stdout_text().splitlines():
            name, _, text = line.partition("\t")
            if name in names and name not in found:
                origin = _parse(text.encode("utf-8"))
                if origin is not None:
                    found[name] = origin
        return found

    async def set(self, name: str, url: str, *, source: str) -> Origin:
        """Pin ``url`` (already validated by the caller) as the origin of ``name``."""
        origin = Origin(url, source, time.time())
        data = {"origin": origin.url, "source": origin.source, "set_at": origin.set_at}
        await self.executor.makedirs(self.directory, mode=0o700)
        await self.executor.write_file(
            self.path(name), json.dumps(data).encode("utf-8"), mode=0o600
        )
        return origin

    async def forget(self, name: str) -> None:
        """Drop the entry of ``name`` (the workspace was deleted)."""
        await self.executor.run(["rm", "-f", "--", self.path(name)], idempotent=True)
