"""The real Claude Code CLI against the scripted server (agentkit.testing).

Needs the CLI binary at ``$AGENTKIT_TEST_CLAUDE_BIN`` (see docs/testing.md for the install);
skipped locally without it, a failure under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentkit.testing import ScriptedAnthropicServer, reply, scripts
from tests.support import require

pytestmark = pytest.mark.slow


def claude_bin() -> str:
    path = os.environ.get("AGENTKIT_TEST_CLAUDE_BIN", "")
    found = bool(path) and os.access(path, os.X_OK)
    require(found, "the Claude Code CLI binary at $AGENTKIT_TEST_CLAUDE_BIN")
    return path


def cli_env(base_url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        **extra,
    }
    if os.geteuid() == 0:
        env["IS_SANDBOX"] = "1"  # --dangerously-skip-permissions is refused as root otherwise
    return env


async def run_claude(
    binary: str, cwd: Path, env: dict[str, str], prompt: str
) -> tuple[int, list[dict[str, Any]], str]:
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-p",
        "--verbose",
        "--output-format",
        "stream-json",
        "--dangerously-skip-permissions",
        prompt,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,  # an open stdin costs 3 s
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return proc.returncode or 0, events, err.decode()


async def test_claude_code_writes_a_file_through_the_scripted_server(tmp_path: Path) -> None:
    binary = claude_bin()
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    target = work / "hello.txt"
    script = scripts.write_file(str(target), "hello from the script\n", final_text="Wrote it.")
    async with ScriptedAnthropicServer(script) as server:
        code, events, stderr = await run_claude(
            binary, work, cli_env(server.url, home), "write hello.txt"
        )
    assert code == 0, stderr
    assert target.read_text() == "hello from the script\n"
    kinds = [(e["type"], e.get("subtype")) for e in events]
    assert kinds[0] == ("system", "init")
    result = events[-1]
    assert result["type"] == "result"
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Wrote it."
    assert result["num_turns"] == 2
    tool_results = [
        block
        for e in events
        if e["type"] == "user"
        for block in e["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert len(tool_results) == 1
    assert not tool_results[0].get("is_error")
    # the request pattern the docs describe
    assert script.remaining == 0
    main = script.main_requests
    assert len(main) == 2
    for request in main:
        assert request.path == "/v1/messages"
        assert request.query == {"beta": "true"}
        assert request.stream is True
        assert "Write" in request.tool_names
        assert request.headers["x-api-key"] == "[REDACTED]"
    (returned,) = main[1].tool_results()
    assert returned["tool_use_id"] == main[1].messages[-2]["content"][0]["id"]
    server.check()


async def test_claude_code_runs_bash_and_reports_api_errors(tmp_path: Path) -> None:
    binary = claude_bin()
    require(shutil.which("bash") is not None, "bash (Claude Code's Bash tool runs it)")
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "bash.txt"
    script = scripts.run_command(f"echo from-bash > {target}", final_text="Ran it.")
    async with ScriptedAnthropicServer(script) as server:
        code, events, stderr = await run_claude(binary, tmp_path, cli_env(server.url, home), "run")
    assert code == 0, stderr
    assert target.read_text() == "from-bash\n"
    assert events[-1]["result"] == "Ran it."

    failing = ScriptedAnthropicServer([], default=reply.error(400, "scripted failure"))
    async with failing:
        code, events, _ = await run_claude(binary, tmp_path, cli_env(failing.url, home), "hi")
    assert code == 1
    result = events[-1]
    assert result["type"] == "result"
    assert result["is_error"] is True
    assert "scripted failure" in result["result"]
