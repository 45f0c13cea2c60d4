"""Ready-made scripts for driving the real Claude Code CLI against the scripted server.

Claude Code sends its main agent loop as ``POST /v1/messages?beta=true`` with ``stream: true``
and its tool definitions, one request per turn. Other requests it may make (titles, summaries,
quota probes with a small model) carry no tools; :class:`ClaudeCodeScript` answers those with
``side_reply`` so they never consume a line of the script::

    from agentkit.testing import ScriptedAnthropicServer, scripts

    script = scripts.write_file("/work/hello.txt", "hi\\n", final_text="Wrote it.")
    async with ScriptedAnthropicServer(script, host="0.0.0.0") as server:
        # run `claude -p ... ` with ANTHROPIC_BASE_URL=server.url_for(<bridge gateway>)
        ...
    assert script.remaining == 0
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from agentkit.testing import replies as reply
from agentkit.testing.replies import Reply
from agentkit.testing.server import RecordedRequest

__all__ = [
    "ClaudeCodeScript",
    "is_side_request",
    "run_command",
    "text_only",
    "write_file",
]


def is_side_request(request: RecordedRequest) -> bool:
    """True for a messages request that is not a turn of the main agent loop (it has no tools)."""
    return request.is_messages and not request.tools


class ClaudeCodeScript:
    """A request handler: main-loop turns get ``replies`` in order, side requests ``side_reply``.

    Pass it as the server's script/handler. When the replies run out it returns ``None``, so the
    server's own script or ``default`` answers (or it reports the exhausted script).
    """

    def __init__(self, replies: Iterable[Reply], *, side_reply: Reply | None = None) -> None:
        self._replies: deque[Reply] = deque(replies)
        self.side_reply = side_reply or reply.text("ok")
        self.main_requests: list[RecordedRequest] = []
        self.side_requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        return len(self._replies)

    def __call__(self, request: RecordedRequest) -> Reply | None:
        with self._lock:
            if is_side_request(request):
                self.side_requests.append(request)
                return self.side_reply
            self.main_requests.append(request)
            return self._replies.popleft() if self._replies else None


def write_file(path: str, content: str, final_text: str = "Done.") -> ClaudeCodeScript:
    """Turn 1: ``Write`` ``content`` to absolute ``path``; turn 2: end with ``final_text``."""
    return ClaudeCodeScript(
        [
            reply.tool_use("Write", {"file_path": path, "content": content}),
            reply.text(final_text),
        ]
    )


def run_command(
    command: str, final_text: str = "Done.", timeout_ms: int = 60_000
) -> ClaudeCodeScript:
    """Turn 1: run ``command`` with the ``Bash`` tool; turn 2: end with ``final_text``."""
    return ClaudeCodeScript(
        [
            reply.tool_use(
                "Bash",
                {
                    "command": command,
                    "description": "Run the scripted command",
                    "timeout": timeout_ms,
                },
            ),
            reply.text(final_text),
        ]
    )


def text_only(final_text: str = "Done.") -> ClaudeCodeScript:
    """One turn: answer ``final_text`` and stop (no tools run)."""
    return ClaudeCodeScript([reply.text(final_text)])
