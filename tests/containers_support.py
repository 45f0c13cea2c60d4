"""Helpers for the container tests and the benchmark: engine/image checks, the bridge address."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess

import aiodocker
import aiodocker.exceptions

DOCKER_SOCKET = os.environ.get("AGENTKIT_DOCKER_SOCKET", "/var/run/docker.sock")
AGENT_IMAGE = os.environ.get("AGENTKIT_IMAGE", "agentflow-claude-code:latest")
BASE_IMAGE = os.environ.get("AGENTKIT_TEST_BASE_IMAGE", "agentkit-base:bookworm")


async def docker_ok() -> bool:
    if not os.path.exists(DOCKER_SOCKET):
        return False
    try:
        async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
            await docker.version()
    except Exception:
        return False
    return True


async def image_ok(image: str) -> bool:
    try:
        async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
            await docker.images.inspect(image)
    except Exception:
        return False
    return True


async def bridge_gateway() -> str:
    """The host's address on Docker's default bridge (what containers use to reach it)."""
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "docker0"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout
        for word in out.split():
            if "/" in word and word[0].isdigit():
                return word.split("/")[0]
    except (OSError, subprocess.SubprocessError):
        pass
    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        net = await docker.networks.get("bridge")
        data = await net.show()
    for cfg in data.get("IPAM", {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
        if cfg.get("Subnet"):
            return str(next(ipaddress.ip_network(cfg["Subnet"]).hosts()))
    return "172.17.0.1"


def host_cmdlines() -> str:
    """Every process's argv on this machine, joined (to prove secrets are never in argv)."""
    parts: list[str] = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                parts.append(fh.read().replace(b"\0", b" ").decode("utf-8", "replace"))
        except OSError:
            continue
    return "\n".join(parts)


async def remove_containers_of_root(root: str) -> int:
    """Force-remove the containers a test's agentkit root created (cleanup after failures)."""
    import json

    async with aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}") as docker:
        rows = []
        for owner in ("agentkit", "agentkit-git-sandbox"):  # agents, and git sandboxes
            filters = json.dumps(
                {"label": [f"agentkit.managed-by={owner}", f"agentkit.root={root}"]}
            )
            rows += await docker.containers.list(all=True, filters=filters)
        for container in rows:
            try:
                await container.delete(force=True)
            except aiodocker.exceptions.DockerError as exc:
                if exc.status not in (404, 409):  # gone, or being removed already
                    raise
        # the root's gateway network (agentkit.gateway), once its members are gone
        ours = json.dumps({"label": ["agentkit.managed-by=agentkit", f"agentkit.root={root}"]})
        nets = await docker._query_json("networks", params={"filters": ours})
        for net in nets:
            # a member whose removal was already in progress (409 above) still holds an
            # endpoint for a moment: the network goes once it is gone (bounded)
            for attempt in range(50):
                try:
                    await docker._query_json(f"networks/{net['Id']}", method="DELETE")
                except aiodocker.exceptions.DockerError as exc:
                    if exc.status == 403 and "active endpoints" in str(exc) and attempt < 49:
                        await asyncio.sleep(0.2)
                        continue
                    if exc.status not in (404, 409):
                        raise
                break
        return len(rows)
