"""Jupyter helpers: rich display of results and live display of a running agent.

Jupyter runs cells with top-level ``await``, so the async API works as is::

    from agentkit.adapters.notebook import show, stream

    result = await stream(agent, "List my workspaces")   # live view, updated as events arrive
    show(result)                                         # answer, tool calls, usage
    show(await toolset.call("list_workspaces", {}))      # one tool result

``show`` returns an object with ``_repr_html_`` / ``_repr_markdown_``, so it displays as a cell's
last expression (and anywhere IPython's ``display`` is used). IPython is only imported by
:func:`stream`; the ``notebook`` extra installs it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit.adapters._text import clip, short_input
from agentkit.agent.events import (
    ErrorEvent,
    RunFinished,
    RunResult,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
)
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.agent.conversation import Conversation
    from agentkit.agent.loop import Prompt, ToolBasedAgent

_STYLE = "font-family: var(--jp-content-font-family, sans-serif); line-height: 1.4"
_PRE = "white-space: pre-wrap; margin: 0.3em 0; padding: 0.5em; background: rgba(128,128,128,.08)"


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One tool call of a run and its result (from the run's messages)."""

    name: str
    input: dict[str, Any]
    output: str
    is_error: bool


def tool_steps(messages: list[dict[str, Any]]) -> list[ToolStep]:
    """The tool calls in ``messages`` paired with their results, in order."""
    results: dict[str, tuple[str, bool]] = {}
    for message in messages:
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                output = block.get("content", "")
                if isinstance(output, list):
                    output = "".join(str(b.get("text", "")) for b in output if isinstance(b, dict))
                results[str(block.get("tool_use_id"))] = (str(output), bool(block.get("is_error")))
    steps: list[ToolStep] = []
    for message in messages:
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                output, is_error = results.get(str(block.get("id")), ("(no result)", True))
                raw_input = block.get("input")
                steps.append(
                    ToolStep(
                        name=str(block.get("name")),
                        input=raw_input if isinstance(raw_input, dict) else {},
                        output=output,
                        is_error=is_error,
                    )
                )
    return steps


@dataclass(slots=True)
class Display:
    """Something Jupyter renders: Markdown and HTML views of a result."""

    markdown: str
    html: str
    value: Any = field(default=None, repr=False)

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.markdown


def _usage_line(result: RunResult) -> str:
    usage = result.usage
    parts = [
        f"{result.turns} turn{'s' if result.turns != 1 else ''}",
        f"{usage.total_input_tokens} input / {usage.output_tokens} output tokens",
        f"stop: {result.stop_reason}",
    ]
    if usage.cache_read_input_tokens:
        parts.append(f"{usage.cache_read_input_tokens} cached")
    if result.max_turns_reached:
        parts.append("max turns reached")
    return " · ".join(parts)


def _run_display(result: RunResult) -> Display:
    steps = tool_steps(result.messages)
    md = [result.text or "_(no text)_", ""]
    rows: list[str] = []
    if steps:
        md += ["| tool | input | result |", "|---|---|---|"]
        for step in steps:
            mark = "⚠️ " if step.is_error else ""
            cell = clip(" ".join(step.output.split()), 160).replace("|", "\\|")
            args = short_input(step.input, 100).replace("|", "\\|")
            md.append(f"| `{step.name}` | {args} | {mark}{cell} |")
            rows.append(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}{}</td></tr>".format(
                    html.escape(step.name),
                    html.escape(short_input(step.input, 100)),
                    "⚠️ " if step.is_error else "",
                    html.escape(clip(step.output, 400)),
                )
            )
        md.append("")
    md.append(f"<sub>{_usage_line(result)}</sub>")
    table = (
        "<table><thead><tr><th>tool</th><th>input</th><th>result</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    body = (
        f'<div style="{_STYLE}"><div style="{_PRE}">{html.escape(result.text or "(no text)")}'
        f"</div>{table}<div><small>{html.escape(_usage_line(result))}</small></div></div>"
    )
    return Display("\n".join(md), body, result)


def _tool_display(result: ToolResult) -> Display:
    title = "Tool error" if result.is_error else "Tool result"
    md = [f"**{title}**", "", "```", result.content, "```"]
    data_html = ""
    if result.data is not None:
        try:
            from pydantic_core import to_jsonable_python

            data = json.dumps(to_jsonable_python(result.data, fallback=str), indent=2)
        except (TypeError, ValueError):
            data = repr(result.data)
        md += ["", "data:", "```json", data, "```"]
        data_html = f"<details><summary>data</summary><pre>{html.escape(data)}</pre></details>"
    color = "#c0392b" if result.is_error else "inherit"
    body = (
        f'<div style="{_STYLE}"><b style="color:{color}">{title}</b>'
        f'<div style="{_PRE}">{html.escape(result.content)}</div>{data_html}</div>'
    )
    return Display("\n".join(md), body, result)


def show(obj: RunResult | ToolResult | Any) -> Display:
    """A rich view of a :class:`RunResult`, a :class:`ToolResult`, or anything else (as text)."""
    if isinstance(obj, RunResult):
        return _run_display(obj)
    if isinstance(obj, ToolResult):
        return _tool_display(obj)
    text = str(obj)
    return Display(f"```\n{text}\n```", f"<pre>{html.escape(text)}</pre>", obj)


@dataclass(slots=True)
class _Live:
    lines: list[str] = field(default_factory=list)
    text: str = ""

    def apply(self, event: Any) -> bool:
        if isinstance(event, TextDelta):
            self.text += event.text
            return True
        if isinstance(event, ToolCallEvent):
            self.lines.append(f"🔧 `{event.call.name}` {short_input(event.call.input, 100)} …")
            return True
        if isinstance(event, ToolResultEvent):
            mark = "⚠️" if event.result.is_error else "✅"
            summary = clip(" ".join(event.result.content.split()), 100)
            self.lines.append(f"{mark} `{event.call.name}` ({event.duration:.1f} s): {summary}")
            return True
        if isinstance(event, ErrorEvent):
            self.lines.append(f"❌ {event.message}")
            return True
        return False

    def markdown(self) -> str:
        return "\n\n".join([*self.lines, self.text]) or "…"


async def stream(
    agent: ToolBasedAgent, prompt: Prompt, *, conversation: Conversation | None = None
) -> RunResult:
    """Run ``agent`` with a live view in the cell output; return the :class:`RunResult`.

    The view is replaced by :func:`show` of the result at the end. Errors are shown and raised.
    """
    import IPython.display

    ipd: Any = IPython.display  # IPython's display API is untyped
    Markdown, display = ipd.Markdown, ipd.display
    live = _Live()
    handle = display(Markdown("…"), display_id=True)
    result: RunResult | None = None
    try:
        async for event in agent.stream(prompt, conversation=conversation):
            if live.apply(event) and handle is not None:
                handle.update(Markdown(live.markdown()))
            if isinstance(event, RunFinished):
                result = event.result
    finally:
        if handle is not None:
            handle.update(show(result) if result is not None else Markdown(live.markdown()))
    if result is None:  # pragma: no cover - stream ends with RunFinished or raises
        raise RuntimeError("the run ended without a result")
    return result
