"""Redaction units: registered secrets, URL credentials, token shapes, clipping, structured data.

Each expected output is written out in full, so a redaction that removes too much fails as
surely as one that leaves a secret in.
"""

from __future__ import annotations

import logging
from collections import namedtuple

import pytest

from agentkit.redact import (
    MAX_REDACT_CHARS,
    REDACTED,
    THREAD_THRESHOLD,
    RedactingFilter,
    Redactor,
    clip,
    strip_url_credentials,
)

R = REDACTED


def test_registered_secrets_are_replaced_everywhere_in_the_text() -> None:
    redactor = Redactor(["hunter2-secret"])
    assert redactor.redact("a hunter2-secret b hunter2-secret") == f"a {R} b {R}"
    assert redactor("hunter2-secret") == R  # calling the redactor is redact()


def test_secrets_shorter_than_six_characters_are_ignored() -> None:
    redactor = Redactor(["abcde", "", None])  # type: ignore[list-item]
    redactor.add(None)
    redactor.add("")
    assert redactor.redact("abcde abcdef") == "abcde abcdef"
    redactor.add("abcdef")
    assert redactor.redact("abcde abcdef") == f"abcde {R}"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    for order in (["token-1234", "token-1234-extra"], ["token-1234-extra", "token-1234"]):
        redactor = Redactor(order)
        assert redactor.redact("x token-1234-extra y token-1234 z") == f"x {R} y {R} z"
    # by length, not by spelling: the shorter one sorts after the longer one here
    assert Redactor(["secret-12", "my-secret-12-x"]).redact("my-secret-12-x") == R
    redactor = Redactor(["token-1234"])
    redactor.add("token-1234")  # registering again changes nothing
    redactor.add("token-1234-extra")
    assert redactor.redact("token-1234-extra") == R


def test_empty_text_and_text_without_secrets_come_back_unchanged() -> None:
    redactor = Redactor(["hunter2-secret"])
    assert redactor.redact("") == ""
    plain = "nothing to see: a@b, c://d, sk-ant-short"
    assert redactor.redact(plain) == plain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@host/x", f"https://{R}@host/x"),
        ("https://user@host", f"https://{R}@host"),  # the authority runs to the end
        ("git+ssh://git@host:22/repo", f"git+ssh://{R}@host:22/repo"),
        ("s3.x-y://k@bucket", f"s3.x-y://{R}@bucket"),
        (
            "see https://tok@github.com/a and http://x:y@h:8080/b?q#f",
            f"see https://{R}@github.com/a and http://{R}@h:8080/b?q#f",
        ),
        ("https://u@h/x://v@w", f"https://{R}@h/x://{R}@w"),
        ("a://u@h", f"a://{R}@h"),  # a one-letter scheme right at the start
        ("https://a@b@h/x", f"https://{R}@h/x"),  # up to the last '@' of the authority
        ("https://u@@h/x", f"https://{R}@h/x"),
        ("http://a@b c://d@e f://g@h", f"http://{R}@b c://{R}@e f://{R}@h"),
        ("a://b://c@d", f"a://b://{R}@d"),
        ("https://@host/x", "https://@host/x"),  # empty userinfo: nothing to hide
        ("://user@host", "://user@host"),  # no scheme
        (" ://user@host", " ://user@host"),
        ("mail me@x.org at https://host/p", "mail me@x.org at https://host/p"),
        ("https://host/path@v1", "https://host/path@v1"),
        ("https://host?q=a@b", "https://host?q=a@b"),
        ("https://host#a@b", "https://host#a@b"),
        ("https://host and me@x", "https://host and me@x"),
        ("https://host\\evil@x", "https://host\\evil@x"),
        ("https://host", "https://host"),
    ],
)
def test_url_userinfo_is_replaced_and_nothing_else(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@github.com/o/r", "https://github.com/o/r"),
        ("https://tok@h", "https://h"),
        ("http://127.0.0.1:1#@github.com/o/r.git", "http://127.0.0.1:1#@github.com/o/r.git"),
        ("https://github.com/o/r", "https://github.com/o/r"),
        ("https://@github.com/o/r", "https://github.com/o/r"),
    ],
)
def test_strip_url_credentials_for_display(text: str, expected: str) -> None:
    assert strip_url_credentials(text) == expected


@pytest.mark.parametrize(
    ("token", "caught"),
    [
        ("sk-ant-" + "a1_-" * 2, True),  # 8 characters after the prefix
        ("sk-ant-" + "a" * 7, False),
        ("ghp_" + "A1" * 10, True),  # 20 after the prefix
        ("ghp_" + "A" * 19, False),
        ("gho_" + "b" * 20, True),
        ("ghu_" + "c" * 20, True),
        ("ghs_" + "d" * 20, True),
        ("ghr_" + "e" * 20, True),
        ("ghx_" + "f" * 20, False),
        ("github_pat_" + "g_" * 10, True),
        ("github_pat_" + "g" * 19, False),
    ],
)
def test_token_shapes(token: str, caught: bool) -> None:
    out = Redactor().redact(f"x{token} y")
    assert out == (f"x{R} y" if caught else f"x{token} y")


def test_clip_keeps_head_and_tail_with_a_marker() -> None:
    assert clip("abcd", 4) == "abcd"
    assert clip("abcdefghij", 4) == "ab\n[... 6 characters cut ...]\nij"
    assert clip("abcdefghij", 5) == "ab\n[... 6 characters cut ...]\nij"
    assert clip("abcdefghij", 9) == "abcd\n[... 2 characters cut ...]\nghij"
    assert clip("x" * MAX_REDACT_CHARS) == "x" * MAX_REDACT_CHARS


def test_redaction_clips_text_above_the_bound_first() -> None:
    big = "h" * (MAX_REDACT_CHARS // 2) + "sk-ant-" + "m" * 20 + "t" * (MAX_REDACT_CHARS // 2)
    out = Redactor().redact(big)
    half = MAX_REDACT_CHARS // 2
    assert out == "h" * half + f"\n[... {len(big) - 2 * half} characters cut ...]\n" + "t" * half


def test_redact_data_walks_dicts_lists_and_tuples() -> None:
    redactor = Redactor(["hunter2-secret"])
    Pair = namedtuple("Pair", "a b")
    pair = Pair("hunter2-secret", 1)
    data = {
        "hunter2-secret": ["hunter2-secret", ("x hunter2-secret", 3)],
        "n": 1,
        "f": 1.5,
        "b": True,
        "none": None,
        "pair": pair,
    }
    assert redactor.redact_data(data) == {
        "hunter2-secret": [R, (f"x {R}", 3)],  # keys are names, not values: kept
        "n": 1,
        "f": 1.5,
        "b": True,
        "none": None,
        "pair": pair,  # only plain tuples are rebuilt
    }
    assert type(redactor.redact_data(("hunter2-secret",))) is tuple
    assert redactor.redact_data("hunter2-secret") == R


async def test_async_redaction_matches_the_sync_one_for_small_and_large_texts() -> None:
    redactor = Redactor(["hunter2-secret"])
    small = "a hunter2-secret"
    large = "y" * THREAD_THRESHOLD + " hunter2-secret https://u:p@h"
    assert await redactor.aredact(small) == f"a {R}"
    assert await redactor.aredact(large) == "y" * THREAD_THRESHOLD + f" {R} https://{R}@h"
    for scalar in (None, True, 3, 2.5):
        assert await redactor.aredact_data(scalar) is scalar
    assert await redactor.aredact_data({"k": ["hunter2-secret"]}) == {"k": [R]}
    big = {"k": ["y" * THREAD_THRESHOLD, ("hunter2-secret", {"u": "https://u:p@h"})]}
    assert await redactor.aredact_data(big) == {
        "k": ["y" * THREAD_THRESHOLD, (R, {"u": f"https://{R}@h"})]
    }
    many = [["hunter2-secret"]] * THREAD_THRESHOLD  # many small strings: also whole
    assert await redactor.aredact_data(many) == [[R]] * THREAD_THRESHOLD


def test_the_logging_filter_redacts_formatted_messages() -> None:
    redactor = Redactor(["hunter2-secret"])
    log_filter = RedactingFilter(redactor)
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "token %s at %s", ("hunter2-secret", "h"), None
    )
    assert log_filter.filter(record) is True
    assert (record.msg, record.args) == (f"token {R} at h", None)
    assert record.getMessage() == f"token {R} at h"

    args = ("fine",)
    clean = logging.LogRecord("t", logging.INFO, __file__, 1, "all %s", args, None)
    assert log_filter.filter(clean) is True
    assert clean.msg == "all %s"  # untouched when there is nothing to hide
    assert clean.args is args


async def test_a_secret_added_later_is_redacted_in_results_seen_before() -> None:
    redactor = Redactor(["hunter2-secret"])
    data = {"task": "deploy with token tok-abcdef-123", "n": [1, "hunter2-secret"]}
    first = await redactor.aredact_data(data)
    assert first == {"task": "deploy with token tok-abcdef-123", "n": [1, R]}
    redactor.add("tok-abcdef-123")  # e.g. a pass-through secret registered later
    assert await redactor.aredact_data(data) == {"task": f"deploy with token {R}", "n": [1, R]}
    assert redactor.redact_data(data) == {"task": f"deploy with token {R}", "n": [1, R]}
