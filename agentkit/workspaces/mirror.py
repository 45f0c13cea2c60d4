"""Clean bare mirrors: the only repositories host git touches, and the only place the token goes.

Each workspace has a bare mirror at ``<AGENTKIT_ROOT>/mirrors/<name>.git`` that agentkit
creates and configures itself (``git init --bare`` / ``git clone --bare`` with hooks off), and
that no container ever writes (clones mount it read-only). Data crosses from a workspace only
as a *git bundle* the sandbox wrote: the host checks it is a plain file within
``AGENTKIT_GIT_BUNDLE_MAX``, verifies it against the mirror (``git bundle verify``), fetches it
with ``fetch.fsckObjects``, and pushes the commit from the mirror to the pinned origin with the
token. So the token only ever reaches a git process whose configuration agentkit wrote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agentkit.config import Settings
from agentkit.errors import ToolError
from agentkit.executors.base import Executor
from agentkit.runtimes.base import parse_memory
from agentkit.workspaces.git import Git, GitOutput
from agentkit.workspaces.names import validate_workspace_name

__all__ = ["INCOMING", "MAX_KNOWN", "Mirrors"]

INCOMING = "refs/agentkit/incoming"
#: mirror tips handed to the sandbox so bundles hold only what the mirror lacks
MAX_KNOWN = 64
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")

# $1 the bundle, $2 the size limit: exit 3 if it is not a plain file, 4 (printing its size) if
# it is too large.
_CHECK_BUNDLE = r"""f=$1
if [ -L "$f" ] || [ ! -f "$f" ]; then exit 3; fi
size=$(stat -c %s -- "$f") || exit 3
if [ "$size" -gt "$2" ]; then echo "$size"; exit 4; fi
"""


def is_sha(value: str) -> bool:
    return _SHA.fullmatch(value) is not None


class Mirrors:
    """The bare mirrors of the workspaces, on the executor's host."""

    def __init__(self, executor: Executor, settings: Settings, git: Git) -> None:
        self.executor = executor
        self.settings = settings
        self.git = git
        self.root = settings.mirrors_root

    def path(self, name: str) -> str:
        return f"{self.root}/{validate_workspace_name(name)}.git"

    async def _root(self) -> None:
        await self.executor.makedirs(self.root, mode=0o700)

    async def remove(self, name: str) -> None:
        await self.executor.run(["rm", "-rf", "--one-file-system", "--", self.path(name)])

    async def readable(self, name: str) -> None:
        """Let the sandbox's uid read the mirror (the mirrors root itself stays 0700)."""
        await self.executor.run(["chmod", "-R", "a+rX", "--", self.path(name)], idempotent=True)

    async def clone(
        self,
        name: str,
        url: str,
        *,
        auth: bool,
        branch: str | None,
        depth: int | None,
        options: Sequence[str] = (),
    ) -> GitOutput:
        """A fresh bare clone of ``url`` (any old mirror of ``name`` is removed first);
        ``options`` are git ``-c`` pairs that keep it on the checked destination."""
        await self._root()
        await self.remove(name)
        args = [*options, "clone", "--bare", "--quiet", "--no-recurse-submodules", "--template="]
        if depth is not None:
            args += ["--depth", str(depth)]
        if branch is not None:
            args += ["--branch", branch]
        return await self.git.run([*args, "--", url, self.path(name)], auth=auth, check=False)

    async def ensure(self, name: str) -> str:
        """The mirror of ``name``, created empty if missing."""
        path = self.path(name)
        if not await self.executor.exists(path):
            await self._root()
            await self.git.run(["init", "--bare", "--quiet", "--template=", path])
        return path

    async def tips(self, name: str, first: str | None = None) -> list[str]:
        """Commits the mirror has (``first``'s branch tip first), at most MAX_KNOWN."""
        out = await self.git.run(
            [
                "for-each-ref",
                "--sort=-committerdate",
                f"--count={MAX_KNOWN * 4}",
                "--format=%(refname) %(objectname)",
                "refs/heads",
                INCOMING,
            ],
            cwd=self.path(name),
            check=False,
        )
        tips: list[str] = []
        for line in out.stdout.splitlines():
            ref, _, sha = line.partition(" ")
            if not is_sha(sha) or sha in tips:
                continue
            if first is not None and ref == f"refs/heads/{first}":
                tips.insert(0, sha)
            else:
                tips.append(sha)
        return tips[:MAX_KNOWN]

    async def has_commit(self, name: str, sha: str) -> bool:
        out = await self.git.run(
            ["cat-file", "-e", f"{sha}^{{commit}}"], cwd=self.path(name), check=False
        )
        return out.ok

    async def take_bundle(self, name: str, bundle: str) -> str:
        """Check, verify and fetch the sandbox's bundle into the mirror; the commit it holds."""
        limit = parse_memory(self.settings.git_bundle_max)
        checked = await self.executor.run(
            ["sh", "-c", _CHECK_BUNDLE, "check-bundle", bundle, str(limit)]
        )
        if checked.exit_status == 4:
            raise ToolError(
                f"the changes to push form a bundle of {checked.stdout_text().strip()} bytes, "
                f"more than AGENTKIT_GIT_BUNDLE_MAX ({self.settings.git_bundle_max}); remove "
                "large generated files from the workspace or raise the limit"
            )
        if not checked.ok:
            raise ToolError("the git sandbox did not leave a bundle of the commit to push")
        path = self.path(name)
        verified = await self.git.run(
            ["bundle", "verify", "--quiet", bundle], cwd=path, check=False
        )
        if not verified.ok:
            raise self.git.failure(verified, "checking the workspace's bundle")
        await self.git.run(
            [
                "-c",
                "fetch.fsckObjects=true",
                "fetch",
                "--quiet",
                "--no-tags",
                bundle,
                f"+HEAD:{INCOMING}",
            ],
            cwd=path,
            what="fetching the workspace's bundle into the mirror",
        )
        resolved = await self.git.run(
            ["rev-parse", "--verify", "--quiet", f"{INCOMING}^{{commit}}"], cwd=path, check=False
        )
        sha = resolved.stdout.strip()
        if not resolved.ok or not is_sha(sha):
            raise ToolError("the mirror did not record the workspace's commit")
        return sha

    async def push(
        self,
        name: str,
        url: str,
        sha: str,
        branch: str,
        *,
        auth: bool,
        options: Sequence[str] = (),
    ) -> GitOutput:
        """Push ``sha`` to ``refs/heads/<branch>`` of ``url`` from the mirror (``options``: git
        ``-c`` pairs that keep it on the checked destination)."""
        return await self.git.run(
            [
                *options,
                "push",
                "--porcelain",
                "--no-verify",
                "--",
                url,
                f"{sha}:refs/heads/{branch}",
            ],
            cwd=self.path(name),
            auth=auth,
            check=False,
        )

    async def record(self, name: str, branch: str, sha: str) -> None:
        """The origin now has ``sha`` on ``branch``: keep the mirror's branch there too."""
        await self.git.run(
            ["update-ref", f"refs/heads/{branch}", sha], cwd=self.path(name), check=False
        )
