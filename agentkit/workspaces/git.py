"""Git as argv through the executor: the same on this machine and over SSH.

How the GitHub token reaches git
--------------------------------
Only through the process environment of network commands (``clone``, ``fetch``, ``push``):
the executor's ``env=`` (never argv) carries ``AGENTKIT_GIT_TOKEN`` and
``AGENTKIT_GIT_TOKEN_ORIGIN``, and a *constant* credential helper given with ``-c`` prints the
token only when git asks for credentials for exactly that origin (``scheme://host[:port]``).
No input is ever interpolated into the helper; the token is never in a URL, an argv, a file or
``.git/config``, and every bit of git output that leaves this module goes through the Redactor.

Host git never runs in a workspace
----------------------------------
Workspaces are written by agents, so host git only ever runs on repositories agentkit owns: the
clean bare mirrors (:mod:`agentkit.workspaces.mirror`). Git inside workspaces runs in the
sandbox (:mod:`agentkit.workspaces.sandbox`). Host git still never runs hooks
(``core.hooksPath=/dev/null``), an fsmonitor, the ``ext::`` transport, submodule recursion or
any credential helper but ours.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from agentkit.config import Settings
from agentkit.containers.runtime import parse_memory
from agentkit.errors import ToolError
from agentkit.executors.base import CommandResult, Executor
from agentkit.redact import Redactor
from agentkit.workspaces.github import github_web_url

logger = logging.getLogger("agentkit.workspaces.git")

TOKEN_ENV = "AGENTKIT_GIT_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_ORIGIN_ENV = "AGENTKIT_GIT_TOKEN_ORIGIN"  # noqa: S105

#: The credential helper: a constant shell function (no input interpolated). Git runs it as
#: ``sh -c '<helper> get'`` and writes ``protocol=...`` / ``host=...`` lines on its stdin.
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || return 0; p=; h=; '
    'while IFS== read -r k v; do case "$k" in protocol) p=$v;; host) h=$v;; esac; done; '
    f'test -n "${TOKEN_ENV}" || return 0; '
    f'test "$p://$h" = "${TOKEN_ORIGIN_ENV}" || return 0; '
    "echo username=x-access-token; "
    f"printf 'password=%s\\n' \"${TOKEN_ENV}\"; }}; f"
)

DEFAULT_TIMEOUT = 120.0
NETWORK_TIMEOUT = 600.0


class GitError(ToolError):
    """A git command failed. ``stderr`` is already redacted."""

    def __init__(self, message: str, *, stderr: str = "", exit_status: int = 1) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.exit_status = exit_status


@dataclass(frozen=True, slots=True)
class GitOutput:
    """A finished git command with redacted text output."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL (default ports dropped), else ``None``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    port = parts.port
    if port is not None and not (
        (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
    ):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` is an http(s) URL on the origin of ``base`` (the only origin that is
    handed the token)."""
    origin = origin_of(base)
    return origin is not None and origin_of(url) == origin


class Git:
    """Runs git commands for workspaces through an executor."""

    def __init__(self, executor: Executor, settings: Settings, redactor: Redactor) -> None:
        self.executor = executor
        self.settings = settings
        self.redactor = redactor

    # --- plumbing -------------------------------------------------------------------------

    def _token(self) -> str | None:
        token = self.settings.github_token
        if token is None or not token.get_secret_value():
            return None
        return token.get_secret_value()

    def base_argv(self, cwd: str | None, *, auth: bool) -> list[str]:
        argv = [
            "git",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "push.recurseSubmodules=no",
            "-c",
            "submodule.recurse=false",
            "-c",
            "credential.helper=",
        ]
        if auth:
            argv += ["-c", f"credential.helper={CREDENTIAL_HELPER}"]
        if cwd is not None:
            # trust exactly this one directory (a mirror agentkit made)
            argv += ["-c", f"safe.directory={cwd}"]
        return argv

    def env(self, *, auth: bool) -> dict[str, str]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_EDITOR": "true",
            "GIT_PAGER": "cat",
            "LC_ALL": "C",
            "LANGUAGE": "C",
            "GIT_AUTHOR_NAME": self.settings.git_author_name,
            "GIT_AUTHOR_EMAIL": self.settings.git_author_email,
            "GIT_COMMITTER_NAME": self.settings.git_author_name,
            "GIT_COMMITTER_EMAIL": self.settings.git_author_email,
        }
        token = self._token()
        if auth and token:
            env[TOKEN_ENV] = token
            env[TOKEN_ORIGIN_ENV] = origin_of(github_web_url(self.settings)) or ""
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        auth: bool = False,
        stdin: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - passed to the executor
        check: bool = True,
        what: str | None = None,
    ) -> GitOutput:
        """Run ``git <args>`` (in ``cwd``); with ``check`` a failure raises :class:`GitError`."""
        argv = [*self.base_argv(cwd, auth=auth), *args]
        env = self.env(auth=auth)
        if cwd is not None:
            argv[1:1] = ["-C", cwd]
            # the mirror itself or nothing: never a repository above it
            env["GIT_CEILING_DIRECTORIES"] = posixpath.dirname(cwd.rstrip("/")) or "/"
        heap = parse_memory(self.settings.git_host_memory)
        if heap > 0:
            # Packs (from a workspace's bundle or a remote) declare object sizes: a 1 KB
            # delta can claim gigabytes. Host git gets a heap limit; malloc fails, git exits.
            argv = ["prlimit", f"--data={heap}", "--", *argv]
        limit = timeout or (NETWORK_TIMEOUT if auth else DEFAULT_TIMEOUT)
        logger.debug("git %s (cwd=%s)", " ".join(args[:3]), cwd)
        result: CommandResult = await self.executor.run(
            argv, env=env, stdin=stdin, timeout=limit, cwd=cwd
        )
        out = GitOutput(
            exit_status=result.exit_status,
            stdout=self.redactor.redact(result.stdout_text()),
            stderr=self.redactor.redact(result.stderr_text()),
        )
        if check and not out.ok:
            raise self.failure(out, what or f"git {args[0]}")
        return out

    def failure(self, out: GitOutput, what: str) -> GitError:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        detail = "\n".join(lines[-6:]) or f"exit status {out.exit_status}"
        return GitError(f"{what} failed: {detail}", stderr=out.stderr, exit_status=out.exit_status)
