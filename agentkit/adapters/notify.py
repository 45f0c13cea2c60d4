"""Discord webhook notifications for agent runs, sent in real time without blocking the agent.

``DiscordWebhookNotifier`` posts agent events as Discord webhook messages: run start, tool use
(name and a short input), agent start (task and container id, from ``spawn_claude_agent``),
agent completion (result, cost, duration), errors, run completion. What the messages say and how
they are split is :mod:`agentkit.adapters.discord_messages` (its names are re-exported here);
this module delivers them. Messages go through a bounded queue drained by one background task,
so :meth:`~DiscordWebhookNotifier.notify` never waits on the network; 429 answers are waited out;
when the queue is full a message is dropped, counted in ``dropped`` and reported to the channel
("N notifications dropped") as soon as the backlog clears and when closing.

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
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from agentkit.adapters.discord_messages import (
    BLUE,
    FINISH_TOOLS,
    GREEN,
    GREY,
    RED,
    YELLOW,
    EventRenderer,
    Payload,
    embed_length,
    embed_messages,
    text_messages,
)
from agentkit.agent.events import AgentEvent, ToolCall
from agentkit.errors import ConfigError
from agentkit.redact import RedactingFilter, Redactor
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from agentkit.config import Settings
    from agentkit.containers.records import RunRecord
    from agentkit.containers.registry import RunObserver
    from agentkit.containers.streamjson import SessionNotice

__all__ = [
    "BLUE",
    "FINISH_TOOLS",
    "GREEN",
    "GREY",
    "RED",
    "YELLOW",
    "DiscordWebhookNotifier",
    "EventRenderer",
    "Payload",
    "embed_length",
    "embed_messages",
    "text_messages",
]

logger = logging.getLogger("agentkit.adapters.notify")


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
        #: turns events into payloads; holds ``redactor`` and ``tool_use``
        self.renderer = EventRenderer(redactor or Redactor(), tool_use=tool_use)
        self.redactor.add(url)
        # httpx logs every request's URL at INFO, and this URL is a secret
        self._log_filter = RedactingFilter(self.redactor)
        logging.getLogger("httpx").addFilter(self._log_filter)
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=queue_size)
        self.username = username
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
        self._bucket_reset: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> DiscordWebhookNotifier:
        """A notifier for ``settings.discord_webhook_url``, redacting every configured secret."""
        if settings.discord_webhook_url is None:
            raise ConfigError("DISCORD_WEBHOOK_URL is not set: create a webhook in Discord first")
        options.setdefault("redactor", Redactor(settings.secrets()))
        return cls(settings.discord_webhook_url, **options)

    @property
    def redactor(self) -> Redactor:
        """Redacts secrets from every message (the webhook URL included)."""
        return self.renderer.redactor

    @redactor.setter
    def redactor(self, redactor: Redactor) -> None:
        self.renderer.redactor = redactor

    @property
    def tool_use(self) -> bool:
        """Whether every tool call is posted."""
        return self.renderer.tool_use

    @tool_use.setter
    def tool_use(self, value: bool) -> None:
        self.renderer.tool_use = value

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
        call, result = self.renderer.clean_call(call), self.renderer.clean_result(result)
        if self.tool_use:
            self._enqueue_all(self.renderer.tool_use_messages(call))
        self._enqueue_all(self.renderer.tool_result_messages(call, result, None))

    def run_observer(self) -> RunObserver:
        """A run observer (``connect(observers=[notifier.run_observer()])``): every agent's end
        is reported as it happens - also agents nobody waits for - and once only (a later
        ``wait_for_claude_agent`` result for the same agent is not reported again); so are
        approval requests (``ask_tools``), stalls, and a stalled agent moving again."""
        from agentkit.containers.registry import RunObserver

        notifier = self

        class Observer(RunObserver):
            async def on_finished(self, record: RunRecord) -> None:
                notifier._enqueue_all(notifier.renderer.agent_ended(record.to_dict()))

            def on_session(self, run_id: str, notice: SessionNotice) -> None:
                notifier._session_changed(run_id, notice)

        return Observer()

    def _session_changed(self, run_id: str, notice: SessionNotice) -> None:
        """An agent asks for approval, stalls, or moves again after a stall (sessions.md)."""
        if notice.kind == "needs_approval" and notice.approval:
            approval = notice.approval
            shown = json.dumps(approval.get("input"), ensure_ascii=False, default=str)[:800]
            self.post(
                f"Agent {run_id} asks to run {approval.get('tool', '?')}: {shown}\n"
                f"Request {approval.get('id')}: answer with approve_claude_agent.",
                title="Approval needed",
                color=YELLOW,
            )
        elif notice.kind == "stalled":
            self.post(
                f"Agent {run_id} printed nothing for a long time (AGENTKIT_STALL_TIMEOUT).",
                title="Agent stalled",
                color=RED,
            )
        elif notice.kind == "resumed":
            self.post(f"Agent {run_id} is moving again.", title="Agent resumed")

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
        out: Payload = self.redactor.redact_data(payload)
        if self.username:
            out["username"] = self.username
        # Model text may contain @everyone or role mentions: never ping anyone.
        out["allowed_mentions"] = {"parse": []}
        return out

    # --- rendering (agentkit.adapters.discord_messages) ----------------------------------------

    def render(self, event: AgentEvent) -> list[Payload]:
        """The payloads an event produces; empty for events not reported."""
        return self.renderer.render(event)

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
