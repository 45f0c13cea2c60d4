"""``clone_repo`` and ``create_workspace``: a new workspace, its mirror and its pinned origin.

* **clone**: host git clones the repository into the workspace's new bare mirror (the only
  process given the token, on a repository whose configuration agentkit wrote); the sandbox then
  clones the workspace from the mirror, mounted read-only, and the origin is pinned in the
  registry.
* **create**: the sandbox runs ``git init`` on branch ``main``; a GitHub repository created
  first (``create_github_repo``) or an existing ``origin_url`` is pinned as the origin.

Any failure removes what was made (directory, mirror, registry entry). The functions take the
:class:`~agentkit.workspaces.service.WorkspaceService` they work for (its parts and locks).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agentkit.errors import NotFoundError, PermissionDeniedError, ToolError
from agentkit.redact import strip_url_credentials
from agentkit.workspaces.github import CreatedRepo, github_web_url
from agentkit.workspaces.names import validate_branch_name, validate_workspace_name
from agentkit.workspaces.reports import WorkspaceInfo, workspace_report
from agentkit.workspaces.urls import RepoURL, check_destination, parse_repo_url

if TYPE_CHECKING:
    from agentkit.workspaces.git import GitOutput
    from agentkit.workspaces.service import WorkspaceService

__all__ = ["clone_workspace", "create_workspace"]

logger = logging.getLogger("agentkit.workspaces")


def _auth_failed(text: str) -> bool:
    from agentkit.workspaces.service import _auth_failed as failed

    return failed(text)


async def clone_workspace(
    self: WorkspaceService,
    repo_url: str,
    workspace_name: str | None,
    branch: str | None,
    depth: int | None,
) -> WorkspaceInfo:
    """Clone ``repo_url`` into a new workspace (name defaults from the URL).

    Host git clones into the workspace's clean mirror (the only process given the token);
    the sandbox then clones the workspace from the mirror, mounted read-only.
    """
    web = github_web_url(self.settings)
    repo = parse_repo_url(repo_url, web)
    name = validate_workspace_name(workspace_name or repo.default_name)
    if branch is not None:
        validate_branch_name(branch)
    if depth is not None and depth < 1:
        raise ToolError("depth must be at least 1")
    ws = self.resolve(name)
    async with self._lock(ws.name):
        await self._ensure_absent(ws)
        target = await check_destination(repo, self.settings, self._resolve)
        out = await self.mirrors.clone(
            ws.name,
            repo.url,
            auth=repo.uses_token,
            branch=branch,
            depth=depth,
            options=target.git_options,
        )
        if not out.ok:
            await self.mirrors.remove(ws.name)
            raise _clone_error(self, out, repo, web, branch)
        try:
            await self.mirrors.readable(ws.name)
            real = await self._prepare(ws)
            result = await self.sandbox.run(
                real,
                "clone",
                [repo.url, branch or "", str(depth or "")],
                mirror=self.mirrors.path(ws.name),
            )
            if result.get("clone") is None or not result.sections["clone"].ok:
                raise ToolError(
                    f"could not populate workspace {ws.name!r} from its mirror: "
                    f"{result.error('clone') or result.stderr[-500:]}"
                )
            await self.registry.set(ws.name, repo.url, source="clone_repo")
        except BaseException:
            await asyncio.shield(self._discard(ws))
            raise
    logger.info("cloned %s into workspace %s", strip_url_credentials(repo.url), ws.name)
    return workspace_report(
        ws.name, ws.path, result, remote=strip_url_credentials(repo.url), agent_running=False
    )


def _clone_error(
    self: WorkspaceService, out: GitOutput, repo: RepoURL, web: str, branch: str | None
) -> ToolError:
    text = out.stderr.lower()
    shown = strip_url_credentials(repo.url)
    if branch and "remote branch" in text and "not found" in text:
        return NotFoundError(f"branch {branch!r} does not exist in {shown}")
    if _auth_failed(text):
        if repo.uses_token:
            why = "GitHub rejected GITHUB_TOKEN for it; check the token can read the repo"
        else:
            why = (
                f"it needs credentials; a token is only sent to {web} "
                "(set GITHUB_TOKEN, and AGENTKIT_GITHUB_URL for another GitHub)"
            )
        return PermissionDeniedError(f"cannot clone {shown}: {why}")
    if "not found" in text or "does not appear to be a git repository" in text:
        return NotFoundError(
            f"repository {shown} was not found (or is private and the token cannot see it)"
        )
    return self.git.failure(out, f"git clone {shown}")


async def create_workspace(
    self: WorkspaceService,
    workspace_name: str,
    create_github_repo: bool,
    repo_visibility: str,
    origin_url: str | None,
) -> tuple[WorkspaceInfo, CreatedRepo | None]:
    """``git init`` a new workspace (branch ``main``) in the sandbox; optionally create a
    GitHub repo, or pin an existing ``origin_url``, as the origin push_workspace uses.

    The GitHub repository is created first: if that fails, nothing is made on the host.
    """
    ws = self.resolve(validate_workspace_name(workspace_name))
    if create_github_repo and origin_url is not None:
        raise ToolError("give either create_github_repo or origin_url, not both")
    pinned = (await self.check_chosen_origin(origin_url))[0].url if origin_url else None
    async with self._lock(ws.name):
        await self._ensure_absent(ws)
        created: CreatedRepo | None = None
        if create_github_repo:
            created = await self.github.create_repo(
                ws.name, visibility=repo_visibility, owner=self.settings.github_owner
            )
            pinned = created.clone_url
        try:
            await self.mirrors.remove(ws.name)  # a mirror left by an older workspace
            real = await self._prepare(ws)
            result = await self.sandbox.run(real, "init", [pinned or ""])
            for step in ("init", "remote"):
                section = result.get(step)
                if section is not None and not section.ok:
                    raise ToolError(f"git {step} failed: {result.error(step)}")
            if pinned is not None:
                source = "create_workspace"
                await self.registry.set(ws.name, pinned, source=source)
        except BaseException as exc:
            await asyncio.shield(self._discard(ws))
            if created is not None and isinstance(exc, ToolError):
                raise ToolError(
                    f"{exc} (the GitHub repository {created.full_name} was created; "
                    "clone it with clone_repo or delete it on GitHub)"
                ) from exc
            raise
    logger.info("created workspace %s", ws.name)
    remote = strip_url_credentials(pinned) if pinned else None
    info = workspace_report(ws.name, ws.path, result, remote=remote, agent_running=False)
    return info, created
