"""Toolset, @tool and schema generation: what the model sees and what it gets back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agentkit import Tool, ToolContext, ToolResult, Toolset, tool
from agentkit.errors import ConfigError, NotFoundError
from agentkit.redact import REDACTED, Redactor
from agentkit.tools.schema import parse_docstring
from tests.support import examples


@tool
async def spawn(task: str, workspace_path: str, timeout: int = 600_000) -> str:
    """Start a Claude Code agent on a task.

    Returns the container id.

    Args:
        task: what the agent should do, in plain words.
        workspace_path: workspace folder to mount; it
            must exist already.
        timeout: milliseconds before the agent is stopped.
    """
    return f"started {task} in {workspace_path} for {timeout}"


class Filters(BaseModel):
    status: Literal["running", "exited"] | None = None
    labels: list[str] = Field(default_factory=list)


@tool
async def search(
    query: str,
    limit: int = 10,
    filters: Filters | None = None,
    ratio: float = 0.5,
    exact: bool = False,
    tags: list[str] | None = None,
) -> str:
    """Search things.

    Args:
        query: text to look for.
        limit: most results.
        filters: optional filters.
        ratio: a fraction.
        exact: exact match only.
        tags: tags to match.
    """
    return f"{query}:{limit}:{filters}:{ratio}:{exact}:{tags}"


def contains_key(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(contains_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(contains_key(v, key) for v in node)
    return False


def test_schema_from_signature_and_docstring() -> None:
    schema = spawn.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["task", "workspace_path"]
    assert schema["properties"]["task"] == {
        "type": "string",
        "description": "what the agent should do, in plain words.",
    }
    assert schema["properties"]["workspace_path"]["description"] == (
        "workspace folder to mount; it must exist already."
    )
    assert schema["properties"]["timeout"]["default"] == 600_000
    assert schema["additionalProperties"] is False
    assert spawn.description == "Start a Claude Code agent on a task.\n\nReturns the container id."
    assert not contains_key(schema, "title")
    assert not contains_key(search.input_schema, "title")
    # the exported definition is exactly the schema used for validation
    (definition,) = Toolset([spawn]).to_anthropic()
    assert definition == {
        "name": "spawn",
        "description": spawn.description,
        "input_schema": schema,
    }


def test_property_named_title_is_kept() -> None:
    @tool
    async def note(title: str) -> str:
        """Make a note.

        Args:
            title: the note's title.
        """
        return title

    assert list(note.input_schema["properties"]) == ["title"]


def test_docstring_parsing() -> None:
    description, params = parse_docstring(
        """Do a thing.

        More words.

        Args:
            a (int): first
                continued.
            b: second.

        Returns:
            c: not a parameter.
        """
    )
    assert description == "Do a thing.\n\nMore words."
    assert params == {"a": "first continued.", "b": "second."}


def test_tool_context_parameter_is_injected_not_exposed() -> None:
    @tool
    async def whoami(ctx: ToolContext, name: str) -> str:
        """Greets.

        Args:
            name: who.
        """
        return f"{name}:{ctx.extras['host']}"

    assert list(whoami.input_schema["properties"]) == ["name"]
    toolset = Toolset([whoami], context=ToolContext(extras={"host": "box"}))
    assert asyncio.run(toolset.call("whoami", {"name": "ann"})).content == "ann:box"


def test_decorator_rejects_bad_definitions() -> None:
    def sync_fn() -> str:
        """Sync."""
        return ""

    async def undocumented() -> str:
        return ""

    with pytest.raises(TypeError, match="async"):
        tool(sync_fn)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="docstring"):
        tool(undocumented)
    with pytest.raises(ValueError, match="invalid tool name"):
        tool(name="has space", description="d")(undocumented)
    with pytest.raises(ValueError, match="duplicate"):
        Toolset([spawn, spawn])


async def test_unknown_tool_lists_names() -> None:
    result = await Toolset([spawn, search]).call("spawn_agent", {})
    assert result.is_error
    assert "Unknown tool 'spawn_agent'" in result.content
    assert "Available tools: spawn, search" in result.content


async def test_every_violation_with_its_path() -> None:
    result = await Toolset([search]).call(
        "search",
        {"limit": "ten", "filters": {"status": "paused", "labels": [1]}, "extra": True},
    )
    assert result.is_error
    lines = result.content.splitlines()
    assert lines[0] == "Invalid input for tool search:"
    assert "- $: 'query' is a required property" in lines
    assert "- $: Additional properties are not allowed ('extra' was unexpected)" in lines
    assert any(line.startswith("- $.limit: 'ten' is not of type 'integer'") for line in lines)
    assert any(line.startswith("- $.filters") for line in lines)
    assert lines[-1] == "Fix the errors and call the tool again."


async def test_valid_call_runs_with_defaults() -> None:
    result = await Toolset([spawn]).call("spawn", {"task": "fix", "workspace_path": "/w"})
    assert result == ToolResult("started fix in /w for 600000")


async def test_tool_error_becomes_is_error() -> None:
    @tool
    async def find(name: str) -> str:
        """Find.

        Args:
            name: what.
        """
        raise NotFoundError(f"workspace {name!r} does not exist; list_workspaces shows them")

    result = await Toolset([find]).call("find", {"name": "x"})
    assert result == ToolResult.error("workspace 'x' does not exist; list_workspaces shows them")


async def test_unexpected_exception_names_its_type_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @tool
    async def broken() -> str:
        """Broken."""
        raise KeyError("missing")

    with caplog.at_level(logging.ERROR, logger="agentkit.tools"):
        result = await Toolset([broken]).call("broken", {})
    assert result.is_error
    assert "Tool broken failed unexpectedly with KeyError" in result.content
    assert "missing" in result.content
    assert any("broken" in r.getMessage() for r in caplog.records)


async def test_config_error_and_cancellation_propagate() -> None:
    @tool
    async def unconfigured() -> str:
        """Needs config."""
        raise ConfigError("AGENTKIT_HOST is invalid")

    @tool
    async def cancelled() -> str:
        """Cancelled."""
        raise asyncio.CancelledError

    toolset = Toolset([unconfigured, cancelled])
    with pytest.raises(ConfigError):
        await toolset.call("unconfigured", {})
    with pytest.raises(asyncio.CancelledError):
        await toolset.call("cancelled", {})


async def test_results_are_truncated_with_a_marker() -> None:
    @tool(max_result_bytes=500, truncation_hint="Use get_output with lines=N to page.")
    async def dump() -> str:
        """Dump."""
        return "HEAD" + "x" * 10_000 + "TAIL"

    result = await Toolset([dump]).call("dump", {})
    raw = result.content.encode()
    assert len(raw) <= 700
    assert result.content.startswith("HEAD")
    assert result.content.endswith("TAIL")
    assert "bytes cut here. Use get_output with lines=N to page.]" in result.content
    assert "of 10008 bytes" in result.content

    @tool
    async def big() -> str:
        """Big."""
        return "y" * 5000

    capped = await Toolset([big], max_result_bytes=1000).call("big", {})
    assert "cut here. Ask for less output to see the rest.]" in capped.content
    small = await Toolset([big]).call("big", {})
    assert small.content == "y" * 5000


async def test_secrets_are_redacted_from_results_and_errors() -> None:
    secret = "super-secret-token-123"

    @tool
    async def leak() -> str:
        """Leaks."""
        return f"token={secret} url=https://user:pw@github.com/x key=sk-ant-abcdefghijkl"

    @tool
    async def leak_error() -> str:
        """Leaks in errors."""
        raise RuntimeError(f"auth failed with {secret}")

    context = ToolContext(redactor=Redactor([secret]))
    toolset = Toolset([leak, leak_error], context=context)
    result = await toolset.call("leak", {})
    assert secret not in result.content
    assert "pw@" not in result.content
    assert "sk-ant-abcdefghijkl" not in result.content
    assert result.content.count(REDACTED) == 3
    failed = await toolset.call("leak_error", {})
    assert failed.is_error
    assert secret not in failed.content


async def test_secrets_are_redacted_from_the_log_of_an_unexpected_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "super-secret-token-123"

    @tool
    async def leak_error() -> str:
        """Leaks in errors."""
        raise RuntimeError(f"auth failed with {secret}")

    toolset = Toolset([leak_error], context=ToolContext(redactor=Redactor([secret])))
    with caplog.at_level(logging.ERROR, logger="agentkit.tools"):
        failed = await toolset.call("leak_error", {})
    assert failed.is_error
    assert caplog.records
    assert "RuntimeError" in caplog.text
    assert "leak_error" in caplog.text
    assert secret not in caplog.text


async def test_secrets_are_redacted_from_structured_data() -> None:
    secret = "super-secret-token-123"

    @tool
    async def leaky_data() -> ToolResult:
        """Leaks through data."""
        return ToolResult("ok", data={"remote": [f"https://{secret}@host/x"], "n": (1, secret)})

    toolset = Toolset([leaky_data], context=ToolContext(redactor=Redactor([secret])))
    result = await toolset.call("leaky_data", {})
    assert secret not in repr(result.data)
    assert result.data["n"] == (1, REDACTED)
    assert result.data["remote"] == [f"https://{REDACTED}@host/x"]


async def test_explicit_tool_with_args_model() -> None:
    class Args(BaseModel):
        container_id: str = Field(description="the agent's container id")

    async def run(args: Args, ctx: ToolContext) -> ToolResult:
        return ToolResult("stopped", data={"id": args.container_id})

    stop = Tool("stop_claude_agent", "Stop an agent.", Args, run, destructive=True)
    result = await Toolset([stop]).call("stop_claude_agent", {"container_id": "c1"})
    assert result.data == {"id": "c1"}
    assert stop.destructive
    assert stop.input_schema["properties"]["container_id"] == {
        "type": "string",
        "description": "the agent's container id",
    }


# --- property: Toolset.call never raises for anything the model sends --------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["query", "limit", "filters", "ratio", "exact", "tags", "status", "x"])
near_valid = st.dictionaries(
    keys,
    json_values
    | st.fixed_dictionaries(
        {},
        optional={"status": st.sampled_from(["running", "exited", "x"]), "labels": json_values},
    ),
    max_size=6,
)
mostly_valid = st.fixed_dictionaries(
    {"query": st.text(max_size=10)},
    optional={
        "limit": st.integers() | json_values,
        "ratio": st.floats(allow_nan=False, allow_infinity=False),
        "exact": st.booleans(),
        "tags": st.none() | st.lists(st.text(max_size=5), max_size=3),
        "filters": st.none() | st.fixed_dictionaries({}, optional={"status": st.just("running")}),
    },
)
TOOLSET = Toolset([search, spawn])


def _is_int(value: Any) -> bool:
    """A JSON integer: an int, or a float without a fractional part (JSON has one number type).

    pydantic turns an integral float into an int only inside 64 bits; a larger one is refused
    (as an error result, like any other invalid input).
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and -(2.0**63) < value < 2.0**63
    return isinstance(value, int)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _filters_ok(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    return value.get("status") in (None, "running", "exited") and _is_str_list(
        value.get("labels", [])
    )


#: the contract of each test tool, written out by hand from its signature (not derived from
#: the schema the validator uses): field -> (check, required)
CONTRACTS: dict[str, dict[str, tuple[Callable[[Any], bool], bool]]] = {
    "search": {
        "query": (lambda v: isinstance(v, str), True),
        "limit": (_is_int, False),
        "filters": (_filters_ok, False),
        "ratio": (_is_number, False),
        "exact": (lambda v: isinstance(v, bool), False),
        "tags": (lambda v: v is None or _is_str_list(v), False),
    },
    "spawn": {
        "task": (lambda v: isinstance(v, str), True),
        "workspace_path": (lambda v: isinstance(v, str), True),
        "timeout": (_is_int, False),
    },
}


def contract_violations(name: str, payload: Any) -> list[str]:
    """The JSON paths an independent reading of the contract says are wrong ("$" = the object)."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return ["$"]
    fields = CONTRACTS[name]
    wrong = [
        f"$.{key}" for key, value in payload.items() if key in fields and not fields[key][0](value)
    ]
    if any(key not in fields for key in payload) or any(
        required and key not in payload for key, (_, required) in fields.items()
    ):
        wrong.append("$")
    return wrong


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["search", "spawn", "nope"]),
    payload=mostly_valid | near_valid | json_values,
)
def test_any_json_input_validates_or_is_an_error_result(name: str, payload: Any) -> None:
    json.dumps(payload)  # it is JSON
    result = asyncio.run(TOOLSET.call(name, payload))
    assert isinstance(result, ToolResult)
    if name == "nope":
        assert result.is_error
        assert "Unknown tool 'nope'. Available tools: search, spawn." in result.content
        return
    wrong = contract_violations(name, payload)
    if wrong:
        assert result.is_error, (payload, result.content)
        assert result.content.startswith(f"Invalid input for tool {name}:\n")
        assert result.content.endswith("Fix the errors and call the tool again.")
        for path in wrong:  # each problem is named by its path
            assert f"- {path}:" in result.content, (path, result.content)
    else:
        assert not result.is_error, (payload, result.content)


def test_the_property_sees_both_outcomes() -> None:
    """The generators reach valid and invalid inputs (run on its own, in any order)."""
    outcomes: dict[bool, int] = {True: 0, False: 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=st.sampled_from(["search", "spawn"]), payload=mostly_valid | near_valid)
    def count(name: str, payload: Any) -> None:
        outcomes[not contract_violations(name, payload)] += 1

    count()
    assert outcomes[True] >= 20, outcomes
    assert outcomes[False] >= 20, outcomes


@pytest.mark.parametrize(
    ("name", "payload", "wrong"),
    [
        ("search", {"query": "q"}, []),
        ("search", {"query": "q", "limit": 3.0, "ratio": 1, "tags": None, "filters": None}, []),
        ("search", {"query": "q", "filters": {"status": "exited", "labels": ["a"], "x": 1}}, []),
        ("search", {"query": "q", "limit": True}, ["$.limit"]),
        ("search", {"query": "q", "limit": 2.5}, ["$.limit"]),
        ("search", {"query": "q", "limit": 2.0**63}, ["$.limit"]),
        ("search", {"query": "q", "limit": 2.0**62}, []),
        ("search", {"query": "q", "limit": 10**30}, []),
        ("search", {"query": "q", "ratio": False}, ["$.ratio"]),
        ("search", {"query": "q", "filters": {"status": "paused"}}, ["$.filters"]),
        ("search", {"query": "q", "filters": {"labels": [1]}}, ["$.filters"]),
        ("search", {"query": "q", "tags": ["a", 2]}, ["$.tags"]),
        ("search", {"limit": 1}, ["$"]),
        ("search", {"query": "q", "x": 1}, ["$"]),
        ("search", None, ["$"]),
        ("search", ["query"], ["$"]),
        ("spawn", {"task": "t", "workspace_path": "w", "timeout": "5"}, ["$.timeout"]),
        ("spawn", {"task": "t"}, ["$"]),
    ],
)
async def test_the_contract_oracle_agrees_with_the_toolset_on_known_cases(
    name: str, payload: Any, wrong: list[str]
) -> None:
    """The oracle above is itself checked on inputs whose verdict is known by hand."""
    assert contract_violations(name, payload) == wrong
    result = await TOOLSET.call(name, payload)
    assert result.is_error is bool(wrong), result.content
    for path in wrong:
        assert f"- {path}:" in result.content


async def test_annotated_constraints_reach_the_schema_and_validation() -> None:
    @tool
    async def tail(lines: Annotated[int, Field(ge=1, le=1000)] = 100) -> str:
        """Show the last lines.

        Args:
            lines: how many lines.
        """
        return str(lines)

    prop = tail.input_schema["properties"]["lines"]
    assert (prop["minimum"], prop["maximum"], prop["description"]) == (1, 1000, "how many lines.")
    refused = await Toolset([tail]).call("tail", {"lines": 0})
    assert refused.is_error
    assert "$.lines: 0 is less than the minimum of 1" in refused.content
    assert (await Toolset([tail]).call("tail", {"lines": 7})).content == "7"
