"""What the workspace service reports, and how a sandbox's (untrusted) output becomes it.

Everything parsed here came out of a git sandbox, so it is treated as hostile text: bounded
before any work, parsed line by line without regular expressions, and used for display only
(:class:`WorkspaceInfo`, :class:`CommitInfo`). Values the controller acts on (a branch to push
to, a commit to push) are validated by the service before use.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from agentkit.workspaces.sandbox import SandboxResult, Section

__all__ = [
    "BranchResult",
    "CommitInfo",
    "PushResult",
    "WorkspaceInfo",
    "parse_commit",
    "relative_age",
    "workspace_report",
]

#: longest commit subject shown (characters)
MAX_SUBJECT = 500
MAX_BRANCH = 255


@dataclass(frozen=True, slots=True)
class CommitInfo:
    hash: str
    subject: str
    age: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """What :meth:`WorkspaceService.list` reports for one workspace.

    ``remote`` is the workspace's pinned origin from agentkit's registry (``None``: none
    pinned), never what the workspace's ``.git/config`` says.
    """

    name: str
    path: str
    branch: str | None = None
    remote: str | None = None
    dirty: bool | None = None
    changed_files: int = 0
    last_commit: CommitInfo | None = None
    agent_running: bool | None = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PushResult:
    name: str
    branch: str
    remote: str
    committed: bool
    pushed: bool
    up_to_date: bool
    commit: CommitInfo | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BranchResult:
    name: str
    branch: str
    from_ref: str | None
    head: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative_age(timestamp: int, now: float | None = None) -> str:
    """``"5 minutes ago"``, in git's steps (seconds < 90, minutes < 90, hours < 36, days < 14,
    weeks < 70 days, months < a year, then years)."""
    diff = int((time.time() if now is None else now) - timestamp)
    if diff < 0:
        return "in the future"
    steps = ((90, 1, "second"), (90 * 60, 60, "minute"), (36 * 3600, 3600, "hour"))
    for limit, unit, word in steps:
        if diff < limit:
            n = (diff + unit // 2) // unit
            return f"{n} {word}{'s' if n != 1 else ''} ago"
    days = (diff + 43200) // 86400
    if days < 14:
        return f"{days} days ago"
    if days < 70:
        return f"{(days + 3) // 7} weeks ago"
    if days < 365:
        return f"{(days + 15) // 30} months ago"
    years = (days * 12 + 182) // 365 // 12
    return f"{years} year{'s' if years != 1 else ''} ago"


def _printable(text: str, limit: int) -> str:
    clipped = text[:limit]
    return "".join(ch if ch.isprintable() else "?" for ch in clipped)


def parse_commit(section: Section | None) -> CommitInfo | None:
    """``%H %s %cr %ct`` separated by 0x1f, as the sandbox's ``last`` section holds it."""
    if section is None or not section.ok:
        return None
    fields = section.text(64 << 10).strip("\n").split("\x1f")
    if len(fields) != 4:
        return None
    sha, subject, _age, stamp = fields
    if not sha.isalnum() or len(sha) not in (40, 64):
        return None
    stamp = stamp.strip()
    when = int(stamp) if stamp.isdigit() and len(stamp) < 12 else 0
    # the age is computed here from the commit time, so a reused report never goes stale
    return CommitInfo(sha, _printable(subject, MAX_SUBJECT), relative_age(when), when)


def _branch_of(status: Section) -> str | None:
    for line in status.text(64 << 10).splitlines():
        if line.startswith("# branch.head "):
            head = line[len("# branch.head ") :].strip()
            return None if head == "(detached)" else _printable(head, MAX_BRANCH)
    return None


def workspace_report(
    name: str,
    path: str,
    result: SandboxResult,
    *,
    remote: str | None,
    agent_running: bool | None,
) -> WorkspaceInfo:
    """The :class:`WorkspaceInfo` of a sandbox run that ended with the ``report`` step."""
    if result.get("norepo") is not None:
        return WorkspaceInfo(
            name, path, remote=remote, agent_running=agent_running, error="not a git repository"
        )
    status = result.get("status")
    if status is None or not status.ok:
        detail = result.error("status") or "no answer from the git sandbox"
        return WorkspaceInfo(
            name,
            path,
            remote=remote,
            agent_running=agent_running,
            error=f"git status failed: {detail}",
        )
    count = result.text("changed", 32)
    changed = int(count) if count.isdigit() and len(count) < 10 else 0
    return WorkspaceInfo(
        name=name,
        path=path,
        branch=_branch_of(status),
        remote=remote,
        dirty=changed > 0,
        changed_files=changed,
        last_commit=parse_commit(result.get("last")),
        agent_running=agent_running,
    )
