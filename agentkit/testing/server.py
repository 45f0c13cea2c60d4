"""`ScriptedAnthropicServer`: a fake Anthropic Messages API on a local port, for tests.

It answers ``POST /v1/messages`` (with or without ``?beta=true``) from a script of
:class:`~agentkit.testing.replies.Reply` objects or from a function of the request, in SSE
(``"stream": true``) or plain JSON, records every request, and serves both the ``anthropic``
Python SDK and the real Claude Code CLI (``ANTHROPIC_BASE_URL=server.url``)::

    from agentkit.testing import ScriptedAnthropicServer, reply

    script = [reply.tool_use("add", {"a": 1, "b": 1}), reply.text("2")]
    async with ScriptedAnthropicServer(script) as srv:
        client = anthropic.AsyncAnthropic(base_url=srv.url, api_key="test")
        ...
    assert srv.message_requests[1].tool_results()[0]["content"] == "2"

Sync code (or another process) uses :meth:`ScriptedAnthropicServer.start_in_thread`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from agentkit.redact import REDACTED
from agentkit.testing.replies import ERROR_TYPES, Reply, new_id

if TYPE_CHECKING:
    import anthropic
    import httpx2

__all__ = ["Answer", "Handler", "RecordedRequest", "ScriptedAnthropicServer"]

_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie"})

#: A function of the request that returns the reply (sync or async). Return ``None`` to fall
#: back to the script / the default reply.
Handler = Callable[["RecordedRequest"], "Reply | Awaitable[Reply | None] | None"]


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request the server received. Secret headers are redacted."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)
    index: int = 0

    # --- Messages API conveniences --------------------------------------------------------

    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.path == "/v1/messages"

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    @property
    def model(self) -> str:
        return str(self.json.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.json.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages") or [])

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.json.get("tools") or [])

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.tools]

    @property
    def system(self) -> list[dict[str, Any]]:
        """The system prompt as a list of text blocks (a plain string becomes one block)."""
        system = self.json.get("system")
        if system is None:
            return []
        if isinstance(system, str):
            return [{"type": "text", "text": system}]
        return list(system)

    @property
    def system_text(self) -> str:
        return "\n".join(str(b.get("text", "")) for b in self.system)

    def last_message(self) -> dict[str, Any]:
        return self.messages[-1] if self.messages else {}

    def last_user_text(self) -> str:
        """Text of the newest user message (string content or its text blocks)."""
        for msg in reversed(self.messages):
            if msg.get("role") == "user":
                return _content_text(msg.get("content"))
        return ""

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the newest message."""
        content = self.last_message().get("content")
        if not isinstance(content, list):
            return []
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]

    def cache_breakpoints(self) -> list[str]:
        """Where ``cache_control`` markers sit: ``tools[i]``, ``system[i]``, ``messages[i][j]``."""
        found: list[str] = []
        for i, tdef in enumerate(self.tools):
            if "cache_control" in tdef:
                found.append(f"tools[{i}]")
        raw_system = self.json.get("system")
        if isinstance(raw_system, list):
            for i, blk in enumerate(raw_system):
                if isinstance(blk, dict) and "cache_control" in blk:
                    found.append(f"system[{i}]")
        for i, msg in enumerate(self.messages):
            content = msg.get("content")
            if isinstance(content, list):
                for j, blk in enumerate(content):
                    if isinstance(blk, dict) and "cache_control" in blk:
                        found.append(f"messages[{i}][{j}]")
        return found


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


class ScriptedAnthropicServer:
    """A scripted Anthropic-compatible Messages API server.

    Args:
        script: replies consumed in order by ``POST /v1/messages``; or a handler function
            ``fn(request) -> Reply | None`` (sync or async) asked for every such request.
        handler: a function asked first for every messages request; returning ``None`` falls
            back to the script. Use it to route by content (e.g. Claude Code side requests).
        default: answer when neither handler nor script has one. ``None``: a
            ``400 invalid_request_error`` naming the exhausted script (SDKs do not retry a
            400), recorded in :attr:`errors`.
        host: bind address; ``"0.0.0.0"`` lets containers on a Docker bridge reach it.
        port: ``0`` picks a free port; read :attr:`port` / :attr:`url` after start.
    """

    def __init__(
        self,
        script: Iterable[Reply] | Handler | None = None,
        *,
        handler: Handler | None = None,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if callable(script):
            if handler is not None:
                raise TypeError("give the handler either positionally or as handler=, not both")
            handler, script = script, None
        self._script: deque[Reply] = deque(script or ())
        self.handler = handler
        self.default = default
        self.host = host
        self._requested_port = port
        self.port: int = 0
        self.requests: list[RecordedRequest] = []
        #: problems the server met (script exhausted, handler exceptions), for test asserts
        self.errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    # --- script -----------------------------------------------------------------------------

    def add(self, *replies: Reply) -> None:
        """Append replies to the script (also while serving)."""
        with self._lock:
            self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """Replies left in the script."""
        return len(self._script)

    def check(self, *, consumed: bool = True) -> None:
        """Raise ``AssertionError`` on server problems or (``consumed``) unused replies."""
        if self.errors:
            raise AssertionError("scripted server problems:\n" + "\n".join(self.errors))
        if consumed and self._script:
            raise AssertionError(f"{len(self._script)} scripted replies were never requested")

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Recorded ``POST /v1/messages`` requests, in arrival order."""
        return [r for r in self.requests if r.is_messages]

    # --- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for clients on this machine (``ANTHROPIC_BASE_URL``)."""
        return self.url_for("127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host)  # noqa: S104

    def url_for(self, host: str) -> str:
        """Base URL as seen from elsewhere, e.g. ``url_for("172.17.0.1")`` inside a container."""
        if not self.port:
            raise RuntimeError("the server is not started")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # a client that hangs up cancels its handler (a delayed reply), and stop() never
        # waits long for in-flight replies
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._requested_port
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextmanager
    def start_in_thread(self, timeout: float = 10.0) -> Iterator[Self]:
        """Serve from a background thread with its own event loop (sync tests, other processes)::

        with ScriptedAnthropicServer(script).start_in_thread() as server:
            subprocess.run([...], env={"ANTHROPIC_BASE_URL": server.url, ...})
        """
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        stopping = asyncio.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                try:
                    await self.start()
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                ready.set()
                await stopping.wait()
                await self.stop()

            loop.run_until_complete(serve())
            loop.close()

        thread = threading.Thread(target=main, name="scripted-anthropic", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the scripted server did not start in time")
        if failure:
            thread.join()
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stopping.set)
            thread.join(timeout)

    # --- socket-free use -------------------------------------------------------------------

    def transport(self) -> httpx2.AsyncBaseTransport:
        """An ``httpx2`` transport answering from this script in-process (no socket, no start).

        The anthropic SDK (2.x) sends through ``httpx2``; pass
        ``http_client=httpx2.AsyncClient(transport=server.transport())`` or use
        :meth:`client`.
        """
        import httpx2

        async def handle(request: httpx2.Request) -> httpx2.Response:
            answer = await self.answer(
                request.method,
                request.url.path,
                dict(request.url.params),
                dict(request.headers),
                await request.aread(),
            )
            content: Any = answer.body
            if answer.chunks is not None:
                content = _paced(answer.chunks, answer.chunk_delay)
            return httpx2.Response(answer.status, headers=answer.headers, content=content)

        return httpx2.MockTransport(handle)

    def client(self, **options: Any) -> anthropic.AsyncAnthropic:
        """An ``AsyncAnthropic`` wired to :meth:`transport` (unit tests without a socket)."""
        import anthropic
        import httpx2

        options.setdefault("api_key", "test")
        options.setdefault("base_url", "http://scripted-anthropic.invalid")
        return anthropic.AsyncAnthropic(
            http_client=httpx2.AsyncClient(transport=self.transport()), **options
        )

    # --- HTTP -------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        answer = await self.answer(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
        )
        if answer.chunks is None:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        await response.prepare(request)
        async for chunk in _paced(answer.chunks, answer.chunk_delay):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        raw: bytes,
    ) -> Answer:
        """Record one request and compute the response (shared by the socket and transport)."""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        safe_headers = {
            k.lower(): (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()
        }
        with self._lock:
            recorded = RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=safe_headers,
                body=body,
                index=len(self.requests),
            )
            self.requests.append(recorded)
        route = path.rstrip("/") or "/"
        if route in ("/", "/api/hello") and method in ("GET", "HEAD"):
            return _json(200, {"status": "ok", "server": "agentkit.testing"})
        if route == "/v1/messages" and method == "POST":
            return await self._messages(recorded)
        if route == "/v1/messages/count_tokens" and method == "POST":
            return _json(200, {"input_tokens": _estimate_tokens(recorded.json)})
        return _error(404, "not_found_error", f"{method} {path} is not scripted")

    async def _next_reply(self, recorded: RecordedRequest) -> Reply | None:
        if self.handler is not None:
            try:
                answer = self.handler(recorded)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception as exc:
                self.errors.append(f"handler raised {type(exc).__name__}: {exc}")
                raise
            if answer is not None:
                return answer
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.default

    async def _messages(self, recorded: RecordedRequest) -> Answer:
        if not isinstance(recorded.body, dict) or "messages" not in recorded.body:
            return _error(400, "invalid_request_error", "messages: field required")
        try:
            reply = await self._next_reply(recorded)
        except Exception as exc:
            return _error(
                400, "invalid_request_error", f"scripted handler raised {type(exc).__name__}: {exc}"
            )
        if reply is None:
            message = (
                f"agentkit.testing: the script has no reply left for request #{recorded.index} "
                f"(last user text: {recorded.last_user_text()[:200]!r})"
            )
            self.errors.append(message)
            return _error(400, "invalid_request_error", message)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        request_id = new_id("req")
        if reply.stream_error and not recorded.stream:
            status = next((k for k, v in ERROR_TYPES.items() if v == reply.stream_error), 500)
            reply = dataclasses.replace(reply, status=status, stream_error=None, content=())
        if reply.is_error:
            answer = _json(reply.status, reply.error_body(request_id))
            answer.headers.update(
                {"request-id": request_id, "x-should-retry": _should_retry(reply), **reply.headers}
            )
            return answer
        model = recorded.model or "claude-scripted"
        if not recorded.stream:
            answer = _json(200, reply.message(model))
            answer.headers.update({"request-id": request_id, **reply.headers})
            return answer
        chunks = [
            f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
            for event in reply.sse_events(model)
        ]
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "request-id": request_id,
            **reply.headers,
        }
        return Answer(200, headers, chunks=chunks, chunk_delay=reply.chunk_delay)


@dataclass(slots=True)
class Answer:
    """A computed HTTP response: a whole ``body``, or SSE ``chunks`` paced by ``chunk_delay``."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: list[bytes] | None = None
    chunk_delay: float = 0.0


async def _paced(chunks: list[bytes], delay: float) -> AsyncIterator[bytes]:
    if delay <= 0:
        yield b"".join(chunks)
        return
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(delay)


def _json(status: int, data: Any) -> Answer:
    body = json.dumps(data, ensure_ascii=False).encode()
    return Answer(status, {"content-type": "application/json"}, body=body)


def _should_retry(answer: Reply) -> str:
    return "true" if answer.status in (408, 409, 429) or answer.status >= 500 else "false"


def _error(status: int, kind: str, message: str) -> Answer:
    request_id = new_id("req")
    answer = _json(
        status,
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id},
    )
    answer.headers["request-id"] = request_id
    return answer


def _estimate_tokens(body: dict[str, Any]) -> int:
    """About four characters per token over the whole request, like the real tokenizer's order."""
    size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    size += len(json.dumps(body.get("tools", [])))
    return max(1, size // 4)
