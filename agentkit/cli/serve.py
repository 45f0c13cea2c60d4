"""``agentkit serve``: the HTTP API and dashboard (``agentkit[serve]``)."""

from __future__ import annotations

import argparse

from rich.console import Console

from agentkit.cli.main import EXIT_OK
from agentkit.config import load_settings
from agentkit.errors import ConfigError

err = Console(stderr=True, highlight=False)


async def serve(args: argparse.Namespace) -> int:
    try:
        from agentkit.serve.server import serve as run_server
    except ImportError as exc:
        raise ConfigError(
            f"agentkit serve needs the serve extra ({exc.name} is missing): "
            "pip install 'claude-agentkit[serve]'"
        ) from None
    settings = load_settings()
    host = args.host
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"agentkit serve: dashboard and API on http://{shown}:{args.port}/ "
        + (
            "(no token: --insecure-localhost)"
            if args.insecure_localhost and settings.api_token is None
            else "(Authorization: Bearer $AGENTKIT_API_TOKEN)"
        ),
        markup=False,
    )
    await run_server(settings, host=host, port=args.port, insecure=args.insecure_localhost)
    return EXIT_OK
