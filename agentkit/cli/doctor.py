"""``agentkit doctor``: check settings, executor, Docker, the image and keys; say what to fix."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from agentkit.config import Settings, load_settings
from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.executors.base import Executor

console = Console(highlight=False)


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: a failed optional check is a warning, not a failure
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
            "optional": self.optional,
        }


def settings_checks(settings: Settings) -> list[Check]:
    where = (
        f"ssh {settings.ssh_user}@{settings.host}:{settings.ssh_port}"
        if settings.host
        else ("local machine")
    )
    checks = [
        Check("target host", True, where),
        Check("runtime", True, settings.runtime),
        Check("workspace root", True, settings.workspaces_root),
        Check(
            "ANTHROPIC_API_KEY",
            settings.anthropic_api_key is not None,
            "set" if settings.anthropic_api_key else "not set",
            "export ANTHROPIC_API_KEY=... or put it in .env (needed by `run`, `chat` and agents)",
        ),
        Check(
            "GITHUB_TOKEN",
            settings.github_token is not None,
            "set" if settings.github_token else "not set",
            "set GITHUB_TOKEN (or GH_TOKEN) for private clones, pushes and repo creation",
            optional=True,
        ),
    ]
    if settings.anthropic_base_url:
        checks.append(Check("ANTHROPIC_BASE_URL", True, settings.anthropic_base_url))
    return checks


async def host_checks(settings: Settings) -> list[Check]:
    from agentkit.executors import make_executor
    from agentkit.executors.diagnostics import diagnose
    from agentkit.runtimes.docker_engine import open_docker
    from agentkit.runtimes.image import ImageBuilder

    checks: list[Check] = []
    executor = make_executor(settings)
    try:
        diag = await diagnose(executor, docker_socket=settings.docker_socket)
        if not diag.ok:
            checks.append(
                Check(
                    "executor",
                    False,
                    f"{diag.executor}: {diag.error}",
                    "check AGENTKIT_HOST / AGENTKIT_SSH_* and the host key (docs/executors.md)",
                )
            )
            return checks
        checks.append(
            Check("executor", True, f"{diag.executor}, {diag.latency_ms_p50:.2f} ms round trip")
        )
        checks.append(
            Check(
                "git on host",
                diag.git.found,
                diag.git.version or "not found",
                "install git on the host (apt-get install git)",
            )
        )
        checks.append(
            Check(
                "docker engine",
                diag.docker_socket_reachable,
                f"{settings.docker_socket}: "
                + ("reachable" if diag.docker_socket_reachable else str(diag.docker_socket_error)),
                "install and start Docker on the host (apt-get install docker.io; dockerd &), "
                "or set AGENTKIT_DOCKER_SOCKET",
            )
        )
        if not diag.docker_socket_reachable:
            return checks
        docker = await open_docker(executor, settings)
        builder = ImageBuilder(docker, settings)
        try:
            if settings.runtime == "swarm":
                checks.append(await swarm_check(docker))
            info = await builder.inspect()
            expected = await builder.expected_hash()
            if settings.gateway:
                checks.extend(await gateway_checks(executor, settings, docker))
        finally:
            await docker.close()
        if info is None:
            checks.append(
                Check(
                    "agent image",
                    False,
                    f"{settings.image} not built",
                    "run `agentkit image build` (or it is built before the first spawn)",
                )
            )
        else:
            current = info.inputs_hash == expected
            checks.append(
                Check(
                    "agent image",
                    current,
                    info.summary() + ("" if current else " — inputs changed"),
                    "run `agentkit image build` to rebuild with the current Dockerfile/settings",
                )
            )
    except AgentkitError as exc:
        checks.append(Check("host", False, str(exc)))
    finally:
        await executor.aclose()
    return checks


async def swarm_check(docker: Any) -> Check:
    """With ``AGENTKIT_RUNTIME=swarm``: the engine must be a swarm manager."""
    from agentkit.runtimes.docker_engine import docker_errors
    from agentkit.runtimes.swarm import manager_problem

    with docker_errors("ask the Docker Engine about its swarm"):
        info = await docker._query_json("info")
    problem = manager_problem(info)
    swarm = info.get("Swarm") or {}
    detail = (
        f"manager of a swarm of {swarm.get('Nodes', '?')} node(s) (node {swarm.get('NodeID')})"
        if problem is None
        else problem.split(";")[0]
    )
    fix = None if problem is None else problem.split(";", 1)[-1].strip()
    return Check("swarm manager (AGENTKIT_RUNTIME=swarm)", problem is None, detail, fix)


async def gateway_checks(executor: Executor, settings: Settings, docker: Any) -> list[Check]:
    """The gateway image (current code?) and, if it runs, its health (optional checks: both
    are made on the first spawn)."""
    from agentkit.gateway.host import GatewayHost
    from agentkit.gateway.image import CODE_LABEL, GatewayImageBuilder, code_hash

    builder = GatewayImageBuilder(docker, settings)
    image = await builder.inspect()
    current = image is not None and image.labels.get(CODE_LABEL) == code_hash(
        await builder.context()
    )
    checks = [
        Check(
            "gateway image",
            current,
            f"{settings.gateway_image}: "
            + ("missing" if image is None else "current" if current else "runs other code"),
            "run `agentkit image build` (or it is built before the first spawn)",
            optional=True,
        )
    ]
    host = GatewayHost(executor, settings, docker)  # only its admin socket is used here
    logs = "docker service logs" if settings.runtime == "swarm" else "docker logs"
    try:
        health = await (await host.attach()).health()
        detail = f"{host.name}: up, squid {health.get('squid')}, {health.get('runs')} active runs"
        checks.append(
            Check(
                "gateway",
                health.get("squid") == "running",
                detail,
                f"`{logs} {host.name}` shows why squid is not running",
            )
        )
    except AgentkitError:
        checks.append(
            Check(
                "gateway",
                False,
                f"{host.name}: not running",
                "it starts with the first spawn",
                optional=True,
            )
        )
    finally:
        await host.aclose()
    return checks


async def doctor(args: argparse.Namespace) -> int:
    settings = load_settings()
    checks = settings_checks(settings) + await host_checks(settings)
    failed = [c for c in checks if not c.ok and not c.optional]
    if args.as_json:
        sys.stdout.write(
            json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2) + "\n"
        )
        return 1 if failed else 0
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[yellow]![/]" if check.optional else "[red]✗[/]"
        console.print(f"{mark} {check.name}: {check.detail}", soft_wrap=True)
        if not check.ok and check.fix:
            console.print(f"    [dim]fix:[/] {check.fix}", soft_wrap=True)
    console.print(
        "[green]all good[/]" if not failed else f"[red]{len(failed)} problem(s) to fix[/]"
    )
    return 1 if failed else 0
