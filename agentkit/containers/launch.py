"""How an agent container is launched: task checks, the workspace, the environment.

Pure functions over an executor and settings, used by :class:`AgentService.spawn`:

* :func:`check_task` - what a task may contain;
* :func:`prepare_workspace` - resolve a workspace on the host, confine it under the workspaces
  root, create it and hand it to the agent user, in ONE host command (a constant script whose
  paths are positional arguments: nothing from the model is ever parsed as shell code);
* :func:`container_env` - the create request's environment (secrets never reach any argv).
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING

from agentkit.errors import ConfigError, PermissionDeniedError, ToolError

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.executors.base import Executor
    from agentkit.redact import Redactor

__all__ = [
    "AGENT_UID",
    "MAX_TASK_BYTES",
    "MAX_TIMEOUT_MS",
    "MIN_TIMEOUT_MS",
    "TASK_LABEL_CHARS",
    "WORKSPACE_TARGET",
    "check_task",
    "confine",
    "container_env",
    "has_credentials",
    "prepare_workspace",
]

AGENT_UID = "1001:1001"
WORKSPACE_TARGET = "/workspace"
TASK_LABEL_CHARS = 200
MAX_TASK_BYTES = 100_000  # one env string may be at most 128 KiB on Linux
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS = 1_000, 24 * 3600 * 1000

# $1 the requested path, $2 the workspaces root, $3 the agent uid:gid, $4 a run directory to
# create ("" = none). Refuse anything outside the root before creating it; mkdir; resolve again
# (a symlink may have been swapped in) and refuse again; chown for the agent user. Prints the
# root and the workspace; exit 3 (printing both) when the path is outside.
_PREPARE_WORKSPACE = r"""set -eu
mkdir -p -- "$2"
root=$(realpath -e -- "$2")
pre=$(realpath -m -- "$1")
case "$pre" in "$root"/*) ;; *) printf '%s\n%s\n' "$root" "$pre"; exit 3 ;; esac
mkdir -p -- "$pre"
real=$(realpath -e -- "$pre")
case "$real" in "$root"/*) ;; *) printf '%s\n%s\n' "$root" "$real"; exit 3 ;; esac
chown -R -- "$3" "$real"
if [ -n "$4" ]; then mkdir -p -m 700 -- "$4"; fi
printf '%s\n%s\n' "$root" "$real"
"""
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_AUTH_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


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


def has_credentials(settings: Settings) -> bool:
    """Whether Claude Code in the container will have credentials."""
    key = settings.anthropic_api_key
    if key is not None and key.get_secret_value():
        return True
    passed = settings.container_env_passthrough
    return any(name in passed and os.environ.get(name) for name in _AUTH_VARS)


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
    for name in settings.container_env_passthrough:
        value: str | None = None
        if name == "ANTHROPIC_BASE_URL":
            value = settings.anthropic_base_url
        value = value or os.environ.get(name)
        if value:
            env[name] = value
            if _SECRET_NAME.search(name):
                redactor.add(value)
    env["AGENTKIT_TASK"] = task
    env["AGENTKIT_DEADLINE"] = str(math.ceil(deadline))
    return env


async def prepare_workspace(
    executor: Executor, settings: Settings, workspace_path: str, *, run_dir: str = ""
) -> str:
    """Resolve ``workspace_path`` on the host, confined under the workspaces root.

    A relative path is taken relative to the root. The directory is created if missing and
    handed to the agent user (uid 1001). Anything outside the root is refused before anything
    is created, and checked again after creation (symlinks). One host command; ``run_dir`` (a
    run record directory) is created by the same command. Returns the resolved host path.
    """
    root = settings.workspaces_root
    if not isinstance(workspace_path, str) or not workspace_path.strip():
        raise ToolError(f"workspace_path is empty: give a workspace name or a path under {root}")
    if "\x00" in workspace_path or "\n" in workspace_path:
        raise ToolError("workspace_path contains a control character")
    raw = workspace_path.strip()
    candidate = raw if raw.startswith("/") else f"{root}/{raw}"
    made = await executor.run(
        ["sh", "-c", _PREPARE_WORKSPACE, "prepare-workspace", candidate, root, AGENT_UID, run_dir]
    )
    lines = made.stdout_text().splitlines()
    if made.exit_status == 3 and len(lines) == 2:
        confine(lines[1], lines[0], workspace_path)
    if not made.ok or len(lines) != 2:
        raise ConfigError(
            f"cannot create {candidate} and hand it to the agent user {AGENT_UID}: "
            f"{made.stderr_text().strip()[-300:]} (the host user must be root or own it)"
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
