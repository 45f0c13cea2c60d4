"""The agent image's build inputs: where the sources live, the build context and its hash.

The build context is assembled in memory from the package data (installed wheel:
``agentkit/_data/docker`` and ``agentkit/_data/claude-settings.json``) or from the repository
(editable install: ``docker/`` and ``.claude/settings.json``), plus the extra CA certificates of
``AGENTKIT_EXTRA_CA_DIR``, and sent to the engine as a deterministic tar.

:func:`inputs_hash` is a sha256 over the context files and the build arguments; the builder
(:mod:`agentkit.runtimes.image`) stores it as an image label and rebuilds only when it differs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentkit.errors import ImageBuildError

if TYPE_CHECKING:
    from agentkit.config import Settings

#: name of the Dockerfile inside the build context
DOCKERFILE = "Dockerfile.claude-code"
ENTRYPOINT = "agent-entrypoint.sh"
#: the gateway's socket transport inside the agent (``/usr/local/bin/agentkit-forward``)
FORWARD = "agentkit-forward.sh"
SETTINGS = "claude-settings.json"
CERTS_DIR = "certs"

# Bump when the way inputs are hashed changes, so old images are rebuilt.
_HASH_SCHEME = b"agentkit-image-inputs/1\n"


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

    @property
    def forward(self) -> Path:
        return self.docker_dir / FORWARD


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
            and sources.forward.is_file()
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
        FORWARD: (src.forward.read_bytes(), 0o755),
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
