"""Errors as HTTP answers: one status per agentkit error family, never a traceback or a secret.

Every body is ``{"detail": <message>, "type": <error class>}``; 422 adds ``errors``, the list
of every violation. Messages pass the connection's :class:`Redactor`; unexpected exceptions are
logged (redacted) on the server and answered with a generic 500.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentkit.errors import (
    AgentkitError,
    ConfigError,
    ConflictError,
    ExecutorConnectionError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    RuntimeUnavailable,
    ToolError,
)
from agentkit.redact import Redactor
from agentkit.serve.middleware import BodyTooLarge

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "STATUS_BY_ERROR",
    "CatchAll",
    "install_error_handlers",
    "status_for",
    "validation_errors",
]

logger = logging.getLogger("agentkit.serve")

#: most specific first
STATUS_BY_ERROR: tuple[tuple[type[AgentkitError], int], ...] = (
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (ConflictError, 409),
    (ToolError, 400),
    (ConfigError, 503),
    (RuntimeUnavailable, 503),
    (ExecutorConnectionError, 503),
    (ModelError, 502),
)


def status_for(exc: AgentkitError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def _path(loc: Any) -> str:
    out = "$"
    for part in loc:
        if part in ("body", "query", "path", "header") and out == "$":
            out = f"{part}:$"
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validation_errors(exc: RequestValidationError) -> list[str]:
    """Every violation as ``<where>:<JSON path>: <message>`` (the input is never echoed)."""
    return [f"{_path(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()]


def install_error_handlers(app: FastAPI, redactor: Callable[[], Redactor]) -> None:
    """Map errors to answers on ``app``; ``redactor()`` is the connection's current one."""

    def body(status: int, detail: str, kind: str, **extra: Any) -> JSONResponse:
        redact = redactor()
        content = {"detail": redact.redact(detail), "type": kind, **redact.redact_data(extra)}
        return JSONResponse(content, status_code=status)

    @app.exception_handler(AgentkitError)
    async def agentkit_error(request: Request, exc: AgentkitError) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            log_unexpected(redactor(), request.method, request.url.path, exc)
            return body(500, INTERNAL, "InternalError")
        return body(status, str(exc) or type(exc).__name__, type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = validation_errors(exc)
        return body(422, "invalid request", "ValidationError", errors=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        response = body(exc.status_code, detail, "HTTPError")
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response


INTERNAL = "internal error: the server log has the details"


def log_unexpected(redactor: Redactor, method: str, path: str, exc: BaseException) -> None:
    trace = "".join(traceback.format_exception(exc))
    logger.error(
        "%s %s failed with %s: %s\n%s",
        method,
        path,
        type(exc).__name__,
        redactor.redact(str(exc)),
        redactor.redact(trace),
    )


class CatchAll:
    """Answer any exception a route did not expect with a generic 500 and log it redacted.

    (Starlette's own handler re-raises to the server, which would print the raw traceback.)
    """

    def __init__(self, app: ASGIApp, redactor: Callable[[], Redactor]) -> None:
        self.app = app
        self.redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if isinstance(exc, BodyTooLarge):
                raise
            log_unexpected(self.redactor(), scope.get("method", ""), scope.get("path", ""), exc)
            if not started:
                response = JSONResponse({"detail": INTERNAL, "type": "InternalError"}, 500)
                await response(scope, receive, send)
