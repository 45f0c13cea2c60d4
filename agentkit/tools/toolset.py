"""`Toolset`: a named collection of tools; validates, runs, caps and redacts every call."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from agentkit.errors import ConfigError, ToolError
from agentkit.tools.base import Tool, ToolContext, ToolResult

logger = logging.getLogger("agentkit.tools")

DEFAULT_MAX_RESULT_BYTES = 16_384
FIX_HINT = "Fix the errors and call the tool again."


def _json_path(path: Iterable[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def truncate(text: str, max_bytes: int, hint: str | None = None) -> str:
    """Cut ``text`` to at most about ``max_bytes`` UTF-8 bytes, with an explicit marker.

    The head and the tail are kept (the tail usually holds the conclusion).
    """
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    budget = max(max_bytes - 200, 64)
    head = raw[: budget // 2].decode("utf-8", "ignore")
    tail = raw[len(raw) - budget // 2 :].decode("utf-8", "ignore")
    cut = len(raw) - len(head.encode()) - len(tail.encode())
    marker = f"\n[... {cut} of {len(raw)} bytes cut here."
    marker += f" {hint}]\n" if hint else " Ask for less output to see the rest.]\n"
    return head + marker + tail


class Toolset:
    """An ordered set of tools with one entry point: :meth:`call`.

    ``call`` never raises for anything the model did: unknown names, schema violations, tool
    failures and unexpected exceptions all come back as ``ToolResult(is_error=True)`` with a
    message that says how to fix the call. Configuration errors and cancellation propagate.
    """

    def __init__(
        self,
        tools: Iterable[Tool[Any]] = (),
        *,
        context: ToolContext | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self._tools: dict[str, Tool[Any]] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        self.context = context or ToolContext()
        self.max_result_bytes = max_result_bytes
        for item in tools:
            self.add(item)

    # --- collection -------------------------------------------------------------------------

    def add(self, item: Tool[Any]) -> None:
        if item.name in self._tools:
            raise ValueError(f"duplicate tool name {item.name!r}")
        schema = item.input_schema
        Draft202012Validator.check_schema(schema)
        self._tools[item.name] = item
        self._validators[item.name] = Draft202012Validator(schema)

    def __iter__(self) -> Iterator[Tool[Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool[Any]:
        return self._tools[name]

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def subset(self, names: Iterable[str]) -> Toolset:
        """A toolset with only ``names`` (same context)."""
        wanted = list(names)
        missing = [n for n in wanted if n not in self._tools]
        if missing:
            raise ValueError(f"unknown tools: {', '.join(missing)}")
        return Toolset(
            [self._tools[n] for n in wanted],
            context=self.context,
            max_result_bytes=self.max_result_bytes,
        )

    # --- export -----------------------------------------------------------------------------

    def to_anthropic(self) -> list[dict[str, Any]]:
        """Tool definitions for the Anthropic Messages API ``tools`` parameter."""
        return [t.definition() for t in self]

    def to_openai(self) -> list[dict[str, Any]]:
        """Tool definitions in OpenAI function-calling format (same schema)."""
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                },
            }
            for t in self
        ]

    def to_mcp(self) -> list[dict[str, Any]]:
        """Tool definitions in MCP's ``tools/list`` shape (same schema, plain dicts).

        ``destructive`` tools carry ``annotations.destructiveHint``. Validate into
        ``mcp.types.Tool`` with ``mcp.types.Tool.model_validate(d)`` when the SDK is needed.
        """
        return [
            {
                "name": t.name,
                "description": t.description,
                "inputSchema": t.input_schema,
                "annotations": {"destructiveHint": t.destructive},
            }
            for t in self
        ]

    # --- calling ----------------------------------------------------------------------------

    def validate(self, name: str, tool_input: Any) -> list[str]:
        """Every schema violation of ``tool_input`` for tool ``name``, as ``path: message``."""
        validator = self._validators[name]
        errors = sorted(validator.iter_errors(tool_input), key=lambda e: list(e.path))
        return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]

    async def call(
        self, name: str, tool_input: Mapping[str, Any] | Any, *, context: ToolContext | None = None
    ) -> ToolResult:
        """Validate ``tool_input`` against the tool's schema, run it, and return its result."""
        ctx = context or self.context
        result = await self._call(name, tool_input, ctx)
        tool_obj = self._tools.get(name)
        cap = self.max_result_bytes
        hint = None
        if tool_obj is not None:
            cap = tool_obj.max_result_bytes or cap
            hint = tool_obj.truncation_hint
        # linear, and off the event loop when large (a tool may return an agent's huge output)
        content = truncate(await ctx.redactor.aredact(result.content), cap, hint)
        data = await ctx.redactor.aredact_data(result.data)
        if content == result.content and data == result.data:
            return result
        return ToolResult(content=content, is_error=result.is_error, data=data)

    async def _call(self, name: str, tool_input: Any, ctx: ToolContext) -> ToolResult:
        tool_obj = self._tools.get(name)
        if tool_obj is None:
            available = ", ".join(self._tools) or "(none)"
            return ToolResult.error(
                f"Unknown tool {name!r}. Available tools: {available}. Call one of those."
            )
        if tool_input is None:
            tool_input = {}
        problems = self.validate(name, tool_input)
        if problems:
            return self._invalid(name, problems)
        try:
            args = tool_obj.args_model.model_validate(tool_input)
        except ValidationError as exc:
            return self._invalid(
                name,
                [
                    f"{_json_path(err['loc'])}: {err['msg']}"
                    for err in exc.errors(include_url=False)
                ],
            )
        try:
            return await tool_obj.run(args, ctx)
        except (ConfigError, asyncio.CancelledError):
            raise
        except ToolError as exc:
            return ToolResult.error(str(exc) or type(exc).__name__)
        except jsonschema.SchemaError:
            raise
        except Exception as exc:
            message = ctx.redactor.redact(str(exc))
            # the traceback repeats the exception's text: redact it too, never log it raw
            trace = ctx.redactor.redact(traceback.format_exc())
            ctx.logger.error("tool %s raised %s: %s\n%s", name, type(exc).__name__, message, trace)
            return ToolResult.error(
                f"Tool {name} failed unexpectedly with {type(exc).__name__}: {message}"
            )

    @staticmethod
    def _invalid(name: str, problems: list[str]) -> ToolResult:
        listing = "\n".join(f"- {p}" for p in problems)
        return ToolResult.error(f"Invalid input for tool {name}:\n{listing}\n{FIX_HINT}")
