"""Reports of unchanged workspaces, reused: ``list_workspaces`` without a sandbox per workspace.

A git sandbox costs a container start (~0.5 s on a busy machine); most workspaces have not
changed since the last listing. After a sandbox reported on a workspace, the report is kept at
``<AGENTKIT_ROOT>/state/reports/<name>.json`` beside a *stamp* file created just before that
sandbox ran, with its time set 0.1 s back (file times come from a coarse clock). The next
listing reuses the report only if no file, directory or ``.git`` entry of the workspace has a
**status-change time** (``ctime``) newer than the stamp: ``find -cnewer`` on the host only
``lstat``s names (it interprets nothing, follows no link), and ``ctime`` changes with every
write, rename, delete, chmod and chown and cannot be set back by an agent (unlike ``mtime``).

A workspace with no ``.git`` entry at all (``lstat``) needs no sandbox either: the sandbox
would report "not a git repository" before running git, so the host says it.

Reports are display data only; ``push_workspace`` and ``create_branch`` never use them. A busy
workspace is never reported from the cache (nor run at all). Commit ages are computed from the
commit time when shown, so a reused report does not go stale.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

from agentkit.config import Settings
from agentkit.executors.base import Executor
from agentkit.workspaces.names import validate_workspace_name
from agentkit.workspaces.reports import CommitInfo, WorkspaceInfo, relative_age

__all__ = ["ReportCache"]

logger = logging.getLogger("agentkit.workspaces.listcache")

_MAX_REPORT = 64 << 10
FIND_TIMEOUT = 30.0

# $1 the reports folder, $2 the real workspaces root, then workspace names (validated). For each
# workspace with a report and a stamp whose tree has nothing changed since the stamp, prints
# "<name><TAB><report>" (reports are single-line JSON written by agentkit); for a workspace with
# no .git at all, the report the sandbox would give ("not a git repository": its script says so
# for a missing .git before running any git), without a report kept.
_FRESH = r"""dir=$1; root=$2; shift 2
for n in "$@"; do
  s="$dir/$n.stamp"; r="$dir/$n.json"; ws="$root/$n"
  if [ -L "$ws" ] || [ ! -d "$ws" ]; then continue; fi
  if [ ! -e "$ws/.git" ] && [ ! -L "$ws/.git" ]; then
    printf '%s\t{"changed_files": 0, "error": "not a git repository"}\n' "$n"; continue
  fi
  if [ ! -f "$s" ] || [ ! -f "$r" ]; then continue; fi
  changed=$(find "$ws" -cnewer "$s" -print -quit 2> /dev/null) || continue
  if [ -n "$changed" ]; then continue; fi
  printf '%s\t' "$n"; head -c __MAX__ "$r"; printf '\n'
done
""".replace("__MAX__", str(_MAX_REPORT))

# $1 the reports folder, then workspace names (validated): a new stamp "<name>.stamp.new" for
# each, made (or reset) 0.1 s in the past, more than one clock tick (file times come from the
# kernel's coarse clock, 1-10 ms a tick); prints the names stamped. One command for a listing.
_STAMP = r"""dir=$1; shift
mkdir -p -m 700 -- "$dir" || exit 1
ns=$(($(date +%s%N) - 100000000)); s=${ns%?????????}
for n in "$@"; do
  if touch -d "@$s.${ns#"$s"}" -- "$dir/$n.stamp.new"; then printf '%s\n' "$n"; fi
done
"""


def _commit(value: Any) -> CommitInfo | None:
    if not isinstance(value, dict):
        return None
    sha, subject, stamp = value.get("hash"), value.get("subject"), value.get("timestamp")
    if not isinstance(sha, str) or not isinstance(subject, str) or not isinstance(stamp, int):
        return None
    return CommitInfo(sha, subject, relative_age(stamp), stamp)


def _report(name: str, path: str, text: str) -> WorkspaceInfo | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    branch, error, changed = data.get("branch"), data.get("error"), data.get("changed_files")
    dirty = data.get("dirty")
    if not (branch is None or isinstance(branch, str)) or not (
        error is None or isinstance(error, str)
    ):
        return None
    if not isinstance(changed, int) or not (dirty is None or isinstance(dirty, bool)):
        return None
    return WorkspaceInfo(
        name=name,
        path=path,
        branch=branch,
        dirty=dirty,
        changed_files=changed,
        last_commit=_commit(data.get("last_commit")),
        error=error,
    )


class ReportCache:
    """Sandbox reports of workspaces, reused while nothing in the workspace changed."""

    def __init__(self, executor: Executor, settings: Settings) -> None:
        self.executor = executor
        self.directory = f"{settings.state_root}/reports"

    def _path(self, name: str, suffix: str) -> str:
        return f"{self.directory}/{validate_workspace_name(name)}{suffix}"

    async def fresh(self, real_root: str, paths: dict[str, str]) -> dict[str, WorkspaceInfo]:
        """Reusable reports by workspace name (``paths``: name -> displayed path)."""
        if not paths:
            return {}
        names = [validate_workspace_name(n) for n in paths]
        try:
            out = await self.executor.run(
                ["sh", "-c", _FRESH, "fresh-reports", self.directory, real_root, *names],
                idempotent=True,
                timeout=FIND_TIMEOUT,
            )
        except Exception as exc:  # a cache: never fail the listing for it
            logger.debug("report cache not consulted: %s", exc)
            return {}
        found: dict[str, WorkspaceInfo] = {}
        for line in out.stdout_text().splitlines():
            name, _, text = line.partition("\t")
            if name in paths and name not in found:
                report = _report(name, paths[name], text)
                if report is not None:
                    found[name] = report
        return found

    async def begin(self, names: list[str]) -> set[str]:
        """Stamp the start of the sandbox runs for ``names`` (one host command, before any of
        them starts: a change meanwhile is newer than the stamp, so it is looked at again next
        time); the names whose stamp was made."""
        if not names:
            return set()
        valid = [validate_workspace_name(n) for n in names]
        try:
            out = await self.executor.run(
                ["sh", "-c", _STAMP, "stamp", self.directory, *valid], idempotent=True
            )
        except Exception as exc:  # a cache: never fail the listing for it
            logger.debug("no stamps made: %s", exc)
            return set()
        return set(out.stdout_text().split()) & set(valid)

    async def store(self, name: str, report: WorkspaceInfo) -> None:
        """Keep ``report`` (from the run :meth:`begin` stamped) and make its stamp current."""
        data = asdict(report)
        for key in ("name", "path", "remote", "agent_running"):
            data.pop(key, None)
        await self.executor.write_file(
            self._path(name, ".json"), json.dumps(data).encode("utf-8"), mode=0o600
        )
        await self.executor.run(
            ["mv", "-f", "--", self._path(name, ".stamp.new"), self._path(name, ".stamp")],
            idempotent=True,
        )

    async def forget(self, name: str) -> None:
        await self.executor.run(
            ["rm", "-f", "--", *(self._path(name, s) for s in (".json", ".stamp", ".stamp.new"))],
            idempotent=True,
        )
