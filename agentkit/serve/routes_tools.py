"""``/v1/tools``: every tool of the toolset as ``POST /v1/tools/{name}`` (its input schema in
the OpenAPI document, so generated clients get one typed method per tool)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentkit.errors import NotFoundError
from agentkit.serve.models import (
    INVALID,
    ErrorModel,
    ToolInfoModel,
    ToolResultModel,
    ValidationErrorModel,
)
from agentkit.serve.state import serve_state
from agentkit.tools.base import Tool
from agentkit.tools.toolset import Toolset

__all__ = ["tool_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorModel, "description": "missing or wrong token"},
    413: {"model": ErrorModel, "description": "body too large"},
    422: {"model": ValidationErrorModel, "description": "input violates the tool's schema"},
}


def _invalid(problems: list[str], detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "type": "ValidationError", "errors": problems}, status_code=422
    )


async def _input(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        return _invalid([f"body:$: not valid JSON ({exc.msg} at {exc.pos})"], "invalid JSON")
    except ValueError:  # not UTF-8
        return _invalid(["body:$: not valid UTF-8 JSON"], "invalid JSON")


def _handler(name: str) -> Callable[[Request], Awaitable[Any]]:
    async def call_tool(request: Request) -> Any:
        state = serve_state(request)
        toolset = state.conn.toolset
        tool_input = await _input(request)
        if isinstance(tool_input, JSONResponse):
            return tool_input
        if not isinstance(tool_input, dict):
            return _invalid(["body:$: must be a JSON object"], f"invalid input for {name}")
        problems = toolset.validate(name, tool_input)
        if problems:
            return _invalid([f"body:{p}" for p in problems], f"invalid input for tool {name}")
        result = await toolset.call(name, tool_input)
        return {"content": result.content, "is_error": result.is_error, "data": result.data}

    call_tool.__name__ = f"call_{name}"
    return call_tool


def _summary(item: Tool[Any]) -> str:
    return (item.description.strip().splitlines() or [item.name])[0][:120]


def tool_router(toolset: Toolset) -> APIRouter:
    """Routes for ``toolset``'s tools (the connection's toolset answers the calls)."""
    router = APIRouter(prefix="/v1/tools", tags=["tools"], responses=INVALID)

    @router.get("", response_model=list[ToolInfoModel], operation_id="list_tools")
    async def list_tools(request: Request) -> list[dict[str, Any]]:
        """The tools, their descriptions and input schemas."""
        tools = serve_state(request).conn.toolset
        return [
            {
                "name": t.name,
                "description": t.description,
                "destructive": t.destructive,
                "input_schema": t.input_schema,
            }
            for t in tools
        ]

    for item in toolset:
        router.add_api_route(
            f"/{item.name}",
            _handler(item.name),
            methods=["POST"],
            response_model=ToolResultModel,
            operation_id=f"call_{item.name}",
            summary=_summary(item),
            description=(
                f"{item.description}\n\nAnswers 200 with the ToolResult; `is_error` is true "
                "when the tool failed (the content says why)."
                + (" **Destructive.**" if item.destructive else "")
            ),
            responses=_ERRORS,
            openapi_extra={
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": item.input_schema}},
                }
            },
        )

    @router.post(
        "/{name}",
        responses={404: {"model": ErrorModel}},
        include_in_schema=False,
    )
    async def unknown_tool(name: str, request: Request) -> Any:
        tools = serve_state(request).conn.toolset
        if name in tools:  # a tool added to the connection after the app was built
            return await _handler(name)(request)
        raise NotFoundError(f"unknown tool {name!r}; available: {', '.join(tools.names)}")

    return router
