"""Agents' approval requests in a Discord channel: Approve / Deny buttons for allowed people.

:class:`AgentApprovalRelay` is a run observer (subscribe it to the agent service, or use
:meth:`AgentkitDiscordBot.relay_agent_approvals`). When an agent started with ``ask_tools``
asks to run a tool (``needs_approval``), it posts the request - agent, tool, its input (redacted,
clipped) - with the same buttons the chat approvals use: only people the allowlist allows can
press them. The answer goes back to the agent (``AgentService.answer``); a request that is
answered elsewhere or expires (denied after ``AGENTKIT_APPROVAL_TIMEOUT``) has its buttons
removed and the outcome written on the message. Needs the ``discord`` extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentkit.adapters.discord_bot import NO_MENTIONS, ApprovalView
from agentkit.containers.registry import RunObserver
from agentkit.errors import AgentkitError

if TYPE_CHECKING:
    from agentkit.adapters.chat_session import AccessPolicy
    from agentkit.containers.streamjson import SessionNotice
    from agentkit.redact import Redactor

__all__ = ["AgentApprovalRelay", "approval_prompt"]

logger = logging.getLogger("agentkit.adapters.discord")

Answer = Callable[[str, str, bool, str | None], Awaitable[Any]]


def approval_prompt(run_id: str, approval: dict[str, Any], redactor: Redactor | None) -> str:
    """The message text of one request (input as JSON, redacted, at most ~1200 chars)."""
    shown = json.dumps(approval.get("input"), ensure_ascii=False, default=str)
    if redactor is not None:
        shown = redactor.redact(shown)
    if len(shown) > 1200:
        shown = shown[:1199] + "…"
    shown = shown.replace("```", "``\u200b`")
    return (
        f"🔐 Agent `{run_id}` asks to run **{approval.get('tool', '?')}**:\n```json\n{shown}\n```"
    )


class AgentApprovalRelay(RunObserver):
    """Posts agents' approval requests to ``channel`` and sends the answers back.

    Args:
        answer: ``AgentService.answer`` (run id, request id, allow, reason).
        channel: a discord.py ``Messageable`` (or anything with the same ``send``).
        policy: who may press the buttons.
        redactor: applied to the tool input shown.
    """

    def __init__(
        self,
        answer: Answer,
        channel: Any,
        policy: AccessPolicy,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        self._answer = answer
        self.channel = channel
        self.policy = policy
        self.redactor = redactor
        self._open: dict[tuple[str, str], tuple[ApprovalView, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_session(self, run_id: str, notice: SessionNotice) -> None:
        approval = notice.approval
        if approval is None:
            return
        key = (run_id, str(approval.get("id")))
        if notice.kind == "needs_approval" and key not in self._open:
            self._spawn(self._ask(run_id, approval))
        elif notice.kind in ("approved", "denied") and key in self._open:
            view, message = self._open.pop(key)
            view.stop()
            self._spawn(self._close(message, f"Answered: {notice.kind}."))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, run_id: str, approval: dict[str, Any]) -> None:
        request_id = str(approval.get("id"))
        prompt = approval_prompt(run_id, approval, self.redactor)
        view = ApprovalView(self.policy)
        message = await self.channel.send(prompt, view=view, allowed_mentions=NO_MENTIONS)
        self._open[(run_id, request_id)] = (view, message)
        approved, who = await view.decision
        self._open.pop((run_id, request_id), None)
        reason = None if approved else f"denied by {who.name or who.id} on Discord"
        try:
            await self._answer(run_id, request_id, approved, reason)
        except AgentkitError as exc:
            await self._close(message, f"Could not answer: {exc}")

    async def _close(self, message: Any, text: str) -> None:
        try:
            await message.edit(content=f"{message.content}\n{text}", view=None)
        except Exception:
            logger.debug("could not update the approval message", exc_info=True)

    async def aclose(self) -> None:
        for view, _ in self._open.values():
            view.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
