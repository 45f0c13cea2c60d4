"""Git on workspaces runs in a sandbox: one short-lived hardened container per workspace per call.

Everything under a workspace is written by an agent, so it is hostile input: a ``.git/config``
(or a nested repository's, or a submodule's) can make git run any command, read other
repositories (``commondir``, ``alternates``) or send credentials elsewhere. Deny-lists cannot
keep up, so agentkit never runs git on the host in a workspace. Each workspace tool call runs
ONE container from the agent image (it already has git) that:

* runs as the agent user (uid 1001), all capabilities dropped, ``no-new-privileges``, an init
  process, pids and memory limits, network ``none``, and no secret in its environment;
* has a read-only root filesystem: what the workspace's configuration runs can write only to
  the workspace (when mounted writable), the exchange folder and a small ``/tmp`` in memory
  (``HOME``, the script's scratch files; :data:`TMPFS_BYTES`);
* mounts only that one workspace at ``/workspace`` (read-only for ``list_workspaces``), plus,
  when the call needs it, a fresh exchange folder at ``/exchange`` (the commit message in, the
  bundle out) or the workspace's clean mirror read-only at ``/mirror`` (clones);
* runs the constant script of :mod:`~agentkit.workspaces.sandbox_script`, whose output the
  controller parses bounded (:func:`parse_sections`) and treats as untrusted.

Containers are created through the :class:`~agentkit.runtimes.base.Runtime`
(create/start, wait, logs, remove only), so this works over SSH and on any runtime. They carry
``agentkit.managed-by=agentkit-git-sandbox`` and the root label: agentkit owns them, but they are
not agents (``list_claude_agents`` and the agent tools never see or touch them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from agentkit.config import Settings
from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT
from agentkit.errors import ToolError
from agentkit.redact import Redactor
from agentkit.runtimes.base import Mount, RunInfo, RunSpec, Runtime, Tmpfs, parse_memory
from agentkit.workspaces.sandbox_script import SCRIPT

__all__ = [
    "EXCHANGE",
    "LABEL_DEADLINE",
    "MIRROR",
    "REPORT_TIMEOUT",
    "SANDBOX_MANAGED_BY",
    "SANDBOX_UID",
    "TMPFS_BYTES",
    "WORKSPACE",
    "GitSandbox",
    "RuntimeProvider",
    "SandboxResult",
    "Section",
    "parse_sections",
    "sandbox_labels",
]

logger = logging.getLogger("agentkit.workspaces.sandbox")

SANDBOX_MANAGED_BY = "agentkit-git-sandbox"
#: label holding the unix time after which the controller that started a sandbox kills it
LABEL_DEADLINE = "agentkit.deadline"
#: seconds past its deadline after which a sandbox left behind is removed by any controller
SWEEP_GRACE = 60.0
SANDBOX_UID = "1001:1001"
WORKSPACE, EXCHANGE, MIRROR = "/workspace", "/exchange", "/mirror"
#: sandboxes running at once per service (the engine serialises much of create/start anyway)
CONCURRENCY = 16
PIDS_LIMIT = 256
#: the sandbox's /tmp (HOME and the script's scratch files, e.g. a 100,000-line git status):
#: memory-backed, counted against the sandbox's memory limit
TMPFS_BYTES = 64 << 20
#: stdout bytes read from one sandbox (sections are bounded in the script too)
MAX_STDOUT = 8 << 20
MAX_STDERR = 16 << 10
#: seconds a read-only report (list_workspaces) may take: one workspace whose configuration makes
#: git hang must not hold the whole listing for the full AGENTKIT_GIT_SANDBOX_TIMEOUT
REPORT_TIMEOUT = 60.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_.")

RuntimeProvider = Callable[[], Awaitable[Runtime]]


@dataclass(frozen=True, slots=True)
class Section:
    """One named piece of the sandbox's output: the exit status of the step and its bytes."""

    status: int
    data: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    def text(self, limit: int = 1 << 20) -> str:
        return self.data[:limit].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    exit_code: int
    sections: dict[str, Section] = field(default_factory=dict)
    stderr: str = ""

    def get(self, name: str) -> Section | None:
        return self.sections.get(name)

    def text(self, name: str, limit: int = 1 << 20) -> str:
        section = self.sections.get(name)
        return section.text(limit).strip() if section is not None else ""

    def error(self, step: str) -> str:
        """The last lines of the error output of ``step`` (untrusted: for display only)."""
        lines = [ln for ln in self.text(f"{step}.err", 64 << 10).splitlines() if ln.strip()]
        return "\n".join(line[:500] for line in lines[-6:])


def parse_sections(stdout: bytes) -> dict[str, Section]:
    """Parse ``@name status base64`` lines (anything else is ignored); linear and bounded by
    the input. A name seen twice keeps its first value."""
    sections: dict[str, Section] = {}
    for line in stdout.split(b"\n"):
        if not line.startswith(b"@"):
            continue
        parts = line[1:].split(b" ", 2)
        if len(parts) != 3:
            continue
        name = parts[0].decode("ascii", "replace")
        if not name or len(name) > 32 or not set(name) <= _NAME_CHARS or name in sections:
            continue
        status = parts[1]
        if not status.isdigit() or len(status) > 3:
            continue
        try:
            data = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        sections[name] = Section(int(status), data)
    return sections


def sandbox_labels(root: str) -> dict[str, str]:
    """The labels that select the git sandboxes of the agentkit root ``root``."""
    return {LABEL_MANAGED_BY: SANDBOX_MANAGED_BY, LABEL_ROOT: root}


def sandbox_env(settings: Settings) -> dict[str, str]:
    """The sandbox's environment: the commit identity and git's knobs, never a secret.

    ``GIT_CONFIG_*`` entries count as command-line configuration: they beat the workspace's
    ``.git/config`` (hooks off) and let uid 1001 read a workspace or mirror another uid owns.
    """
    entries = [("safe.directory", "*"), ("core.hooksPath", "/dev/null")]
    env = {
        "HOME": "/tmp",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_CEILING_DIRECTORIES": "/",
        "GIT_EDITOR": "true",
        "GIT_PAGER": "cat",
        "GIT_AUTHOR_NAME": settings.git_author_name,
        "GIT_AUTHOR_EMAIL": settings.git_author_email,
        "GIT_COMMITTER_NAME": settings.git_author_name,
        "GIT_COMMITTER_EMAIL": settings.git_author_email,
        "GIT_CONFIG_COUNT": str(len(entries)),
    }
    for i, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


class GitSandbox:
    """Runs the sandbox script for one workspace in a fresh container and parses its output.

    Args:
        runtime: async provider of the container runtime (connected on first use).
        settings: image, root, git identity, sandbox limits.
        redactor: applied to every text that leaves (error output).
    """

    def __init__(self, runtime: RuntimeProvider, settings: Settings, redactor: Redactor) -> None:
        self._runtime = runtime
        self.settings = settings
        self.redactor = redactor
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._image_ok = False
        self._swept = False

    def spec(
        self,
        name: str,
        workspace: str,
        mode: str,
        args: Sequence[str],
        *,
        writable: bool,
        exchange: str | None = None,
        mirror: str | None = None,
        deadline: float | None = None,
    ) -> RunSpec:
        """The hardened container spec of one sandbox run (pure; tested). ``deadline`` (unix
        time) travels with the sandbox as a label: the stale sweep of any controller goes by it,
        not by its own timeout."""
        mounts = [Mount(workspace, WORKSPACE, read_only=not writable)]
        if exchange is not None:
            mounts.append(Mount(exchange, EXCHANGE))
        if mirror is not None:
            mounts.append(Mount(mirror, MIRROR, read_only=True))
        return RunSpec(
            name=name,
            image=self.settings.image,
            labels={
                **sandbox_labels(self.settings.root),
                "agentkit.workspace": workspace,
                **({LABEL_DEADLINE: str(math.ceil(deadline))} if deadline is not None else {}),
            },
            env=sandbox_env(self.settings),
            mounts=tuple(mounts),
            entrypoint=("sh", "-c", SCRIPT, "agentkit-git"),
            command=(mode, *args),
            workdir=WORKSPACE,
            user=SANDBOX_UID,
            memory_bytes=parse_memory(self.settings.git_sandbox_memory),
            nano_cpus=1_000_000_000,
            pids_limit=PIDS_LIMIT,
            network="none",
            init=True,
            read_only_root=True,
            tmpfs=(Tmpfs("/tmp", TMPFS_BYTES),),
            # the engine itself keeps no more than we read: a flood cannot fill the host's disk
            log_max_bytes=MAX_STDOUT + MAX_STDERR,
        )

    async def run(
        self,
        workspace: str,
        mode: str,
        args: Sequence[str] = (),
        *,
        writable: bool = True,
        exchange: str | None = None,
        mirror: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the sandbox's own deadline
    ) -> SandboxResult:
        """Run ``mode`` on the workspace at host path ``workspace`` (already confined), killed
        after ``timeout`` seconds (default ``AGENTKIT_GIT_SANDBOX_TIMEOUT``)."""
        async with self._limit:
            runtime = await self._runtime()
            await self._prepare(runtime)
            name = f"agentkit-git-{int(time.time() * 1000)}-{secrets.token_hex(3)}"
            limit = min(timeout or math.inf, self.settings.git_sandbox_timeout)
            spec = self.spec(
                name,
                workspace,
                mode,
                args,
                writable=writable,
                exchange=exchange,
                mirror=mirror,
                deadline=time.time() + limit,
            )
            try:
                await runtime.create(spec)
                await runtime.start(name)
                try:
                    ended = await asyncio.wait_for(runtime.wait(name), limit)
                except TimeoutError:
                    raise ToolError(
                        f"git in the workspace took longer than {limit:g} s and was stopped "
                        "(AGENTKIT_GIT_SANDBOX_TIMEOUT); the repository may be very large or "
                        "its configuration may make git hang"
                    ) from None
                stdout, stderr = await self._output(runtime, name)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(runtime.remove(name, force=True))
        code = ended.exit_code if ended.exit_code is not None else -1
        result = SandboxResult(
            code, parse_sections(stdout), self.redactor.redact(stderr.decode("utf-8", "replace"))
        )
        if code != 0 and not result.sections:
            raise ToolError(
                f"the git sandbox failed (exit {code}): {result.stderr.strip()[-500:]}"
                if result.stderr.strip()
                else f"the git sandbox failed (exit {code}; out of memory or killed?)"
            )
        return result

    async def _output(self, runtime: Runtime, name: str) -> tuple[bytes, bytes]:
        """stdout (at most MAX_STDOUT) and the tail of stderr of a finished sandbox."""
        out = bytearray()
        err = bytearray()
        async with contextlib.aclosing(runtime.logs(name)) as chunks:  # closed on break too
            async for chunk in chunks:
                if chunk.stream == 2:
                    err += chunk.data
                    if len(err) > 2 * MAX_STDERR:
                        del err[:-MAX_STDERR]
                else:
                    out += chunk.data[: MAX_STDOUT - len(out)]
                    if len(out) >= MAX_STDOUT:
                        break
        return bytes(out), bytes(err[-MAX_STDERR:])

    async def _prepare(self, runtime: Runtime) -> None:
        """First use: the image is there (built like spawn builds it), and sandboxes a dead
        controller left behind are removed."""
        if not self._image_ok:
            await runtime.ensure_image(self.settings.image)
            self._image_ok = True
        if not self._swept:
            self._swept = True
            await self.sweep(runtime)

    async def sweep(self, runtime: Runtime) -> None:
        """Remove the sandboxes of this root that outlived their own deadline (label
        :data:`LABEL_DEADLINE`) by :data:`SWEEP_GRACE`: their controller died before removing
        them. A live sandbox of another controller (maybe with a longer timeout) is left
        alone. Cleanup only: never fails."""
        try:
            found = await runtime.list(dict(sandbox_labels(self.settings.root)))
        except Exception as exc:
            logger.debug("could not list old git sandboxes: %s", exc)
            return
        now = time.time()
        for info in found:
            if is_stale(info, now, self.settings.git_sandbox_timeout):
                with contextlib.suppress(Exception):
                    await runtime.remove(info.name, force=True)


def is_stale(info: RunInfo, now: float, timeout: float) -> bool:
    """Whether the sandbox ``info`` is past its deadline label by :data:`SWEEP_GRACE`. One
    without the label (made by an older agentkit) is judged by its age against ``timeout``."""
    label = info.labels.get(LABEL_DEADLINE, "")
    if label.isdigit() and len(label) <= 12:
        return int(label) + SWEEP_GRACE < now
    return (info.created_at or 0) + timeout + SWEEP_GRACE < now
