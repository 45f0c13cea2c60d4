"""Server-Sent Events: framing, keep-alive, resumable positions, and the streaming response.

The body of an SSE response is an async iterator of :class:`Message`; :func:`event_stream`
frames it, sends a comment every ``HEARTBEAT`` seconds of silence (proxies close idle
connections), and stops the source at once when the client goes away (Starlette's
``StreamingResponse`` listens for the disconnect and cancels the body; the source generator is
closed in turn, so its subscriptions end with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.responses import StreamingResponse

__all__ = [
    "HEARTBEAT",
    "Message",
    "Position",
    "StreamCounter",
    "event_stream",
    "format_position",
    "frame",
    "parse_position",
]

HEARTBEAT = 15.0
_POSITION = re.compile(r"^(\d{1,12})\.(\d{1,6})$")  # "<line>.<index>": bounded, linear


@dataclass(frozen=True, slots=True)
class Message:
    """One SSE message: ``event`` name, JSON ``data``, optional ``id`` (resume point)."""

    event: str
    data: Any
    id: str | None = None


Position = tuple[int, int]


def parse_position(value: str | None) -> Position | None:
    """An agent stream's ``Last-Event-ID`` (``"<line>.<index>"``) as a tuple; ``None`` when
    absent or malformed (the stream then starts from the beginning)."""
    if not value:
        return None
    match = _POSITION.fullmatch(value.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def format_position(position: Position) -> str:
    """``(line, index)`` as the SSE id ``"<line>.<index>"`` (what :func:`parse_position` reads)."""
    return f"{position[0]}.{position[1]}"


def frame(message: Message) -> bytes:
    """The wire form: ``id:``, ``event:``, one ``data:`` line (compact JSON has no newline)."""
    parts = []
    if message.id is not None:
        parts.append(f"id: {message.id}")
    parts.append(f"event: {message.event}")
    parts.append("data: " + json.dumps(message.data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(parts) + "\n\n").encode("utf-8")


_DONE = object()


async def _framed(
    source: AsyncGenerator[Message, None], heartbeat: float
) -> AsyncGenerator[bytes, None]:
    """Frame ``source``'s messages, with a keep-alive comment after ``heartbeat`` s of silence.

    The source runs in its own task feeding a small queue (so waiting can time out without
    cancelling the source mid-step); the task and the source end with this generator.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    await queue.put(item)
        except Exception as exc:  # handed to the consumer, which ends the response
            await queue.put(exc)
            return
        await queue.put(_DONE)

    task = asyncio.create_task(pump(), name="sse source")
    try:
        yield b": stream open\n\n"  # headers and a first byte now: the client knows it is live
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                yield frame(Message("error", {"detail": "the stream failed on the server"}))
                return
            yield frame(item)
    finally:
        task.cancel()  # closes the source (its finally blocks unsubscribe); ends on its own


class StreamCounter:
    """How many SSE responses are open (``GET /healthz`` reports it; tests check none leak)."""

    def __init__(self) -> None:
        self.open = 0


def event_stream(
    source: AsyncGenerator[Message, None],
    *,
    counter: StreamCounter | None = None,
    heartbeat: float = HEARTBEAT,
) -> StreamingResponse:
    """A ``text/event-stream`` response of ``source``'s messages."""

    async def body() -> AsyncIterator[bytes]:
        if counter is not None:
            counter.open += 1
        try:
            async with contextlib.aclosing(_framed(source, heartbeat)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            if counter is not None:
                counter.open -= 1

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
