"""Refresh the dashboard screenshots in docs/ (docs/serve-dashboard.png, docs/serve-agent.png).

Runs a small real fleet - the agent image on the local dockerd, Claude Code driven by the
scripted Anthropic server - behind a real ``agentkit serve``, and photographs the dashboard in
headless Chromium (Debian's ``chromium``). Needs what the docker tests need::

    .venv/bin/python scripts/dashboard_screenshot.py

Environment: ``AGENTKIT_IMAGE`` (default agentflow-claude-code:latest), ``AGENTKIT_TEST_CHROMIUM``.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentkit.config import Settings  # noqa: E402
from agentkit.testing import ScriptedAnthropicServer, reply  # noqa: E402
from agentkit.testing.scripts import ClaudeCodeScript  # noqa: E402
from tests.browser import browser_page  # noqa: E402
from tests.containers_support import (  # noqa: E402
    AGENT_IMAGE,
    bridge_gateway,
    remove_containers_of_root,
)
from tests.serve_support import TOKEN, running_server, wait_for  # noqa: E402

FINISHED = [
    (
        "api",
        "Add a /health endpoint to the service and a test for it",
        [
            reply.tool_use("Bash", {"command": "ls -la", "description": "Look around"}),
            reply.tool_use(
                "Write",
                {
                    "file_path": "/workspace/health.py",
                    "content": "def health():\n    return 'ok'\n",
                },
            ),
            reply.text("Added `health()` in health.py; it returns 'ok'."),
        ],
    ),
    (
        "docs",
        "Write a deployment section for the README",
        [
            reply.tool_use(
                "Write",
                {"file_path": "/workspace/DEPLOY.md", "content": "# Deploying\n\nRun make.\n"},
            ),
            reply.text("Wrote DEPLOY.md with the deployment steps."),
        ],
    ),
    (
        "utils",
        "Fix the flaky date parsing in utils/dates.py",
        [
            reply.tool_use("Bash", {"command": "echo checking dates", "description": "Check"}),
            reply.tool_use("Bash", {"command": "echo 'all 14 tests pass'", "description": "Test"}),
            reply.text("Parsing now pins the timezone; all 14 tests pass."),
        ],
    ),
]
RUNNING = [
    ("api", "Refactor the payment module into smaller functions with tests"),
    ("web", "Upgrade the CI workflow to Python 3.12 and fix what breaks"),
]


def script() -> ClaudeCodeScript:
    replies = [r for _, _, turns in FINISHED for r in turns]
    running = [
        reply.text("I'll start by reading the code involved.")
        + reply.tool_use("Bash", {"command": "ls -la", "description": "List the files"}),
        reply.text("Checking the current configuration first.")
        + reply.tool_use("Bash", {"command": "echo 'python-version: 3.11'", "description": "Read"}),
        reply.text("Validation and I/O are mixed here; splitting them.")
        + reply.tool_use(
            "Write",
            {
                "file_path": "/workspace/payments/validate.py",
                "content": "def validate(amount: int) -> None:\n    if amount <= 0:\n"
                "        raise ValueError('amount must be positive')\n",
            },
        ),
        reply.text("Running the tests.")
        + reply.tool_use("Bash", {"command": "echo '42 passed'", "description": "Run tests"}),
        reply.text("Still working on it.").delayed(600),
        reply.text("Still working on it.").delayed(600),
    ]
    return ClaudeCodeScript([*replies, *running])


async def spawn(client: object, workspace: str, task: str) -> str:
    answer = await client.post(  # type: ignore[attr-defined]
        "/v1/tools/spawn_claude_agent",
        json={"task": task, "workspace_path": workspace, "timeout": 900000},
    )
    body = answer.json()
    if body.get("is_error"):
        raise SystemExit(f"spawn failed: {body['content']}")
    return str(body["data"]["id"])


async def main() -> None:
    docs = ROOT / "docs"
    with tempfile.TemporaryDirectory(prefix="agentkit-shot-") as tmp:
        root = str(Path(tmp) / "root")
        gateway = await bridge_gateway()
        try:
            turns = script()
            async with ScriptedAnthropicServer(turns, host="0.0.0.0") as model:
                settings = Settings(  # type: ignore[call-arg]
                    _env_file=None,
                    host=None,
                    root=root,
                    image=AGENT_IMAGE,
                    anthropic_api_key="sk-ant-shot-" + secrets.token_hex(12),
                    anthropic_base_url=model.url_for(gateway),
                    container_memory="2g",
                    api_token=TOKEN,
                )
                async with running_server(settings) as srv, srv.client(timeout=300) as client:
                    for name in ("api", "docs", "utils", "web"):
                        await client.post(
                            "/v1/tools/create_workspace", json={"workspace_name": name}
                        )
                    for workspace, task, _ in FINISHED:  # one after another: a cost staircase
                        agent_id = await spawn(client, workspace, task)
                        await client.post(
                            "/v1/tools/wait_for_claude_agent",
                            json={"container_id": agent_id, "timeout": 120000},
                        )
                        await asyncio.sleep(2)  # spread the runs over the chart's time axis
                    running = [await spawn(client, ws, task) for ws, task in RUNNING]
                    await wait_for(lambda: len(turns.main_requests) >= 14, 90, "the running turns")
                    async with browser_page({"width": 1360, "height": 900}) as page:
                        await page.goto(f"{srv.url}/#token={TOKEN}")
                        await page.wait_for_selector("#live[data-state=live]")
                        await page.wait_for_selector("#chart svg")
                        await page.wait_for_function(
                            "() => document.querySelectorAll('#fleet tbody tr').length >= 5"
                        )
                        await page.wait_for_timeout(1500)  # let the elapsed clocks tick once
                        await page.screenshot(
                            path=str(docs / "serve-dashboard.png"), full_page=True
                        )
                        await page.click(f'#fleet tr[data-id="{running[0]}"]')
                        await page.wait_for_selector("#stream .ev-tool")
                        await page.locator("#stream details.tool").first.locator("summary").click()
                        await page.wait_for_timeout(500)
                        await page.screenshot(path=str(docs / "serve-agent.png"), full_page=True)
                    for agent_id in running:
                        await client.post(f"/v1/agents/{agent_id}/stop")
        finally:
            await remove_containers_of_root(root)
    print(f"wrote {docs / 'serve-dashboard.png'} and {docs / 'serve-agent.png'}")


if __name__ == "__main__":
    asyncio.run(main())
