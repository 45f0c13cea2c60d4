"""`ToolBasedAgent`: the Anthropic Messages API tool loop over ``anthropic.AsyncAnthropic``.

One run: send the prompt, stream the answer (text arrives live as :class:`TextDelta`), run every
``tool_use`` block of the answer concurrently through the :class:`~agentkit.Toolset`, send the
results back as one user message, repeat until the model ends its turn. See ``docs/agent.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any, Self

import anthropic

from agentkit.agent.conversation import Conversation, repair_messages
from agentkit.agent.events import (
    AgentEvent,
    ErrorEvent,
    ModelText,
    RunFinished,
    RunResult,
    RunStarted,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    Usage,
)
from agentkit.agent.hooks import AfterTool, BeforeTool, OnUsage
from agentkit.config import DEFAULT_MODEL
from agentkit.errors import ConfigError, MaxTurnsExceeded, ModelError
from agentkit.gateway.pricing import PriceTable, parse_overrides
from agentkit.redact import strip_url_credentials
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.tools.toolset import Toolset

__all__ = ["DEFAULT_MODEL", "Prompt", "ToolBasedAgent"]

logger = logging.getLogger("agentkit.agent")

EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4
MIDSTREAM_BACKOFF = 0.2  # seconds before retrying a stream that failed before any text
_RETRYABLE_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})

#: A prompt: plain text, or content blocks (text, images, documents).
Prompt = str | Sequence[Mapping[str, Any]]

CUT_TOOL_CALL = (
    "Not run: your response hit the max_tokens limit ({max_tokens}) while writing this tool "
    "call, so its input may be incomplete. Call the tool again with a shorter input, or split "
    "the work into smaller calls."
)
NOT_RUN_MAX_TURNS = "Not run: the run reached its max_turns limit ({max_turns})."


class ToolBasedAgent:
    """Runs the tool loop for one toolset.

    Args:
        toolset: the tools the model may call.
        client: an ``anthropic.AsyncAnthropic``. Default: one built from the environment
            (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``), one per event loop.
        model: model name.
        system: system prompt.
        max_tokens: ``max_tokens`` per request.
        max_turns: most model requests per run. Reaching it ends the run with
            ``RunResult.max_turns_reached = True`` (tool calls of that last answer are not run),
            or raises :class:`~agentkit.errors.MaxTurnsExceeded` if ``raise_on_max_turns``.
        max_retries: the SDK's retries (429, 5xx, 529 overloaded, connection errors, with
            backoff and ``retry-after``). ``None`` keeps a given client's setting (default 4).
            When they are exhausted the run raises :class:`~agentkit.errors.ModelError`.
        before_tool: ``async hook(call) -> ToolResult | None``; a result replaces running the tool.
        after_tool: ``async hook(call, result)``; observes every result. Its exceptions are logged.
        cache: put prompt-caching breakpoints on the tools, the system prompt and the newest
            messages.
        conversation: bind the agent to a :class:`Conversation` (``run`` continues it).
        raise_on_max_turns: raise instead of returning when ``max_turns`` is reached.
        request_options: extra ``messages.stream`` arguments (``temperature``, ``thinking``,
            ``tool_choice``, ``metadata``, ``extra_headers``, ...).
    """

    def __init__(
        self,
        toolset: Toolset,
        *,
        client: anthropic.AsyncAnthropic | None = None,
        model: str = DEFAULT_MODEL,
        system: str | None = None,
        max_tokens: int = 4096,
        max_turns: int = 30,
        max_retries: int | None = None,
        before_tool: BeforeTool | None = None,
        after_tool: AfterTool | None = None,
        cache: bool = True,
        conversation: Conversation | None = None,
        raise_on_max_turns: bool = False,
        request_options: Mapping[str, Any] | None = None,
        prices: PriceTable | None = None,
        on_usage: OnUsage | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.toolset = toolset
        self.model = model
        self.system = system
        self.max_tokens = max_tokens
        self.max_turns = max_turns
        self.before_tool = before_tool
        self.after_tool = after_tool
        self.cache = cache
        self.conversation = conversation
        self.raise_on_max_turns = raise_on_max_turns
        self.request_options: dict[str, Any] = dict(request_options or {})
        #: prices each turn's usage (``Usage.cost_usd``); the built-in table by default
        self.prices = prices if prices is not None else PriceTable()
        #: ``await on_usage(turn_usage, model)`` after every model turn (e.g. the cost ledger)
        self.on_usage = on_usage
        if client is not None and max_retries is not None:
            client = client.with_options(max_retries=max_retries)
        self.max_retries = max_retries if max_retries is not None else 4
        self._client = client
        self._client_factory: Callable[[], anthropic.AsyncAnthropic] = self._default_client
        self._loop_client: tuple[asyncio.AbstractEventLoop, anthropic.AsyncAnthropic] | None = None

    @classmethod
    def from_settings(cls, toolset: Toolset, settings: Settings, **overrides: Any) -> Self:
        """An agent configured from :class:`~agentkit.Settings` (key, base URL, model, limits).

        Raises :class:`~agentkit.errors.ConfigError` when ``ANTHROPIC_API_KEY`` is missing.
        Settings' secrets are registered with the toolset's redactor.
        """
        api_key = settings.require_api_key()
        for secret in settings.secrets():
            toolset.context.redactor.add(secret)
        options: dict[str, Any] = {
            "model": settings.model,
            "max_tokens": settings.max_tokens,
            "max_turns": settings.max_turns,
            "max_retries": settings.max_retries,
            "prices": PriceTable(parse_overrides(settings.pricing)),
        }
        options.update(overrides)
        if "client" not in options:
            retries = options["max_retries"]
            base_url = settings.anthropic_base_url

            def factory() -> anthropic.AsyncAnthropic:
                return anthropic.AsyncAnthropic(
                    api_key=api_key, base_url=base_url, max_retries=retries
                )

            agent = cls(toolset, **options)
            agent._client_factory = factory
            return agent
        return cls(toolset, **options)

    async def _report_usage(self, usage: Usage, model: str) -> None:
        assert self.on_usage is not None
        try:
            await self.on_usage(usage, model)
        except Exception as exc:  # a ledger problem never fails the run
            logger.warning("usage hook failed: %s", exc)

    # --- client ---------------------------------------------------------------------------

    def _default_client(self) -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(max_retries=self.max_retries)
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set: export it, put it in .env and use "
                "ToolBasedAgent.from_settings(), or pass client="
            )
        return client

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The client used in the running event loop (a default one is made per loop)."""
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        if self._loop_client is None or self._loop_client[0] is not loop:
            self._loop_client = (loop, self._client_factory())
        return self._loop_client[1]

    # --- public API -----------------------------------------------------------------------

    async def run(self, prompt: Prompt, *, conversation: Conversation | None = None) -> RunResult:
        """Run the loop to the end and return the result. Errors raise (``ModelError``, ...)."""
        result: RunResult | None = None
        async for event in self.stream(prompt, conversation=conversation):
            if isinstance(event, RunFinished):
                result = event.result
        if result is None:  # pragma: no cover - stream always ends with RunFinished or raises
            raise ModelError("the run ended without a result")
        return result

    def run_sync(self, prompt: Prompt, *, conversation: Conversation | None = None) -> RunResult:
        """:meth:`run` for synchronous callers (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(prompt, conversation=conversation))
        raise RuntimeError("run_sync() was called inside an event loop: use `await agent.run()`")

    async def stream(
        self, prompt: Prompt, *, conversation: Conversation | None = None
    ) -> AsyncIterator[AgentEvent]:
        """Run the loop, yielding events as they happen (see :mod:`agentkit.agent.events`).

        The last event is :class:`RunFinished`; on failure an :class:`ErrorEvent` is yielded and
        then the same exception is raised. Cancellation propagates (running tools are
        cancelled) without an ``ErrorEvent``.
        """
        conv = conversation if conversation is not None else self.conversation
        async with AsyncExitStack() as stack:
            if conv is not None:
                await stack.enter_async_context(conv.lock)
            history = list(conv.messages) if conv is not None else []
            events = await stack.enter_async_context(aclosing(self._run(prompt, history, conv)))
            async for event in events:
                yield event

    # --- the loop -------------------------------------------------------------------------

    async def _run(
        self, prompt: Prompt, messages: list[dict[str, Any]], conv: Conversation | None
    ) -> AsyncGenerator[AgentEvent, None]:
        start_len = len(messages)
        before = list(messages)  # _append_user replaces, never mutates, a trailing message
        _append_user(messages, _prompt_content(prompt))
        prompt_len = len(messages)
        prompt_text = prompt if isinstance(prompt, str) else _blocks_text(prompt)
        yield RunStarted(prompt_text)

        tools = self._tool_definitions()
        system = self._system_param()
        usage = Usage()
        turn = 0
        prev_mark: int | None = start_len - 1 if start_len else None
        stop_reason: str | None = None
        final_text = ""
        max_turns_reached = False

        def commit() -> None:
            if conv is not None:
                conv.messages = messages

        try:
            while True:
                turn += 1
                request_messages = self._mark_cache(messages, prev_mark)
                prev_mark = len(messages) - 1
                message: anthropic.types.Message | None = None
                async with aclosing(self._request(request_messages, tools, system, turn)) as items:
                    async for item in items:
                        if isinstance(item, TextDelta):
                            yield item
                        else:
                            message = item
                assert message is not None
                turn_usage = Usage()
                turn_usage.add(message.usage)
                model = getattr(message, "model", None) or self.model
                turn_usage.cost_usd = self.prices.cost(model, turn_usage.tokens)
                usage.add(turn_usage)
                if self.on_usage is not None:
                    await self._report_usage(turn_usage, model)
                stop_reason = message.stop_reason
                content = _assistant_content(message.content)
                if content:
                    messages.append({"role": "assistant", "content": content})
                texts = [b["text"] for b in content if b["type"] == "text"]
                for text in texts:
                    yield ModelText(text, turn)
                final_text = "".join(texts)
                uses = [b for b in content if b["type"] == "tool_use"]
                calls = [
                    ToolCall(id=b["id"], name=b["name"], input=_as_dict(b["input"]), index=i)
                    for i, b in enumerate(uses)
                ]
                for call in calls:
                    yield ToolCallEvent(call, turn)

                if calls:
                    if turn >= self.max_turns:
                        # the model never sees results of this turn: do not run its tools
                        note = NOT_RUN_MAX_TURNS.format(max_turns=self.max_turns)
                        results: list[ToolResult | None] = [ToolResult.error(note)] * len(calls)
                        max_turns_reached = True
                    elif stop_reason == "max_tokens":
                        note = CUT_TOOL_CALL.format(max_tokens=self.max_tokens)
                        results = [ToolResult.error(note)] * len(calls)
                    else:
                        results = [None] * len(calls)
                        async with aclosing(self._run_tools(calls, results, turn)) as running:
                            async for event in running:
                                yield event
                    messages.append(_tool_results_message(calls, results))
                    commit()
                    yield TurnFinished(turn, stop_reason, turn_usage)
                    if max_turns_reached:
                        break
                elif stop_reason == "pause_turn":
                    # resend as-is so the model continues its turn
                    commit()
                    yield TurnFinished(turn, stop_reason, turn_usage)
                    if turn >= self.max_turns:
                        max_turns_reached = True
                        break
                else:
                    if stop_reason == "refusal" and conv is not None:
                        # drop what was refused (the API's advice): the whole prompt, or only
                        # the refused answer when tools already ran for this prompt
                        if turn == 1:
                            conv.messages = before
                        else:
                            refused = 1 if content else 0
                            conv.messages = messages[: len(messages) - refused]
                    else:
                        commit()
                    yield TurnFinished(turn, stop_reason, turn_usage)
                    break
        except (Exception, asyncio.CancelledError, GeneratorExit) as exc:
            if len(messages) > prompt_len:
                repair_messages(messages)  # keep what happened, answer interrupted tool calls
            else:
                messages[:] = before  # nothing happened: forget the prompt
            if conv is not None:
                conv.messages = messages
            if isinstance(exc, Exception):
                yield ErrorEvent(exc, str(exc))
            raise

        result = RunResult(
            text=final_text,
            messages=messages,
            turns=turn,
            stop_reason=stop_reason,
            usage=usage,
            max_turns_reached=max_turns_reached,
        )
        if max_turns_reached and self.raise_on_max_turns:
            error = MaxTurnsExceeded(
                f"the model did not finish within max_turns={self.max_turns}; raise max_turns "
                "or narrow the task",
                result,
            )
            yield ErrorEvent(error, str(error))
            raise error
        yield RunFinished(result)

    async def _request(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        system: Any,
        turn: int,
    ) -> AsyncGenerator[TextDelta | anthropic.types.Message, None]:
        """One streamed model request: live text deltas, then the final message."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": messages,
            **self.request_options,
        }
        if tools:
            params["tools"] = tools
        if system is not None:
            params["system"] = system
        client = self.client
        attempt = 0
        while True:
            emitted = retry = False
            try:
                # HTTP-level failures surface here after the SDK's own retries
                async with client.messages.stream(**params) as stream:
                    try:
                        async for event in stream:
                            if event.type == "text":
                                emitted = True
                                yield TextDelta(event.text, turn)
                        message = await stream.get_final_message()
                    except anthropic.APIError as exc:
                        # failed mid-stream (e.g. an `overloaded_error` event): the SDK does not
                        # retry these; we do, as long as no text was delivered yet
                        if emitted or attempt >= client.max_retries or not _retryable(exc):
                            raise
                        retry = True
            except anthropic.APIError as exc:
                raise _model_error(exc, client) from exc
            if not retry:
                break
            attempt += 1
            await asyncio.sleep(min(MIDSTREAM_BACKOFF * 2 ** (attempt - 1), 8.0))
        yield message

    async def _run_tools(
        self, calls: list[ToolCall], results: list[ToolResult | None], turn: int
    ) -> AsyncGenerator[ToolResultEvent, None]:
        """Run all calls concurrently; yield each result as it completes (cancel on exit)."""
        queue: asyncio.Queue[tuple[int, ToolResult | BaseException, float]] = asyncio.Queue()

        async def one(call: ToolCall) -> None:
            started = time.perf_counter()
            try:
                result = await self._call_tool(call)
            except BaseException as exc:
                queue.put_nowait((call.index, exc, time.perf_counter() - started))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            queue.put_nowait((call.index, result, time.perf_counter() - started))

        tasks = [asyncio.create_task(one(call), name=f"tool:{call.name}") for call in calls]
        try:
            for _ in calls:
                index, outcome, duration = await queue.get()
                if isinstance(outcome, BaseException):
                    raise outcome
                results[index] = outcome
                yield ToolResultEvent(calls[index], outcome, duration, turn)
        finally:
            pending = [t for t in tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _call_tool(self, call: ToolCall) -> ToolResult:
        result: ToolResult | None = None
        if self.before_tool is not None:
            result = await self.before_tool(call)
        if result is None:
            result = await self.toolset.call(call.name, call.input)
        if self.after_tool is not None:
            try:
                await self.after_tool(call, result)
            except Exception:
                logger.exception("after_tool hook failed for %s", call.name)
        return result

    # --- request building -----------------------------------------------------------------

    def _tool_definitions(self) -> list[dict[str, Any]]:
        tools = self.toolset.to_anthropic()
        if self.cache and tools:
            tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
        return tools

    def _system_param(self) -> Any:
        if self.system is None:
            return None
        if not self.cache:
            return self.system
        return [{"type": "text", "text": self.system, "cache_control": EPHEMERAL}]

    def _mark_cache(self, messages: list[dict[str, Any]], prev: int | None) -> list[dict[str, Any]]:
        """Copy of ``messages`` with breakpoints on the newest message and the previous request's
        newest message (so the prefix written last turn is read even after many new blocks).
        History itself is never marked, so breakpoints move forward instead of accumulating.
        """
        if not self.cache or not messages:
            return messages
        budget = MAX_BREAKPOINTS - (1 if self.system is not None else 0)
        budget -= 1 if len(self.toolset) else 0
        out = list(messages)
        marks = [len(messages) - 1]
        if prev is not None and 0 <= prev < len(messages) - 1:
            marks.append(prev)
        for index in marks[: max(budget, 0)]:
            marked = _with_breakpoint(out[index])
            if marked is not None:
                out[index] = marked
        return out


# --- helpers ------------------------------------------------------------------------------


def _with_breakpoint(message: dict[str, Any]) -> dict[str, Any] | None:
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return None
        return {
            **message,
            "content": [{"type": "text", "text": content, "cache_control": EPHEMERAL}],
        }
    if not isinstance(content, list):
        return None
    for i in range(len(content) - 1, -1, -1):
        block = content[i]
        if isinstance(block, dict) and block.get("type") not in _UNCACHEABLE:
            if block.get("type") == "text" and not block.get("text"):
                continue
            new_content = list(content)
            new_content[i] = {**block, "cache_control": EPHEMERAL}
            return {**message, "content": new_content}
    return None


def _prompt_content(prompt: Prompt) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("the prompt is empty")
        return [{"type": "text", "text": prompt}]
    return [dict(block) for block in prompt]


def _blocks_text(blocks: Sequence[Mapping[str, Any]]) -> str:
    return "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")


def _append_user(messages: list[dict[str, Any]], content: list[dict[str, Any]]) -> None:
    """Append a user message, merging into a trailing user message (e.g. interrupted tool
    results) so roles keep alternating."""
    if messages and messages[-1].get("role") == "user":
        last = messages[-1]
        previous = last.get("content")
        if isinstance(previous, str):
            previous = [{"type": "text", "text": previous}]
        messages[-1] = {**last, "content": [*(previous or []), *content]}
    else:
        messages.append({"role": "user", "content": content})


def _assistant_content(blocks: Sequence[Any]) -> list[dict[str, Any]]:
    """SDK content blocks -> request params (empty text blocks dropped: the API rejects them)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.type
        if kind == "text":
            if block.text:
                out.append({"type": "text", "text": block.text})
        elif kind == "tool_use":
            out.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        else:
            data = block.model_dump(mode="json", exclude_none=True)
            data.pop("parsed_output", None)
            out.append(data)
    return out


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"input": value}


def _tool_results_message(
    calls: Sequence[ToolCall], results: Sequence[ToolResult | None]
) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for call, result in zip(calls, results, strict=True):
        if result is None:  # pragma: no cover - every call yields a result or raises
            result = ToolResult.error("no result")
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": result.content or "(no output)",
        }
        if result.is_error:
            block["is_error"] = True
        blocks.append(block)
    return {"role": "user", "content": blocks}


def _retryable(exc: anthropic.APIError) -> bool:
    if isinstance(exc, anthropic.APIConnectionError):
        return True
    return isinstance(exc, anthropic.APIStatusError) and _error_type(exc) in _RETRYABLE_TYPES


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        kind = body["error"].get("type")
        return str(kind) if kind else None
    return None


def _model_error(exc: anthropic.APIError, client: anthropic.AsyncAnthropic) -> ModelError:
    base = strip_url_credentials(str(client.base_url))  # a proxy URL may carry a password
    retries = client.max_retries
    if isinstance(exc, anthropic.APIStatusError):
        detail = _error_detail(exc)
        status = exc.status_code
        kind = _error_type(exc)
        where = f"Anthropic API error {status}" if status != 200 else "Anthropic API stream error"
        if status == 401 or kind == "authentication_error":
            hint = "check ANTHROPIC_API_KEY"
        elif status == 403 or kind == "permission_error":
            hint = "the key is not allowed to use this model or feature"
        elif status == 404 or kind == "not_found_error":
            hint = "check the model name and ANTHROPIC_BASE_URL"
        elif status == 429 or kind == "rate_limit_error":
            hint = f"rate limited after {retries} retries; slow down or raise max_retries"
        elif status >= 500 or kind in _RETRYABLE_TYPES:
            hint = f"the API is overloaded or failing after {retries} retries; try again later"
        else:
            hint = "the request was rejected; fix it before retrying"
        return ModelError(f"{where} at {base}: {detail} ({hint})")
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError(
            f"Anthropic API request to {base} timed out after {retries} retries; "
            "check the network or raise the client timeout"
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError(
            f"cannot reach the Anthropic API at {base} after {retries} retries: {exc}; "
            "check ANTHROPIC_BASE_URL and the network"
        )
    return ModelError(f"Anthropic API failed: {exc}")


def _error_detail(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('type', 'error')}: {error.get('message', '')}".strip()
    return exc.message
