"""``POST /v1/runs``: run the ``ToolBasedAgent`` on a prompt, streaming its events over SSE.

A run lives as long as its request: when the client goes away the run is cancelled (its
running tool calls too); agents it spawned keep running under their own deadlines and stay
visible in ``/v1/agents``. Events carry sequential ids but a run cannot be resumed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from agentkit.errors import AgentkitError
from agentkit.serve.encode import run_event
from agentkit.serve.models import INVALID, ErrorModel, RunRequest
from agentkit.serve.sse import Message, event_stream
from agentkit.serve.state import serve_state

if TYPE_CHECKING:
    from agentkit.agent.events import AgentEvent

__all__ = ["run_router"]


def run_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["runs"], responses=INVALID)

    @router.post(
        "/runs",
        response_class=StreamingResponse,
        operation_id="create_run",
        responses={
            200: {
                "description": "Server-Sent Events: run_started, text_delta, text, tool_call, "
                "tool_result, turn_finished, then run_finished or error.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            503: {"model": ErrorModel, "description": "ANTHROPIC_API_KEY is not set"},
        },
    )
    async def create_run(body: RunRequest, request: Request) -> StreamingResponse:
        """Run the controlling agent (the twelve tools) on ``prompt`` and stream what it does."""
        state = serve_state(request)
        options: dict[str, Any] = {"client": state.model_client()}  # 503 without a key
        for key in ("model", "system", "max_turns"):
            value = getattr(body, key)
            if value is not None:
                options[key] = value
        agent = state.conn.agent(**options)
        redactor = state.redactor

        async def messages() -> AsyncGenerator[Message, None]:
            number = 0
            try:
                # stream() is an async generator (typed as an iterator): close it with us
                stream = cast("AsyncGenerator[AgentEvent, None]", agent.stream(body.prompt))
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        data = run_event(event, redactor)
                        yield Message(str(data["type"]), data, str(number))
                        number += 1
            except AgentkitError:
                return  # the stream already carried the ErrorEvent that says why

        return event_stream(messages(), counter=state.streams)

    return router
