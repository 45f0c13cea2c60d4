"""`Sessions`: the conversation side of running agents - messages in, approvals, phases, stalls.

Agents run in session mode (see ``docker/agent-entrypoint.sh``): Claude Code reads stream-json
from its standard input, which stays open. This observer of the run registry watches every
agent's events and

* tracks its **phase**: ``running`` (working on a turn), ``waiting`` for a ``message`` (it
  answered; its input is still open) or for an ``approval`` (a ``can_use_tool`` control
  request), and ``done`` once it ended (that one is the service's final state);
* applies the **end-of-conversation rule**: when the agent answered (a ``result``) and nothing
  is pending - no message written that it has not taken yet (each taken message is replayed,
  ``--replay-user-messages``), no approval - it waits ``AGENTKIT_SESSION_HOLD`` seconds for a
  message, then writes the end-of-input line: Claude Code finishes and the run ends as before;
* delivers **messages** (:meth:`send`, optionally after the protocol's ``interrupt``) and
  **answers** to approval requests (:meth:`answer`); an approval nobody answers within
  ``AGENTKIT_APPROVAL_TIMEOUT`` is denied;
* notices **stalls**: no event for ``AGENTKIT_STALL_TIMEOUT`` seconds while running marks the
  run ``stalled`` (``AGENTKIT_STALL_ACTION=stop`` stops it).

Every change is pushed - to :meth:`AgentService.watch` iterators as a :class:`SessionNotice`
event and to observers' ``on_session`` - from timers and events; nothing polls. The state is
rebuilt from the output after a controller restart (the follower re-reads it from the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit.containers.registry import RunObserver
from agentkit.containers.streamjson import (
    AssistantText,
    AssistantToolUse,
    ResultEvent,
    SessionNotice,
    ToolResultEvent,
    UnknownEvent,
)
from agentkit.errors import ConflictError, NotFoundError, ToolError

if TYPE_CHECKING:
    from agentkit.containers.records import RunRecord
    from agentkit.containers.registry import RunRegistry
    from agentkit.containers.streamjson import Event
    from agentkit.runtimes.base import Runtime

__all__ = ["END_INPUT", "Approval", "SessionState", "Sessions", "user_message"]

logger = logging.getLogger("agentkit.agents")

END_INPUT = b'{"type":"agentkit_end_input"}\n'
MAX_MESSAGE_BYTES = 100_000
MAX_PENDING_APPROVALS = 32
INPUT_CLIP = 2_000


def user_message(text: str) -> bytes:
    """One stream-json user message line."""
    line = {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "",
    }
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def _clip_input(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= INPUT_CLIP else text[:INPUT_CLIP] + "…"


@dataclass(slots=True)
class Approval:
    """A tool call waiting for a person's yes or no."""

    id: str
    run_id: str
    tool: str
    input: Any
    at: float
    expires_at: float
    raw_input: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "tool": self.tool,
            "input": self.input,
            "at": self.at,
            "expires_at": self.expires_at,
        }


@dataclass(slots=True)
class SessionState:
    run_id: str
    phase: str = "running"
    waiting_for: str | None = None
    stalled: bool = False
    pending_messages: int = 0
    replays: int = 0
    input_ended: bool = False
    last_event_at: float = field(default_factory=time.time)
    approvals: dict[str, Approval] = field(default_factory=dict)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict, repr=False)
    #: set whenever an approval request arrives (waiters return early)
    asked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "waiting_for": self.waiting_for,
            "stalled": self.stalled,
            "approvals": [a.to_dict() for a in self.approvals.values()],
            "input_open": not self.input_ended,
        }


class Sessions(RunObserver):
    """Per-run conversation state of one service (an observer of its registry).

    Args:
        runtime: returns the connected runtime (input writes go through it).
        registry: the run registry (live runs' watchers; observers to tell).
        stop: stops a run (used by ``AGENTKIT_STALL_ACTION=stop``).
        hold: seconds an answered agent waits for another message before its input ends.
        approval_timeout: seconds before an unanswered approval is denied.
        stall_timeout: seconds without an event before a running agent is ``stalled``.
        stall_action: ``"notify"`` or ``"stop"``.
    """

    def __init__(
        self,
        runtime: Callable[[], Awaitable[Runtime]],
        registry: RunRegistry,
        stop: Callable[[str], Awaitable[Any]],
        *,
        hold: float = 1.0,
        approval_timeout: float = 300.0,
        stall_timeout: float = 600.0,
        stall_action: str = "notify",
    ) -> None:
        self._runtime = runtime
        self.registry = registry
        self._stop = stop
        self.hold = hold
        self.approval_timeout = approval_timeout
        self.stall_timeout = stall_timeout
        self.stall_action = stall_action
        self.states: dict[str, SessionState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- observing ------------------------------------------------------------------------------

    def state(self, run_id: str) -> SessionState | None:
        return self.states.get(run_id)

    def approval_event(self, run_id: str) -> asyncio.Event:
        """An event set when ``run_id`` next asks for an approval."""
        st = self._state(run_id)
        st.asked.clear()
        return st.asked

    def _state(self, run_id: str) -> SessionState:
        st = self.states.get(run_id)
        if st is None:
            st = self.states[run_id] = SessionState(run_id)
            self._arm_stall(st)
        return st

    def on_event(self, run_id: str, event: Event) -> None:
        st = self._state(run_id)
        st.last_event_at = time.time()
        if st.stalled:
            st.stalled = False
            self._push(st, "resumed")
        self._arm_stall(st)
        if isinstance(event, UnknownEvent):
            raw = event.raw
            if event.type == "user" and raw.get("isReplay") is True:
                st.replays += 1
                if st.replays > 1:  # the first one is the task the entrypoint wrote
                    st.pending_messages = max(st.pending_messages - 1, 0)
                self._cancel(st, "end")
                self._set_phase(st, "running", None)
            elif event.type == "control_request":
                self._control_request(st, raw)
            elif event.type == "control_cancel_request":
                rid = raw.get("request_id")
                if isinstance(rid, str) and st.approvals.pop(rid, None) is not None:
                    self._cancel(st, f"approval:{rid}")
                    self._after_approvals(st)
        elif isinstance(event, ResultEvent) and st.pending_messages == 0 and not st.approvals:
            self._set_phase(st, "waiting", "message")
            self._arm(st, "end", self.hold, lambda: self._spawn(self._end(run_id)))
        elif (
            isinstance(event, AssistantText | AssistantToolUse | ToolResultEvent)
            and st.phase == "waiting"
            and st.waiting_for == "message"
        ):
            self._set_phase(st, "running", None)

    async def on_finished(self, record: RunRecord) -> None:
        self.finished(record.id)

    def finished(self, run_id: str) -> None:
        """The run ended: drop its state and timers (approvals die with it)."""
        st = self.states.pop(run_id, None)
        if st is not None:
            for handle in st.timers.values():
                handle.cancel()

    def _control_request(self, st: SessionState, raw: dict[str, Any]) -> None:
        request = raw.get("request")
        rid = raw.get("request_id")
        if not isinstance(request, dict) or not isinstance(rid, str) or not rid:
            return
        if request.get("subtype") != "can_use_tool":
            return
        if len(st.approvals) >= MAX_PENDING_APPROVALS or len(rid) > 200:
            self._spawn(self._respond(st.run_id, rid, False, "too many pending approvals"))
            return
        now = time.time()
        tool = request.get("tool_name")
        approval = Approval(
            id=rid,
            run_id=st.run_id,
            tool=tool if isinstance(tool, str) else "?",
            input=_clip_input(request.get("input")),
            at=now,
            expires_at=now + self.approval_timeout,
            raw_input=request.get("input"),
        )
        st.approvals[rid] = approval
        st.asked.set()
        self._cancel(st, "end")
        self._arm(
            st,
            f"approval:{rid}",
            self.approval_timeout,
            lambda: self._spawn(self._expire(st.run_id, rid)),
        )
        self._set_phase(st, "waiting", "approval", notice="needs_approval", approval=approval)

    def _after_approvals(self, st: SessionState) -> None:
        if not st.approvals and st.phase == "waiting" and st.waiting_for == "approval":
            self._set_phase(st, "running", None)

    # --- actions --------------------------------------------------------------------------------

    def _writable(self, run_id: str) -> SessionState:
        st = self.states.get(run_id)
        run = self.registry.get(run_id)
        if st is None or run is None or run.done.is_set():
            raise ConflictError(
                f"agent {run_id} is not running, so it cannot take a message: use "
                "continue_claude_agent to resume its session in a new run"
            )
        if run.labels.get("agentkit.session") != "1":
            raise ToolError(f"agent {run_id} was not started in session mode: its input is closed")
        if st.input_ended:
            raise ConflictError(
                f"agent {run_id} has answered and its input is closed (it is finishing): use "
                "continue_claude_agent once it ended"
            )
        return st

    async def send(self, run_id: str, text: str, *, interrupt: bool = False) -> SessionState:
        """Deliver a user message through the run's open input (``interrupt`` first)."""
        if not isinstance(text, str) or not text.strip():
            raise ToolError("message is empty: say what the agent should do")
        if "\x00" in text or len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise ToolError(f"message must be at most {MAX_MESSAGE_BYTES} bytes without NUL")
        st = self._writable(run_id)
        self._cancel(st, "end")
        st.pending_messages += 1
        runtime = await self._runtime()
        try:
            if interrupt:
                request = {
                    "type": "control_request",
                    "request_id": f"agentkit-{uuid.uuid4().hex[:12]}",
                    "request": {"subtype": "interrupt"},
                }
                await runtime.write_stdin(run_id, json.dumps(request).encode() + b"\n")
            await runtime.write_stdin(run_id, user_message(text))
        except BaseException:
            st.pending_messages = max(st.pending_messages - 1, 0)
            raise
        self._set_phase(st, "running", None)
        return st

    async def answer(
        self, run_id: str, request_id: str, allow: bool, reason: str | None = None
    ) -> Approval:
        """Answer a pending approval request; ``NotFoundError`` when it is gone."""
        st = self.states.get(run_id)
        approval = st.approvals.get(request_id) if st is not None else None
        if st is None or approval is None:
            pending = ", ".join(st.approvals) if st is not None and st.approvals else "none"
            raise NotFoundError(
                f"agent {run_id} has no pending approval {request_id!r} (it was answered, timed "
                f"out and was denied, or the agent ended); pending: {pending}"
            )
        await self._respond(run_id, request_id, allow, reason, approval=approval)
        return approval

    async def _respond(
        self,
        run_id: str,
        request_id: str,
        allow: bool,
        reason: str | None,
        *,
        approval: Approval | None = None,
    ) -> None:
        if allow:
            raw_input = approval.raw_input if approval is not None else {}
            body: dict[str, Any] = {"behavior": "allow", "updatedInput": raw_input}
        else:
            body = {"behavior": "deny", "message": (reason or "denied by the operator")[:2000]}
        line = {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": body},
        }
        runtime = await self._runtime()
        await runtime.write_stdin(run_id, json.dumps(line, ensure_ascii=False).encode() + b"\n")
        st = self.states.get(run_id)
        if st is not None and st.approvals.pop(request_id, None) is not None:
            self._cancel(st, f"approval:{request_id}")
            self._push(st, "approved" if allow else "denied", approval=approval)
            self._after_approvals(st)

    async def _expire(self, run_id: str, request_id: str) -> None:
        st = self.states.get(run_id)
        approval = st.approvals.get(request_id) if st is not None else None
        if approval is None:
            return
        reason = f"no answer within {self.approval_timeout:g} s: denied"
        try:
            await self._respond(run_id, request_id, False, reason, approval=approval)
        except Exception as exc:
            logger.warning("could not deny expired approval %s of %s: %s", request_id, run_id, exc)

    async def _end(self, run_id: str) -> None:
        st = self.states.get(run_id)
        if st is None or st.input_ended or st.pending_messages or st.approvals:
            return
        st.input_ended = True
        try:
            await (await self._runtime()).write_stdin(run_id, END_INPUT)
        except Exception as exc:  # an old image, or gone already: it ends by itself
            logger.debug("could not end the input of %s: %s", run_id, exc)

    # --- stalls ---------------------------------------------------------------------------------

    def _arm_stall(self, st: SessionState) -> None:
        if self.stall_timeout > 0:
            self._arm(st, "stall", self.stall_timeout, lambda: self._stalled(st.run_id))

    def _stalled(self, run_id: str) -> None:
        st = self.states.get(run_id)
        if st is None or st.phase == "waiting":  # waiting for a person is not a stall
            if st is not None:
                self._arm_stall(st)
            return
        st.stalled = True
        self._push(st, "stalled")
        if self.stall_action == "stop":
            self._spawn(self._stop(run_id))

    # --- plumbing -------------------------------------------------------------------------------

    def _set_phase(
        self,
        st: SessionState,
        phase: str,
        waiting_for: str | None,
        *,
        notice: str | None = None,
        approval: Approval | None = None,
    ) -> None:
        if (st.phase, st.waiting_for) == (phase, waiting_for) and notice is None:
            return
        st.phase, st.waiting_for = phase, waiting_for
        self._push(st, notice or phase, approval=approval)

    def _push(self, st: SessionState, kind: str, *, approval: Approval | None = None) -> None:
        notice = SessionNotice(
            kind=kind,
            run_id=st.run_id,
            phase=st.phase,
            waiting_for=st.waiting_for,
            stalled=st.stalled,
            approval=approval.to_dict() if approval is not None else None,
        )
        run = self.registry.get(st.run_id)
        if run is not None:
            run.push_notice(notice)
        self.registry.session_changed(st.run_id, notice)

    def _arm(self, st: SessionState, key: str, delay: float, fire: Callable[[], None]) -> None:
        self._cancel(st, key)
        st.timers[key] = asyncio.get_running_loop().call_later(max(delay, 0), fire)

    @staticmethod
    def _cancel(st: SessionState, key: str) -> None:
        handle = st.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for run_id in list(self.states):
            self.finished(run_id)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
