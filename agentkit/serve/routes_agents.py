"""Resource routes: agents (status, stop, live events), the fleet stream, workspaces, costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.responses import StreamingResponse

from agentkit.serve.costs import known_costs
from agentkit.serve.encode import agent_event
from agentkit.serve.models import INVALID, AgentStatusModel, CostsModel, ErrorModel, WorkspaceModel
from agentkit.serve.sse import Message, Position, event_stream, format_position, parse_position
from agentkit.serve.state import serve_state
from agentkit.tools.containers import MAX_LIST, ListState

if TYPE_CHECKING:
    from agentkit.containers.models import AgentStatus
    from agentkit.containers.service import AgentService
    from agentkit.containers.streamjson import Event

__all__ = ["resource_router"]

_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events (`text/event-stream`); resume with `Last-Event-ID`.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorModel, "description": "missing or wrong token"},
    403: {"model": ErrorModel, "description": "not an agent started by agentkit"},
    404: {"model": ErrorModel, "description": "no such agent"},
}

REWATCH_DELAY = 1.0  # seconds before watching a still running agent whose stream ended
PAGE_SIZE = 100  # agents per GET /v1/agents page unless ?limit= says otherwise


async def positioned(
    agents: AgentService, agent_id: str, after: Position | None
) -> AsyncGenerator[tuple[Position, Event], None]:
    """The agent's events with their ``(line, index)`` positions, those after ``after`` only."""
    async with contextlib.aclosing(agents.watch_numbered(agent_id)) as events:
        async for line, index, event in events:
            if after is None or (line, index) > after:
                yield (line, index), event


LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)]


def resource_router() -> APIRouter:
    router = APIRouter(prefix="/v1", responses=INVALID)

    @router.get(
        "/agents",
        response_model=list[AgentStatusModel],
        tags=["agents"],
        operation_id="list_agents",
    )
    async def list_agents(
        request: Request,
        response: Response,
        state: Annotated[ListState | None, Query()] = None,
        workspace: Annotated[str | None, Query(max_length=4096)] = None,
        since: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = PAGE_SIZE,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[dict[str, Any]]:
        """Running agents and finished runs, newest first, one page at a time: the next page's
        ``cursor`` is in the ``X-Next-Cursor`` header (absent on the last page)."""
        page = await serve_state(request).conn.agents.page(
            state=state, workspace=workspace, since=since, limit=limit, cursor=cursor
        )
        if page.next_cursor:
            response.headers["X-Next-Cursor"] = page.next_cursor
        return [s.to_dict() for s in page.agents]

    def agent_route(
        method: str,
        path: str,
        operation_id: str,
        act: Callable[[AgentService, str], Awaitable[AgentStatus]],
        doc: str,
    ) -> None:
        """One route that does ``act`` to the agent ``{agent_id}`` and answers its status."""

        async def handler(agent_id: str, request: Request) -> dict[str, Any]:
            return (await act(serve_state(request).conn.agents, agent_id)).to_dict()

        handler.__name__ = handler.__qualname__ = operation_id
        handler.__doc__ = doc
        router.add_api_route(
            f"/agents/{{agent_id}}{path}",
            handler,
            methods=[method],
            response_model=AgentStatusModel,
            responses=_ERRORS,
            tags=["agents"],
            operation_id=operation_id,
        )

    agent_route(
        "GET",
        "",
        "get_agent",
        lambda agents, agent_id: agents.status(agent_id),
        "One agent's state, times, turns, cost and last text.",
    )
    agent_route(
        "POST",
        "/stop",
        "stop_agent",
        lambda agents, agent_id: agents.stop(agent_id),
        "Stop a running agent (its state becomes ``stopped``); a finished one is left as is.",
    )

    @router.get(
        "/agents/{agent_id}/events",
        response_class=StreamingResponse,
        responses={**_SSE, **_ERRORS},
        tags=["agents"],
        operation_id="agent_events",
    )
    async def agent_events(
        agent_id: str, request: Request, last_event_id: LastEventId = None
    ) -> StreamingResponse:
        """The agent's stream-json events from the start (or after ``Last-Event-ID``), live
        until it finishes; then an ``end`` event with its final status.

        Each ``event: agent.event`` has ``id: <line>.<index>`` (its place in the agent's whole
        output), so a client that reconnects with ``Last-Event-ID`` misses and repeats nothing.
        """
        state = serve_state(request)
        agents = state.conn.agents
        status = await agents.status(agent_id)  # 403/404 before the stream starts
        after = parse_position(last_event_id)
        redactor = state.redactor

        async def messages() -> AsyncGenerator[Message, None]:
            last = after
            while True:
                async with contextlib.aclosing(positioned(agents, status.id, last)) as events:
                    async for position, event in events:
                        last = position
                        yield Message(
                            "agent.event", agent_event(event, redactor), format_position(position)
                        )
                final = await agents.status(status.id)
                if final.finished:
                    yield Message("end", final.to_dict())
                    return
                # the service stopped following a running agent (a broken log stream):
                # watch again from where this stream is, after a pause
                await asyncio.sleep(REWATCH_DELAY)

        return event_stream(messages(), counter=state.streams)

    @router.get(
        "/events",
        response_class=StreamingResponse,
        responses=_SSE,
        tags=["agents"],
        operation_id="fleet_events",
    )
    async def fleet_events(
        request: Request, last_event_id: LastEventId = None, agent_events: bool = True
    ) -> StreamingResponse:
        """The whole fleet live: a ``snapshot`` of every agent first (or, with
        ``Last-Event-ID``, exactly the messages after it), then ``agent`` (status changes) and
        ``agent.event`` (each agent's stream events, with the agent's id; leave them out with
        ``?agent_events=false`` to follow statuses only)."""
        state = serve_state(request)
        hub = state.hub
        await hub.start()  # engine errors become HTTP errors here, before the stream
        return event_stream(
            hub.subscribe(last_event_id, agent_events=agent_events), counter=state.streams
        )

    @router.get(
        "/workspaces",
        response_model=list[WorkspaceModel],
        tags=["workspaces"],
        operation_id="list_workspaces",
    )
    async def list_workspaces(request: Request) -> list[dict[str, Any]]:
        """Every workspace: branch, remote, changes, last commit, whether an agent works in it."""
        return [w.to_dict() for w in await serve_state(request).conn.workspaces.list()]

    @router.get("/costs", response_model=CostsModel, tags=["costs"], operation_id="get_costs")
    async def get_costs(request: Request) -> dict[str, Any]:
        """What finished runs cost (USD), oldest first, and the total."""
        return await known_costs(serve_state(request).conn)

    return router
