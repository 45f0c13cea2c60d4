"""Build the agent image on the target host through the Docker Engine API.

:class:`ImageBuilder` sends the build context (:mod:`agentkit.runtimes.build_context`) as a tar
to ``POST /build`` (classic builder) on whatever host the ``aiodocker.Docker`` client reaches, so
the same code builds locally and over SSH, streaming the build output to a progress callback and
keeping the failing step's output for :class:`~agentkit.errors.ImageBuildError`.

The image carries the label ``agentkit.inputs-hash``: a sha256 over the context files and the
build arguments. :func:`ensure_image` rebuilds only when that hash differs (or when forced).

The build-input names (``BuildSources``, ``collect_context``, ``inputs_hash``, ...) are
re-exported here, so ``agentkit.runtimes.image`` remains the one import for image building.

Run ``python -m agentkit.runtimes.image --help`` for the command-line entry CI uses.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError, DockerStreamError

from agentkit.config import Settings
from agentkit.errors import ImageBuildError, NotFoundError
from agentkit.runtimes.build_context import (
    CERTS_DIR,
    DOCKERFILE,
    ENTRYPOINT,
    SETTINGS,
    BuildContext,
    BuildSources,
    build_args,
    collect_context,
    dockerfile_default,
    find_build_sources,
    inputs_hash,
)
from agentkit.runtimes.docker_engine import docker_errors

__all__ = [
    "CERTS_DIR",
    "DOCKERFILE",
    "ENTRYPOINT",
    "INPUTS_HASH_LABEL",
    "SETTINGS",
    "BuildContext",
    "BuildSources",
    "ImageBuilder",
    "ImageInfo",
    "Progress",
    "build_args",
    "collect_context",
    "dockerfile_default",
    "ensure_image",
    "find_build_sources",
    "inputs_hash",
    "main",
]

#: label on the image holding the sha256 of the build inputs
INPUTS_HASH_LABEL = "agentkit.inputs-hash"

#: a progress callback gets one line of build output at a time (no trailing newline)
Progress = Callable[[str], object]

# Lines of the failing step kept in ImageBuildError.log.
_MAX_LOG_LINES = 200


# --- building -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The agent image as found or built."""

    tag: str
    id: str
    inputs_hash: str
    size: int
    built: bool
    claude_code_version: str | None = None
    duration: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.size / 1_000_000

    def summary(self) -> str:
        state = f"built in {self.duration:.1f}s" if self.built else "up to date"
        return (
            f"{self.tag}: {state}; id {self.id[:19]}; {self.size_mb:.0f} MB; "
            f"claude-code {self.claude_code_version or '?'}; inputs {self.inputs_hash[:12]}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "id": self.id,
            "inputs_hash": self.inputs_hash,
            "size": self.size,
            "built": self.built,
            "claude_code_version": self.claude_code_version,
            "duration": round(self.duration, 3),
        }

    def __str__(self) -> str:
        return self.summary()


class ImageBuilder:
    """Builds and inspects the agent image through one ``aiodocker.Docker`` client."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        settings: Settings,
        *,
        buildargs: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        sources: BuildSources | None = None,
    ) -> None:
        self._docker = docker
        self._settings = settings
        self._buildargs = build_args(settings, buildargs)
        self._progress = progress
        self._sources = sources
        self.tag = settings.image

    async def context(self) -> BuildContext:
        return await asyncio.to_thread(
            collect_context, self._settings.extra_ca_dir, sources=self._sources
        )

    async def expected_hash(self) -> str:
        """The inputs hash an image built now from the current sources and settings would carry."""
        return inputs_hash(await self.context(), self._buildargs)

    async def inspect(self) -> ImageInfo | None:
        """The image currently tagged ``settings.image``, or ``None`` if there is none."""
        try:
            with docker_errors(f"inspect image {self.tag}", self._settings.docker_socket):
                data = await self._docker.images.inspect(self.tag)
        except NotFoundError:
            return None
        return _info(self.tag, data, built=False)

    async def ensure(self, *, force: bool = False) -> ImageInfo:
        """Return the image, building it first if missing, outdated (hash differs) or forced."""
        context = await self.context()
        digest = inputs_hash(context, self._buildargs)
        try:
            async with _lock_for(self.tag):
                if not force:
                    current = await self.inspect()
                    if current is not None and current.inputs_hash == digest:
                        await self._emit(f"image {self.tag} is up to date ({digest[:12]})")
                        return current
                return await self._build(context, digest)
        except _ProgressFailed as exc:
            raise exc.original from exc.original.__cause__

    async def build(self) -> ImageInfo:
        """Build unconditionally (the layer cache still applies)."""
        return await self.ensure(force=True)

    async def _emit(self, line: str) -> None:
        if self._progress is None:
            return
        try:
            result = self._progress(line)
            if isinstance(result, Awaitable):
                await result
        except Exception as exc:
            # Not the engine's fault: keep it away from the Docker error mapping.
            raise _ProgressFailed(exc) from exc

    async def _build(self, context: BuildContext, digest: str) -> ImageInfo:
        await self._emit(f"building {self.tag} (inputs {digest[:12]}) ...")
        started = time.monotonic()
        archive = await asyncio.to_thread(context.tar)
        step = _StepLog()
        try:
            with docker_errors(f"build image {self.tag}", self._settings.docker_socket):
                await self._stream_build(context, digest, archive, step)
        except ImageBuildError as exc:
            step.tail_flush()
            where = _shorten(step.current or "the start", 120)
            log = "\n".join([*step.lines, exc.log])
            hint = ""
            if _TLS_TRUST_FAILURE.search(log):
                hint = (
                    " (TLS trust failure: behind a TLS-intercepting proxy, set "
                    "AGENTKIT_EXTRA_CA_DIR to a folder holding its CA certificate as *.crt)"
                )
            raise ImageBuildError(
                f"building {self.tag} failed at {where}: {_shorten(exc.args[0], 400)}{hint}",
                log=log.strip(),
            ) from exc.__cause__
        await self._emit(f"built {self.tag} in {time.monotonic() - started:.1f}s")
        with docker_errors(f"inspect image {self.tag}", self._settings.docker_socket):
            data = await self._docker.images.inspect(self.tag)
        return _info(self.tag, data, built=True, duration=time.monotonic() - started)

    async def _stream_build(
        self, context: BuildContext, digest: str, archive: bytes, step: _StepLog
    ) -> None:
        try:
            stream = self._docker.images.build(
                fileobj=io.BytesIO(archive),
                encoding="identity",
                path_dockerfile=context.dockerfile,
                tag=self.tag,
                buildargs=self._buildargs,
                labels={INPUTS_HASH_LABEL: digest},
                rm=True,
                forcerm=True,
                stream=True,
            )
            async for item in stream:
                for line in step.feed(item):
                    await self._emit(line)
        except DockerStreamError as exc:
            # A failing step: the message is the step's error, the log its output.
            raise ImageBuildError(str(exc.message), log=str(exc.message)) from exc
        except DockerError as exc:
            if exc.status == 900:  # cannot connect: docker_errors makes it RuntimeUnavailable
                raise
            # The engine refused the build before running a step (bad Dockerfile, bad args).
            raise ImageBuildError(str(exc.message).strip(), log=str(exc.message)) from exc


async def ensure_image(
    docker: aiodocker.Docker,
    settings: Settings,
    *,
    force: bool = False,
    progress: Progress | None = None,
    buildargs: Mapping[str, str] | None = None,
) -> ImageInfo:
    """Make sure ``settings.image`` exists on the Docker host and matches the current inputs."""
    builder = ImageBuilder(docker, settings, buildargs=buildargs, progress=progress)
    return await builder.ensure(force=force)


# --- helpers ------------------------------------------------------------------------------------


class _ProgressFailed(Exception):
    """The caller's progress callback raised; carries its exception past the error mapping."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


_locks: dict[tuple[int, str], asyncio.Lock] = {}


def _lock_for(tag: str) -> asyncio.Lock:
    # One build per tag at a time within a process (per event loop: a lock is bound to one);
    # concurrent ensure() calls wait, then find the fresh image up to date.
    key = (id(asyncio.get_running_loop()), tag)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


def _info(tag: str, data: Mapping[str, Any], *, built: bool, duration: float = 0.0) -> ImageInfo:
    labels = (data.get("Config") or {}).get("Labels") or {}
    return ImageInfo(
        tag=tag,
        id=str(data.get("Id", "")),
        inputs_hash=str(labels.get(INPUTS_HASH_LABEL, "")),
        size=int(data.get("Size") or 0),
        built=built,
        claude_code_version=labels.get("agentkit.claude-code-version"),
        duration=duration,
        labels=dict(labels),
    )


_TLS_TRUST_FAILURE = re.compile(
    r"SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT|unable to get local issuer certificate"
    r"|certificate verify failed|self[- ]signed certificate"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StepLog:
    """Splits the build stream into lines and remembers the output of the current step."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.lines: list[str] = []
        self._partial = ""

    def feed(self, item: Mapping[str, Any]) -> list[str]:
        text = item.get("stream")
        if not isinstance(text, str):
            status = item.get("status")
            return [str(status)] if isinstance(status, str) else []
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        out: list[str] = []
        for raw in complete:
            line = _ANSI.sub("", raw).rstrip("\r")
            if line.startswith("Step ") and " : " in line:
                self.current = line
                self.lines = [line]
            else:
                self.lines.append(line)
                del self.lines[1 : max(1, len(self.lines) - _MAX_LOG_LINES)]
            out.append(line)
        return out

    def tail_flush(self) -> None:
        if self._partial:
            self.lines.append(self._partial)
            self._partial = ""


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m agentkit.runtimes.image``: the CLI in :mod:`agentkit.runtimes.image_cli`."""
    from agentkit.runtimes.image_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
