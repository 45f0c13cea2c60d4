"""The model API side of the gateway: token check, budget check, forward, stream, meter.

Agents call ``ANTHROPIC_BASE_URL`` = this server with their per-run token as API key. A request
whose token is unknown, ended or expired gets 401; one whose run or fleet budget is spent gets
403 (``x-should-retry: false``) and never reaches the upstream. Anything else is forwarded with
the real key to the upstream (the controller's ``ANTHROPIC_BASE_URL`` or the public API); the
answer streams back byte for byte while :class:`~.metering.SSEUsage` reads its usage, which is
then priced and written to the ledger. Runs inside the gateway container (stdlib + aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .budgets import Refusal, RunEntry, Runs
from .ledger import AsyncLedger, Ledger, UsageRow
from .metering import SSEUsage, usage_from_json
from .peers import BODY_TIMEOUT
from .pricing import PriceTable, TokenCounts
from .request_body import BodyInspector, BodyRefused

__all__ = [
    "ANSWER_TIMEOUT",
    "DRAIN_MAX_BYTES",
    "DRAIN_TIMEOUT",
    "MAX_BODY",
    "MAX_BODY_BYTES_IN_FLIGHT",
    "ROUTES",
    "RUN_BODY_BYTES",
    "WRITE_TIMEOUT",
    "Gateway",
    "Upstream",
]

logger = logging.getLogger("agentkit.gateway")

#: largest request body forwarded (bytes; the Messages API's own limit is 32 MB), and largest
#: non-streamed answer metered
MAX_BODY = 32 * 1024 * 1024
#: request body bytes received and held in memory at once over all agents; a body whose bytes
#: would go past it gets 503 (retryable). Counted as the bytes arrive, not from a header.
MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
#: request body bytes one run may hold at once (its share of the pool above); past it, 429
RUN_BODY_BYTES = 2 * MAX_BODY
#: seconds one write to the agent may wait for it to take the data (an agent that stops reading
#: is cut off and the rest of its answer is read in the background, see DRAIN_TIMEOUT)
WRITE_TIMEOUT = 60.0
#: seconds one answer may be relayed to its agent in all; past it the agent is cut off likewise
ANSWER_TIMEOUT = 3600.0
#: once an agent hangs up mid-stream, the rest of the answer is still read (to meter its real
#: usage) for at most this many seconds and bytes; past either, the reserved worst case is charged
DRAIN_TIMEOUT = 900.0
DRAIN_MAX_BYTES = 64 * 1024 * 1024
#: the only requests forwarded upstream: (method, path) -> query parameters allowed
ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/messages"): frozenset({"beta"}),
    ("POST", "/v1/messages/count_tokens"): frozenset({"beta"}),
    ("GET", "/v1/models"): frozenset({"beta", "limit", "after_id", "before_id"}),
}
#: bytes of a non-streamed answer written to the agent at a time (each within the write timeout)
_WRITE_CHUNK = 64 * 1024
_QUERY_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: refused requests of one run written to the ledger (an agent looping on them adds no more)
MAX_REFUSALS_RECORDED = 20
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "x-api-key",
        "authorization",
        "accept-encoding",
    }
)
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "trailer",
    }
)


@dataclass(slots=True)
class Upstream:
    """Where requests go and with which credentials (read from the gateway's config file)."""

    url: str = "https://api.anthropic.com"
    api_key: str | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)


def error_response(status: int, kind: str, message: str, *, retry: bool) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(
        body, status=status, headers={"x-should-retry": "true" if retry else "false"}
    )


@dataclass(slots=True)
class _Call:
    """One admitted request: its run, its reservation, and whether a background drain took
    over the upstream answer (which then releases both)."""

    entry: RunEntry
    reserved: float
    handed_off: bool = False


class _Stalled(Exception):
    """The agent took no data for the write timeout."""


class _BodyRefused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class _BodyBytes:
    """The bytes of one request body as they arrive, counted against the run's share
    (:data:`RUN_BODY_BYTES`) and the pool of all agents (:data:`MAX_BODY_BYTES_IN_FLIGHT`)."""

    def __init__(self, gateway: Gateway, run_id: str) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.size = 0

    def add(self, n: int) -> None:
        gw = self.gateway
        self.size += n
        gw.body_bytes += n
        gw.run_body_bytes[self.run_id] = gw.run_body_bytes.get(self.run_id, 0) + n
        if self.size > MAX_BODY:
            raise _BodyRefused(_too_large(self.size))
        if gw.run_body_bytes[self.run_id] > gw.run_body_share:
            raise _BodyRefused(_run_bodies_full(self.run_id, gw.run_body_share))
        if gw.body_bytes > gw.max_body_bytes:
            raise _BodyRefused(_pool_full())

    def release(self) -> None:
        gw = self.gateway
        gw.body_bytes -= self.size
        left = gw.run_body_bytes.get(self.run_id, 0) - self.size
        if left > 0:
            gw.run_body_bytes[self.run_id] = left
        else:
            gw.run_body_bytes.pop(self.run_id, None)
        self.size = 0


def _too_large(size: int) -> web.Response:
    return error_response(
        413,
        "request_too_large",
        f"agentkit gateway: request body of {size} bytes is over the limit of {MAX_BODY}",
        retry=False,
    )


def _run_bodies_full(run_id: str, share: int) -> web.Response:
    return error_response(
        429,
        "rate_limit_error",
        f"agentkit gateway: the request bodies of {run_id} being received are over its share "
        f"of {share} bytes; retry when they have been sent",
        retry=True,
    )


def _pool_full() -> web.Response:
    return error_response(
        503,
        "overloaded_error",
        "agentkit gateway: too many large requests in flight; retry shortly",
        retry=True,
    )


def _abort(request: web.Request) -> None:
    """Drop the agent's connection at once: a reset, so neither the gateway (``close`` would
    wait for the agent to take the buffer) nor its kernel (a FIN queued behind data the agent
    never reads) keeps the unsent answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _token(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def _routed(request: web.Request) -> bool:
    """Whether the request is one the model API needs (see :data:`ROUTES`)."""
    allowed = ROUTES.get((request.method, request.rel_url.raw_path))
    if allowed is None:
        return False
    query = request.rel_url.query
    return len(query) == len(set(query)) and all(
        key in allowed and _QUERY_VALUE.fullmatch(value) for key, value in query.items()
    )


class Gateway:
    """State shared by the model proxy and the admin API."""

    def __init__(self, ledger: AsyncLedger, upstream: Upstream, prices: PriceTable) -> None:
        self.ledger = ledger
        self.upstream = upstream
        self.prices = prices
        self.runs = Runs()
        self.session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bodies = BodyInspector()  # parse, policy and worst case of request bodies
        self.body_bytes = 0  # request body bytes received and held (MAX_BODY_BYTES_IN_FLIGHT)
        self.run_body_bytes: dict[str, int] = {}  # the same per run (RUN_BODY_BYTES)
        self.max_body_bytes = MAX_BODY_BYTES_IN_FLIGHT
        self.run_body_share = RUN_BODY_BYTES
        self.body_timeout = BODY_TIMEOUT
        self.drain_timeout = DRAIN_TIMEOUT
        self.drain_max_bytes = DRAIN_MAX_BYTES
        self.write_timeout = WRITE_TIMEOUT
        self.answer_timeout = ANSWER_TIMEOUT
        self._drains: set[asyncio.Task[None]] = set()
        self._released = asyncio.Event()  # set (and replaced) whenever a request is released

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=900),
        )

    async def close(self) -> None:
        for task in list(self._drains):  # each charges the worst case when cancelled
            task.cancel()
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every pending ledger write is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _release(self, entry: RunEntry, cost: float) -> None:
        self.runs.release(entry, cost)
        self._released.set()
        self._released = asyncio.Event()

    async def settle(self, run_id: str) -> None:
        """Wait until no request of ``run_id`` is in flight, the answers being read in the
        background after a hang-up included (their cost is then metered)."""
        entry = self.runs.by_id.get(run_id)
        while entry is not None and entry.in_flight:
            await self._released.wait()

    # --- the proxy ----------------------------------------------------------------------------

    def app(self, middlewares: Any = ()) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path.rstrip("/") in ("", "/api/hello"):
            return web.json_response({"status": "ok", "server": "agentkit-gateway"})
        if not _routed(request):
            return error_response(
                404,
                "not_found_error",
                f"agentkit gateway: {request.method[:10]} {request.path[:200]} is not forwarded "
                "(only POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models)",
                retry=False,
            )
        entry = self.runs.lookup(_token(request.headers))
        refusal = self.runs.check(entry)
        if refusal is not None:
            return self._refuse(entry, refusal)
        assert entry is not None
        # a body's bytes are counted as they arrive (a head alone holds nothing); a declared
        # length is checked before a byte is read
        size = request.content_length or 0
        if size > MAX_BODY:
            return _too_large(size)
        held = self.run_body_bytes.get(entry.run_id, 0)
        if held + size > self.run_body_share or held >= self.run_body_share:
            return _run_bodies_full(entry.run_id, self.run_body_share)
        if self.body_bytes + size > self.max_body_bytes:
            return _pool_full()
        counted = _BodyBytes(self, entry.run_id)
        try:
            return await self._admit(request, entry, counted)
        finally:
            counted.release()

    async def _read_body(self, request: web.Request, counted: _BodyBytes) -> bytes:
        chunks: list[bytes] = []
        async for chunk in request.content.iter_any():
            chunks.append(chunk)
            counted.add(len(chunk))
        return b"".join(chunks)

    async def _admit(
        self, request: web.Request, entry: RunEntry, counted: _BodyBytes
    ) -> web.StreamResponse:
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read_body(request, counted)
        except _BodyRefused as refused:
            refused.response.force_close()  # the rest of the body is not read
            return refused.response
        except (ConnectionError, aiohttp.ClientPayloadError) as exc:  # the agent went away
            logger.info("request body of %s broke off: %r", entry.run_id, exc)
            broke = error_response(
                400, "invalid_request_error", "agentkit gateway: request body broke off", retry=True
            )
            broke.force_close()
            return broke
        except TimeoutError:
            slow = error_response(
                408,
                "request_timeout",
                f"agentkit gateway: request body not received within {self.body_timeout:g} s",
                retry=True,
            )
            slow.force_close()
            return slow
        try:
            wanted = await self.bodies.inspect(body)
        except BodyRefused as exc:
            return error_response(400, "invalid_request_error", str(exc), retry=False)
        worst = TokenCounts(input_tokens=wanted.input_tokens, output_tokens=wanted.max_tokens)
        reserved = self.prices.cost(wanted.model, worst)
        refusal = self.runs.reserve(entry, reserved)
        if refusal is not None:
            return self._refuse(entry, refusal)
        call = _Call(entry, reserved)
        try:
            return await self._forward(request, call, body)
        finally:
            if not call.handed_off:
                self._release(entry, reserved)

    async def _forward(self, request: web.Request, call: _Call, body: bytes) -> web.StreamResponse:
        entry, reserved = call.entry, call.reserved
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        if self.upstream.api_key:
            headers["x-api-key"] = self.upstream.api_key
        elif self.upstream.auth_token:
            headers["authorization"] = f"Bearer {self.upstream.auth_token}"
        url = self.upstream.url.rstrip("/") + request.rel_url.raw_path_qs
        assert self.session is not None
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except asyncio.CancelledError:
            # gone while the upstream may already be answering: charge the worst case
            self._meter(entry, request, 499, TokenCounts(), None, note="abandoned", cost=reserved)
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("upstream %s unreachable: %r", self.upstream.url, exc)
            return error_response(
                502,
                "api_error",
                f"agentkit gateway: upstream unreachable ({type(exc).__name__})",
                retry=True,
            )
        try:
            return await self._relay(request, upstream, call)
        finally:
            if not call.handed_off:
                upstream.release()

    def _refuse(self, entry: RunEntry | None, refusal: Refusal) -> web.Response:
        if refusal.budget and entry is not None and entry.refusals < MAX_REFUSALS_RECORDED:
            entry.refusals += 1
            first = entry.budget_reason is None
            entry.budget_reason = refusal.message
            now = time.time()
            row = UsageRow(
                at=now,
                source="agent",
                run_id=entry.run_id,
                workspace=entry.workspace,
                model=None,
                status=refusal.status,
                tokens=TokenCounts(),
                cost_usd=0.0,
                note="refused: budget",
            )

            def write(db: Ledger) -> None:
                if first:
                    db.mark_budget(entry.run_id, refusal.message, now)
                db.record_usage(row)

            self.background(self.ledger.run(write))
        return error_response(refusal.status, refusal.kind, refusal.message, retry=refusal.retry)

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, call: _Call
    ) -> web.StreamResponse:
        entry, reserved = call.entry, call.reserved
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE}
        ctype = upstream.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            return await self._relay_whole(request, upstream, call, headers)
        meter = SSEUsage()
        response = web.StreamResponse(status=upstream.status, headers=headers)
        gone = False  # the agent hung up, or was cut off
        cut: str | None = None  # why the gateway cut the agent off
        deadline = asyncio.timeout(self.answer_timeout)
        try:
            async with deadline:
                await self._write(response.prepare(request))
                async for chunk in upstream.content.iter_any():
                    meter.feed(chunk)  # before the write, which fails once the agent is gone
                    await self._write(response.write(chunk))
                await self._write(response.write_eof())
        except ConnectionResetError as exc:
            gone = True
            logger.info("%s hung up mid-stream: %r", entry.run_id, exc)
        except asyncio.CancelledError:
            gone = True
            raise
        except aiohttp.ClientError as exc:  # the upstream broke off: nothing more to send
            logger.info("stream of %s ended early: %r", entry.run_id, exc)
        except _Stalled:
            gone, cut = True, f"took no data for {self.write_timeout:g} s"
        except TimeoutError:
            if not deadline.expired():
                raise
            gone, cut = True, f"did not take the answer within {self.answer_timeout:g} s"
        finally:
            if cut is not None:
                logger.warning("%s cut off: its agent %s", entry.run_id, cut)
                _abort(request)
            if gone and upstream.status == 200 and not meter.stopped and meter.error is None:
                # the answer is still coming, and with it the real usage: read it to the end
                # in the background (bounded) and meter that, not just what was relayed
                call.handed_off = True
                task = asyncio.ensure_future(self._drain(upstream, meter, call))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            else:
                # metered even when the client or the upstream hung up mid-stream
                note = None if meter.stopped else "stream incomplete"
                unknown = upstream.status == 200 and not meter.seen_start
                self._meter(
                    entry,
                    request,
                    upstream.status,
                    meter.tokens,
                    meter.model,
                    note=meter.error or ("abandoned: worst case charged" if unknown else note),
                    cost=reserved if unknown else None,
                )
        return response

    async def _write(self, write: Awaitable[Any]) -> None:
        """One write to the agent; :class:`_Stalled` if it takes no data for the write
        timeout."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await write
        except TimeoutError:
            raise _Stalled from None

    async def _relay_whole(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        call: _Call,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        """A non-streamed answer: read to its end (at most :data:`MAX_BODY` bytes), metered,
        then sent. A ``200`` whose body broke off, or a Messages answer without usage, is
        charged the reserved worst case."""
        entry, reserved = call.entry, call.reserved
        chunks: list[bytes] = []
        size = 0
        failed: str | None = None
        try:
            async with asyncio.timeout(self.answer_timeout):
                async for chunk in upstream.content.iter_any():
                    size += len(chunk)
                    if size > MAX_BODY:
                        failed = f"over {MAX_BODY} bytes"
                        break
                    chunks.append(chunk)
        except asyncio.CancelledError:
            self._meter(entry, request, 499, TokenCounts(), None, note="abandoned", cost=reserved)
            raise
        except aiohttp.ClientError as exc:
            failed = f"upstream broke off ({type(exc).__name__})"
        except TimeoutError:
            failed = f"not read within {self.answer_timeout:g} s"
        ok = upstream.status == 200
        if failed is not None:
            upstream.close()  # the rest is not read: not back to the pool
            logger.warning("answer to %s incomplete: %s", entry.run_id, failed)
            self._meter(
                entry,
                request,
                upstream.status,
                TokenCounts(),
                None,
                note=f"answer incomplete, {failed}" + (": worst case charged" if ok else ""),
                cost=reserved if ok else None,
            )
            return error_response(
                502, "api_error", f"agentkit gateway: upstream answer {failed}", retry=True
            )
        data = b"".join(chunks)
        tokens, model = usage_from_json(data) if ok else (TokenCounts(), None)
        unknown = ok and request.rel_url.raw_path == "/v1/messages" and tokens == TokenCounts()
        self._meter(
            entry,
            request,
            upstream.status,
            tokens,
            model,
            note="no usage in the answer: worst case charged" if unknown else None,
            cost=reserved if unknown else None,
        )
        response = web.StreamResponse(status=upstream.status, headers=headers)
        response.content_length = len(data)
        view = memoryview(data)
        try:
            await self._write(response.prepare(request))
            for at in range(0, len(data), _WRITE_CHUNK):
                await self._write(response.write(view[at : at + _WRITE_CHUNK]))
            await self._write(response.write_eof())
        except _Stalled:
            logger.warning("%s cut off: took no data for %g s", entry.run_id, self.write_timeout)
            _abort(request)
        except ConnectionResetError as exc:
            logger.info("%s hung up before its answer was sent: %r", entry.run_id, exc)
        return response

    async def _drain(self, upstream: aiohttp.ClientResponse, meter: SSEUsage, call: _Call) -> None:
        """The rest of an answer whose agent hung up, read for its usage only (at most
        :attr:`drain_timeout` seconds and :attr:`drain_max_bytes` bytes). Meters the real
        usage once the final ``message_delta`` arrived; otherwise charges the reserved worst
        case. Releases the upstream answer and the reservation."""
        read = 0
        why = "ended without its final usage"
        try:
            async with asyncio.timeout(self.drain_timeout):
                async for chunk in upstream.content.iter_any():
                    meter.feed(chunk)
                    read += len(chunk)
                    if meter.stopped or meter.error is not None:
                        break
                    if read > self.drain_max_bytes:
                        why = f"over {self.drain_max_bytes} bytes"
                        break
        except TimeoutError:
            why = f"not done in {self.drain_timeout:g} s"
        except aiohttp.ClientError as exc:
            why = f"upstream broke off ({type(exc).__name__})"
        except asyncio.CancelledError:
            why = "the gateway stopped"
            raise
        finally:
            upstream.close()  # not released to the pool: the rest is not read
            if meter.stopped or meter.error is not None:
                self._meter(
                    call.entry,
                    None,
                    upstream.status,
                    meter.tokens,
                    meter.model,
                    note=meter.error or "agent hung up: read to the end",
                )
            else:
                logger.info("answer to %s after its hang-up %s", call.entry.run_id, why)
                self._meter(
                    call.entry,
                    None,
                    upstream.status,
                    meter.tokens,
                    meter.model,
                    note="agent hung up: worst case charged",
                    cost=max(call.reserved, self.prices.cost(meter.model or "", meter.tokens)),
                )
            self._release(call.entry, call.reserved)  # after the cost is added: no gap

    def _meter(
        self,
        entry: RunEntry,
        request: web.Request | None,
        status: int,
        tokens: TokenCounts,
        model: str | None,
        *,
        note: str | None = None,
        cost: float | None = None,
    ) -> None:
        if cost is None:
            cost = self.prices.cost(model or "", tokens)
        now = time.time()
        self.runs.add_cost(entry, cost, now)  # the next request's budget check sees it at once
        row = UsageRow(
            at=now,
            source="agent",
            run_id=entry.run_id,
            workspace=entry.workspace,
            model=model,
            status=status,
            tokens=tokens,
            cost_usd=cost,
            note=note,
        )
        self.background(self.ledger.run(lambda db: db.record_usage(row)))
