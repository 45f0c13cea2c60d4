"""Discord webhook notifications for agent runs, sent in real time without blocking the agent.

``DiscordWebhookNotifier`` turns agent events into Discord webhook messages: run start, tool use
(name and a short input), agent start (task and container id, from ``spawn_claude_agent``),
agent completion (result, cost, duration), errors, run completion. Messages go through a bounded
queue drained by one background task, so :meth:`~DiscordWebhookNotifier.notify` never waits on
the network; when the queue is full a message is dropped, counted in ``dropped`` and reported to
the channel ("N notifications dropped") as soon as the backlog clears and when closing.

Use it as an event consumer, or as the agent's ``after_tool`` hook (not both, or tool use is
reported twice)::

    async with DiscordWebhookNotifier.from_settings(settings) as notifier:
        async for event in notifier.tap(agent.stream("Fix the tests in repo X")):
            ...

    async with DiscordWebhookNotifier(url) as notifier:
        agent = ToolBasedAgent(toolset, after_tool=notifier.after_tool)

Only ``httpx`` is needed (a core dependency); the ``discord`` extra is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from agentkit.adapters._text import (
    DISCORD_CONTENT_LIMIT,
    EMBED_DESCRIPTION_LIMIT,
    EMBED_FIELD_NAME_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_MAX_FIELDS,
    EMBED_TITLE_LIMIT,
    EMBED_TOTAL_LIMIT,
    clip,
    field_of,
    find_container_id,
    short_input,
    split_text,
)
from agentkit.agent.events import (
    AgentEvent,
    ErrorEvent,
    RunFinished,
    RunStarted,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
)
from agentkit.errors import ConfigError
from agentkit.redact import RedactingFilter, Redactor
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.config import Settings

logger = logging.getLogger("agentkit.adapters.notify")

Payload = dict[str, Any]

BLUE = 0x5865F2
GREEN = 0x57F287
YELLOW = 0xFEE75C
RED = 0xED4245
GREY = 0x99AAB5

#: Tools whose results announce an agent's end (when they carry a result, status or cost).
FINISH_TOOLS = frozenset({"wait_for_claude_agent", "get_claude_status", "stop_claude_agent"})
_RUNNING = frozenset({"running", "created", "starting", "restarting", "pending"})
_FAILED = frozenset({"failed", "timed_out", "oom_killed", "error"})


def embed_length(embed: dict[str, Any]) -> int:
    """Characters Discord counts against the 6000 total of one embed."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    for item in embed.get("fields", []):
        total += len(item.get("name", "")) + len(item.get("value", ""))
    return total


def embed_messages(
    title: str,
    description: str = "",
    *,
    color: int = BLUE,
    fields: Iterable[tuple[str, str]] = (),
) -> list[Payload]:
    """Payloads (one embed each) for a titled message, split within Discord's embed limits.

    Fields go on the first embed; a description too long for one embed continues in further
    messages titled ``(continued)``.
    """
    title = clip(title, EMBED_TITLE_LIMIT)
    embed_fields: list[dict[str, Any]] = [
        {
            "name": clip(name, EMBED_FIELD_NAME_LIMIT),
            "value": clip(value or "-", EMBED_FIELD_VALUE_LIMIT),
            "inline": True,
        }
        for name, value in list(fields)[:EMBED_MAX_FIELDS]
    ]
    fields_size: int = sum(len(f["name"]) + len(f["value"]) for f in embed_fields)
    while embed_fields and len(title) + fields_size > EMBED_TOTAL_LIMIT - 500:
        dropped = embed_fields.pop()
        fields_size -= len(dropped["name"]) + len(dropped["value"])
    first_budget = min(EMBED_DESCRIPTION_LIMIT, EMBED_TOTAL_LIMIT - len(title) - fields_size)
    payloads: list[Payload] = []
    first = split_text(description, max(first_budget, 1))[0] if description else ""
    rest = description[len(first) :]
    if rest[:1] in ("\n", " "):
        rest = rest[1:]
    embed: dict[str, Any] = {"title": title, "color": color}
    if first:
        embed["description"] = first
    if embed_fields:
        embed["fields"] = embed_fields
    payloads.append({"embeds": [embed]})
    if rest:
        cont_title = clip(f"{title} (continued)", EMBED_TITLE_LIMIT)
        for chunk in split_text(rest, EMBED_DESCRIPTION_LIMIT):
            payloads.append(
                {"embeds": [{"title": cont_title, "description": chunk, "color": color}]}
            )
    return payloads


def text_messages(text: str) -> list[Payload]:
    """Plain-content payloads, split at 2000 characters."""
    return [{"content": chunk} for chunk in split_text(text, DISCORD_CONTENT_LIMIT) if chunk]


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds to wait after a 429: JSON ``retry_after``, else the headers, else ``default``."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = response.json()
        if isinstance(body, dict) and body.get("retry_after") is not None:
            return max(float(body["retry_after"]), 0.0)
    for header in ("retry-after", "x-ratelimit-reset-after"):
        value = response.headers.get(header)
        if value is not None:
            with contextlib.suppress(ValueError):
                return max(float(value), 0.0)
    return default


class DiscordWebhookNotifier:
    """Posts agent events to a Discord webhook from a background task.

    Args:
        webhook_url: the webhook URL (``https://discord.com/api/webhooks/ID/TOKEN``); a secret.
        client: an ``httpx.AsyncClient`` to use (tests pass one with respx/MockTransport);
            by default one is created and closed by :meth:`aclose`.
        redactor: redacts secrets from every message; the webhook URL is always added to it.
        queue_size: messages waiting at most; more are dropped and counted.
        username: webhook display name, or ``None`` for the webhook's own.
        tool_use: post a line for every tool call.
        max_attempts: tries per message on network errors and 5xx answers.
        max_rate_limit_waits: 429 answers honoured per message before giving up on it.
        max_retry_after: longest single wait (seconds) honoured for a 429.
        drop_report_interval: while the queue stays busy, report drops at most this often.
        timeout: per-request timeout in seconds.
    """

    def __init__(
        self,
        webhook_url: str | SecretStr,
        *,
        client: httpx.AsyncClient | None = None,
        redactor: Redactor | None = None,
        queue_size: int = 100,
        username: str | None = "agentkit",
        tool_use: bool = True,
        max_attempts: int = 4,
        max_rate_limit_waits: int = 10,
        max_retry_after: float = 300.0,
        drop_report_interval: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
        if not url.startswith(("https://", "http://")):
            raise ConfigError("DISCORD_WEBHOOK_URL must be an http(s) URL")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._url = url
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self.redactor = redactor or Redactor()
        self.redactor.add(url)
        # httpx logs every request's URL at INFO, and this URL is a secret
        self._log_filter = RedactingFilter(self.redactor)
        logging.getLogger("httpx").addFilter(self._log_filter)
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=queue_size)
        self.username = username
        self.tool_use = tool_use
        self.max_attempts = max_attempts
        self.max_rate_limit_waits = max_rate_limit_waits
        self.max_retry_after = max_retry_after
        self.drop_report_interval = drop_report_interval
        #: messages dropped because the queue was full (or the notifier closed)
        self.dropped = 0
        #: messages Discord accepted
        self.sent = 0
        #: messages given up on after errors (not counted in ``dropped``)
        self.failed = 0
        self._unreported = 0
        self._last_report = time.monotonic()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._run_started: float | None = None
        self._announced: set[str] = set()
        self._bucket_reset: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> DiscordWebhookNotifier:
        """A notifier for ``settings.discord_webhook_url``, redacting every configured secret."""
        if settings.discord_webhook_url is None:
            raise ConfigError("DISCORD_WEBHOOK_URL is not set: create a webhook in Discord first")
        options.setdefault("redactor", Redactor(settings.secrets()))
        return cls(settings.discord_webhook_url, **options)

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> DiscordWebhookNotifier:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the sender task (done automatically by the first message)."""
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(
                self._run(), name="agentkit-discord-webhook"
            )

    async def aclose(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Send what is queued (waiting at most ``timeout`` s), report drops, stop."""
        if self._closed:
            return
        self._closed = True
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._drop()
        if self._unreported:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._deliver(self._drop_report()), timeout)
        logging.getLogger("httpx").removeFilter(self._log_filter)
        if self._own_client:
            await self._client.aclose()

    @property
    def pending(self) -> int:
        """Messages waiting in the queue."""
        return self._queue.qsize()

    # --- producing (never blocks) ---------------------------------------------------------

    def notify(self, event: AgentEvent) -> None:
        """Queue the messages for ``event`` (events that are not reported are ignored)."""
        for payload in self.render(event):
            self._enqueue(payload)

    __call__ = notify

    def post(self, text: str, *, title: str | None = None, color: int = BLUE) -> None:
        """Queue a message of your own (redacted and split like the others)."""
        payloads = embed_messages(title, text, color=color) if title else text_messages(text)
        for payload in payloads:
            self._enqueue(payload)

    async def after_tool(self, call: ToolCall, result: ToolResult) -> None:
        """An ``after_tool`` hook: reports the call and, when notable, its result."""
        call, result = self._clean_call(call), self._clean_result(result)
        if self.tool_use:
            self._enqueue_all(self._tool_use(call))
        self._enqueue_all(self._tool_result(call, result, None))

    async def tap(self, events: AsyncIterable[AgentEvent]) -> AsyncIterator[AgentEvent]:
        """Yield ``events`` unchanged, notifying each one on the way."""
        async for event in events:
            self.notify(event)
            yield event

    def _enqueue_all(self, payloads: Iterable[Payload]) -> None:
        for payload in payloads:
            self._enqueue(payload)

    def _enqueue(self, payload: Payload) -> None:
        if self._closed:
            self._drop()
            return
        try:
            self._queue.put_nowait(self._finish(payload))
        except asyncio.QueueFull:
            self._drop()
            return
        self.start()

    def _drop(self) -> None:
        self.dropped += 1
        self._unreported += 1

    def _finish(self, payload: Payload) -> Payload:
        out: Payload = self._redact(payload)
        if self.username:
            out["username"] = self.username
        # Model text may contain @everyone or role mentions: never ping anyone.
        out["allowed_mentions"] = {"parse": []}
        return out

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor.redact(value)
        if isinstance(value, dict):
            return {key: self._redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._redact(item) for item in value]
        return value

    # --- rendering ------------------------------------------------------------------------

    def render(self, event: AgentEvent) -> list[Payload]:
        """The payloads an event produces; empty for events not reported.

        Texts are redacted *before* they are clipped or split (a secret cut in two would no
        longer match), and whole payloads once more when queued.
        """
        redact = self.redactor.redact
        if isinstance(event, RunStarted):
            self._run_started = time.monotonic()
            return embed_messages("▶️ Run started", redact(event.prompt), color=BLUE)
        if isinstance(event, ToolCallEvent):
            return self._tool_use(self._clean_call(event.call)) if self.tool_use else []
        if isinstance(event, ToolResultEvent):
            call, result = self._clean_call(event.call), self._clean_result(event.result)
            return self._tool_result(call, result, event.duration)
        if isinstance(event, RunFinished):
            return self._run_finished(event)
        if isinstance(event, ErrorEvent):
            return embed_messages("❌ Run failed", redact(event.message), color=RED)
        return []

    def _clean_call(self, call: ToolCall) -> ToolCall:
        return ToolCall(call.id, call.name, self.redactor.redact_data(call.input), call.index)

    def _clean_result(self, result: ToolResult) -> ToolResult:
        return ToolResult(
            self.redactor.redact(result.content),
            result.is_error,
            self.redactor.redact_data(result.data),
        )

    def _tool_use(self, call: ToolCall) -> list[Payload]:
        args = short_input(call.input, 300)
        line = f"🔧 `{call.name}`" + (f" {args}" if args else "")
        return text_messages(clip(line, DISCORD_CONTENT_LIMIT))

    def _tool_result(
        self, call: ToolCall, result: ToolResult, duration: float | None
    ) -> list[Payload]:
        if result.is_error:
            fields = [("Input", short_input(call.input, 500) or "-")]
            return embed_messages(
                f"⚠️ {call.name} failed", result.content, color=YELLOW, fields=fields
            )
        if call.name == "spawn_claude_agent":
            container = find_container_id(result.data, result.content) or "unknown"
            fields = [("Container", f"`{container}`")]
            workspace = field_of(result.data, "workspace") or call.input.get("workspace_path")
            if workspace:
                fields.append(("Workspace", str(workspace)))
            task = str(call.input.get("task") or field_of(result.data, "task") or "")
            return embed_messages("🚀 Agent started", task, color=BLUE, fields=fields)
        if call.name in FINISH_TOOLS:
            return self._agent_finished(call, result)
        return []

    def _agent_finished(self, call: ToolCall, result: ToolResult) -> list[Payload]:
        data = result.data
        status = field_of(data, "state", "status")
        state = str(status).lower() if status is not None else None
        if state in _RUNNING:
            return []
        cost = field_of(data, "cost_usd", "total_cost_usd", "cost")
        text = field_of(data, "result_text", "result")
        error = field_of(data, "error")
        if cost is None and text is None and state is None:
            return []
        container = find_container_id(data, result.content) or call.input.get("container_id") or "?"
        if container in self._announced:  # status polled again: already reported
            return []
        self._announced.add(container)
        fields = [("Container", f"`{container}`")]
        if state is not None:
            fields.append(("State", state))
        if cost is not None:
            with contextlib.suppress(TypeError, ValueError):
                fields.append(("Cost", f"${float(cost):.4f}"))
        seconds = field_of(data, "elapsed_s")
        if seconds is None and field_of(data, "duration_ms") is not None:
            seconds = float(field_of(data, "duration_ms")) / 1000
        if seconds is not None:
            with contextlib.suppress(TypeError, ValueError):
                fields.append(("Duration", _format_duration(float(seconds))))
        turns = field_of(data, "turns", "num_turns")
        if turns is not None:
            fields.append(("Turns", str(turns)))
        if state == "stopped":
            title, color = "⏹️ Agent stopped", GREY
        elif state in _FAILED or bool(field_of(data, "is_error")):
            title, color = "❌ Agent failed", RED
        else:
            title, color = "✅ Agent finished", GREEN
        body = str(text) if text else (str(error) if error else result.content)
        return embed_messages(title, body, color=color, fields=fields)

    def _run_finished(self, event: RunFinished) -> list[Payload]:
        run = event.result
        fields = [("Turns", str(run.turns))]
        if self._run_started is not None:
            fields.append(("Duration", _format_duration(time.monotonic() - self._run_started)))
            self._run_started = None
        fields.append(
            ("Tokens", f"{run.usage.total_input_tokens} in / {run.usage.output_tokens} out")
        )
        cost = getattr(run, "cost_usd", None)
        if isinstance(cost, int | float):
            fields.append(("Cost", f"${cost:.4f}"))
        title = "⏹️ Run stopped (max turns)" if run.max_turns_reached else "✅ Run finished"
        text = self.redactor.redact(run.text) if run.text else "(no text)"
        return embed_messages(title, text, color=GREEN, fields=fields)

    def _drop_report(self) -> Payload:
        count, self._unreported = self._unreported, 0
        self._last_report = time.monotonic()
        noun = "notification" if count == 1 else "notifications"
        return self._finish(
            {"content": f"⚠️ {count} {noun} dropped (the queue was full; {self.dropped} in total)"}
        )

    # --- sending --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(payload)
            except Exception:  # never let one message kill the sender
                logger.exception("discord webhook: unexpected error")
            finally:
                self._queue.task_done()
            if self._unreported and (
                self._queue.empty()
                or time.monotonic() - self._last_report >= self.drop_report_interval
            ):
                await self._deliver(self._drop_report())

    async def _deliver(self, payload: Payload) -> None:
        attempts = 0
        waits = 0
        while True:
            delay = self._bucket_reset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await self._client.post(self._url, json=payload)
            except httpx.HTTPError as exc:
                attempts += 1
                if attempts >= self.max_attempts:
                    self.failed += 1
                    logger.warning(
                        "discord webhook: giving up after %s: %s",
                        type(exc).__name__,
                        self.redactor.redact(str(exc)),
                    )
                    return
                await asyncio.sleep(min(0.5 * 2**attempts, 10.0))
                continue
            self._note_bucket(response)
            status = response.status_code
            if status == 429:
                waits += 1
                if waits > self.max_rate_limit_waits:
                    self.failed += 1
                    logger.warning("discord webhook: still rate limited, giving up on a message")
                    return
                await asyncio.sleep(min(_retry_after(response), self.max_retry_after))
                continue
            if status >= 500:
                attempts += 1
                if attempts >= self.max_attempts:
                    self.failed += 1
                    logger.warning("discord webhook: giving up after HTTP %s", status)
                    return
                await asyncio.sleep(min(0.5 * 2**attempts, 10.0))
                continue
            if status >= 400:
                self.failed += 1
                logger.warning(
                    "discord webhook: HTTP %s: %s",
                    status,
                    self.redactor.redact(response.text[:500]),
                )
                return
            self.sent += 1
            return

    def _note_bucket(self, response: httpx.Response) -> None:
        """Wait before the next request when Discord says the bucket is empty."""
        remaining = response.headers.get("x-ratelimit-remaining")
        reset_after = response.headers.get("x-ratelimit-reset-after")
        if remaining == "0" and reset_after is not None:
            with contextlib.suppress(ValueError):
                wait = min(float(reset_after), self.max_retry_after)
                self._bucket_reset = time.monotonic() + wait
