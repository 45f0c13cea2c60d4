"""The `agentkit` command, run as a real process (exit codes, output, streaming, the demo)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from agentkit.config import Settings
from agentkit.containers.service import AgentService
from agentkit.executors.local import LocalExecutor
from agentkit.testing import ScriptedAnthropicServer, reply
from tests.containers_support import (
    AGENT_IMAGE,
    BASE_IMAGE,
    docker_ok,
    image_ok,
    remove_containers_of_root,
)
from tests.support import TOOL_NAMES, require


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTKIT_", "ANTHROPIC_", "HETZNER_", "GITHUB_", "GH_"))
    }
    env["AGENTKIT_ROOT"] = str(tmp_path / "root")
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def agentkit(
    tmp_path: Path, *args: str, input: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentkit.cli.main", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path, **env),
        cwd=tmp_path,
        input=input,
        timeout=timeout,
        check=False,
    )


def test_tools_json_lists_the_product_tools_with_schemas(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "tools", "--json")
    assert proc.returncode == 0, proc.stderr
    tools = json.loads(proc.stdout)
    assert {t["name"] for t in tools} == TOOL_NAMES
    spawn = next(t for t in tools if t["name"] == "spawn_claude_agent")
    assert set(spawn["input_schema"]["required"]) == {"task", "workspace_path"}
    assert spawn["input_schema"]["properties"]["timeout"]["default"] == 600000


def test_tools_human_listing_marks_destructive_tools(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "tools")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("delete_workspace"))
    assert "destructive" in line


def test_call_ok_prints_result_and_exits_0(tmp_path: Path) -> None:
    made = agentkit(tmp_path, "call", "create_workspace", "--json", '{"workspace_name": "w1"}')
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "root" / "workspaces" / "w1" / ".git").is_dir()
    listed = agentkit(tmp_path, "call", "list_workspaces", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["is_error"] is False
    assert "w1" in body["content"]


def test_call_tool_error_exits_1(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "call", "delete_workspace", "--json", '{"workspace_name": "nope"}')
    assert proc.returncode == 1
    assert "nope" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["call", "list_workspaces", "--json", "{not json"], "not valid JSON"),
        (["call", "no_such_tool"], "unknown tool"),
        (["call", "create_workspace", "--json", '{"workspace_name": 5}'], "$.workspace_name"),
        (["frobnicate"], "invalid choice"),
        (
            [
                "call",
                "spawn_claude_agent",
                "--json",
                '{"task": "t", "workspace_path": "w", "timeout": 5}',
            ],
            "$.timeout: 5 is less than the minimum of 1000",
        ),
        # user text that looks like rich markup is printed, not parsed (it crashed)
        (["call", "x[/y]"], "unknown tool 'x[/y]'"),
        (["call", "create_workspace", "--json", '{"workspace_name": ["[/b]"]}'], "['[/b]']"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = agentkit(tmp_path, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr


def test_schema_errors_are_all_listed(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "call", "create_workspace", "--json", '{"workspace_name": 5, "x": 1}')
    assert "$.workspace_name" in proc.stderr
    assert "'x' was unexpected" in proc.stderr


def test_run_without_api_key_is_one_line_error(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "run", "hello")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "ANTHROPIC_API_KEY" in lines[0]
    assert "Traceback" not in proc.stderr


def test_run_streams_text_and_tool_calls(tmp_path: Path) -> None:
    script = [
        reply.text("Let me look.") + reply.tool_use("list_workspaces", {}),
        reply.text("There are no workspaces yet."),
    ]
    with ScriptedAnthropicServer(script).start_in_thread() as server:
        proc = agentkit(
            tmp_path,
            "run",
            "what workspaces exist?",
            ANTHROPIC_API_KEY="sk-ant-test-key-123456",
            ANTHROPIC_BASE_URL=server.url,
        )
        server.check()
        first = server.message_requests[0]
    # the operator prompt explains the workflow and names this host's workspace root
    assert "You direct Claude Code agents" in first.system_text
    assert str(tmp_path / "root" / "workspaces") in first.system_text
    assert set(first.tool_names) == TOOL_NAMES
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("Let me look.") < out.index("list_workspaces") < out.index("no workspaces")
    # usage with its cost (2 turns of 10 in / 5 out at the default model's Sonnet prices)
    assert "2 turn(s), 20 in (0 cached) / 10 out tokens, $0.0002" in out
    assert "sk-ant-test-key-123456" not in out + proc.stderr


def test_run_json_emits_event_lines(tmp_path: Path) -> None:
    script = [reply.tool_use("list_workspaces", {}), reply.text("none")]
    with ScriptedAnthropicServer(script).start_in_thread() as server:
        proc = agentkit(
            tmp_path,
            "run",
            "list",
            "--json",
            ANTHROPIC_API_KEY="test",
            ANTHROPIC_BASE_URL=server.url,
        )
    assert proc.returncode == 0, proc.stderr
    kinds = [json.loads(line)["type"] for line in proc.stdout.splitlines()]
    assert kinds[0] == "run_started"
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("run_finished")


def test_chat_keeps_history_between_prompts(tmp_path: Path) -> None:
    script = [reply.text("Hello, Ada."), reply.text("Your name is Ada.")]
    with ScriptedAnthropicServer(script).start_in_thread() as server:
        proc = agentkit(
            tmp_path,
            "chat",
            input="my name is Ada\nwhat is my name?\n\n",
            ANTHROPIC_API_KEY="test",
            ANTHROPIC_BASE_URL=server.url,
        )
        second = server.message_requests[1].messages
    assert proc.returncode == 0, proc.stderr
    assert "Your name is Ada." in proc.stdout
    assert [m["role"] for m in second] == ["user", "assistant", "user"]


def test_doctor_json_reports_checks(tmp_path: Path) -> None:
    proc = agentkit(tmp_path, "doctor", "--json")
    report = json.loads(proc.stdout)
    names = {c["name"] for c in report["checks"]}
    assert {"target host", "ANTHROPIC_API_KEY", "executor"} <= names
    key = next(c for c in report["checks"] if c["name"] == "ANTHROPIC_API_KEY")
    assert key["ok"] is False
    assert "ANTHROPIC_API_KEY" in key["fix"]
    assert proc.returncode == 1  # the missing key is a problem to fix


@pytest.mark.usefixtures("agent_cleanup")  # its gateway (container and network) too
async def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    require(await docker_ok(), "a running Docker engine")
    require(await image_ok(AGENT_IMAGE), f"the agent image {AGENT_IMAGE}")
    # the images' build inputs, as CI sets them (the gateway image is checked on first use)
    inputs = {
        k: os.environ[k]
        for k in ("AGENTKIT_GATEWAY_IMAGE", "AGENTKIT_BASE_IMAGE", "AGENTKIT_EXTRA_CA_DIR")
        if os.environ.get(k)
    }
    proc = agentkit(tmp_path, "demo", timeout=300, **inputs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = list((tmp_path / "root" / "workspaces").glob("demo-*/fizzbuzz.py"))
    assert len(written) == 1
    run = subprocess.run(
        [sys.executable, str(written[0])], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip().endswith("13 14 FizzBuzz")
    assert "succeeded" in proc.stdout
    # the agent's own progress (Claude Code's stream) is shown while the controller waits
    assert "tool Write: file_path=/workspace/fizzbuzz.py" in proc.stdout

    # the finished run stays inspectable from a new process: list, logs, logs -f
    listed = agentkit(tmp_path, "call", "list_claude_agents", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)["data"]["agents"]
    assert len(runs) == 1
    assert runs[0]["state"] == "succeeded"
    agent_id = runs[0]["id"]
    logs = agentkit(tmp_path, "logs", agent_id)
    assert logs.returncode == 0, logs.stderr
    assert "tool Write: file_path=/workspace/fizzbuzz.py" in logs.stdout
    followed = agentkit(tmp_path, "logs", agent_id, "-f")
    assert followed.returncode == 0, followed.stderr
    assert "Wrote fizzbuzz.py." in followed.stdout
    assert "[succeeded] turns=2" in followed.stdout
    foreign = agentkit(tmp_path, "logs", "not-an-agent")
    assert foreign.returncode != 0


#: three assistant lines, each written only once the test created /workspace/go-<i>, then a result
GATED = (
    "for i in 0 1 2; do "
    'printf \'{"type":"assistant","message":{"id":"m%s","content":"line %s"}}\\n\' "$i" "$i"; '
    'while [ ! -e "/workspace/go-$i" ]; do sleep 0.05; done; done; '
    'printf \'{"type":"result","subtype":"success","is_error":false,"num_turns":3,'
    '"total_cost_usd":0.5,"session_id":"s","result":"all done"}\\n\''
)


async def test_logs_follow_prints_lines_as_a_running_agent_writes_them(tmp_path: Path) -> None:
    """`logs -f` on a running agent: each line shows while the agent waits for the test to let
    it write the next; the command ends by itself when the agent ends."""
    require(await docker_ok(), "a running Docker engine")
    require(await image_ok(BASE_IMAGE), f"the base image {BASE_IMAGE}")
    settings = Settings(  # what the CLI process reads from _env(): the same root, local host
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root=str(tmp_path / "root"),
        image=BASE_IMAGE,
        anthropic_api_key="sk-ant-test-" + secrets.token_hex(8),
    )
    try:
        async with LocalExecutor() as executor:
            agents = AgentService(executor, settings)
            spawned = await agents.spawn("gated", "gated", 120_000, command=["sh", "-c", GATED])
            await agents.aclose()  # the agent runs on; only the CLI follows it
        assert spawned.workspace is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentkit.cli.main", "logs", spawned.id, "-f", "--json",
            env=_env(tmp_path), cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            for i in range(3):
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert json.loads(line) == {"id": spawned.id, "text": f"agent: line {i}"}
                assert proc.returncode is None  # still following: the agent is waiting
                Path(spawned.workspace, f"go-{i}").touch()
            rest = await asyncio.wait_for(proc.stdout.read(), 60)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert code == 0, stderr
        # the pushed phase change follows the result: answered, input open for the hold
        finished, waiting, final = (json.loads(line) for line in rest.decode().splitlines())
        assert waiting == {"id": spawned.id, "text": "[waiting] waiting for message"}
        assert finished == {
            "id": spawned.id,
            "text": "[finished] success, 3 turns, $0.5000: all done",
        }
        assert final["final"]["state"] == "succeeded"
        assert final["final"]["turns"] == 3
    finally:
        await remove_containers_of_root(settings.root)


def test_custom_tools_example_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "custom_tools.py"
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["It has 4 words.", "4"]


async def test_image_build_reports_an_up_to_date_image(tmp_path: Path) -> None:
    require(await docker_ok(), "a running Docker engine")
    require(await image_ok(AGENT_IMAGE), f"the agent image {AGENT_IMAGE}")
    # the inputs .ci/build-images.sh builds with (the same defaults when run by hand)
    inputs = {"AGENTKIT_BASE_IMAGE": os.environ.get("AGENTKIT_BASE_IMAGE", BASE_IMAGE)}
    ca_dir = Path("/usr/local/share/ca-certificates")
    if os.environ.get("AGENTKIT_EXTRA_CA_DIR") or list(ca_dir.glob("*.crt")):
        inputs["AGENTKIT_EXTRA_CA_DIR"] = os.environ.get("AGENTKIT_EXTRA_CA_DIR", str(ca_dir))
    if os.environ.get("AGENTKIT_IMAGE"):
        inputs["AGENTKIT_IMAGE"] = os.environ["AGENTKIT_IMAGE"]
    proc = agentkit(tmp_path, "image", "build", "--json", timeout=900, **inputs)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["tag"] == AGENT_IMAGE
    assert info["built"] is False  # CI built it from the same inputs: nothing to do
    assert info["claude_code_version"]
    doctor = agentkit(tmp_path, "doctor", "--json", **inputs)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["docker engine"]["ok"] is True
    assert checks["agent image"]["ok"] is True, checks["agent image"]
    human = agentkit(tmp_path, "image", "build", timeout=900, **inputs)
    assert human.returncode == 0, human.stderr
    assert "is up to date" in human.stderr
    assert "[dim]" not in human.stderr  # progress is plain text, not literal markup
    assert "[/]" not in human.stderr


async def test_runs_list_pages_and_prune_removes_old_records(tmp_path: Path) -> None:
    require(await docker_ok(), "dockerd")
    runs = tmp_path / "root" / "runs"
    ids = [f"claude-agent-{1764240000000 + i:013d}-abc{i:03d}" for i in range(5)]
    lines = []
    for i, run_id in enumerate(ids):
        record = {"id": run_id, "state": "succeeded", "created": 1764240000.0 + i, "task": f"t{i}"}
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "meta.json").write_text(json.dumps(record))
        (runs / run_id / "output.jsonl").write_text('{"type":"result"}\n' * 100)
        (runs / run_id / "result.json").write_text(json.dumps(record) + "\n")
        lines.append(json.dumps(record))
    (runs / "index.jsonl").write_text("\n".join(lines) + "\n")

    first = agentkit(tmp_path, "runs", "list", "--limit", "2", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)["data"]
    assert [a["id"] for a in page["agents"]] == [ids[4], ids[3]]
    second = agentkit(tmp_path, "runs", "list", "--limit", "2", "--cursor", page["next_cursor"])
    assert second.returncode == 0, second.stderr
    assert ids[2] in second.stdout
    assert ids[1] in second.stdout
    assert ids[4] not in second.stdout

    dry = agentkit(tmp_path, "runs", "prune", "--retention", "2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["pruned"] == 3
    assert all((runs / i).exists() for i in ids)
    pruned = agentkit(tmp_path, "runs", "prune", "--retention", "2")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 3 run records" in pruned.stdout
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ids[3:]
    listed = json.loads(agentkit(tmp_path, "runs", "list", "--json").stdout)["data"]
    assert [a["id"] for a in listed["agents"]] == [ids[4], ids[3]]
    bad = agentkit(tmp_path, "runs", "prune", "--retention", "forever")
    assert bad.returncode == 2
    assert "AGENTKIT_RUN_RETENTION" in bad.stderr
