"""The dashboard: one server-rendered HTML shell and its script and styles, shipped in the package.

The shell holds no data and no secret, so it loads without a token; the script asks for the
token once, keeps it in ``sessionStorage`` (this tab only; never a cookie) and sends it as an
``Authorization`` header on every request - including the live streams, which it reads with
``fetch()`` because a browser ``EventSource`` cannot send headers.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from agentkit import __version__

__all__ = ["dashboard_router", "static_files"]

_PACKAGE = "agentkit.serve"


def _template() -> Template:
    text = resources.files(_PACKAGE).joinpath("templates", "index.html").read_text("utf-8")
    return Template(text)


def static_files() -> StaticFiles:
    """The dashboard's script, styles and icon (``/static/...``)."""
    return StaticFiles(packages=[(_PACKAGE, "static")])


def dashboard_router(title: str = "agentkit") -> APIRouter:
    router = APIRouter(include_in_schema=False)
    page = _template().substitute(title=html.escape(title), version=html.escape(__version__))

    @router.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @router.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    return router
