"""Stream-json parsing, summarizing and rendering (pure; no components needed)."""

from __future__ import annotations

import json

import pytest

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
    render_event,
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


# --- every field of every event type, written out ---------------------------------------------


def _one(obj: dict[str, object]) -> object:
    (event,) = parse_line(json.dumps(obj))
    return event


def test_system_events_field_by_field() -> None:
    assert _one({"type": "system", "subtype": "init"}) == SystemInit(
        session_id=None, model=None, cwd=None, tools=[], raw={}
    )
    assert _one({"type": "system", "subtype": "init", "tools": "Bash"}).tools == []  # type: ignore[attr-defined]
    retry = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 2.0,
        "max_retries": 10,
        "error_status": 529,
        "error": "overloaded",
        "retry_delay_ms": 500,
    }
    assert _one(retry) == ApiRetry(
        attempt=2,
        max_retries=10,
        error_status=529,
        error="overloaded",
        retry_delay_ms=500.0,
        raw={},
    )
    odd = {
        **retry,
        "attempt": True,
        "max_retries": 2.5,
        "error_status": "529",
        "retry_delay_ms": False,
    }
    assert _one({**odd, "error": {"type": "overloaded_error"}}) == ApiRetry(
        attempt=None,
        max_retries=None,
        error_status=None,
        error='{"type": "overloaded_error"}',
        retry_delay_ms=None,
        raw={},
    )
    assert _one({**odd, "error": {}}).error is None  # type: ignore[attr-defined]
    assert _one({**odd, "error": None, "retry_delay_ms": "5"}).retry_delay_ms is None  # type: ignore[attr-defined]
    assert _one({"type": "system", "subtype": "compact_boundary"}) == SystemEvent(
        subtype="compact_boundary", raw={}
    )
    assert _one({"type": "system"}) == SystemEvent(subtype=None, raw={})


def test_assistant_blocks_field_by_field() -> None:
    line = {
        "type": "assistant",
        "message": {
            "id": "msg_9",
            "content": [
                {"type": "thinking", "thinking": "hmm"},
                {"type": "text", "text": "hello"},
                {"type": "text", "text": 5},
                {"type": "thinking", "thinking": None},
                "not a block",
                {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"q": 1}},
                {"type": "tool_use", "input": None},
                {"type": "image"},
            ],
        },
    }
    assert parse_line(json.dumps(line)) == [
        AssistantText("hmm", thinking=True, message_id="msg_9"),
        AssistantText("hello", thinking=False, message_id="msg_9"),
        AssistantToolUse(id="srv_1", name="web_search", input={"q": 1}, message_id="msg_9"),
        AssistantToolUse(id=None, name="?", input=None, message_id="msg_9"),
    ]
    as_string = {"type": "assistant", "message": {"content": "plain text"}}
    assert parse_line(json.dumps(as_string)) == [AssistantText("plain text", message_id=None)]
    for empty in ({"content": []}, {"content": [{"type": "image"}]}, "not a message", None):
        assert parse_line(json.dumps({"type": "assistant", "message": empty})) == [
            UnknownEvent(type="assistant", raw={})
        ]


def test_tool_results_field_by_field() -> None:
    def result_of(block: dict[str, object]) -> object:
        return _one({"type": "user", "message": {"content": [block]}})

    base = {"type": "tool_result", "tool_use_id": "t1"}
    assert result_of({**base, "content": "ok", "is_error": True}) == ToolResultEvent(
        "t1", "ok", True
    )
    assert result_of({**base, "content": "x", "is_error": "true"}) == ToolResultEvent(
        "t1", "x", False
    )
    blocks = [{"type": "text", "text": "a"}, {"type": "image"}, {"text": 3}, "b", 7]
    assert result_of({**base, "content": blocks}) == ToolResultEvent(
        "t1", "a\n[image]\n[block]\nb", False
    )
    assert result_of({"type": "tool_result", "content": None}) == ToolResultEvent(None, "", False)
    assert result_of({**base, "content": {"größe": 1}}) == ToolResultEvent(
        "t1", '{"größe": 1}', False
    )
    assert result_of({**base, "content": 0}) == ToolResultEvent("t1", "0", False)
    assert _one({"type": "user", "message": {"content": [{"type": "text", "text": "hi"}]}}) == (
        UnknownEvent(type="user", raw={})
    )


def test_result_event_field_by_field() -> None:
    full = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done.",
        "total_cost_usd": 1,
        "num_turns": 3.0,
        "session_id": "s1",
        "duration_ms": 1200,
        "usage": {"input_tokens": 5},
    }
    assert _one(full) == ResultEvent(
        subtype="success",
        is_error=False,
        result="Done.",
        total_cost_usd=1.0,
        num_turns=3,
        session_id="s1",
        duration_ms=1200.0,
        usage={"input_tokens": 5},
        raw={},
    )
    odd = {"type": "result", "is_error": 1, "result": ["x"], "usage": [1], "num_turns": "3"}
    assert _one(odd) == ResultEvent(
        subtype=None,
        is_error=False,
        result=None,
        total_cost_usd=None,
        num_turns=None,
        session_id=None,
        duration_ms=None,
        usage=None,
        raw={},
    )
    assert _one({**full, "is_error": True}).is_error is True  # type: ignore[attr-defined]


def test_lines_that_are_not_events() -> None:
    assert _one({"type": "rate_limit_event"}) == UnknownEvent(type="rate_limit_event", raw={})
    assert _one({"type": 5}) == UnknownEvent(type=None, raw={})
    assert _one({}) == UnknownEvent(type=None, raw={})
    assert parse_line(b"  \n") == []
    assert parse_line("") == []
    assert parse_line(b"\xff oops \n") == [InvalidLine("\ufffd oops")]
    assert parse_line("  [1, 2]  ") == [InvalidLine("[1, 2]")]
    assert parse_line('"text"') == [InvalidLine('"text"')]
    raw = {"type": "system", "subtype": "x", "extra": 1}
    (kept,) = parse_line(json.dumps(raw))
    assert kept.raw == raw  # type: ignore[union-attr]
    assert parse_lines(['{"type": "system"}', "", "junk"]) == [
        SystemEvent(subtype=None, raw={}),
        InvalidLine("junk"),
    ]


def _result(**fields: object) -> ResultEvent:
    values: dict[str, object] = {
        "subtype": "success",
        "is_error": False,
        "result": "Done.",
        "total_cost_usd": 0.25,
        "num_turns": 4,
        "session_id": "s-final",
        "duration_ms": 900.0,
        "usage": None,
        "raw": {},
    }
    values.update(fields)
    return ResultEvent(**values)  # type: ignore[arg-type]


def test_summary_while_running_and_after_the_result() -> None:
    summary = RunSummary()
    assert summary.to_dict() == {
        "session_id": None,
        "model": None,
        "turns": 0,
        "tool_calls": 0,
        "cost_usd": None,
        "last_text": None,
        "result_text": None,
        "result_subtype": None,
        "is_error": None,
        "duration_ms": None,
        "api_retries": 0,
        "last_error": None,
    }
    summary.add(SystemInit(session_id="s1", model="m1", cwd=None, tools=[], raw={}))
    summary.add(SystemInit(session_id=None, model=None, cwd=None, tools=[], raw={}))
    summary.add(AssistantText("first", message_id="a"))
    summary.add(AssistantText("thinking...", thinking=True, message_id="a"))
    summary.add(AssistantToolUse(id="t", name="Bash", input={}, message_id="a"))
    summary.add(AssistantText("second", message_id="b"))
    summary.add(AssistantText("no id"))
    summary.add(ApiRetry(1, 3, 529, None, 10.0, raw={}))
    summary.add_line(json.dumps({"type": "system", "subtype": "api_retry", "error": "boom"}))
    summary.add(ApiRetry(None, None, None, None, None, raw={}))
    assert summary.to_dict() == {
        "session_id": "s1",
        "model": "m1",
        "turns": 2,  # distinct assistant messages so far
        "tool_calls": 1,
        "cost_usd": None,
        "last_text": "no id",
        "result_text": None,
        "result_subtype": None,
        "is_error": None,
        "duration_ms": None,
        "api_retries": 3,
        "last_error": None,
    }
    retried = RunSummary()
    retried.add(ApiRetry(1, 3, 529, None, 10.0, raw={}))
    assert retried.last_error == "HTTP 529"
    retried.add(ApiRetry(2, 3, 500, "overloaded", 10.0, raw={}))
    assert retried.last_error == "overloaded"

    summary.add(_result(session_id=None))
    summary.add(AssistantText("late", message_id="c"))  # after the result: turns stay its count
    assert summary.to_dict() == {
        "session_id": "s1",
        "model": "m1",
        "turns": 4,
        "tool_calls": 1,
        "cost_usd": 0.25,
        "last_text": "late",
        "result_text": "Done.",
        "result_subtype": "success",
        "is_error": False,
        "duration_ms": 900.0,
        "api_retries": 3,
        "last_error": None,
    }
    assert summary.cost_usd == 0.25
    assert summary.turns == 4


def test_summary_of_a_failed_result_without_a_turn_count() -> None:
    summary = RunSummary()
    summary.add(AssistantText("one", message_id="a"))
    summary.add(_result(is_error=True, result="API Error: 400", num_turns=None, session_id="s2"))
    data = summary.to_dict()
    assert (data["turns"], data["is_error"], data["last_error"]) == (1, True, "API Error: 400")
    assert data["session_id"] == "s2"
    quiet = RunSummary()
    quiet.add(_result(is_error=True, result=None))
    assert quiet.last_error is None
    ok = RunSummary()
    ok.add(_result(is_error=False, result="fine"))
    assert ok.last_error is None


@pytest.mark.parametrize(
    ("event", "rendered"),
    [
        (SystemInit("s", "m", None, [], raw={}), "[start] session s model m"),
        (SystemInit(None, None, None, [], raw={}), "[start] session ?"),
        (ApiRetry(2, 10, 529, "x", None, raw={}), "[api retry] HTTP 529 (attempt 2/10)"),
        (ApiRetry(None, None, None, "over\n  loaded", None, raw={}), "[api retry] over loaded"),
        (ApiRetry(None, 3, None, None, None, raw={}), "[api retry] error"),
        (ApiRetry(0, 3, None, "e" * 130, None, raw={}), "[api retry] " + "e" * 119 + "…"),
        (SystemEvent("hook", raw={}), None),
        (AssistantText("  hi there \n"), "agent: hi there"),
        (AssistantText("deep", thinking=True), None),
        (AssistantText(" \n "), None),
        (
            AssistantToolUse("t", "Bash", {"path": "/p", "command": "ls  -la\nx"}),
            "tool Bash: command=ls -la x",
        ),
        (
            AssistantToolUse("t", "Read", {"file_path": "/a", "path": "/b"}),
            "tool Read: file_path=/a",
        ),
        (AssistantToolUse("t", "Glob", {"path": "/b", "pattern": "*"}), "tool Glob: path=/b"),
        (AssistantToolUse("t", "Grep", {"pattern": "x", "url": "u"}), "tool Grep: pattern=x"),
        (AssistantToolUse("t", "Fetch", {"url": "u", "query": "q"}), "tool Fetch: url=u"),
        (AssistantToolUse("t", "Web", {"query": "q", "description": "d"}), "tool Web: query=q"),
        (AssistantToolUse("t", "Task", {"description": "d", "x": 1}), "tool Task: description=d"),
        (
            AssistantToolUse("t", "Edit", {"command": 1, "b": 2, "a": "ü"}),
            'tool Edit: {"a": "ü", "b": 2, "command": 1}',
        ),
        (AssistantToolUse("t", "Odd", {"s": {1}}), "tool Odd: {'s': {1}}"),
        (AssistantToolUse("t", "Todo", None), "tool Todo:"),
        (AssistantToolUse("t", "Say", "hello\n world"), "tool Say: hello world"),
        (AssistantToolUse("t", "Num", 0), "tool Num: 0"),
        (ToolResultEvent("t", "File\ncreated", False), "  tool result: File created"),
        (ToolResultEvent("t", "no such file", True), "  tool error: no such file"),
        (ToolResultEvent("t", " \n", False), "  tool result: (empty)"),
        (_result(), "[finished] success, 4 turns, $0.2500: Done."),
        (_result(is_error=True, result="bad"), "[finished] error, 4 turns, $0.2500: bad"),
        (
            _result(subtype=None, num_turns=None, total_cost_usd=None, result=None),
            "[finished] done",
        ),
        (
            _result(total_cost_usd=0.0, num_turns=0, result=""),
            "[finished] success, 0 turns, $0.0000",
        ),
        (InvalidLine("not  json\nat all"), "[output] not json at all"),
        (UnknownEvent("x", raw={}), None),
    ],
)
def test_render_each_event(event: object, rendered: str | None) -> None:
    assert render_event(event) == rendered  # type: ignore[arg-type]


def test_render_limits_cut_with_an_ellipsis() -> None:
    assert render_event(AssistantText("abcdef"), text_limit=6) == "agent: abcdef"
    assert render_event(AssistantText("abcdefg"), text_limit=6) == "agent: abcde…"
    assert render_event(AssistantText("abcd efgh"), text_limit=6) == "agent: abcd…"
    assert render_event(AssistantText("abc"), text_limit=0) == "agent: …"
    tool_use = AssistantToolUse("t", "Bash", {"command": "echo 12345"})
    assert render_event(tool_use, input_limit=12) == "tool Bash: command=ech…"
    assert render_event(tool_use, input_limit=18) == "tool Bash: command=echo 12345"
    assert render_event(tool_use, input_limit=17) == "tool Bash: command=echo 123…"
    result = ToolResultEvent("t", "x" * 10, False)
    assert render_event(result, input_limit=5) == "  tool result: xxxx…"
    assert render_event(_result(result="y" * 10), text_limit=4) == (
        "[finished] success, 4 turns, $0.2500: yyy…"
    )
    assert render_event(InvalidLine("z" * 10), text_limit=3) == "[output] zz…"


def test_render_events_budget_lines_and_marker() -> None:
    events = [AssistantText(f"line {i}") for i in range(5)] + [SystemEvent("x", raw={})]
    assert render_events(events) == "\n".join(f"agent: line {i}" for i in range(5))
    assert render_events(events, lines=2) == "agent: line 3\nagent: line 4"
    assert render_events(events, lines=0) == ""
    assert render_events(events, lines=-1) == ""
    assert render_events([]) == ""
    # each rendered line costs its bytes + 1 (13 + 1 here): 28 bytes hold exactly two
    assert render_events(events, max_bytes=28) == (
        "[... 3 earlier lines omitted]\nagent: line 3\nagent: line 4"
    )
    assert render_events(events, max_bytes=27) == ("[... 4 earlier lines omitted]\nagent: line 4")
    assert render_events(events, max_bytes=70) == "\n".join(f"agent: line {i}" for i in range(5))
    assert render_events(events, max_bytes=69).startswith("[... 1 earlier lines omitted]\n")
    # a newest line alone over the budget is shortened, never dropped
    long = [AssistantText("word " * 40)]
    assert render_events(long, max_bytes=100) == "agent: " + ("word " * 40)[:42].rstrip() + "…"
    assert render_events(long, max_bytes=10) == "agent: " + ("word " * 40)[:32].rstrip() + "…"
    two = [AssistantText("a"), AssistantText("word " * 40)]
    # the shortened line leaves room for an older one
    assert render_events(two, max_bytes=100) == "agent: a\n" + render_events(long, max_bytes=100)


def test_full_events_keep_every_field_and_their_raw_object() -> None:
    lines: list[dict[str, object]] = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "m", "cwd": "/w",
         "tools": ["Bash", 1]},
        {"type": "system", "subtype": "api_retry", "attempt": 1},
        {"type": "system", "subtype": "other"},
        {"type": "assistant", "message": {"content": []}},
        {"type": "user", "message": {"content": []}},
        {"type": "result", "subtype": "success"},
        {"type": "mystery"},
    ]  # fmt: skip
    events = [_one(line) for line in lines]
    assert events[0] == SystemInit(session_id="s", model="m", cwd="/w", tools=["Bash"], raw={})
    for line, event in zip(lines, events, strict=True):
        assert event.raw == line  # type: ignore[attr-defined]


def test_summary_counts_every_tool_call() -> None:
    summary = RunSummary()
    for i in range(3):
        summary.add(AssistantToolUse(id=f"t{i}", name="Bash", input={}, message_id="m"))
    assert summary.tool_calls == 3
    assert summary.turns == 1


def test_render_default_limits() -> None:
    assert render_event(AssistantText("a" * 600)) == "agent: " + "a" * 600
    assert render_event(AssistantText("a" * 601)) == "agent: " + "a" * 599 + "…"
    value = "v" * 152  # "command=" + 152 = 160 characters
    assert render_event(AssistantToolUse("t", "Bash", {"command": value})) == (
        f"tool Bash: command={value}"
    )
    assert render_event(AssistantToolUse("t", "Bash", {"command": value + "w"})) == (
        f"tool Bash: command={value[:151]}…"
    )


def test_render_events_default_budget_and_exact_fits() -> None:
    small = AssistantText("b" * 492)  # "agent: " + 492 = 499 bytes, 500 with its newline
    big = AssistantText("B" * 493)  # 501 with its newline: 15 * 500 + 501 = 8001 > 8000
    assert render_events([small] * 16) == "\n".join(["agent: " + "b" * 492] * 16)
    assert render_events([big, *[small] * 15]) == "\n".join(
        ["[... 1 earlier lines omitted]", *["agent: " + "b" * 492] * 15]
    )
    assert render_events([AssistantText("x"), AssistantText("y")], lines=1) == "agent: y"
    # a line that exactly fills the budget is kept whole
    exact = AssistantText("c" * 92)  # 99 bytes + 1
    assert render_events([exact], max_bytes=100) == "agent: " + "c" * 92
    # a shortened newest line counts with its new size: 50 characters, 52 bytes ("…" is 3), 53
    # with its newline; an older line of 47 bytes with its newline still fits, one of 48 not
    newest = AssistantText("d" * 300)
    shortened = "agent: " + "d" * 42 + "…"
    assert render_events([AssistantText("e" * 40), newest], max_bytes=100) == (
        "[... 1 earlier lines omitted]\n" + shortened
    )
    assert render_events([AssistantText("e" * 39), newest], max_bytes=100) == (
        "agent: " + "e" * 39 + "\n" + shortened
    )
