"""The session methods of :class:`~agentkit.containers.service.AgentService`: continue a
finished agent, message a running one, answer its approval requests (a mixin; the logic of
phases, approvals and stalls is :mod:`agentkit.containers.sessions`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentkit.containers.finalize import SESSION_DIR
from agentkit.containers.launch import SESSION_ID, SessionOptions
from agentkit.containers.models import validate_agent_id
from agentkit.errors import AgentkitError, ConflictError, ToolError

if TYPE_CHECKING:
    from agentkit.containers.models import AgentStatus
    from agentkit.containers.runs import RunStore
    from agentkit.containers.sessions import Sessions

__all__ = ["SessionMethods"]

logger = logging.getLogger("agentkit.agents")


class SessionMethods:
    """Mixed into ``AgentService`` (which provides what is declared here)."""

    store: RunStore
    sessions: Sessions

    if TYPE_CHECKING:

        async def start(self) -> None: ...

        async def status(self, container_id: str) -> AgentStatus: ...

        async def stop(self, container_id: str) -> AgentStatus: ...

        async def spawn(
            self,
            task: str,
            workspace_path: str,
            timeout_ms: int = 600_000,
            *,
            image: str | None = None,
            command: Sequence[str] | None = None,
            entrypoint: Sequence[str] | None = None,
            extra_env: Mapping[str, str] | None = None,
            ask_tools: Sequence[str] = (),
            session: SessionOptions | None = None,
        ) -> AgentStatus: ...

    async def continue_(
        self,
        container_id: str,
        message: str,
        timeout_ms: int = 600_000,
        **options: Any,
    ) -> AgentStatus:
        """A new run on the same workspace that resumes ``container_id``'s saved session with
        ``message``; it links to its parent (``parent``)."""
        parent = await self.status(container_id)
        if not parent.finished:
            raise ConflictError(
                f"agent {parent.id} is still running: send it the message with "
                "send_to_claude_agent, or wait for it and continue it then"
            )
        if not parent.session_id:
            raise ToolError(
                f"agent {parent.id} never started a Claude Code session (state {parent.state}"
                f"{': ' + parent.error if parent.error else ''}): there is nothing to continue; "
                "spawn a new agent instead"
            )
        if not SESSION_ID.fullmatch(parent.session_id):
            raise ToolError(f"agent {parent.id} reported an invalid session id")
        saved = await self.store.read_session(parent.id)
        if saved is None:
            raise ToolError(
                f"the session of agent {parent.id} was not saved with its record "
                "(it ended before sessions were saved, or the transcript was too large): spawn "
                "a new agent instead"
            )
        if not parent.workspace:
            raise ToolError(f"agent {parent.id} has no recorded workspace")
        path = f"{SESSION_DIR}/{parent.session_id}.jsonl"
        session = SessionOptions(resume=parent.session_id, parent=parent.id, files={path: saved})
        return await self.spawn(message, parent.workspace, timeout_ms, session=session, **options)

    async def send(
        self, container_id: str, message: str, *, interrupt: bool = False
    ) -> AgentStatus:
        """Deliver ``message`` to a running agent through its open input."""
        status = await self.status(container_id)
        if status.finished:
            raise ConflictError(
                f"agent {status.id} has finished ({status.state}): it cannot take a message; "
                "continue_claude_agent resumes its session in a new run"
            )
        await self.sessions.send(status.id, message, interrupt=interrupt)
        return await self.status(status.id)

    async def answer(
        self, container_id: str, request_id: str, allow: bool, reason: str | None = None
    ) -> AgentStatus:
        """Approve or deny a pending approval request of a running agent."""
        run_id = validate_agent_id(container_id)
        if not isinstance(request_id, str) or not request_id.strip():
            raise ToolError("request_id is empty: get_claude_status lists pending approvals")
        await self.start()
        await self.sessions.answer(run_id, request_id.strip(), allow, reason)
        return await self.status(run_id)

    async def _stop_stalled(self, run_id: str) -> None:
        try:
            await self.stop(run_id)
        except AgentkitError as exc:
            logger.warning("could not stop stalled agent %s: %s", run_id, exc)

    def _with_session(self, status: AgentStatus) -> AgentStatus:
        st = self.sessions.state(status.id)
        if st is not None and not status.finished:
            status.phase, status.waiting_for, status.stalled = st.phase, st.waiting_for, st.stalled
            status.approvals = [a.to_dict() for a in st.approvals.values()]
        return status
