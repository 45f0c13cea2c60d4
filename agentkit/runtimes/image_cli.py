"""The command-line entry that builds the agent image: ``python -m agentkit.runtimes.image``.

CI runs it from ``.ci/build-images.sh``; it builds only when the image's inputs changed (see
:func:`agentkit.runtimes.image.ensure_image`) and prints a one-line summary. ``agentkit image
build`` is the main CLI's equivalent.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from agentkit.config import Settings
from agentkit.errors import ImageBuildError, RuntimeUnavailable
from agentkit.runtimes.docker_engine import open_docker
from agentkit.runtimes.image import _shorten, ensure_image

_STEP_LINE = re.compile(r"Step \d+/\d+ :|Successfully |building |built |image ")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentkit.runtimes.image",
        description="Build the agentkit agent image (only when its inputs changed).",
    )
    parser.add_argument("--tag", help="image name (default: AGENTKIT_IMAGE)")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="build the gateway image instead (AGENTKIT_GATEWAY_IMAGE, docker/Dockerfile.gateway)",
    )
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
        overrides["gateway_image" if args.gateway else "image"] = args.tag
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
                if args.gateway:
                    from agentkit.gateway.image import GatewayImageBuilder

                    builder = GatewayImageBuilder(docker, settings, progress=show)
                    info = await builder.ensure(force=args.force)
                else:
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
