"""`create_app`: the ``agentkit serve`` ASGI application (FastAPI) over ``connect()``'s services.

Layers, outermost first: security headers, unexpected errors -> 500 (redacted log), local-only
checks (without a token), bearer auth (deny by default), body-size limit, then FastAPI's routes
with the error handlers of :mod:`agentkit.serve.errors`. Embedding it in another ASGI app works
too (``app.mount``); pass ``connection=`` to reuse a connection the host app already holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi

from agentkit import __version__
from agentkit.config import Settings, load_settings
from agentkit.connect import default_tools
from agentkit.errors import ConfigError
from agentkit.serve.dashboard import dashboard_router, static_files
from agentkit.serve.errors import CatchAll, install_error_handlers
from agentkit.serve.fleet import FleetHub
from agentkit.serve.middleware import BearerAuth, BodyLimit, LocalOnly, SecurityHeaders
from agentkit.serve.models import HealthModel
from agentkit.serve.routes_agents import resource_router
from agentkit.serve.routes_runs import run_router
from agentkit.serve.routes_tools import tool_router
from agentkit.serve.state import ServeState, serve_state
from agentkit.tools.toolset import Toolset

if TYPE_CHECKING:
    from agentkit.connect import Connection

__all__ = ["create_app"]

#: the scheme as the OpenAPI document states it; the check itself is :class:`BearerAuth` (a
#: wrapper around the whole app, so no per-route dependency costs time on each request)
SECURITY_SCHEME = {"type": "http", "scheme": "bearer", "description": "AGENTKIT_API_TOKEN"}


def _with_security(app: FastAPI) -> None:
    """Make ``app.openapi()`` say that every operation but ``/healthz`` needs the token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {"HTTPBearer": SECURITY_SCHEME}
            for path, item in schema["paths"].items():
                for operation in item.values():
                    if path != "/healthz":
                        operation["security"] = [{"HTTPBearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings | None = None,
    *,
    connection: Connection | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> FastAPI:
    """The HTTP API and dashboard.

    Args:
        settings: defaults to the environment (``load_settings()``).
        connection: an open :func:`agentkit.connect` connection to serve; by default the app
            opens its own for its lifespan.
        token: the bearer token; defaults to ``AGENTKIT_API_TOKEN``.
        insecure: serve without a token (``--insecure-localhost``; the caller binds loopback).

    Raises:
        ConfigError: no token and not ``insecure``.
    """
    settings = settings or (connection.settings if connection else load_settings())
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value() or None
    if token is None and not insecure:
        raise ConfigError(
            "AGENTKIT_API_TOKEN is not set: every route needs a bearer token. Set it (e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))') or, for a "
            "loopback-only trial, pass --insecure-localhost"
        )
    if token is not None and len(token) < 16:
        raise ConfigError("AGENTKIT_API_TOKEN is too short: use at least 16 random characters")
    state = ServeState(settings)
    if connection is not None:
        # usable at once, also when mounted in a host app whose server skips sub-app lifespans
        state.connection = connection
        state.fleet = FleetHub(connection.agents, state.redactor)
        if token is not None:
            state.redactor.add(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if state.connection is None:
                from agentkit.connect import connect

                state.connection = await stack.enter_async_context(connect(settings))
                stack.callback(setattr, state, "connection", None)
            if token is not None:
                state.redactor.add(token)
            if state.fleet is None:
                state.fleet = FleetHub(state.conn.agents, state.redactor)
                stack.callback(setattr, state, "fleet", None)
            stack.push_async_callback(state.fleet.aclose)
            stack.push_async_callback(state.aclose)
            yield

    app = FastAPI(
        title="agentkit",
        version=__version__,
        summary="Claude Code agents in hardened containers: tools, agents, workspaces, runs.",
        lifespan=lifespan,
        docs_url=None,  # the interactive pages load scripts from a CDN: not served
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.agentkit = state
    tools = connection.toolset if connection is not None else Toolset(default_tools())

    @app.get("/healthz", response_model=HealthModel, tags=["health"], operation_id="healthz")
    async def healthz(request: Request) -> HealthModel:
        """Liveness (no token needed): the version and how many streams are open."""
        current = serve_state(request)
        hub = current.fleet
        return HealthModel(
            ok=current.connection is not None,
            version=__version__,
            open_streams=current.streams.open,
            fleet_subscribers=hub.subscribers if hub else 0,
            fleet_tracked=hub.tracked if hub else 0,
        )

    app.include_router(tool_router(tools))
    app.include_router(resource_router())
    app.include_router(run_router())
    app.include_router(dashboard_router())
    app.mount("/static", static_files(), name="static")
    _with_security(app)
    install_error_handlers(app, lambda: state.redactor)
    # add_middleware wraps: the last added is the outermost
    app.add_middleware(BodyLimit, max_bytes=settings.serve_max_body_bytes)
    app.add_middleware(BearerAuth, token=token)
    if token is None:
        app.add_middleware(LocalOnly)
    app.add_middleware(CatchAll, redactor=lambda: state.redactor)
    app.add_middleware(SecurityHeaders)
    return app
