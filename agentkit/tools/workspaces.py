"""The six workspace tools. Thin: parse args, call one WorkspaceService method, render."""

from __future__ import annotations

from typing import Any, Literal

from agentkit.tools.base import Tool, ToolContext, ToolResult, tool
from agentkit.workspaces.service import CommitInfo, WorkspaceInfo


def _commit(commit: CommitInfo | None) -> str:
    if commit is None:
        return "no commits yet"
    return f"{commit.hash[:10]} {commit.subject!r} ({commit.age})"


def _line(info: WorkspaceInfo) -> str:
    if info.error:
        return f"- {info.name}: {info.error}"
    if info.agent_running and info.dirty is None:
        return f"- {info.name}: agent working (git state is shown once it finishes)"
    state = "clean" if not info.dirty else f"dirty ({info.changed_files} changed)"
    agent = {True: ", agent working", False: "", None: ", agent status unknown"}[info.agent_running]
    remote = info.remote or "no remote"
    return (
        f"- {info.name} [{info.branch or 'detached'}] {state}{agent}; {remote}; "
        f"last commit {_commit(info.last_commit)}"
    )


@tool
async def clone_repo(
    ctx: ToolContext,
    repo_url: str,
    workspace_name: str | None = None,
    branch: str | None = None,
    shallow: bool = False,
) -> ToolResult:
    """Clone a git repository into a new workspace on the agent host.

    Private GitHub repositories work when GITHUB_TOKEN is configured (the token is never put
    in the URL). Fails if the workspace already exists. Returns the workspace name and path to
    give to spawn_claude_agent.

    Args:
        repo_url: https URL, ssh URL (git@github.com:owner/repo.git) or owner/repo shorthand.
        workspace_name: name of the new workspace (letters, digits, '-', '_', '.'); default:
            the repository name.
        branch: branch or tag to check out; default: the remote's default branch.
        shallow: clone only the latest commit (faster for big repositories).
    """
    service = ctx.require_workspaces()
    info = await service.clone(
        repo_url, workspace_name, branch=branch, depth=1 if shallow else None
    )
    return ToolResult(
        f"Cloned into workspace {info.name!r} at {info.path} (branch {info.branch}, "
        f"last commit {_commit(info.last_commit)}).",
        data=info.to_dict(),
    )


@tool
async def create_workspace(
    ctx: ToolContext,
    workspace_name: str,
    create_github_repo: bool = False,
    repo_visibility: Literal["private", "public", "internal"] = "private",
    origin_url: str | None = None,
) -> ToolResult:
    """Create a new, empty git workspace (branch main), optionally with a new GitHub repository
    (or an existing repository, origin_url) pinned as the origin push_workspace publishes to.

    Args:
        workspace_name: letters, digits, '-', '_', '.'; starts with a letter, digit or '_';
            at most 100 characters.
        create_github_repo: also create a GitHub repository with the same name (needs
            GITHUB_TOKEN).
        repo_visibility: visibility of the GitHub repository ('internal' only for organisations).
        origin_url: an existing repository to push to (https/ssh URL or owner/repo); not
            together with create_github_repo.
    """
    service = ctx.require_workspaces()
    info, repo = await service.create(
        workspace_name,
        create_github_repo=create_github_repo,
        repo_visibility=repo_visibility,
        origin_url=origin_url,
    )
    text = f"Created workspace {info.name!r} at {info.path} (branch {info.branch})."
    if repo is None and info.remote:
        text += f" Its origin is {info.remote}."
    data = info.to_dict()
    if repo is not None:
        text += (
            f" GitHub repository {repo.full_name} ({repo.visibility}) is its origin: "
            f"{repo.html_url}"
        )
        data["github"] = {
            "full_name": repo.full_name,
            "clone_url": repo.clone_url,
            "html_url": repo.html_url,
            "visibility": repo.visibility,
        }
    return ToolResult(text, data=data)


@tool
async def list_workspaces(ctx: ToolContext) -> ToolResult:
    """List the workspaces on the agent host: branch, clean/dirty, remote, last commit, and
    whether an agent is working in each now."""
    service = ctx.require_workspaces()
    infos = await service.list()
    data = {"root": service.root, "workspaces": [i.to_dict() for i in infos]}
    if not infos:
        return ToolResult(
            f"No workspaces yet (root {service.root}). Use create_workspace or clone_repo.",
            data=data,
        )
    lines = [f"{len(infos)} workspace(s) under {service.root}:", *(_line(i) for i in infos)]
    return ToolResult("\n".join(lines), data=data)


@tool(destructive=True)
async def push_workspace(
    ctx: ToolContext,
    workspace_name: str,
    commit_message: str,
    branch: str | None = None,
    origin_url: str | None = None,
) -> ToolResult:
    """Commit every change in a workspace and push it to its pinned origin (the repository
    clone_repo / create_workspace set up; never what the workspace's git config says).

    With nothing to commit, existing commits are pushed. Rejected pushes (remote has newer
    commits, protected branch) are explained.

    Args:
        workspace_name: the workspace to publish.
        commit_message: message of the commit that records the changes.
        branch: remote branch to push to; default: the workspace's current branch.
        origin_url: only for a workspace without a pinned origin: the repository to push to
            (then pinned). It cannot change an origin already pinned.
    """
    service = ctx.require_workspaces()
    result = await service.push(
        workspace_name, commit_message, branch=branch, origin_url=origin_url
    )
    what = "Committed and pushed" if result.committed else "Nothing new to commit; pushed"
    if result.up_to_date:
        what = (
            "Committed; the remote already had it"
            if result.committed
            else "Nothing to commit and the remote is up to date"
        )
    text = (
        f"{what}: workspace {result.name!r} -> {result.remote} branch {result.branch}, "
        f"commit {_commit(result.commit)}."
    )
    if result.warnings:
        text += " Note: " + "; ".join(result.warnings) + "."
    return ToolResult(text, data=result.to_dict())


@tool
async def create_branch(
    ctx: ToolContext, workspace_name: str, branch_name: str, from_ref: str | None = None
) -> ToolResult:
    """Create a git branch in a workspace and switch the workspace to it.

    Args:
        workspace_name: the workspace.
        branch_name: new branch name, valid for git (e.g. 'feature/login').
        from_ref: branch, tag or commit to start from; default: the current commit.
    """
    service = ctx.require_workspaces()
    result = await service.create_branch(workspace_name, branch_name, from_ref=from_ref)
    start = f" from {result.from_ref}" if result.from_ref else ""
    at = f" at {result.head[:10]}" if result.head else " (no commits yet)"
    return ToolResult(
        f"Workspace {result.name!r} is now on new branch {result.branch!r}{start}{at}.",
        data=result.to_dict(),
    )


@tool(destructive=True)
async def delete_workspace(ctx: ToolContext, workspace_name: str) -> ToolResult:
    """Delete a workspace and all its files (unpushed work is lost). Refused while an agent is
    working in it.

    Args:
        workspace_name: the workspace to delete.
    """
    service = ctx.require_workspaces()
    ws = await service.delete(workspace_name)
    return ToolResult(
        f"Deleted workspace {ws.name!r} ({ws.path}).", data={"name": ws.name, "path": ws.path}
    )


def workspace_tools() -> list[Tool[Any]]:
    """The six workspace tools, in their documented order."""
    return [
        clone_repo,
        create_workspace,
        list_workspaces,
        push_workspace,
        create_branch,
        delete_workspace,
    ]
