"""``push_workspace`` and ``create_branch``: git that changes a workspace, in one sandbox each.

A push is three steps, and the token is only in the last one:

1. **sandbox** (no network, no secrets, only this workspace and a fresh exchange folder):
   ``git add --all``, commit with the message from ``/exchange/message`` if anything changed
   (identity from settings, hooks off, ``--no-verify``), and write ``/exchange/out.bundle``
   with ``HEAD`` minus what the mirror already has;
2. **host, mirror** (configuration written only by agentkit): check the bundle is a plain file
   within ``AGENTKIT_GIT_BUNDLE_MAX``, ``git bundle verify``, fetch it with fsck;
3. **host, mirror -> origin**: push that commit to ``refs/heads/<branch>`` of the origin pinned
   in the registry, with the token through the constant credential helper.

The workspace's ``.git/config`` (``remote.origin.url``, ``pushurl``, submodules, hooks) is never
read by a process that has the token: it cannot redirect the push or run anything with it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from agentkit.errors import ConflictError, NotFoundError, PermissionDeniedError, ToolError
from agentkit.redact import strip_url_credentials
from agentkit.workspaces.git import GitError, GitOutput, same_origin
from agentkit.workspaces.github import github_web_url
from agentkit.workspaces.mirror import is_sha
from agentkit.workspaces.names import validate_branch_name, validate_rev
from agentkit.workspaces.registry import Origin
from agentkit.workspaces.reports import BranchResult, CommitInfo, PushResult, parse_commit
from agentkit.workspaces.sandbox import SANDBOX_UID, SandboxResult
from agentkit.workspaces.urls import parse_repo_url

if TYPE_CHECKING:
    from agentkit.workspaces.names import WorkspacePath
    from agentkit.workspaces.service import WorkspaceService

__all__ = ["MAX_MESSAGE_BYTES", "create_branch", "push_workspace"]

MAX_MESSAGE_BYTES = 100_000

# $1 the exchange root, $2 this call's folder: made for the sandbox's uid ($3), mode 0700.
_EXCHANGE = r"""set -e
mkdir -p -m 700 -- "$1"
mkdir -m 700 -- "$2"
chown -- "$3" "$2"
"""


def _check_message(message: str) -> None:
    if not message.strip():
        raise ToolError("commit_message must not be empty")
    if "\x00" in message:
        raise ToolError("commit_message contains a NUL character; remove it")
    if len(message.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ToolError(
            f"commit_message is longer than {MAX_MESSAGE_BYTES} bytes; shorten it (details "
            "belong in a file of the workspace)"
        )


async def _pinned_origin(
    service: WorkspaceService, ws: WorkspacePath, origin_url: str | None
) -> tuple[Origin, bool]:
    """The registry's origin of ``ws`` and whether it still has to be pinned: ``origin_url``
    pins one only if there is none yet, and only once a push to it succeeded."""
    origin = await service.registry.get(ws.name)
    if origin is not None:
        if origin_url is not None:
            wanted = parse_repo_url(origin_url, github_web_url(service.settings)).url
            if wanted != origin.url:
                raise ConflictError(
                    f"workspace {ws.name!r} already pushes to "
                    f"{strip_url_credentials(origin.url)}; origin_url cannot change that. The "
                    "operator can change it with WorkspaceService.set_origin."
                )
        return origin, False
    if origin_url is None:
        raise ToolError(
            f"workspace {ws.name!r} has no pinned origin to push to. agentkit never takes it "
            "from the workspace's .git/config (an agent can rewrite that). Pass origin_url= "
            "with the repository to push to (it is then pinned), or create workspaces with "
            "create_workspace(create_github_repo=true) or clone_repo, which pin it."
        )
    repo, _target = await service.check_chosen_origin(origin_url)
    return Origin(repo.url, "push_workspace", time.time()), True


async def _exchange(service: WorkspaceService, message: str) -> str:
    base = f"{service.settings.state_root}/exchange"
    folder = f"{base}/{secrets.token_hex(8)}"
    made = await service.executor.run(
        ["sh", "-c", _EXCHANGE, "exchange", base, folder, SANDBOX_UID]
    )
    if not made.ok:
        raise ToolError(
            f"cannot prepare {folder} for the git sandbox: "
            f"{service.redactor.redact(made.stderr_text().strip())[-300:]} (the host user must "
            "be root or able to chown to the agent user)"
        )
    await service.executor.write_file(f"{folder}/message", message.encode("utf-8"))
    return folder


def _step_failed(result: SandboxResult, step: str, what: str) -> GitError | None:
    section = result.get(step)
    if section is None or section.ok:
        return None
    detail = result.error(step) or f"exit status {section.status}"
    return GitError(f"{what} failed: {detail}", stderr=detail, exit_status=section.status)


async def push_workspace(
    service: WorkspaceService,
    workspace_name: str,
    commit_message: str,
    branch: str | None,
    origin_url: str | None,
) -> PushResult:
    _check_message(commit_message)
    if branch is not None:
        validate_branch_name(branch)
    ws, real = await service._existing(workspace_name)
    async with service._lock(ws.name):
        await service._refuse_if_busy(ws, "push")
        origin, pin = await _pinned_origin(service, ws, origin_url)
        await service._hand_to_sandbox(real)
        await service.mirrors.ensure(ws.name)
        known = await service.mirrors.tips(ws.name, first=branch)
        folder = await _exchange(service, commit_message)
        try:
            result = await service.sandbox.run(
                real, "commit", [branch or "", *known], exchange=folder
            )
            pushed = await _publish(service, ws, result, branch, origin, folder)
            if pin:  # a failed first push leaves the workspace unpinned
                await service.registry.set(ws.name, origin.url, source=origin.source)
            return pushed
        finally:
            await asyncio.shield(service._remove(folder))


async def _publish(
    service: WorkspaceService,
    ws: WorkspacePath,
    result: SandboxResult,
    branch: str | None,
    origin: Origin,
    folder: str,
) -> PushResult:
    if result.get("norepo") is not None:
        raise ToolError(
            f"{ws.path} is not a git repository (no .git directory); re-create the workspace "
            "or clone into a new one"
        )
    if result.get("detached") is not None:
        raise ToolError(
            f"workspace {ws.name!r} is not on a branch (detached HEAD); pass branch= or "
            "create_branch first"
        )
    for step, what in (("add", "git add"), ("commit", "git commit"), ("diff", "git diff")):
        failed = _step_failed(result, step, what)
        if failed is not None:
            raise failed
    commit = parse_commit(result.get("last"))
    if commit is None:
        raise ToolError(f"nothing to push: workspace {ws.name!r} has no commits and no changes yet")
    target = branch or result.text("branch", 1024)
    validate_branch_name(target, what="the workspace's current branch")
    committed = result.text("committed", 8) == "1"
    head = result.text("head", 128)
    if not is_sha(head):
        raise ToolError("the git sandbox did not report the commit to push")
    known = result.text("known", 128)
    if result.get("known") is not None and is_sha(known):
        if not await service.mirrors.has_commit(ws.name, head):
            raise ToolError("the git sandbox claimed the mirror already has the commit; it has not")
        sha = head
    else:
        failed = _step_failed(result, "bundle", "git bundle create")
        if failed is not None:
            raise failed
        sha = await service.mirrors.take_bundle(ws.name, f"{folder}/out.bundle")
        if sha != head:
            raise ToolError("the workspace's bundle does not hold the commit the sandbox made")
    # checked again now: the allowlist may have changed, and a name may resolve elsewhere today
    _repo, destination = await service.check_origin(origin.url)
    auth = same_origin(origin.url, github_web_url(service.settings))
    out = await service.mirrors.push(
        ws.name, origin.url, sha, target, auth=auth, options=destination.git_options
    )
    shown = strip_url_credentials(origin.url)
    if not out.ok:
        raise _push_error(service, out, ws, target, shown, commit, committed)
    await service.mirrors.record(ws.name, target, sha)
    up_to_date = "[up to date]" in out.stdout
    return PushResult(
        name=ws.name,
        branch=target,
        remote=shown,
        committed=committed,
        pushed=not up_to_date,
        up_to_date=up_to_date,
        commit=commit,
    )


def _push_error(
    service: WorkspaceService,
    out: GitOutput,
    ws: WorkspacePath,
    branch: str,
    remote: str,
    commit: CommitInfo,
    committed: bool,
) -> ToolError:
    from agentkit.workspaces.service import _auth_failed

    text = f"{out.stdout}\n{out.stderr}"
    low = text.lower()
    saved = f" Your commit {commit.hash[:12]} is saved in the workspace." if committed else ""
    if "non-fast-forward" in low or "fetch first" in low:
        return ConflictError(
            f"push to {branch!r} of {remote} was rejected: the remote branch has commits "
            f"the workspace does not have (non-fast-forward).{saved} Have an agent run "
            f"`git pull --rebase origin {branch}` in workspace {ws.name!r} and resolve any "
            "conflicts, or push to a new branch with branch='...'."
        )
    if "protected branch" in low or "gh006" in low or "remote rejected" in low or "declined" in low:
        reason = next((ln.strip() for ln in text.splitlines() if "rejected" in ln.lower()), "")
        said = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("remote:")]
        server_says = f" The server said: {' | '.join(said[-3:])}" if said else ""
        return PermissionDeniedError(
            f"the remote refused the push to {branch!r} (protected branch or server "
            f"rule: {reason or 'declined'}).{saved} Push to another branch "
            f"(branch='agent/...') and open a pull request.{server_says}"
        )
    if _auth_failed(low):
        return PermissionDeniedError(
            f"{remote} rejected the push credentials.{saved} Check that GITHUB_TOKEN is "
            "set and can push to this repository (scope 'repo'); it is only sent to "
            f"{github_web_url(service.settings)}."
        )
    error = service.git.failure(out, f"git push to {remote}")
    return GitError(f"{error}{saved}", stderr=error.stderr, exit_status=error.exit_status)


async def create_branch(
    service: WorkspaceService, workspace_name: str, branch_name: str, from_ref: str | None
) -> BranchResult:
    validate_branch_name(branch_name)
    if from_ref is not None:
        validate_rev(from_ref, what="from_ref")
    ws, real = await service._existing(workspace_name)
    async with service._lock(ws.name):
        await service._refuse_if_busy(ws, "create a branch in")
        await service._hand_to_sandbox(real)
        result = await service.sandbox.run(real, "branch", [branch_name, from_ref or ""])
    if result.get("norepo") is not None:
        raise ToolError(
            f"{ws.path} is not a git repository (no .git directory); re-create the workspace "
            "or clone into a new one"
        )
    if result.get("exists") is not None:
        raise ConflictError(
            f"branch {branch_name!r} already exists in workspace {ws.name!r}; pick another name"
        )
    if result.get("badref") is not None:
        raise NotFoundError(
            f"from_ref {from_ref!r} is not a branch, tag or commit in workspace {ws.name!r}"
        )
    switch = result.get("switch")
    if switch is None or not switch.ok:
        detail = result.error("switch")
        if "would be overwritten" in detail:
            raise ConflictError(
                f"cannot switch workspace {ws.name!r} to {from_ref!r}: uncommitted changes "
                "would be overwritten; push them first or create the branch without from_ref"
            )
        raise GitError(
            f"git switch --create {branch_name} failed: {detail or 'no answer from the sandbox'}"
        )
    commit = parse_commit(result.get("last"))
    return BranchResult(ws.name, branch_name, from_ref, commit.hash if commit else None)
