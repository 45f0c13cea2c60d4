"""Build the agent image on the target host through the Docker Engine API.

The build context is assembled in memory from the package data (installed wheel:
``agentkit/_data/docker`` and ``agentkit/_data/claude-settings.json``) or from the repository
(editable install: ``docker/`` and ``.claude/settings.json``), plus the extra CA certificates of
``AGENTKIT_EXTRA_CA_DIR``. It is sent as a tar to ``POST /build`` (classic builder) on whatever
host the ``aiodocker.Docker`` client reaches, so the same code builds locally and over SSH.

The image carries the label ``agentkit.inputs-hash``: a sha256 over the context files and the
build arguments. :func:`ensure_image` rebuilds only when that hash differs (or when forced).

Run ``python -m agentkit.containers.image --help`` for the command-line entry CI uses.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.resources
import io
import json
import re
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError, DockerStreamError

from agentkit.config import Settings
from agentkit.containers.docker import docker_errors, open_docker
from agentkit.errors import ImageBuildError, NotFoundError, RuntimeUnavailable

#: label on the image holding the sha256 of the build inputs
INPUTS_HASH_LABEL = "agentkit.inputs-hash"
#: name of the Dockerfile inside the build context
DOCKERFILE = "Dockerfile.claude-code"
ENTRYPOINT = "agent-entrypoint.sh"
SETTINGS = "claude-settings.json"
CERTS_DIR = "certs"

#: a progress callback gets one line of build output at a time (no trailing newline)
Progress = Callable[[str], object]

# Bump when the way inputs are hashed changes, so old images are rebuilt.
_HASH_SCHEME = b"agentkit-image-inputs/1\n"
# Lines of the failing step kept in ImageBuildError.log.
_MAX_LOG_LINES = 200


# --- sources and context ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildSources:
    """Where the files that make up the build context live on this machine."""

    docker_dir: Path
    settings_file: Path

    @property
    def dockerfile(self) -> Path:
        return self.docker_dir / DOCKERFILE

    @property
    def entrypoint(self) -> Path:
        return self.docker_dir / ENTRYPOINT


def find_build_sources() -> BuildSources:
    """Locate the Dockerfile, entrypoint and settings: package data first, then the repo.

    Raises:
        FileNotFoundError: neither layout has all the files (a broken install).
    """
    candidates: list[BuildSources] = []
    data = importlib.resources.files("agentkit") / "_data"
    if isinstance(data, Path):
        candidates.append(BuildSources(data / "docker", data / "claude-settings.json"))
    repo = Path(__file__).resolve().parents[2]
    candidates.append(BuildSources(repo / "docker", repo / ".claude" / "settings.json"))
    for sources in candidates:
        if (
            sources.dockerfile.is_file()
            and sources.entrypoint.is_file()
            and sources.settings_file.is_file()
        ):
            return sources
    looked = ", ".join(str(c.docker_dir) for c in candidates)
    raise FileNotFoundError(f"agent image sources ({DOCKERFILE}) not found; looked in {looked}")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """An in-memory build context: archive name -> (content, mode)."""

    files: Mapping[str, tuple[bytes, int]]
    dockerfile: str = DOCKERFILE

    def tar(self) -> bytes:
        """A deterministic, uncompressed tar of the files (sorted, mtime 0, root-owned)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs: set[str] = set()
            for name in sorted(self.files):
                parts = name.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755, 0))
                data, mode = self.files[name]
                tar.addfile(_tarinfo(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        return buf.getvalue()


def _tarinfo(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def collect_context(
    extra_ca_dir: Path | None = None, *, sources: BuildSources | None = None
) -> BuildContext:
    """Assemble the build context (blocking file reads: call it in a thread from async code).

    Certificates: every ``*.crt`` directly in the packaged ``docker/certs/`` folder and in
    ``extra_ca_dir``. A missing ``extra_ca_dir`` is a configuration error.
    """
    src = sources or find_build_sources()
    files: dict[str, tuple[bytes, int]] = {
        # Fixed modes: the hash must not depend on how a checkout or wheel set the bits.
        DOCKERFILE: (src.dockerfile.read_bytes(), 0o644),
        ENTRYPOINT: (src.entrypoint.read_bytes(), 0o755),
        SETTINGS: (src.settings_file.read_bytes(), 0o644),
        # Always present, so `COPY certs/` works with no certificates at all.
        f"{CERTS_DIR}/.keep": (b"", 0o644),
    }
    cert_dirs = [src.docker_dir / CERTS_DIR]
    if extra_ca_dir is not None:
        if not extra_ca_dir.is_dir():
            raise ImageBuildError(
                f"AGENTKIT_EXTRA_CA_DIR is not a folder: {extra_ca_dir} "
                "(point it at a folder of *.crt files or unset it)"
            )
        cert_dirs.append(extra_ca_dir)
    for folder in cert_dirs:
        if not folder.is_dir():
            continue
        for cert in sorted(folder.glob("*.crt")):
            if cert.is_file():
                files[f"{CERTS_DIR}/{cert.name}"] = (cert.read_bytes(), 0o644)
    return BuildContext(files)


def inputs_hash(context: BuildContext, buildargs: Mapping[str, str]) -> str:
    """sha256 over every context file (name, mode, content) and the build arguments."""
    h = hashlib.sha256(_HASH_SCHEME)
    h.update(f"dockerfile={context.dockerfile}\n".encode())
    for name in sorted(context.files):
        data, mode = context.files[name]
        h.update(f"file {name} {mode:o} {len(data)}\n".encode())
        h.update(data)
    h.update(json.dumps(dict(buildargs), sort_keys=True).encode())
    return h.hexdigest()


def build_args(settings: Settings, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build arguments from settings (``BASE_IMAGE``) plus explicit overrides."""
    args: dict[str, str] = {}
    if settings.base_image:
        args["BASE_IMAGE"] = settings.base_image
    args.update(overrides or {})
    return args


def dockerfile_default(name: str, sources: BuildSources | None = None) -> str | None:
    """The default value of ``ARG name=...`` in the Dockerfile (e.g. ``CLAUDE_CODE_VERSION``)."""
    src = sources or find_build_sources()
    for line in src.dockerfile.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().removeprefix("ARG ").partition("=")
        if line.strip().startswith("ARG ") and sep and key.strip() == name:
            return value.strip()
    return None


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


_STEP_LINE = re.compile(r"Step \d+/\d+ :|Successfully |building |built |image ")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentkit.containers.image",
        description="Build the agentkit agent image (only when its inputs changed).",
    )
    parser.add_argument("--tag", help="image name (default: AGENTKIT_IMAGE)")
    parser.add_argument("--base-image", help="BASE_IMAGE build argument (AGENTKIT_BASE_IMAGE)")
    parser.add_argument("--extra-ca-dir", type=Path, help="folder of *.crt (AGENTKIT_EXTRA_CA_DIR)")
    parser.add_argument(
        "--build-arg", action="append", default=[], metavar="K=V", help="extra build argument"
    )
    parser.add_argument("--force", action="store_true", help="build even if up to date")
    parser.add_argument(
        "--progress",
        choices=("all", "steps", "none"),
        default="all",
        help="build output to print: every line, only the Dockerfile steps, or nothing",
    )
    return parser.parse_args(argv)


async def _main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.tag:
        overrides["image"] = args.tag
    if args.base_image:
        overrides["base_image"] = args.base_image
    if args.extra_ca_dir:
        overrides["extra_ca_dir"] = args.extra_ca_dir
    settings = Settings(**overrides)
    extra: dict[str, str] = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"--build-arg expects K=V, got {item!r}", file=sys.stderr)
            return 2
        extra[key] = value

    def show(line: str) -> None:
        if args.progress == "all":
            print(line, flush=True)
        elif args.progress == "steps" and _STEP_LINE.match(line):
            print(_shorten(line, 160), flush=True)

    from agentkit.executors import make_executor

    try:
        async with make_executor(settings) as executor:
            docker = await open_docker(executor, settings)
            try:
                info = await ensure_image(
                    docker, settings, force=args.force, progress=show, buildargs=extra
                )
            finally:
                await docker.close()
    except ImageBuildError as exc:
        print(f"error: {exc}\n--- failing step output ---\n{exc.log}", file=sys.stderr)
        return 1
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(info.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
