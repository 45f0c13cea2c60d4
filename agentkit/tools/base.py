"""`Tool`, `ToolResult`, `ToolContext` and the `@tool` decorator."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from pydantic import BaseModel

from agentkit.redact import Redactor
from agentkit.tools.schema import model_from_signature, model_schema, parse_docstring

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.containers.service import AgentService
    from agentkit.executors.base import Executor
    from agentkit.workspaces.service import WorkspaceService

ArgsT = TypeVar("ArgsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns to the model.

    ``content`` is the text the model reads; ``is_error`` marks a failed call the model may
    retry differently; ``data`` optionally carries structured data for programmatic callers
    (the CLI's ``--json``, MCP structured content). It is never sent to the model.
    """

    content: str
    is_error: bool = False
    data: Any = None

    @classmethod
    def error(cls, message: str, data: Any = None) -> ToolResult:
        return cls(content=message, is_error=True, data=data)


@dataclass(slots=True)
class ToolContext:
    """What a running tool may use. Services are ``None`` when not wired (pure-Python toolsets)."""

    settings: Settings | None = None
    executor: Executor | None = None
    agents: AgentService | None = None
    workspaces: WorkspaceService | None = None
    redactor: Redactor = field(default_factory=Redactor)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("agentkit.tools"))
    extras: dict[str, Any] = field(default_factory=dict)

    def require_agents(self) -> AgentService:
        if self.agents is None:
            from agentkit.errors import ConfigError

            raise ConfigError("no agent service is wired into this toolset; use agentkit.connect()")
        return self.agents

    def require_workspaces(self) -> WorkspaceService:
        if self.workspaces is None:
            from agentkit.errors import ConfigError

            raise ConfigError(
                "no workspace service is wired into this toolset; use agentkit.connect()"
            )
        return self.workspaces


ToolFn = Callable[[ArgsT, ToolContext], Awaitable["str | ToolResult"]]


class Tool(Generic[ArgsT]):
    """A named, described, schema-validated async operation the model can call.

    Args:
        name: the tool name the model uses (``^[a-zA-Z0-9_-]{1,64}$``).
        description: written for the model: what it does, when to use it, what it returns.
        args_model: pydantic model of the arguments; its JSON schema is sent to the API.
        fn: ``async fn(args, ctx) -> str | ToolResult``.
        destructive: marks tools an approval hook should gate (stop, delete, push).
        max_result_bytes: per-tool override of the toolset's result size cap.
        truncation_hint: appended to the cut marker, e.g. how to page for the rest.
    """

    def __init__(
        self,
        name: str,
        description: str,
        args_model: type[ArgsT],
        fn: ToolFn[ArgsT],
        *,
        destructive: bool = False,
        max_result_bytes: int | None = None,
        truncation_hint: str | None = None,
    ) -> None:
        import re

        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise ValueError(f"invalid tool name {name!r}: use 1-64 of [a-zA-Z0-9_-]")
        if not description.strip():
            raise ValueError(f"tool {name!r} needs a description written for the model")
        self.name = name
        self.description = description.strip()
        self.args_model = args_model
        self.fn = fn
        self.destructive = destructive
        self.max_result_bytes = max_result_bytes
        self.truncation_hint = truncation_hint

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        """The exact JSON schema sent to the API and used for validation."""
        return model_schema(self.args_model)

    def definition(self) -> dict[str, Any]:
        """Anthropic Messages API tool definition."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }

    async def run(self, args: ArgsT, ctx: ToolContext) -> ToolResult:
        out = await self.fn(args, ctx)
        if isinstance(out, ToolResult):
            return out
        if not isinstance(out, str):
            raise TypeError(f"tool {self.name} returned {type(out).__name__}, not str/ToolResult")
        return ToolResult(out)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


AnyFn = Callable[..., Awaitable[Any]]


@overload
def tool(fn: AnyFn, /) -> Tool[Any]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    destructive: bool = False,
    max_result_bytes: int | None = None,
    truncation_hint: str | None = None,
) -> Callable[[AnyFn], Tool[Any]]: ...


def tool(
    fn: AnyFn | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    destructive: bool = False,
    max_result_bytes: int | None = None,
    truncation_hint: str | None = None,
) -> Tool[Any] | Callable[[AnyFn], Tool[Any]]:
    """Turn an async function with type hints and a docstring into a :class:`Tool`.

    The docstring's first part is the description; its ``Args:`` section describes the
    parameters. A parameter annotated :class:`ToolContext` receives the context and is not part
    of the schema::

        @tool
        async def add(a: int, b: int = 1) -> str:
            '''Add two numbers.

            Args:
                a: first number.
                b: second number.
            '''
            return str(a + b)
    """

    def wrap(func: AnyFn) -> Tool[Any]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@tool needs an async function, got {func!r}")
        doc_description, _ = parse_docstring(func.__doc__)
        desc = description or doc_description
        if not desc:
            raise ValueError(f"@tool {func.__name__}: give a docstring or description=")
        args_model = model_from_signature(func, skip=(ToolContext,))
        ctx_params = [
            pname
            for pname, annotation in inspect.get_annotations(func, eval_str=True).items()
            if annotation is ToolContext
        ]

        async def call(args: BaseModel, ctx: ToolContext) -> str | ToolResult:
            kwargs = {key: getattr(args, key) for key in type(args).model_fields}
            for pname in ctx_params:
                kwargs[pname] = ctx
            return cast("str | ToolResult", await func(**kwargs))

        return Tool(
            name or func.__name__,
            desc,
            args_model,
            call,
            destructive=destructive,
            max_result_bytes=max_result_bytes,
            truncation_hint=truncation_hint,
        )

    if fn is not None:
        return wrap(fn)
    return wrap
