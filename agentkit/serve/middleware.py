"""Pure ASGI middleware for ``agentkit serve``: bearer auth, body-size limit, security headers.

They are ASGI wrappers rather than framework dependencies so nothing can be routed around them:
a route added later, a 404, a mounted app, all pass through the auth check first (deny by
default). None of them reads or sets a cookie.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Collection
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "PUBLIC_PATHS",
    "BearerAuth",
    "BodyLimit",
    "BodyTooLarge",
    "LocalOnly",
    "SecurityHeaders",
    "is_public",
]

#: reachable without a token: the health probe and the dashboard's static shell (no data in it;
#: every request it makes for data carries the token in a header)
PUBLIC_PATHS = frozenset({"/healthz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


def is_public(method: str, path: str) -> bool:
    """Whether a request may go without a token: GET/HEAD of :data:`PUBLIC_PATHS` and assets."""
    if method not in ("GET", "HEAD"):
        return False
    return path in PUBLIC_PATHS or (path.startswith(PUBLIC_PREFIXES) and ".." not in path)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: Any = ()) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if the request has one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class BearerAuth:
    """Refuse every request without ``Authorization: Bearer <token>`` (401), except
    :func:`is_public` ones. The comparison takes constant time; ``token=None`` lets everything
    through (only for ``--insecure-localhost``)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        public: Callable[[str, str], bool] = is_public,
    ) -> None:
        self.app = app
        self._token = token.encode() if token is not None else None
        self._public = public

    def allowed(self, scope: Scope) -> bool:
        if self._token is None or self._public(scope.get("method", ""), scope.get("path", "")):
            return True
        presented = bearer_token(scope)
        # compare_digest on bytes takes the same time wherever the first difference is
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        await _send_json(
            send,
            401,
            {
                "detail": "missing or wrong API token: send 'Authorization: Bearer <token>' "
                "(the AGENTKIT_API_TOKEN the server was started with)",
                "type": "Unauthorized",
            },
            [(b"www-authenticate", b'Bearer realm="agentkit"')],
        )


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _host_only(value: str) -> str:
    """``host[:port]`` -> ``host`` (IPv6 literals keep their brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class LocalOnly:
    """For ``--insecure-localhost`` (no token): accept only requests a local client made.

    Without a token, two things could still reach a loopback server from a web page the user
    visits: DNS rebinding (the page's own host name resolving to 127.0.0.1: refused by the
    ``Host`` check) and cross-site requests (``fetch``/forms to http://127.0.0.1:8765: refused
    by the ``Origin`` check, which browsers send on every cross-origin POST).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())}
        host = _host_only(headers.get(b"host", ""))
        origin = headers.get(b"origin")
        origin_host = _host_only(origin.split("://", 1)[-1]) if origin else None
        if host not in _LOOPBACK_HOSTS or (
            origin is not None and origin_host not in _LOOPBACK_HOSTS
        ):
            await _send_json(
                send,
                403,
                {
                    "detail": "without a token this server only answers local clients "
                    "(Host and Origin must be localhost, 127.0.0.1 or [::1])",
                    "type": "Forbidden",
                },
            )
            return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a request body passes the limit (an HTTP 413, so the
    framework's body parsing lets it through to the error handlers as it is)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    return f"request body larger than {max_bytes} bytes (AGENTKIT_SERVE_MAX_BODY_BYTES)"


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before reading them: by the declared
    ``Content-Length`` at once, or as soon as a streamed (chunked) body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> dict[str, Any]:
        return {"detail": _too_large(self.max_bytes), "type": "HTTPError"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _send_json(send, 413, self._refusal(), [(b"connection", b"close")])
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_json(send, 413, self._refusal(), [(b"connection", b"close")])


#: the dashboard loads only its own files; nothing inline, no other origin, no framing
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Add CSP, nosniff, no-referrer and (for API answers) ``Cache-Control: no-store``."""

    def __init__(self, app: ASGIApp, static_prefixes: Collection[str] = PUBLIC_PREFIXES) -> None:
        self.app = app
        self.static_prefixes = tuple(static_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope.get("path", "").startswith(self.static_prefixes)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not cacheable and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, with_headers)
