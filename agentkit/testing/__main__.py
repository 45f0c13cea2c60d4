"""``python -m agentkit.testing SCRIPT.json``: serve a scripted Anthropic API until stopped.

The first line on stdout is the base URL (``ANTHROPIC_BASE_URL``); requests are logged to
stderr. The JSON file is a list of replies or ``{"replies": [...], "default": {...},
"claude_code": true}`` (see :func:`agentkit.testing.replies.from_json` for the reply forms).
``claude_code`` answers Claude Code's tool-less side requests with ``default`` (or "ok")
without consuming the script. ``--write-file PATH CONTENT`` serves the two-turn Claude Code
conversation that writes one file, without a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from agentkit.testing import replies as reply
from agentkit.testing.scripts import ClaudeCodeScript, write_file
from agentkit.testing.server import RecordedRequest, ScriptedAnthropicServer


def build_server(args: argparse.Namespace) -> ScriptedAnthropicServer:
    if args.write_file:
        path, content = args.write_file
        return ScriptedAnthropicServer(
            write_file(path, content, final_text=args.final_text), host=args.host, port=args.port
        )
    if not args.script:
        raise SystemExit("give a SCRIPT.json or --write-file PATH CONTENT")
    data: Any = json.loads(Path(args.script).read_text())
    spec: dict[str, Any] = {"replies": data} if isinstance(data, list) else dict(data)
    replies = [reply.from_json(item) for item in spec.get("replies", [])]
    default = reply.from_json(spec["default"]) if spec.get("default") else None
    if spec.get("claude_code") or args.claude_code:
        handler = ClaudeCodeScript(replies, side_reply=default)
        return ScriptedAnthropicServer(handler, default=default, host=args.host, port=args.port)
    return ScriptedAnthropicServer(replies, default=default, host=args.host, port=args.port)


def log_request(request: RecordedRequest) -> None:
    detail = ""
    if request.is_messages:
        detail = f" model={request.model} tools={len(request.tools)} stream={request.stream}"
    print(f"{request.method} {request.path}{detail}", file=sys.stderr, flush=True)


async def serve(server: ScriptedAnthropicServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(server.url, flush=True)
        seen = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            for request in server.requests[seen:]:
                log_request(request)
            seen = len(server.requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentkit.testing", description=__doc__)
    parser.add_argument("script", nargs="?", help="JSON script file")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for containers)")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument("--claude-code", action="store_true", help="route side requests")
    parser.add_argument("--write-file", nargs=2, metavar=("PATH", "CONTENT"))
    parser.add_argument("--final-text", default="Done.")
    args = parser.parse_args(argv)
    asyncio.run(serve(build_server(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
