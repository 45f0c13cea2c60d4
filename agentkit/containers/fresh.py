"""`FreshReads`: concurrent engine reads of the same thing share one request, never a stale one.

A dashboard or several bots asking ``get_claude_status`` of the same agents many times a
second would send one inspect per call. Here, calls for the same key share requests in
*rounds*: a call joins the round that starts next, never one already in flight (that request
left before the call was made and may predate an exit). So every answer reflects the engine's
state at some moment after the call began - exactly what a request of its own would have said -
while at most one request per key is in flight: under load a round serves every call that
arrived during the previous one.

A call that finds no request under way sends its own at once, in its own task (a lone call
costs what the request costs). Nothing is kept after a round: there is no cache to go stale. A
round's failure is every one of its callers' failure; a caller that is cancelled leaves the
round running for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["FreshReads"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FreshReads(Generic[K, V]):
    """Calls of ``read(key)`` for the same key share rounds (see the module docstring).

    Args:
        read: the request; called with the key, at most once at a time per key.
    """

    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        #: per key, the round whose request has not begun yet: calls may still join it
        self._waiting: dict[K, asyncio.Future[V]] = {}
        #: keys being read: by a caller itself (``None``) or by a round for the waiting ones
        self._running: dict[K, asyncio.Task[None] | None] = {}

    async def get(self, key: K) -> V:
        """What ``read(key)`` returns, from a request begun after this call began."""
        future = self._waiting.get(key)
        if future is None and key in self._running:  # a request is under way: the next one
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
        if future is not None:
            return await asyncio.shield(future)
        # nobody reads this key: read now, in this call (no hop through another task, so a
        # lone call costs what the request costs)
        self._running[key] = None
        try:
            return await self._read(key)
        finally:
            self._done(key)

    def _done(self, key: K) -> None:
        del self._running[key]
        if key in self._waiting:  # calls arrived meanwhile: their round starts now
            self._running[key] = asyncio.create_task(self._round(key), name="fresh read")

    async def _round(self, key: K) -> None:
        future = self._waiting.pop(key)  # from here on, new calls wait for the next round
        try:
            result = await self._read(key)
        except BaseException as exc:  # handed to the callers, whatever it is
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not future.done():
                future.set_result(result)
        finally:
            self._done(key)
            # a round nobody awaits any more must not log "exception never retrieved"
            if future.done() and not future.cancelled():
                future.exception()
