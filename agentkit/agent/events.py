"""Typed events emitted by :meth:`ToolBasedAgent.stream`, consumed by adapters.

Order within one run::

    RunStarted
    ( TextDelta* ModelText* ToolCallEvent* ToolResultEvent* TurnFinished )+
    RunFinished | ErrorEvent

``ToolCallEvent``s of one turn are all emitted before any tool runs; ``ToolResultEvent``s are
emitted as each tool finishes (they may complete out of order; ``index`` gives call order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentkit.gateway.pricing import TokenCounts
from agentkit.tools.base import ToolResult


@dataclass(slots=True)
class Usage:
    """Token usage and its cost in US dollars (the agent's price table), summed over turns."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Any) -> None:
        """Add an SDK ``Usage`` object (or another :class:`Usage`); missing fields count as 0."""
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            value = getattr(other, name, 0) or 0
            setattr(self, name, getattr(self, name) + int(value))
        cost = getattr(other, "cost_usd", 0.0)
        if isinstance(cost, int | float):
            self.cost_usd += float(cost)

    @property
    def tokens(self) -> TokenCounts:
        return TokenCounts(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        )

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tool_use`` block from the model."""

    id: str
    name: str
    input: dict[str, Any]
    index: int = 0


@dataclass(slots=True)
class RunResult:
    """What :meth:`ToolBasedAgent.run` returns."""

    text: str
    messages: list[dict[str, Any]]
    turns: int
    stop_reason: str | None
    usage: Usage = field(default_factory=Usage)
    #: True when the run ended because ``max_turns`` was reached
    max_turns_reached: bool = False


@dataclass(frozen=True, slots=True)
class RunStarted:
    prompt: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of model text as it streams in."""

    text: str
    turn: int


@dataclass(frozen=True, slots=True)
class ModelText:
    """A complete text block from the model."""

    text: str
    turn: int


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    call: ToolCall
    turn: int


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    call: ToolCall
    result: ToolResult
    duration: float
    turn: int


@dataclass(frozen=True, slots=True)
class TurnFinished:
    turn: int
    stop_reason: str | None
    usage: Usage


@dataclass(frozen=True, slots=True)
class RunFinished:
    result: RunResult


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The run failed; ``error`` is the exception that :meth:`ToolBasedAgent.run` raises."""

    error: BaseException
    message: str


AgentEvent = (
    RunStarted
    | TextDelta
    | ModelText
    | ToolCallEvent
    | ToolResultEvent
    | TurnFinished
    | RunFinished
    | ErrorEvent
)
