"""Toolset units: truncation, paths in errors, the second validation layer, subsets, logging.

Tools are built inside the tests, so each check sees what the code computes while it runs.
"""

from __future__ import annotations

import logging
from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, field_validator

from agentkit import Tool, ToolContext, ToolResult, Toolset, tool
from agentkit.errors import NotFoundError
from agentkit.redact import Redactor
from agentkit.tools.toolset import truncate

CUT_HINT = " Ask for less output to see the rest.]\n"


def test_truncate_keeps_short_text_and_cuts_long_text_exactly() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) != "abcd"
    # budget = max(1000 - 200, 64) = 800 bytes: 400 of the head and 400 of the tail
    text = "h" * 500 + "t" * 500
    assert truncate(text, 1000) == text
    text += "x"
    assert truncate(text, 1000) == (
        "h" * 400 + "\n[... 201 of 1001 bytes cut here." + CUT_HINT + "t" * 399 + "x"
    )
    # small caps keep at least 64 bytes: 32 of each end
    assert truncate("a" * 40 + "b" * 40, 10) == (
        "a" * 32 + "\n[... 16 of 80 bytes cut here." + CUT_HINT + "b" * 32
    )
    assert truncate("z" * 100, 10, hint="Use lines=50.") == (
        "z" * 32 + "\n[... 36 of 100 bytes cut here. Use lines=50.]\n" + "z" * 32
    )


def test_truncate_never_splits_a_character() -> None:
    text = "€" * 400  # 3 bytes each: 1200 bytes
    out = truncate(text, 300)  # budget 100: 50 bytes of each end, whole characters only
    assert out == "€" * 16 + "\n[... 1104 of 1200 bytes cut here." + CUT_HINT + "€" * 16


def test_validation_paths_name_list_items() -> None:
    @tool
    async def tag(tags: list[int], name: str = "x") -> str:
        """Tag.

        Args:
            tags: numbers.
            name: a name.
        """
        return "ok"

    toolset = Toolset([tag])
    assert "tag" in toolset
    assert "other" not in toolset
    assert toolset.validate("tag", {"tags": [1, "two", 3.5]}) == [
        "$.tags[1]: 'two' is not of type 'integer'",
        "$.tags[2]: 3.5 is not of type 'integer'",
    ]


def _no_bad(value: str) -> str:
    if value == "bad":
        raise ValueError("bad is not a name")
    return value


async def test_what_only_the_args_model_refuses_is_an_invalid_input_result() -> None:
    """The JSON schema cannot express every rule; the pydantic model is the second layer."""

    @tool
    async def rename(name: Annotated[str, AfterValidator(_no_bad)]) -> str:
        """Rename.

        Args:
            name: the new name.
        """
        return f"renamed to {name}"

    class Moves(BaseModel):
        steps: list[str]

        @field_validator("steps")
        @classmethod
        def not_empty(cls, value: list[str]) -> list[str]:
            if any(not step for step in value):
                raise ValueError("empty step")
            return value

    async def run_moves(args: Moves, ctx: ToolContext) -> str:
        return ",".join(args.steps)

    moves = Tool("moves", "Make moves.", Moves, run_moves)
    toolset = Toolset([rename, moves])
    assert (await toolset.call("rename", {"name": "good"})).content == "renamed to good"
    refused = await toolset.call("rename", {"name": "bad"})
    assert refused == ToolResult.error(
        "Invalid input for tool rename:\n- $.name: Value error, bad is not a name\n"
        "Fix the errors and call the tool again."
    )
    nested = await toolset.call("moves", {"steps": ["a", ""]})
    assert nested == ToolResult.error(
        "Invalid input for tool moves:\n- $.steps: Value error, empty step\n"
        "Fix the errors and call the tool again."
    )


async def test_no_input_means_an_empty_object() -> None:
    @tool
    async def ping() -> str:
        """Ping."""
        return "pong"

    assert await Toolset([ping]).call("ping", None) == ToolResult("pong")
    assert (await Toolset([ping]).call("ping", [])).is_error


async def test_an_empty_toolset_says_so() -> None:
    assert await Toolset().call("x", {}) == ToolResult.error(
        "Unknown tool 'x'. Available tools: (none). Call one of those."
    )


async def test_a_tool_error_without_a_message_is_named_by_its_type() -> None:
    @tool
    async def find() -> str:
        """Find."""
        raise NotFoundError()

    assert await Toolset([find]).call("find", {}) == ToolResult.error("NotFoundError")


async def test_an_unexpected_exception_is_logged_once_redacted_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @tool
    async def boom() -> str:
        """Explode."""
        raise RuntimeError("kaput with hunter2-secret")

    context = ToolContext(redactor=Redactor(["hunter2-secret"]))
    with caplog.at_level(logging.ERROR, logger="agentkit.tools"):
        result = await Toolset([boom], context=context).call("boom", {})
    assert result == ToolResult.error(
        "Tool boom failed unexpectedly with RuntimeError: kaput with [REDACTED]"
    )
    (record,) = [r for r in caplog.records if r.name == "agentkit.tools"]
    message = record.getMessage()
    head, _, trace = message.partition("\n")
    assert head == "tool boom raised RuntimeError: kaput with [REDACTED]"
    assert trace.startswith("Traceback (most recent call last):")
    assert trace.rstrip().endswith("RuntimeError: kaput with [REDACTED]")
    assert "hunter2-secret" not in message


async def test_redacted_or_cut_results_keep_their_error_flag() -> None:
    @tool
    async def leak() -> ToolResult:
        """Leak."""
        return ToolResult.error("failed for hunter2-secret")

    @tool(max_result_bytes=100, truncation_hint="Ask for page 2.")
    async def chatty() -> str:
        """Talk."""
        return "w" * 300

    toolset = Toolset([leak, chatty], context=ToolContext(redactor=Redactor(["hunter2-secret"])))
    assert await toolset.call("leak", {}) == ToolResult.error("failed for [REDACTED]")
    cut = await toolset.call("chatty", {})
    assert cut == ToolResult(
        "w" * 32 + "\n[... 236 of 300 bytes cut here. Ask for page 2.]\n" + "w" * 32
    )


def test_subset_keeps_order_context_and_cap() -> None:
    @tool
    async def a() -> str:
        """A."""
        return "a"

    @tool
    async def b() -> str:
        """B."""
        return "b"

    @tool
    async def c() -> str:
        """C."""
        return "c"

    context = ToolContext()
    toolset = Toolset([a, b, c], context=context, max_result_bytes=500)
    part = toolset.subset(["c", "a"])
    assert part.names == ["c", "a"]
    assert part.context is context
    assert part.max_result_bytes == 500
    assert [t.name for t in part] == ["c", "a"]
    assert len(part) == 2
    assert part["c"] is c
    with pytest.raises(ValueError, match=r"^unknown tools: x, y$"):
        toolset.subset(["a", "x", "y"])
