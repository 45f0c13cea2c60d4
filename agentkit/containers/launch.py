"""How an agent container is launched: task checks, the workspace, the environment, the spec.

Functions over an executor, a runtime and settings, used by :class:`AgentService.spawn`:

* :func:`check_task` / :func:`check_timeout` - what a task and a timeout may be;
* :func:`check_network` - the configured network (never ``host`` or ``container:<id>``);
* :func:`prepare_workspace` - a workspace (one directory directly under the workspaces root,
  never a symlink) created and handed to the agent user in ONE host command (a constant script
  whose paths are positional arguments: nothing from the model is ever parsed as shell code);
* :func:`container_env` - the create request's environment (secrets never reach any argv);
* :func:`plan_launch` - the run spec (labels, env, mount, limits, hardening, node) and the run
  record's meta for one spawn.

:class:`~agentkit.containers.launcher.Launcher` puts these together for one spawn.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit.containers.models import LABEL_MANAGED_BY, LABEL_ROOT, MANAGED_BY
from agentkit.errors import ConfigError, PermissionDeniedError, ToolError
from agentkit.runtimes.base import Mount, RunSpec, parse_memory, parse_nofile
from agentkit.workspaces.names import resolve_workspace

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.base import Executor
    from agentkit.gateway.agents import GatewayAdditions
    from agentkit.redact import Redactor

__all__ = [
    "AGENT_UID",
    "HAND_OVER",
    "MAX_TASK_BYTES",
    "MAX_TIMEOUT_MS",
    "MIN_TIMEOUT_MS",
    "TASK_LABEL_CHARS",
    "WORKSPACE_TARGET",
    "SessionOptions",
    "check_ask",
    "check_budget",
    "check_network",
    "check_task",
    "check_timeout",
    "confine",
    "container_env",
    "has_credentials",
    "passthrough_secrets",
    "plan_launch",
    "prepare_workspace",
]

logger = logging.getLogger("agentkit.agents")

AGENT_UID = "1001:1001"
WORKSPACE_TARGET = "/workspace"
TASK_LABEL_CHARS = 200
MAX_TASK_BYTES = 100_000  # one env string may be at most 128 KiB on Linux
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 1_000, 24 * 3600 * 1000

# Shell function `hand_over DIR UID:GID`: gives DIR's tree to UID:GID without following any
# symbolic link - only where ownership is wrong. DIR, its direct entries and those of DIR/.git are
# checked (two readdirs: host git run in a workspace leaves its files in .git first); only if one
# of them is not the owner's is the whole tree walked, and only entries that are not the owner's
# are changed (a 100,000-file workspace the agent already owns costs two readdirs, not 100,000
# chowns, and keeps its files' ctimes).
HAND_OVER = r"""hand_over() {
  u=${2%%:*} g=${2##*:}
  if [ -n "$(find "$1" "$1/.git" -maxdepth 1 \( ! -uid "$u" -o ! -gid "$g" \) -print -quit \
    2> /dev/null)" ]; then
    find "$1" \( ! -uid "$u" -o ! -gid "$g" \) -exec chown -h -- "$2" {} +
  fi
}
"""

# $1 the workspace name (validated: one path component), $2 the workspaces root, $3 the agent
# uid:gid, $4 a run directory to create ("" = none). The workspace is exactly "$root/$1": it must
# not be a symbolic link (exit 3, printing the root and where it points), it is created if
# missing (exit 4 when it cannot be, e.g. a file of that name) and handed to the agent user
# (`hand_over`, above). Prints the root and the workspace. Every spawn runs it, so the usual
# case (root and workspace exist) starts few programs: the root is resolved by `cd -P` (the
# shell's PWD is then its physical path), existing directories are not created again.
_PREPARE_WORKSPACE = (
    HAND_OVER
    + r"""set -eu
unset CDPATH
if [ ! -d "$2" ]; then mkdir -p -- "$2"; fi
cd -P -- "$2"
root=$PWD
ws="$root/$1"
if [ -L "$ws" ]; then printf '%s\n%s\n' "$root" "$(realpath -m -- "$ws")"; exit 3; fi
if [ ! -d "$ws" ]; then mkdir -p -- "$ws" || exit 4; fi
if [ -L "$ws" ] || [ ! -d "$ws" ]; then printf '%s\n%s\n' "$root" "$ws"; exit 3; fi
hand_over "$ws" "$3"
if [ -n "$4" ]; then mkdir -p -m 700 -- "$4"; fi
printf '%s\n%s\n' "$root" "$ws"
"""
)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|AUTH|CREDENTIAL", re.IGNORECASE)
_AUTH_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


#: a permission rule Claude Code understands: a tool name, optionally with a specifier in
#: parentheses, e.g. ``Bash``, ``Bash(git push:*)``, ``WebFetch(domain:example.com)``
ASK_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}(\([^()\n\r\x00]{1,200}\))?$")
MAX_ASK_RULES = 32
SESSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Session-mode choices of one spawn: tools that ask first, a session to resume, the run
    continued (``parent``) and files put into the run before it starts (the saved session)."""

    ask: tuple[str, ...] = ()
    resume: str | None = None
    parent: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)


def check_ask(rules: Sequence[str]) -> tuple[str, ...]:
    """Refuse ask rules Claude Code would not understand (clear errors, nothing started)."""
    if isinstance(rules, str):
        rules = [rules]
    if len(rules) > MAX_ASK_RULES:
        raise ToolError(f"ask_tools takes at most {MAX_ASK_RULES} rules")
    out = []
    for rule in rules:
        if not isinstance(rule, str) or not ASK_RULE.fullmatch(rule.strip()):
            raise ToolError(
                f"ask_tools rule {rule!r} is not a permission rule: use a tool name such as "
                "Bash, Write, WebFetch, optionally with a pattern: Bash(git push:*)"
            )
        out.append(rule.strip())
    return tuple(out)


def check_task(task: str) -> None:
    """Refuse tasks that cannot reach the agent intact (empty, NUL, too long)."""
    if not isinstance(task, str) or not task.strip():
        raise ToolError("task is empty: describe what the agent should do")
    if "\x00" in task:
        raise ToolError("task contains a NUL character, which cannot be passed to an agent")
    if len(task.encode("utf-8")) > MAX_TASK_BYTES:
        raise ToolError(
            f"task is longer than {MAX_TASK_BYTES} bytes: put the details in a file in the "
            "workspace and refer to it"
        )


def check_timeout(timeout_ms: int) -> None:
    """Refuse a timeout outside ``MIN_TIMEOUT_MS..MAX_TIMEOUT_MS`` (or not an int)."""
    if not isinstance(timeout_ms, int) or not MIN_TIMEOUT_MS <= timeout_ms <= MAX_TIMEOUT_MS:
        raise ToolError(
            f"timeout must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS} milliseconds"
        )


def check_network(settings: Settings) -> str | None:
    """The configured network, refusing modes that would undo the container's isolation.

    ``host`` shares the host's network stack (its loopback services, e.g. the Docker API
    proxies or databases bound to 127.0.0.1); ``container:<id>`` joins another container's
    namespace. Both are refused: this is host configuration, hence :class:`ConfigError`.
    """
    network = settings.container_network
    if network is None:
        return None
    mode = network.strip().lower()
    if mode == "host" or mode.startswith("container:"):
        raise ConfigError(
            f"AGENTKIT_CONTAINER_NETWORK={network!r} is refused: agents must not share the "
            "host's or another container's network namespace; use bridge (the default), none, "
            "or a user-defined network"
        )
    return network


def check_budget(max_cost_usd: float | None, settings: Settings, gateway: bool) -> float | None:
    """The run's budget in US dollars (``AGENTKIT_MAX_COST_USD`` by default), checked."""
    if max_cost_usd is None:
        return settings.max_cost_usd if gateway else None
    if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, int | float):
        raise ToolError("max_cost_usd must be a number of US dollars, e.g. 2.5")
    if not max_cost_usd > 0:
        raise ToolError("max_cost_usd must be more than 0 (US dollars)")
    if not gateway:
        raise ToolError(
            "max_cost_usd needs the agent gateway, which meters the model requests: it is "
            "off here (AGENTKIT_GATEWAY=false or the in-memory runtime); spawn without it"
        )
    return float(max_cost_usd)


def has_credentials(settings: Settings) -> bool:
    """Whether Claude Code in the container will have credentials."""
    key = settings.anthropic_api_key
    if key is not None and key.get_secret_value():
        return True
    passed = settings.container_env_passthrough
    return any(name in passed and os.environ.get(name) for name in _AUTH_VARS)


def _passthrough(settings: Settings) -> dict[str, str]:
    """The pass-through variables' values (settings first, else the controller's environment)."""
    out: dict[str, str] = {}
    for name in settings.container_env_passthrough:
        value: str | None = None
        if name == "ANTHROPIC_BASE_URL":
            value = settings.anthropic_base_url
        value = value or os.environ.get(name)
        if value:
            out[name] = value
    return out


def passthrough_secrets(settings: Settings) -> list[str]:
    """Values of pass-through variables whose names look secret (KEY, TOKEN, SECRET, PASSWORD,
    AUTH, CREDENTIAL): a service redacts them from the start, also for agents it did not spawn."""
    return [v for name, v in _passthrough(settings).items() if _SECRET_NAME.search(name)]


def container_env(
    settings: Settings, redactor: Redactor, task: str, deadline: float
) -> dict[str, str]:
    """The create request's Env: secrets and pass-through values never reach any argv.

    Pass-through values whose names look secret are added to ``redactor``.
    """
    env: dict[str, str] = {}
    key = settings.anthropic_api_key
    if key is not None and key.get_secret_value():
        env["ANTHROPIC_API_KEY"] = key.get_secret_value()
    for name, value in _passthrough(settings).items():
        env[name] = value
        if _SECRET_NAME.search(name):
            redactor.add(value)
    env["AGENTKIT_TASK"] = task
    env["AGENTKIT_DEADLINE"] = str(math.ceil(deadline))
    return env


def plan_launch(
    settings: Settings,
    redactor: Redactor,
    *,
    run_id: str,
    task: str,
    workspace: str,
    image: str,
    timeout_ms: int,
    created: float,
    runtime_name: str,
    node: str | None = None,
    command: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    gateway: GatewayAdditions | None = None,
    session: SessionOptions | None = None,
) -> tuple[RunSpec, dict[str, Any]]:
    """The run spec and the run record's meta of one agent (deadline = created + timeout).

    The labels carry what a restarted controller needs (root, deadline, workspace, task); the
    spec runs the agent user with ``init``, the configured limits and network, on ``node``
    (the workspace's node on a cluster; ``None``: wherever the runtime puts its workspaces).
    With ``gateway`` (:meth:`agentkit.gateway.agents.AgentGateway.plan_run`) the real
    credentials are replaced by the run's token and the gateway's URLs, and the agent joins its
    network (``none`` on the socket transport: it gets the run's sockets folder, read-only, and
    the forwarder before its entrypoint).
    """
    network = check_network(settings)
    deadline = created + timeout_ms / 1000
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_ROOT: settings.root,
        "agentkit.task": task[:TASK_LABEL_CHARS],
        "agentkit.deadline": f"{deadline:.3f}",
        "agentkit.workspace": workspace,
        "agentkit.created": f"{created:.3f}",
        "agentkit.timeout-ms": str(timeout_ms),
    }
    env = container_env(settings, redactor, task, deadline)
    mounts = [Mount(workspace, WORKSPACE_TARGET)]
    if gateway is not None:
        env = gateway.apply(env)
        network = gateway.network
        mounts += [Mount(src, dst, read_only=True) for src, dst in gateway.mounts]
        command = gateway.command(command, entrypoint)
        entrypoint = gateway.entrypoint(entrypoint)
    session = session or SessionOptions()
    labels["agentkit.session"] = "1"
    env["AGENTKIT_SESSION"] = "1"
    if session.ask:
        env["AGENTKIT_ASK"] = "\n".join(session.ask)
    if session.resume:
        env["AGENTKIT_RESUME"] = session.resume
    if session.parent:
        labels["agentkit.parent"] = session.parent
    if extra_env:
        env.update(extra_env)
    spec = RunSpec(
        name=run_id,
        image=image,
        labels=labels,
        env=env,
        mounts=tuple(mounts),
        command=tuple(command) if command is not None else None,
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        workdir=WORKSPACE_TARGET,
        user=AGENT_UID,
        memory_bytes=parse_memory(settings.container_memory),
        nano_cpus=int(settings.container_cpus * 1e9),
        pids_limit=settings.container_pids,
        nofile=parse_nofile(settings.container_nofile),
        network=network,
        init=True,
        node=node,
        open_stdin=True,
    )
    meta = {
        "id": run_id,
        "task": task[:TASK_LABEL_CHARS],
        "workspace": workspace,
        "created": created,
        "deadline": deadline,
        "timeout_ms": timeout_ms,
        "image": image,
        "runtime": runtime_name,
        "limits": {
            "memory": settings.container_memory,
            "cpus": settings.container_cpus,
            "pids": settings.container_pids,
            "nofile": settings.container_nofile,
        },
        "network": network or "bridge",
        "node": node,
        "parent": session.parent,
        "resumed_session": session.resume,
        "ask_tools": list(session.ask),
    }
    if gateway is not None:
        meta.update(gateway.meta)
    return spec, meta


async def prepare_workspace(
    executor: Executor, settings: Settings, workspace_path: str, *, run_dir: str = ""
) -> str:
    """Resolve ``workspace_path`` to a workspace directly under the workspaces root.

    ``workspace_path`` is a workspace name or an absolute path ``<root>/<name>``
    (:func:`~agentkit.workspaces.names.resolve_workspace`): nested paths, ``..`` and paths
    outside the root are refused before anything touches the host. The directory is created if
    missing and handed to the agent user (uid 1001); a workspace that is a symbolic link is
    refused. One host command; ``run_dir`` (a run record directory) is created by the same
    command. Returns the host path.

    What the caller got wrong is a :class:`ToolError` (a message the model can act on); only a
    host that cannot do this at all (e.g. the host user may not chown) is a :class:`ConfigError`.
    """
    root = settings.workspaces_root
    name = resolve_workspace(root, workspace_path).name
    made = await executor.run(
        ["sh", "-c", _PREPARE_WORKSPACE, "prepare-workspace", name, root, AGENT_UID, run_dir]
    )
    lines = made.stdout_text().splitlines()
    problem = made.stderr_text().strip()[-300:]
    if made.exit_status == 3 and len(lines) == 2:
        confine(lines[1], lines[0], workspace_path)
        raise PermissionDeniedError(
            f"workspace {name!r} is a symbolic link or not a directory on the host: use "
            "another workspace name (see list_workspaces)"
        )
    if made.exit_status == 4:  # the name is taken by something else: the caller's to fix
        raise ToolError(
            f"cannot create workspace {name!r} under {root}: {problem}; use another "
            "workspace name (see list_workspaces)"
        )
    if not made.ok or len(lines) != 2:  # e.g. the host user may not chown: host setup
        raise ConfigError(
            f"cannot create {root}/{name} and hand it to the agent user {AGENT_UID}: "
            f"{problem} (the host user must be root or own it)"
        )
    real_root, real = lines
    confine(real, real_root, workspace_path)  # and check the script's answer again
    return real


def confine(real: str, real_root: str, given: str) -> None:
    """Refuse ``real`` unless it lies strictly inside ``real_root`` (never ``/`` itself)."""
    if real_root in ("", "/") or not real.startswith(real_root.rstrip("/") + "/"):
        raise PermissionDeniedError(
            f"workspace_path {given!r} resolves to {real}, outside the workspaces root "
            f"{real_root}: use a workspace name (see list_workspaces) or a path under it"
        )
