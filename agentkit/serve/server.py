"""Run the app with uvicorn: loopback by default, never without a token unless told to."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from agentkit.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn

    from agentkit.config import Settings

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "make_server", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
logger = logging.getLogger("agentkit.serve")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, has_token: bool, insecure: bool) -> None:
    """Refuse to serve without a token, and insecure mode anywhere but loopback."""
    if insecure and not is_loopback(host):
        raise ConfigError(
            f"--insecure-localhost serves without a token, so it only binds loopback; "
            f"{host!r} is not a loopback address (drop --host, or set AGENTKIT_API_TOKEN)"
        )
    if not has_token and not insecure:
        raise ConfigError(
            "AGENTKIT_API_TOKEN is not set: agentkit serve refuses to start without a token "
            "(or pass --insecure-localhost to try it on 127.0.0.1 only)"
        )


def make_server(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    insecure: bool = False,
) -> uvicorn.Server:
    """A configured (not started) uvicorn server for :func:`~agentkit.serve.create_app`."""
    import uvicorn

    from agentkit.serve.app import create_app

    has_token = settings.api_token is not None and bool(settings.api_token.get_secret_value())
    check_bind(host, has_token=has_token, insecure=insecure)
    app = create_app(settings, insecure=insecure and not has_token)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        loop="asyncio",  # the library's own loop everywhere (uvloop, if installed, is not used)
        http="auto",  # httptools (the serve extra) when importable: less CPU than h11
        ws="none",  # no WebSocket routes
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


async def serve(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    insecure: bool = False,
) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM and drains streams)."""
    server = make_server(settings, host=host, port=port, insecure=insecure)
    if not is_loopback(host):
        logger.warning("serving on %s: traffic is plain HTTP, put a TLS proxy in front of it", host)
    await server.serve()
