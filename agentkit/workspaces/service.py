"""`WorkspaceService`: git workspaces under ``<AGENTKIT_ROOT>/workspaces`` on the executor's host.

Usable without any LLM: the six workspace tools are thin wrappers around these methods. Every
method validates the workspace name and confines the path under the root before touching the
host; failures the caller can act on raise :class:`~agentkit.errors.ToolError` subclasses.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import posixpath
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from agentkit.config import Settings
from agentkit.errors import ConflictError, NotFoundError, PermissionDeniedError, ToolError
from agentkit.executors.base import Executor
from agentkit.redact import Redactor, strip_url_credentials
from agentkit.workspaces.git import Git, GitError, GitOutput, same_origin
from agentkit.workspaces.github import CreatedRepo, GitHubClient, github_web_url
from agentkit.workspaces.names import (
    WorkspacePath,
    is_valid_workspace_name,
    normalize_root,
    resolve_workspace,
    validate_branch_name,
    validate_rev,
    validate_workspace_name,
)
from agentkit.workspaces.urls import (
    RepoURL,
    check_destination,
    parse_getent,
    parse_repo_url,
)

logger = logging.getLogger("agentkit.workspaces")

BusyProvider = Callable[[], Awaitable[set[str]]]
#: push/create_branch re-check a busy workspace with waits doubling up to this (s; ~3 s in all)
BUSY_GRACE = 1.6


@dataclass(frozen=True, slots=True)
class CommitInfo:
    hash: str
    subject: str
    age: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """What :meth:`WorkspaceService.list` reports for one workspace."""

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


_AUTH_FAILED = re.compile(
    r"authentication failed|could not read (?:username|password)|invalid username or password"
    r"|(?:error|http)[: ]+40[13]\b|permission to \S+ denied",
    re.IGNORECASE,
)


def _auth_failed(text: str) -> bool:
    """Whether git's error output says the server refused (or wanted) credentials."""
    return _AUTH_FAILED.search(text) is not None


class WorkspaceService:
    """Clone, create, list, push, branch and delete git workspaces on the executor's host.

    Args:
        executor: the host (local or SSH) where workspaces live and git runs.
        settings: root, GitHub token/URLs/owner and git identity.
        busy: async provider of the host paths of workspaces an agent is working in now
            (``AgentService.active_workspaces``); ``None``: no agents are tracked.
        http_client: optional shared ``httpx.AsyncClient`` for the GitHub REST API.
    """

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        *,
        busy: BusyProvider | None = None,
        http_client: httpx.AsyncClient | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.root = normalize_root(settings.workspaces_root)
        self.redactor = redactor or Redactor(settings.secrets())
        self.git = Git(executor, settings, self.redactor)
        self.github = GitHubClient(settings, http_client=http_client, redactor=self.redactor)
        self._busy = busy
        self._locks: dict[str, asyncio.Lock] = {}

    # --- helpers ----------------------------------------------------------------------------

    def resolve(self, name_or_path: str) -> WorkspacePath:
        """Validate a workspace name (or a ``workspace_path`` under the root) and confine it."""
        return resolve_workspace(self.root, name_or_path)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _existing(self, name: str) -> WorkspacePath:
        ws = self.resolve(name)
        if not await self.executor.exists(ws.path):
            raise NotFoundError(
                f"workspace {ws.name!r} does not exist; call list_workspaces to see the "
                "workspaces, or create_workspace / clone_repo to make it"
            )
        return ws

    async def _ensure_absent(self, ws: WorkspacePath) -> None:
        if await self.executor.exists(ws.path):
            raise ConflictError(
                f"workspace {ws.name!r} already exists at {ws.path}; choose another name, "
                "or delete_workspace it first"
            )

    async def _remove(self, path: str) -> None:
        await self.executor.run(["rm", "-rf", "--one-file-system", "--", path])

    async def _restore_owner(self, ws: WorkspacePath, target: str) -> None:
        """Give files git just wrote back to the workspace's owner (the agent's uid after a
        spawn), so the next agent can still write ``.git``. Best effort."""
        out = await self.executor.run(
            ["chown", "-R", f"--reference={ws.path}", "--", target], idempotent=True
        )
        if not out.ok:
            logger.debug("could not restore ownership of %s: %s", target, out.stderr_text())

    async def busy_paths(self) -> set[str]:
        """Normalized host paths with an agent working in them (raises if unknown)."""
        if self._busy is None:
            return set()
        paths = {posixpath.normpath(p) for p in await self._busy()}
        if not paths:
            return paths
        # The agent service reports resolved paths; the root may sit behind a symlink.
        real = await self.executor.run(["realpath", "-e", "--", self.root], idempotent=True)
        real_root = real.stdout_text().strip()
        if real.ok and real_root and real_root != self.root:
            for p in list(paths):
                if p.startswith(real_root + "/"):
                    paths.add(self.root + p[len(real_root) :])
        return paths

    def _is_busy(self, ws: WorkspacePath, busy: set[str]) -> bool:
        return any(p == ws.path or p.startswith(ws.path + "/") for p in busy)

    async def _refuse_if_busy(self, ws: WorkspacePath, action: str) -> None:
        """Refuse to run git in a workspace an agent is working in (see :meth:`info`).

        An agent that has just finished is waited for a moment: the engine's container list
        can show it running for a fraction of a second after ``wait_for_claude_agent`` returned.
        """
        delay = 0.05
        while True:
            try:
                busy = await self.busy_paths()
            except Exception as exc:
                logger.warning("cannot tell whether %s is busy: %s", ws.name, exc)
                return
            if not self._is_busy(ws, busy):
                return
            if delay > BUSY_GRACE:
                break
            await asyncio.sleep(delay)
            delay *= 2
        raise ConflictError(
            f"cannot {action} workspace {ws.name!r} while an agent is working in it (the "
            "agent can change its git configuration at any moment). Wait for it "
            "(wait_for_claude_agent) or stop it (stop_claude_agent), then retry."
        )

    async def _last_commit(self, path: str) -> CommitInfo | None:
        out = await self.git.run(
            ["log", "-1", "--format=%H%x1f%s%x1f%cr%x1f%ct"], cwd=path, check=False
        )
        fields = out.stdout.strip().split("\x1f")
        if not out.ok or len(fields) != 4:
            return None
        return CommitInfo(fields[0], fields[1], fields[2], int(fields[3] or 0))

    # --- info / list --------------------------------------------------------------------------

    async def _busy_or_unknown(self) -> set[str] | None:
        """:meth:`busy_paths`, or ``None`` (logged) when it cannot be told."""
        try:
            return await self.busy_paths()
        except Exception as exc:
            logger.warning("cannot tell which workspaces are busy: %s", exc)
            return None

    async def info(self, name: str, *, busy: set[str] | None = None) -> WorkspaceInfo:
        """Branch, remote, dirty state, last commit and agent status of one workspace."""
        ws = self.resolve(name)
        return await self._info(ws, await self._busy_or_unknown() if busy is None else busy)

    async def _info(self, ws: WorkspacePath, busy: set[str] | None) -> WorkspaceInfo:
        """:meth:`info` with the busy paths already known (``None``: unknown)."""
        running = None if busy is None else self._is_busy(ws, busy)
        if running:
            # While an agent works here it can rewrite .git/config at any moment, e.g. right
            # after check_config read it, and git on the host would run what it names (even
            # `git status` runs clean filters). No git runs here until the agent is done.
            return WorkspaceInfo(ws.name, ws.path, dirty=None, agent_running=True)
        try:
            await self.git.check_repository(ws.path)
        except ToolError:
            return WorkspaceInfo(
                ws.name, ws.path, agent_running=running, error="not a git repository"
            )
        try:
            # git status may run clean filters: never on a tampered configuration
            await self.git.check_config(ws.path)
        except PermissionDeniedError as exc:
            return WorkspaceInfo(ws.name, ws.path, agent_running=running, error=str(exc))
        status, commit, remote = await asyncio.gather(
            self.git.run(
                ["--no-optional-locks", "status", "--porcelain=v2", "--branch"],
                cwd=ws.path,
                check=False,
            ),
            self._last_commit(ws.path),
            self.git.remote_url(ws.path),
        )
        if not status.ok:
            return WorkspaceInfo(
                ws.name,
                ws.path,
                agent_running=running,
                error=self.git.failure(status, "git status").args[0],
            )
        branch: str | None = None
        changed = 0
        for line in status.stdout.splitlines():
            if line.startswith("# branch.head "):
                head = line[len("# branch.head ") :].strip()
                branch = None if head == "(detached)" else head
            elif line and not line.startswith("#"):
                changed += 1
        return WorkspaceInfo(
            name=ws.name,
            path=ws.path,
            branch=branch,
            remote=strip_url_credentials(remote) if remote else None,
            dirty=changed > 0,
            changed_files=changed,
            last_commit=commit,
            agent_running=running,
        )

    async def list(self) -> builtins.list[WorkspaceInfo]:
        """Every workspace under the root, sorted by name."""
        out = await self.executor.run(
            ["find", self.root, "-mindepth", "1", "-maxdepth", "1", "-type", "d"],
            idempotent=True,
        )
        if not out.ok:
            if not await self.executor.exists(self.root):
                return []
            raise ToolError(
                f"cannot list {self.root}: {self.redactor.redact(out.stderr_text().strip())}"
            )
        names = sorted(
            name
            for name in (posixpath.basename(p) for p in out.stdout_text().splitlines())
            if is_valid_workspace_name(name)
        )
        busy = await self._busy_or_unknown()  # once for all: None (unknown) is not asked again
        limit = asyncio.Semaphore(8)

        async def one(name: str) -> WorkspaceInfo:
            async with limit:
                return await self._info(self.resolve(name), busy)

        return builtins.list(await asyncio.gather(*(one(n) for n in names)))

    # --- clone / create -----------------------------------------------------------------------

    async def clone(
        self,
        repo_url: str,
        workspace_name: str | None = None,
        *,
        branch: str | None = None,
        depth: int | None = None,
    ) -> WorkspaceInfo:
        """Clone ``repo_url`` into a new workspace (name defaults from the URL)."""
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
            await self.executor.makedirs(self.root)
            target = await check_destination(repo, self.settings, self._resolve)
            args = [*target.git_options, "clone", "--origin", "origin", "--no-recurse-submodules"]
            if depth is not None:
                args += ["--depth", str(depth)]
            if branch is not None:
                args += ["--branch", branch]
            args += ["--", repo.url, ws.path]
            out = await self.git.run(args, auth=repo.uses_token, check=False)
            if not out.ok:
                await self._remove(ws.path)
                raise self._clone_error(out, repo, web, branch)
        logger.info("cloned %s into workspace %s", strip_url_credentials(repo.url), ws.name)
        return await self.info(ws.name)

    async def _resolve(self, host: str) -> builtins.list[str]:
        """The addresses the agent host resolves ``host`` to (where git will connect from)."""
        out = await self.executor.run(["getent", "ahosts", "--", host], idempotent=True, timeout=30)
        return parse_getent(out.stdout_text()[:65536]) if out.ok else []

    def _clone_error(
        self, out: GitOutput, repo: RepoURL, web: str, branch: str | None
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

    async def create(
        self,
        workspace_name: str,
        *,
        create_github_repo: bool = False,
        repo_visibility: str = "private",
    ) -> tuple[WorkspaceInfo, CreatedRepo | None]:
        """``git init`` a new workspace (branch ``main``); optionally create + link a GitHub repo.

        The GitHub repository is created first: if that fails, nothing is made on the host.
        """
        ws = self.resolve(validate_workspace_name(workspace_name))
        async with self._lock(ws.name):
            await self._ensure_absent(ws)
            created: CreatedRepo | None = None
            if create_github_repo:
                created = await self.github.create_repo(
                    ws.name, visibility=repo_visibility, owner=self.settings.github_owner
                )
            try:
                await self.executor.makedirs(self.root)
                # init + symbolic-ref rather than --initial-branch: works with git < 2.28 too
                await self.git.run(["init", "--quiet", ws.path])
                await self.git.run(["symbolic-ref", "HEAD", "refs/heads/main"], cwd=ws.path)
                if created is not None:
                    await self.git.run(["remote", "add", "origin", created.clone_url], cwd=ws.path)
            except BaseException as exc:
                await asyncio.shield(self._remove(ws.path))
                if created is not None and isinstance(exc, ToolError):
                    raise ToolError(
                        f"{exc} (the GitHub repository {created.full_name} was created; "
                        "clone it with clone_repo or delete it on GitHub)"
                    ) from exc
                raise
        logger.info("created workspace %s", ws.name)
        return await self.info(ws.name), created

    # --- push ---------------------------------------------------------------------------------

    async def push(
        self, workspace_name: str, commit_message: str, *, branch: str | None = None
    ) -> PushResult:
        """Stage everything, commit (if anything changed) and push to ``origin`` with upstream."""
        if not commit_message.strip():
            raise ToolError("commit_message must not be empty")
        ws = await self._existing(workspace_name)
        async with self._lock(ws.name):
            await self._refuse_if_busy(ws, "push")
            await self.git.check_repository(ws.path)
            await self.git.check_config(ws.path)
            remote = await self.git.remote_url(ws.path)
            if not remote:
                raise ToolError(
                    f"workspace {ws.name!r} has no remote 'origin' to push to; create it with "
                    "create_workspace(create_github_repo=true) or clone_repo"
                )
            current = await self.git.current_branch(ws.path)
            target = branch or current
            if target is None:
                raise ToolError(
                    f"workspace {ws.name!r} is not on a branch (detached HEAD); pass branch= "
                    "or create_branch first"
                )
            validate_branch_name(target)
            warnings: list[str] = []
            try:
                return await self._commit_and_push(ws, commit_message, target, remote, warnings)
            finally:
                await self._restore_owner(ws, f"{ws.path}/.git")

    async def _commit_and_push(
        self,
        ws: WorkspacePath,
        commit_message: str,
        target: str,
        remote: str,
        warnings: builtins.list[str],
    ) -> PushResult:
        shown_remote = strip_url_credentials(remote)
        await self.git.run(["add", "--all"], cwd=ws.path)
        staged = await self.git.run(["diff", "--cached", "--quiet"], cwd=ws.path, check=False)
        committed = False
        if staged.exit_status == 1:
            await self.git.run(
                ["commit", "--quiet", "--no-verify", "--file=-"],
                cwd=ws.path,
                stdin=commit_message,
            )
            committed = True
        elif not staged.ok:
            raise self.git.failure(staged, "git diff")
        commit = await self._last_commit(ws.path)
        if commit is None:
            raise ToolError(
                f"nothing to push: workspace {ws.name!r} has no commits and no changes yet"
            )
        out = await self.git.run(
            ["push", "--porcelain", "--set-upstream", "origin", f"HEAD:refs/heads/{target}"],
            cwd=ws.path,
            auth=same_origin(remote, github_web_url(self.settings)),
            check=False,
        )
        if not out.ok:
            raise self._push_error(out, ws, target, shown_remote, commit, committed)
        up_to_date = "[up to date]" in out.stdout
        return PushResult(
            name=ws.name,
            branch=target,
            remote=shown_remote,
            committed=committed,
            pushed=not up_to_date,
            up_to_date=up_to_date,
            commit=commit,
            warnings=warnings,
        )

    def _push_error(
        self,
        out: GitOutput,
        ws: WorkspacePath,
        branch: str,
        remote: str,
        commit: CommitInfo,
        committed: bool,
    ) -> ToolError:
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
        if (
            "protected branch" in low
            or "gh006" in low
            or "remote rejected" in low
            or ("declined" in low)
        ):
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
                f"{github_web_url(self.settings)}."
            )
        error = self.git.failure(out, f"git push to {remote}")
        return GitError(f"{error}{saved}", stderr=error.stderr, exit_status=error.exit_status)

    # --- branches -----------------------------------------------------------------------------

    async def create_branch(
        self, workspace_name: str, branch_name: str, *, from_ref: str | None = None
    ) -> BranchResult:
        """Create ``branch_name`` (at ``from_ref`` or HEAD) and switch the workspace to it."""
        validate_branch_name(branch_name)
        if from_ref is not None:
            validate_rev(from_ref, what="from_ref")
        ws = await self._existing(workspace_name)
        async with self._lock(ws.name):
            await self._refuse_if_busy(ws, "create a branch in")
            await self.git.check_repository(ws.path)
            await self.git.check_config(ws.path)
            exists = await self.git.run(
                ["show-ref", "--verify", "--quiet", f"refs/heads/{branch_name}"],
                cwd=ws.path,
                check=False,
            )
            if exists.ok:
                raise ConflictError(
                    f"branch {branch_name!r} already exists in workspace {ws.name!r}; "
                    "pick another name"
                )
            args = ["switch", "--quiet", "--create", branch_name]
            if from_ref is not None:
                resolved = await self.git.run(
                    [
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        "--end-of-options",
                        f"{from_ref}^{{commit}}",
                    ],
                    cwd=ws.path,
                    check=False,
                )
                if not resolved.ok:
                    raise NotFoundError(
                        f"from_ref {from_ref!r} is not a branch, tag or commit in workspace "
                        f"{ws.name!r}"
                    )
                args.append(resolved.stdout.strip())
            out = await self.git.run(args, cwd=ws.path, check=False)
            await self._restore_owner(ws, ws.path)
            if not out.ok:
                if "would be overwritten" in out.stderr:
                    raise ConflictError(
                        f"cannot switch workspace {ws.name!r} to {from_ref!r}: uncommitted "
                        "changes would be overwritten; push them first or create the branch "
                        "without from_ref"
                    )
                raise self.git.failure(out, f"git switch --create {branch_name}")
            head = await self.git.head(ws.path)
        return BranchResult(ws.name, branch_name, from_ref, head)

    # --- delete -------------------------------------------------------------------------------

    async def delete(self, workspace_name: str) -> WorkspacePath:
        """Remove a workspace directory; refused while an agent is working in it."""
        ws = await self._existing(workspace_name)
        async with self._lock(ws.name):
            try:
                busy = await self.busy_paths()
            except Exception as exc:
                raise ConflictError(
                    f"cannot check whether an agent is working in {ws.name!r} ({exc}); not "
                    "deleting it"
                ) from None
            if self._is_busy(ws, busy):
                raise ConflictError(
                    f"workspace {ws.name!r} is in use: an agent is working in it now. Wait for "
                    "it (wait_for_claude_agent) or stop it (stop_claude_agent), then delete."
                )
            real = await self.executor.run(
                ["realpath", "-e", "--", self.root, ws.path], idempotent=True
            )
            lines = real.stdout_text().splitlines()
            if not real.ok or len(lines) != 2 or lines[1] != posixpath.join(lines[0], ws.name):
                raise PermissionDeniedError(
                    f"refusing to delete {ws.path}: it does not resolve to a directory directly "
                    f"under {self.root} (is it a symlink?)"
                )
            out = await self.executor.run(["rm", "-rf", "--one-file-system", "--", lines[1]])
            if not out.ok:
                raise ToolError(
                    f"could not delete workspace {ws.name!r}: "
                    f"{self.redactor.redact(out.stderr_text().strip())[-500:]}"
                )
        logger.info("deleted workspace %s", ws.name)
        return ws
