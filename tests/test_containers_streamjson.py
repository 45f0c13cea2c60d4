"""Stream-json parsing, summarizing and rendering (pure; no components needed)."""

from __future__ import annotations

import json

from agentkit.containers.streamjson import (
    ApiRetry,
    AssistantText,
    AssistantToolUse,
    InvalidLine,
    ResultEvent,
    RunSummary,
    SystemEvent,
    SystemInit,
    ToolResultEvent,
    UnknownEvent,
    parse_line,
    parse_lines,
    render_events,
)

INIT = {
    "type": "system",
    "subtype": "init",
    "session_id": "sess-1",
    "model": "claude-sonnet-4-5",
    "cwd": "/workspace",
    "tools": ["Bash", "Write", 3],
    "brand_new_field": {"x": 1},
}
TOOL_USE = {
    "session_id": "sess-1",
    "message": {
        "id": "msg_1",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I will write the file."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "Write",
                "input": {"file_path": "/workspace/hello.py", "content": "print('hi')\n" * 50},
            },
        ],
    },
    "type": "assistant",
    "parent_tool_use_id": None,
}
TOOL_RESULT = {
    "type": "user",
    "message": {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "File created"}, {"type": "image"}],
                "is_error": False,
            }
        ],
    },
}
RESULT = {
    "usage": {"input_tokens": 10},
    "total_cost_usd": 0.0123,
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "num_turns": 2,
    "session_id": "sess-1",
    "result": "Wrote hello.py",
    "duration_ms": 1500,
}
RETRY = {
    "type": "system",
    "subtype": "api_retry",
    "attempt": 2,
    "max_retries": 10,
    "error_status": 529,
    "error": "overloaded",
    "retry_delay_ms": 1200,
}


def lines() -> list[str]:
    return [json.dumps(o) for o in (INIT, TOOL_USE, TOOL_RESULT, RETRY, RESULT)]


def test_each_known_type_is_typed() -> None:
    events = parse_lines(lines())
    assert [type(e) for e in events] == [
        SystemInit,
        AssistantText,
        AssistantToolUse,
        ToolResultEvent,
        ApiRetry,
        ResultEvent,
    ]
    init = events[0]
    assert isinstance(init, SystemInit)
    assert init.session_id == "sess-1"
    assert init.tools == ["Bash", "Write"]
    use = events[2]
    assert isinstance(use, AssistantToolUse)
    assert (use.name, use.id, use.message_id) == ("Write", "toolu_1", "msg_1")
    res = events[3]
    assert isinstance(res, ToolResultEvent)
    assert res.content == "File created\n[image]"
    assert res.is_error is False
    final = events[-1]
    assert isinstance(final, ResultEvent)
    assert final.total_cost_usd == 0.0123
    assert final.num_turns == 2
    assert final.subtype == "success"


def test_tolerant_of_unknown_and_broken_input() -> None:
    assert parse_line("") == []
    assert parse_line("   \n") == []
    assert parse_line("not json at all") == [InvalidLine("not json at all")]
    assert parse_line("[1, 2]") == [InvalidLine("[1, 2]")]
    (unknown,) = parse_line('{"type": "stream_event", "event": {}}')
    assert isinstance(unknown, UnknownEvent)
    assert unknown.type == "stream_event"
    (other,) = parse_line('{"subtype": "compact_boundary", "type": "system"}')
    assert isinstance(other, SystemEvent)
    assert other.subtype == "compact_boundary"
    # wrong field types never raise
    (bad,) = parse_line(
        '{"type": "result", "num_turns": "x", "total_cost_usd": true, "is_error": "yes"}'
    )
    assert isinstance(bad, ResultEvent)
    assert bad.num_turns is None
    assert bad.total_cost_usd is None
    assert bad.is_error is False
    (empty_assistant,) = parse_line('{"type": "assistant", "message": null}')
    assert isinstance(empty_assistant, UnknownEvent)
    # bytes with invalid UTF-8
    assert isinstance(parse_line(b'\xff{"type"')[0], InvalidLine)


def test_summary_folds_status_fields() -> None:
    summary = RunSummary()
    for line in lines()[:3]:
        summary.add_line(line)
    assert summary.turns == 1  # one assistant message so far
    assert summary.result is None
    assert summary.last_text == "I will write the file."
    for line in lines()[3:]:
        summary.add_line(line)
    data = summary.to_dict()
    assert data["turns"] == 2
    assert data["cost_usd"] == 0.0123
    assert data["session_id"] == "sess-1"
    assert data["result_text"] == "Wrote hello.py"
    assert data["api_retries"] == 1
    assert data["tool_calls"] == 1


def test_render_for_readers_not_raw_json() -> None:
    text = render_events(parse_lines(lines()))
    assert "agent: I will write the file." in text
    assert "tool Write: file_path=/workspace/hello.py" in text
    assert "tool result: File created" in text
    assert "[api retry] HTTP 529 (attempt 2/10)" in text
    assert "[finished] success, 2 turns, $0.0123: Wrote hello.py" in text
    assert '"type"' not in text
    assert "print('hi')" not in text  # long tool inputs are not dumped


def test_render_is_bounded_and_keeps_newest() -> None:
    many = [
        json.dumps({"type": "assistant", "message": {"content": f"line {i} " + "x" * 200}})
        for i in range(500)
    ]
    text = render_events(parse_lines(many), max_bytes=4000)
    assert len(text.encode()) <= 4000 + 100
    assert "line 499" in text
    assert "line 0 " not in text
    assert text.startswith("[... ")
    assert render_events(parse_lines(many), lines=3).count("agent:") == 3
    huge = [json.dumps({"type": "assistant", "message": {"content": "y" * 100_000}})]
    assert len(render_events(parse_lines(huge), max_bytes=1000).encode()) <= 1100
