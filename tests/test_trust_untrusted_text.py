"""Untrusted text (agent output, git output, commit subjects, model replies) cannot stall the
controller: every pattern run on it is linear, large texts are redacted off the event loop, and
display forms never decide anything (issue 9, items 5 and 6).

The adversarial inputs below took quadratic time before: 40 K letters cost seconds in the old
URL-credential pattern and 1 MB never finished. The per-test timeout is the failure mode here,
not a timed assertion: a linear implementation needs well under a second for each input.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentkit.adapters.voice import speech_summary
from agentkit.redact import REDACTED, Redactor, strip_url_credentials
from agentkit.tools.base import ToolContext, ToolResult, tool
from agentkit.tools.toolset import Toolset
from agentkit.workspaces.names import InvalidNameError, resolve_workspace

MB = 1_000_000

#: Inputs that made a backtracking pattern quadratic (or worse) in the old code.
ADVERSARIAL = {
    "letters": "a" * MB,
    "scheme-like runs": ("x" * 31 + "://" + "y" * 4000) * (MB // 4034),
    "many schemes": "a://" * (MB // 4),
    "at signs": "@://" * (MB // 4),
    "open brackets": "[" * MB,
    "newlines": "\n" * MB,
    "spaces and newlines": " \n" * (MB // 2),
    "link openers": "[a](" * (MB // 4),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_redaction_of_a_megabyte_of_adversarial_text_finishes(name: str) -> None:
    secret = "s3cret-value-" + "z" * 10
    text = ADVERSARIAL[name] + f" https://user:{secret}@github.com/x " + secret
    out = Redactor([secret]).redact(text)
    assert secret not in out
    assert out.endswith(REDACTED)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_speech_summary_of_a_megabyte_of_adversarial_text_finishes(name: str) -> None:
    spoken = speech_summary(ADVERSARIAL[name] + "\nDone. All good.", max_chars=300)
    assert len(spoken) <= 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@host/x", f"https://{REDACTED}@host/x"),
        ("git https://tok@github.com/a.git ok", f"git https://{REDACTED}@github.com/a.git ok"),
        # the userinfo ends at the LAST '@' of the authority (as curl splits it)
        ("https://u@n:pw@host/x", f"https://{REDACTED}@host/x"),
        ("a://b://c@d", f"a://b://{REDACTED}@d"),
        ("x://y/z://u:p@h", f"x://y/z://{REDACTED}@h"),
        ("mail me: someone@example.com", "mail me: someone@example.com"),
        ("https://host/path@v1", "https://host/path@v1"),
    ],
)
def test_url_credentials_are_redacted(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


def test_display_of_a_url_never_hides_its_real_host() -> None:
    # The old pattern treated '127.0.0.1:1#' as userinfo and showed github.com.
    tricky = "http://127.0.0.1:1#@github.com/owner/repo.git"
    assert strip_url_credentials(tricky) == tricky
    assert strip_url_credentials("https://user:pw@github.com/o/r") == "https://github.com/o/r"


def test_token_shapes_are_redacted_even_inside_words() -> None:
    gh = "ghp_" + "A1" * 15
    pat = "github_pat_" + "b2_" * 10
    ant = "sk-ant-api03-" + "c" * 20
    out = Redactor().redact(f"x{gh} {pat}. key={ant}")
    assert gh not in out
    assert pat not in out
    assert ant not in out


def test_text_above_the_bound_is_clipped_before_work() -> None:
    from agentkit.redact import MAX_REDACT_CHARS

    big = "h" * (MAX_REDACT_CHARS // 2) + "MIDDLE" + "t" * (MAX_REDACT_CHARS // 2 + 100)
    out = Redactor().redact(big)
    assert len(out) < len(big)
    assert "MIDDLE" not in out
    assert out.startswith("hhh")
    assert out.endswith("ttt")


async def test_a_huge_tool_result_is_redacted_off_the_event_loop() -> None:
    """While a 4 MB result is redacted, other coroutines keep running.

    The counter advances only when the loop is free. Redacting on the loop would block it for
    the whole redaction, so the counter could advance only a handful of times between the tool
    returning and the call finishing.
    """
    payload = "@://" * 500_000  # ~2 MB that takes the linear scan a while

    @tool
    async def dump() -> ToolResult:
        """Return a lot of text."""
        return ToolResult(content=payload, data={"text": payload})

    toolset = Toolset([dump], context=ToolContext(redactor=Redactor(["not-in-the-text"])))
    ticks_after_return = 0

    async def ticker(call: asyncio.Task[Any]) -> None:
        nonlocal ticks_after_return
        while not call.done():
            await asyncio.sleep(0)
            ticks_after_return += 1

    call = asyncio.create_task(toolset.call("dump", {}))
    ticking = asyncio.create_task(ticker(call))
    result = await call
    await ticking
    assert not result.is_error
    assert len(result.content.encode()) <= toolset.max_result_bytes + 400
    assert ticks_after_return > 20, ticks_after_return


@pytest.mark.parametrize("value", [" demo", "demo ", "\tdemo", "demo\n", "  demo  "])
def test_names_with_surrounding_whitespace_are_refused_not_stripped(value: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        resolve_workspace("/opt/agentflow/workspaces", value)
    assert "whitespace" in str(info.value)


def test_an_endless_output_line_is_dropped_not_kept() -> None:
    """An agent printing one line without end cannot grow the controller's memory: past
    MAX_LINE_BYTES the line is dropped (a marker says so) and the next lines arrive intact."""
    from agentkit.containers.live import MAX_LINE_BYTES, LiveRun
    from agentkit.runtimes.base import STDOUT, LogChunk

    run = LiveRun(id="claude-agent-1764240000000-abcdef", labels={})
    out = bytearray()
    partial = b""
    chunk = b"x" * 65536
    for _ in range(3 * MAX_LINE_BYTES // len(chunk)):
        partial = run.take_chunk(LogChunk(STDOUT, chunk), partial, Redactor(), out)
        assert len(partial) <= MAX_LINE_BYTES + len(chunk)
    tail = b'xx\n{"type":"system","subtype":"init","session_id":"s1"}\n'
    partial = run.take_chunk(LogChunk(STDOUT, tail), partial, Redactor(), out)
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert "was dropped" in lines[0]
    assert str(3 * MAX_LINE_BYTES + 2) in lines[0]
    assert run.summary.session_id == "s1"
    assert partial == b""
