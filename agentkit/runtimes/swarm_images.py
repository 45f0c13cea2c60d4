"""How the agent image reaches every swarm node: pushed to a registry the nodes pull from.

With ``AGENTKIT_SWARM_REGISTRY`` set (``host:port`` of a Docker registry every node can reach,
e.g. Debian's ``docker-registry`` package on the manager), the image is tagged
``<registry>/<name>:<tag>`` on the manager and pushed there once per controller and image id;
services then name that reference, and a node pulls it on first use. Unset, the image must
already exist on the node that runs the agent (a node without it rejects the task, and the
agent ends ``failed`` saying so).

Registries on 127.0.0.0/8 are trusted by dockerd without TLS; any other plain-HTTP registry must
be listed in each node's ``insecure-registries``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import aiodocker
import aiohttp

from agentkit.errors import ToolError
from agentkit.runtimes.docker_engine import docker_errors

__all__ = ["push_image", "registry_ref", "split_ref"]

#: an empty credential: the registry needs none (dockerd requires the header for a push)
_NO_AUTH = base64.urlsafe_b64encode(b"{}").decode()


def split_ref(image: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); a digest or a registry port is not a tag."""
    if "@" in image:
        raise ToolError(f"image {image!r}: a digest reference cannot be pushed; use name:tag")
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def registry_ref(registry: str, image: str) -> str:
    """The reference nodes pull ``image`` by (``registry/name:tag``)."""
    name, tag = split_ref(image)
    first = name.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":  # already names a registry
        name = name.split("/", 1)[1] if "/" in name else name
    return f"{registry.rstrip('/')}/{name}:{tag}"


async def push_image(
    docker: aiodocker.Docker, image: str, registry: str, *, socket: str = "the Docker socket"
) -> str:
    """Tag ``image`` for ``registry`` and push it; returns the reference nodes pull."""
    ref = registry_ref(registry, image)
    repo, tag = split_ref(ref)
    with docker_errors(f"tag {image} as {ref}", socket):
        resp = await docker._do_query(
            f"images/{image}/tag", "POST", params={"repo": repo, "tag": tag}
        )
        await resp.read()
        resp.release()
    with docker_errors(f"push {ref}", socket):
        resp = await docker._do_query(
            f"images/{repo}/push",
            "POST",
            params={"tag": tag},
            headers={"X-Registry-Auth": _NO_AUTH},
            timeout=aiohttp.ClientTimeout(total=1800),
        )
        try:
            error = await _stream_error(resp)
        finally:
            resp.release()
    if error:
        raise ToolError(
            f"pushing {ref} to AGENTKIT_SWARM_REGISTRY={registry} failed: {error} "
            "(is the registry running and reachable from the manager?)"
        )
    return ref


async def _stream_error(resp: aiohttp.ClientResponse) -> str | None:
    """The first error in a push's JSON progress stream (``None``: it went through)."""
    async for line in resp.content:
        try:
            data: Mapping[str, Any] = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("error"):
            return str(data.get("error"))[:500]
    return None
