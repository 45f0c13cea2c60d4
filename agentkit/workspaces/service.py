"""`WorkspaceService`: git workspaces under ``<AGENTKIT_ROOT>/workspaces`` on the executor's host.

Usable without any LLM: the six workspace tools are thin wrappers around these methods. Every
method validates the workspace name and confines the path under the root before touching the
host; failures the caller can act on raise :class:`~agentkit.errors.ToolError` subclasses.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import posixpath
import re
from collections.abc import Awaitable, Callable
from typing import Self
from urllib.parse import urlsplit

import httpx

from agentkit.config import Settings
from agentkit.errors import ConflictError, NotFoundError, PermissionDeniedError, ToolError
from agentkit.executors.base import Executor
from agentkit.redact import Redactor, strip_url_credentials
from agentkit.runtimes.base import Runtime
from agentkit.runtimes.docker import DockerRuntime
from agentkit.workspaces.git import Git
from agentkit.workspaces.github import CreatedRepo, GitHubClient, github_web_url
from agentkit.workspaces.listcache import ReportCache
from agentkit.workspaces.making import clone_workspace, create_workspace
from agentkit.workspaces.mirror import Mirrors
from agentkit.workspaces.names import (
    WorkspacePath,
    is_valid_workspace_name,
    normalize_root,
    resolve_workspace,
)
from agentkit.workspaces.pushing import create_branch, push_workspace
from agentkit.workspaces.registry import Origin, OriginRegistry
from agentkit.workspaces.reports import (
    BranchResult,
    CommitInfo,
    PushResult,
    WorkspaceInfo,
    workspace_report,
)
from agentkit.workspaces.sandbox import REPORT_TIMEOUT, SANDBOX_UID, GitSandbox, RuntimeProvider
from agentkit.workspaces.urls import (
    CloneTarget,
    RepoURL,
    check_destination,
    parse_getent,
    parse_repo_url,
)

__all__ = [
    "BranchResult",
    "CommitInfo",
    "PushResult",
    "RepoURL",
    "WorkspaceInfo",
    "WorkspaceService",
    "parse_repo_url",
]

logger = logging.getLogger("agentkit.workspaces")

BusyProvider = Callable[[], Awaitable[set[str]]]
#: push/create_branch re-check a busy workspace with waits doubling up to this (s; ~3 s in all)
BUSY_GRACE = 1.6


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

    Git never runs on the host inside a workspace: every git command that reads or writes one
    runs in a short-lived sandbox container (:mod:`~agentkit.workspaces.sandbox`), and pushes
    and clones go through a clean bare mirror agentkit owns (:mod:`~agentkit.workspaces.mirror`)
    to the origin pinned in agentkit's registry (:mod:`~agentkit.workspaces.registry`).

    Args:
        executor: the host (local or SSH) where workspaces live.
        settings: root, image, GitHub token/URLs/owner and git identity.
        busy: async provider of the host paths of workspaces an agent is working in now
            (``AgentService.active_workspaces``); ``None``: no agents are tracked.
        http_client: optional shared ``httpx.AsyncClient`` for the GitHub REST API.
        runtime: the container runtime for the git sandboxes, or an async provider of it
            (``AgentService.runtime``); ``None``: Docker over the executor, opened on first use
            and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        executor: Executor,
        settings: Settings,
        *,
        busy: BusyProvider | None = None,
        http_client: httpx.AsyncClient | None = None,
        redactor: Redactor | None = None,
        runtime: Runtime | RuntimeProvider | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.root = normalize_root(settings.workspaces_root)
        self.redactor = redactor or Redactor(settings.secrets())
        self.git = Git(executor, settings, self.redactor)
        self.github = GitHubClient(settings, http_client=http_client, redactor=self.redactor)
        self.registry = OriginRegistry(executor, settings)
        self.mirrors = Mirrors(executor, settings, self.git)
        self.reports = ReportCache(executor, settings)
        self._busy = busy
        self._locks: dict[str, asyncio.Lock] = {}
        self._given_runtime = runtime
        self._own_runtime: Runtime | None = None
        self._runtime_lock = asyncio.Lock()
        self.sandbox = GitSandbox(self._runtime, settings, self.redactor)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Docker connection this service opened itself (if any)."""
        if self._own_runtime is not None:
            await self._own_runtime.aclose()
            self._own_runtime = None

    async def _runtime(self) -> Runtime:
        given = self._given_runtime
        if isinstance(given, Runtime):
            return given
        if given is not None:
            return await given()
        async with self._runtime_lock:
            if self._own_runtime is None:
                from agentkit.runtimes.docker_engine import open_docker

                docker = await open_docker(self.executor, self.settings)
                self._own_runtime = DockerRuntime(
                    docker, socket=self.settings.docker_socket, settings=self.settings
                )
            return self._own_runtime

    # --- helpers ----------------------------------------------------------------------------

    def resolve(self, name_or_path: str) -> WorkspacePath:
        """Validate a workspace name (or a ``workspace_path`` under the root) and confine it."""
        return resolve_workspace(self.root, name_or_path)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _existing(self, name: str) -> tuple[WorkspacePath, str]:
        """The workspace and its real host path: a directory directly under the real root.
        A symbolic link (even to another workspace) is refused."""
        ws = self.resolve(name)
        out = await self.executor.run(
            ["sh", "-c", _LOCATE, "locate-workspace", self.root, ws.name], idempotent=True
        )
        real = out.stdout_text().strip()
        if out.exit_status == 3:
            raise PermissionDeniedError(
                f"workspace {ws.name!r} is a symbolic link; agentkit refuses to follow it. "
                "Delete the link on the host or use another workspace (see list_workspaces)"
            )
        if not out.ok or not real.startswith("/"):
            raise NotFoundError(
                f"workspace {ws.name!r} does not exist; call list_workspaces to see the "
                "workspaces, or create_workspace / clone_repo to make it"
            )
        return ws, real

    async def _ensure_absent(self, ws: WorkspacePath) -> None:
        if await self.executor.exists(ws.path) or await self._is_link(ws.path):
            raise ConflictError(
                f"workspace {ws.name!r} already exists at {ws.path}; choose another name, "
                "or delete_workspace it first"
            )

    async def _is_link(self, path: str) -> bool:
        return (await self.executor.run(["test", "-L", path], idempotent=True)).ok

    async def _remove(self, path: str) -> None:
        await self.executor.run(["rm", "-rf", "--one-file-system", "--", path])

    async def _hand_to_sandbox(self, real: str) -> None:
        """Give the workspace to the sandbox's uid (files the host or another user wrote), never
        following a symbolic link, only where ownership is wrong (as spawn does:
        ``launch.HAND_OVER``). Only while no agent works in it. Best effort."""
        from agentkit.containers.launch import HAND_OVER

        out = await self.executor.run(
            ["sh", "-c", HAND_OVER + 'hand_over "$1" "$2"', "hand-over", real, SANDBOX_UID],
            idempotent=True,
        )
        if not out.ok:
            logger.debug("could not hand %s to %s: %s", real, SANDBOX_UID, out.stderr_text())

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
        """Refuse to change a workspace an agent is working in; also when that cannot be told
        (fails closed).

        An agent that has just finished is waited for a moment: the engine's container list
        can show it running for a fraction of a second after ``wait_for_claude_agent`` returned.
        """
        delay = 0.05
        while True:
            try:
                busy = await self.busy_paths()
            except Exception as exc:
                raise ConflictError(
                    f"cannot check whether an agent is working in {ws.name!r} "
                    f"({self.redactor.redact(str(exc))[:300]}); not going to {action} it. "
                    "Retry once the agent runtime (Docker) answers again."
                ) from None
            if not self._is_busy(ws, busy):
                return
            if delay > BUSY_GRACE:
                break
            await asyncio.sleep(delay)
            delay *= 2
        raise ConflictError(
            f"cannot {action} workspace {ws.name!r} while an agent is working in it. Wait for "
            "it (wait_for_claude_agent) or stop it (stop_claude_agent), then retry."
        )

    async def _remote(self, name: str) -> str | None:
        origin = await self.registry.get(name)
        return strip_url_credentials(origin.url) if origin is not None else None

    # --- info / list --------------------------------------------------------------------------

    async def _busy_or_unknown(self) -> set[str] | None:
        """:meth:`busy_paths`, or ``None`` (logged) when it cannot be told."""
        try:
            return await self.busy_paths()
        except Exception as exc:
            logger.warning("cannot tell which workspaces are busy: %s", exc)
            return None

    async def info(self, name: str, *, busy: set[str] | None = None) -> WorkspaceInfo:
        """Branch, pinned remote, dirty state, last commit and agent status of one workspace."""
        ws, real = await self._existing(name)
        known = await self._busy_or_unknown() if busy is None else busy
        return await self._info(ws, real, known, await self._remote(ws.name))

    async def _info(
        self,
        ws: WorkspacePath,
        real: str,
        busy: set[str] | None,
        remote: str | None,
        *,
        cached: WorkspaceInfo | None = None,
        stamped: bool | None = None,
    ) -> WorkspaceInfo:
        """:meth:`info` with the busy paths (``None``: unknown) and the shown remote already
        known, and maybe a reusable report (see :mod:`~agentkit.workspaces.listcache`).
        ``stamped``: whether the caller already stamped this run (``None``: stamp it here)."""
        running = None if busy is None else self._is_busy(ws, busy)
        if running:
            # its git state is in flux while an agent works: shown once it is done
            return WorkspaceInfo(ws.name, ws.path, remote=remote, dirty=None, agent_running=True)
        if cached is not None:
            return dataclasses.replace(cached, remote=remote, agent_running=running)
        if stamped is None:
            stamped = ws.name in await self.reports.begin([ws.name])
        try:
            result = await self.sandbox.run(real, "info", writable=False, timeout=REPORT_TIMEOUT)
        except ToolError as exc:
            return WorkspaceInfo(
                ws.name, ws.path, remote=remote, agent_running=running, error=str(exc)
            )
        report = workspace_report(ws.name, ws.path, result, remote=remote, agent_running=running)
        if stamped:
            try:
                await self.reports.store(ws.name, report)
            except Exception as exc:  # a cache: never fail the listing for it
                logger.debug("report of %s not kept: %s", ws.name, exc)
        return report

    async def list(self) -> builtins.list[WorkspaceInfo]:
        """Every workspace under the root (symbolic links are not workspaces), sorted by name.
        Workspaces changed since their last report get one sandbox each, run concurrently."""
        out = await self.executor.run(
            ["sh", "-c", _LIST, "list-workspaces", self.root], idempotent=True
        )
        if out.exit_status == 2:
            return []
        lines = out.stdout_text().splitlines()
        if not out.ok or not lines:
            raise ToolError(
                f"cannot list {self.root}: {self.redactor.redact(out.stderr_text().strip())}"
            )
        real_root = lines[0]
        spaces = {
            name: self.resolve(name)
            for name in sorted(posixpath.basename(p) for p in lines[1:])
            if is_valid_workspace_name(name)
        }
        busy = await self._busy_or_unknown()  # once for all: None (unknown) is not asked again
        idle = {n: ws.path for n, ws in spaces.items() if not busy or not self._is_busy(ws, busy)}
        origins, cached = await asyncio.gather(
            self.registry.get_many(builtins.list(spaces)),
            self.reports.fresh(real_root, idle),
        )
        # one host command stamps every sandbox run of this listing (not one each)
        stamped = await self.reports.begin([n for n in idle if n not in cached])
        return builtins.list(
            await asyncio.gather(
                *(
                    self._info(
                        ws,
                        f"{real_root}/{n}",
                        busy,
                        strip_url_credentials(origins[n].url) if n in origins else None,
                        cached=cached.get(n),
                        stamped=n in stamped,
                    )
                    for n, ws in spaces.items()
                )
            )
        )

    # --- origins ------------------------------------------------------------------------------

    async def origin(self, workspace_name: str) -> Origin | None:
        """The pinned origin of a workspace (``None``: none pinned yet)."""
        return await self.registry.get(self.resolve(workspace_name).name)

    async def set_origin(self, workspace_name: str, url: str) -> Origin:
        """Pin (or change) the origin ``push_workspace`` pushes to: the explicit, validated way
        to change it (the workspace's own ``.git/config`` is never consulted)."""
        ws, _ = await self._existing(workspace_name)
        repo, _target = await self.check_origin(url)
        async with self._lock(ws.name):
            origin = await self.registry.set(ws.name, repo.url, source="set_origin")
        logger.info("origin of workspace %s set to %s", ws.name, strip_url_credentials(repo.url))
        return origin

    async def check_origin(self, url: str) -> tuple[RepoURL, CloneTarget]:
        """Validate an origin to pin or push to with the same rules as a clone source
        (``AGENTKIT_GIT_ALLOW``, ssh only with ``AGENTKIT_GIT_SSH_HOST_KEYS``); the target's
        git options keep the connection on the checked addresses."""
        repo = parse_repo_url(url, github_web_url(self.settings))
        return repo, await check_destination(repo, self.settings, self._resolve)

    async def check_chosen_origin(self, url: str) -> tuple[RepoURL, CloneTarget]:
        """:meth:`check_origin` for an origin a *tool call* picks (``origin_url``): when
        ``AGENTKIT_GITHUB_OWNER`` is set, the token is only ever pointed at that owner's
        repositories, so a model cannot aim pushes at any repository the token can write."""
        repo, target = await self.check_origin(url)
        owner = self.settings.github_owner
        if owner and repo.uses_token:
            path_owner = urlsplit(repo.url).path.strip("/").split("/", 1)[0]
            if path_owner.lower() != owner.lower():
                raise PermissionDeniedError(
                    f"origin_url {repo.shown} is not a repository of {owner!r} "
                    "(AGENTKIT_GITHUB_OWNER): the token is only pointed at that owner's "
                    "repositories; pick one there, or clone_repo the repository instead"
                )
        return repo, target

    # --- clone / create -----------------------------------------------------------------------

    async def clone(
        self,
        repo_url: str,
        workspace_name: str | None = None,
        *,
        branch: str | None = None,
        depth: int | None = None,
    ) -> WorkspaceInfo:
        """Clone ``repo_url`` into a new workspace (name defaults from the URL), through the
        workspace's clean mirror (see :mod:`agentkit.workspaces.making`)."""
        return await clone_workspace(self, repo_url, workspace_name, branch, depth)

    async def _prepare(self, ws: WorkspacePath) -> str:
        """Make the workspace directory for the sandbox's uid (never through a symlink)."""
        from agentkit.containers.launch import prepare_workspace

        return await prepare_workspace(self.executor, self.settings, ws.name)

    async def _discard(self, ws: WorkspacePath) -> None:
        """Undo a half-made workspace: its directory, mirror, registry entry and report."""
        await self._remove(ws.path)
        await self.mirrors.remove(ws.name)
        await self.registry.forget(ws.name)
        await self.reports.forget(ws.name)

    async def _resolve(self, host: str) -> builtins.list[str]:
        """The addresses the agent host resolves ``host`` to (where git will connect from)."""
        out = await self.executor.run(["getent", "ahosts", "--", host], idempotent=True, timeout=30)
        return parse_getent(out.stdout_text()[:65536]) if out.ok else []

    async def create(
        self,
        workspace_name: str,
        *,
        create_github_repo: bool = False,
        repo_visibility: str = "private",
        origin_url: str | None = None,
    ) -> tuple[WorkspaceInfo, CreatedRepo | None]:
        """``git init`` a new workspace (branch ``main``) in the sandbox; optionally create a
        GitHub repo, or pin an existing ``origin_url``, as the origin push_workspace uses.

        The GitHub repository is created first: if that fails, nothing is made on the host.
        """
        return await create_workspace(
            self, workspace_name, create_github_repo, repo_visibility, origin_url
        )

    # --- push / branches ----------------------------------------------------------------------

    async def push(
        self,
        workspace_name: str,
        commit_message: str,
        *,
        branch: str | None = None,
        origin_url: str | None = None,
    ) -> PushResult:
        """Commit everything (if anything changed) in the sandbox and push the branch from the
        workspace's clean mirror to its pinned origin (see :mod:`agentkit.workspaces.pushing`).

        ``origin_url`` pins the origin of a workspace that has none yet; it never changes a
        pinned one (use :meth:`set_origin`)."""
        return await push_workspace(self, workspace_name, commit_message, branch, origin_url)

    async def create_branch(
        self, workspace_name: str, branch_name: str, *, from_ref: str | None = None
    ) -> BranchResult:
        """Create ``branch_name`` (at ``from_ref`` or HEAD) and switch the workspace to it."""
        return await create_branch(self, workspace_name, branch_name, from_ref)

    # --- delete -------------------------------------------------------------------------------

    async def delete(self, workspace_name: str) -> WorkspacePath:
        """Remove a workspace directory (and its mirror and registry entry); refused while an
        agent is working in it, or when that cannot be told."""
        ws, real = await self._existing(workspace_name)
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
            out = await self.executor.run(["rm", "-rf", "--one-file-system", "--", real])
            if not out.ok:
                raise ToolError(
                    f"could not delete workspace {ws.name!r}: "
                    f"{self.redactor.redact(out.stderr_text().strip())[-500:]}"
                )
            await self.mirrors.remove(ws.name)
            await self.registry.forget(ws.name)
            await self.reports.forget(ws.name)
        logger.info("deleted workspace %s", ws.name)
        return ws


# $1 the root, $2 a validated workspace name. Prints the real path of "$root/$2"; exit 3 when it
# is a symbolic link, 2 when it is missing or not a directory.
_LOCATE = r"""root=$(realpath -e -- "$1") || exit 2
ws="$root/$2"
if [ -L "$ws" ]; then exit 3; fi
if [ ! -d "$ws" ]; then exit 2; fi
printf '%s\n' "$ws"
"""

# $1 the root: prints its real path, then every directory directly under it (never a symbolic
# link); exit 2 when the root does not exist.
_LIST = r"""root=$(realpath -e -- "$1") || exit 2
printf '%s\n' "$root"
find "$root" -mindepth 1 -maxdepth 1 -type d
"""
