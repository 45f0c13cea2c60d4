"""The gateway image, built like the agent image: through the Engine API, rebuilt on new inputs.

The build context is ``docker/Dockerfile.gateway``, the in-container modules of this package
(copied as ``agentkit_gateway/``) and the extra CA certificates. Like the agent image, an image
that exists is used as it is - unless it runs other gateway code: the label
``agentkit.gateway-code`` (a sha256 of the Dockerfile and the modules) must match this agentkit's,
so an upgrade that changes the gateway rebuilds it on first use, while settings that only change
how it is built (base image, certificates) do not force a rebuild (``agentkit image build
--force`` does). The base image is ``AGENTKIT_BASE_IMAGE`` (the agent image's), else Debian slim.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from agentkit.runtimes.build_context import (
    CERTS_DIR,
    BuildContext,
    collect_context,
    find_build_sources,
)
from agentkit.runtimes.image import ImageBuilder, ImageInfo, Progress

if TYPE_CHECKING:
    import aiodocker

    from agentkit.config import Settings

__all__ = [
    "CODE_LABEL",
    "DOCKERFILE",
    "IN_CONTAINER_MODULES",
    "GatewayImageBuilder",
    "code_hash",
    "gateway_context",
]

DOCKERFILE = "Dockerfile.gateway"
#: image label: sha256 of the gateway code it runs (Dockerfile + modules)
CODE_LABEL = "agentkit.gateway-code"
PACKAGE = "agentkit_gateway"
#: the modules that run inside the gateway container (standard library + aiohttp only)
IN_CONTAINER_MODULES = (
    "__init__.py",
    "__main__.py",
    "addresses.py",
    "admin.py",
    "budgets.py",
    "egress.py",
    "egress_record.py",
    "ledger.py",
    "metering.py",
    "peers.py",
    "pricing.py",
    "proxy.py",
    "proxy_auth.py",
    "request_body.py",
    "run_sockets.py",
    "server.py",
    "squid.py",
)


def gateway_context(extra_ca_dir: Path | None = None) -> BuildContext:
    """The gateway's build context (blocking file reads: call it in a thread)."""
    sources = find_build_sources()
    here = Path(__file__).resolve().parent
    files: dict[str, tuple[bytes, int]] = {
        DOCKERFILE: ((sources.docker_dir / DOCKERFILE).read_bytes(), 0o644),
    }
    for name in IN_CONTAINER_MODULES:
        files[f"{PACKAGE}/{name}"] = ((here / name).read_bytes(), 0o644)
    agent = collect_context(extra_ca_dir, sources=sources)  # the same certificates
    files.update({k: v for k, v in agent.files.items() if k.startswith(f"{CERTS_DIR}/")})
    return BuildContext(files, dockerfile=DOCKERFILE)


def code_hash(context: BuildContext) -> str:
    """sha256 over the Dockerfile and the gateway modules of ``context`` (not certificates)."""
    h = hashlib.sha256(b"agentkit-gateway-code/1\n")
    for name in sorted(context.files):
        if name == DOCKERFILE or name.startswith(f"{PACKAGE}/"):
            data, mode = context.files[name]
            h.update(f"{name} {mode:o} {len(data)}\n".encode())
            h.update(data)
    return h.hexdigest()


class GatewayImageBuilder(ImageBuilder):
    """:class:`ImageBuilder` for ``AGENTKIT_GATEWAY_IMAGE`` from :func:`gateway_context`."""

    def __init__(
        self, docker: aiodocker.Docker, settings: Settings, *, progress: Progress | None = None
    ) -> None:
        super().__init__(docker, settings, progress=progress)
        self.tag = settings.gateway_image

    async def context(self) -> BuildContext:
        return await asyncio.to_thread(gateway_context, self._settings.extra_ca_dir)

    async def ensure(self, *, force: bool = False) -> ImageInfo:
        """The image if it runs this agentkit's gateway code; else (or ``force``) built."""
        code = code_hash(await self.context())
        self._buildargs["AGENTKIT_GATEWAY_CODE"] = code
        if not force:
            current = await self.inspect()
            if current is not None and current.labels.get(CODE_LABEL) == code:
                return current
        return await super().ensure(force=force)


async def ensure_gateway_image(
    docker: aiodocker.Docker, settings: Settings, *, progress: Progress | None = None
) -> ImageInfo:
    """Build the gateway image if it is missing or its inputs changed."""
    return await GatewayImageBuilder(docker, settings, progress=progress).ensure()
