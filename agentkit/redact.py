"""Remove secrets from text before it leaves the library (tool results, logs, notifications).

Everything here runs on untrusted text (agent output, git output, file names, commit messages),
so every step is linear in the text's length: registered secrets are found with ``str.find``,
URL credentials with a single forward scan per ``://``, and the token-shape patterns start with
a literal and use no nested or overlapping quantifiers. Text longer than :data:`MAX_REDACT_CHARS`
is clipped (head and tail kept) before any work starts, and :meth:`Redactor.aredact` moves large
texts off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

#: Text above this many characters is clipped to its head and tail before redaction.
MAX_REDACT_CHARS = 8 * 1024 * 1024
#: :meth:`Redactor.aredact` redacts texts at least this long in a worker thread.
THREAD_THRESHOLD = 64 * 1024
#: Strings of tool results up to this long are remembered redacted (at most MEMO_ENTRIES).
MEMO_CHARS = 1024
MEMO_ENTRIES = 4096

# Well-known token shapes, caught even when nobody registered them as secrets. Each starts with
# a literal (the engine skips ahead to it) and has one greedy class: linear.
_TOKEN_SHAPES = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{20,}|ithub_pat_[A-Za-z0-9_]{20,})"),
)
# Where a URL's authority (and so its userinfo) ends.
_AUTHORITY_END = re.compile(r"[/?#@\s\\]")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def _replace_userinfo(text: str, replacement: str) -> str:
    """Replace the userinfo of every ``scheme://userinfo@host`` in ``text``.

    One left-to-right pass: each ``://`` is followed by one search for the end of its authority,
    and the next search starts where that one stopped, so every character is looked at a
    bounded number of times (no regex backtracking over long runs of letters).
    """
    if "://" not in text or "@" not in text:
        return text
    out: list[str] = []
    done = 0  # text[:done] is already in out
    pos = text.find("://")
    while pos != -1:
        start = pos + 3
        has_scheme = pos > 0 and text[pos - 1] in _SCHEME_CHARS
        at = -1  # the last '@' of this authority (clients split userinfo at the last one)
        end = _AUTHORITY_END.search(text, start)
        while end is not None and end.group() == "@":
            at = end.start()
            end = _AUTHORITY_END.search(text, at + 1)
        if has_scheme and at > start:
            out.append(text[done:start])
            out.append(replacement)
            done = at
        if end is None:
            break
        # a '://' before the terminator would contain it: the next one starts at end - 1 or later
        pos = text.find("://", max(end.start() - 1, start))
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def clip(text: str, limit: int = MAX_REDACT_CHARS) -> str:
    """``text`` with its middle cut out (and a marker put in) when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


class _Large(Exception):
    """A value holds more text than is redacted inline."""


class Redactor:
    """Replaces registered secret values, URL credentials and well-known token shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        # short strings of tool results -> redacted form: list pages and statuses repeat
        # the same task, workspace and result texts on every call (emptied when a secret is
        # added, so a newly registered secret is never missed)
        self._memo: dict[str, str] = {}
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; real secrets are long.
        if secret and len(secret) >= 6 and secret not in self._secrets:
            self._secrets.add(secret)
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))
            self._memo = {}

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        """``text`` without secrets; linear in its length (clipped to :data:`MAX_REDACT_CHARS`)."""
        if not text:
            return text
        text = clip(text)
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _replace_userinfo(text, REDACTED)
        for shape in _TOKEN_SHAPES:
            text = shape.sub(REDACTED, text)
        return text

    def _redact_field(self, text: str) -> str:
        """:meth:`redact` of a string inside a tool result, remembered when it is short."""
        if len(text) > MEMO_CHARS:
            return self.redact(text)
        memo = self._memo
        done = memo.get(text)
        if done is None:
            done = self.redact(text)
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[text] = done
        return done

    async def aredact(self, text: str) -> str:
        """:meth:`redact`, in a worker thread when ``text`` is large (keeps the loop free)."""
        if len(text) < THREAD_THRESHOLD:
            return self.redact(text)
        return await asyncio.to_thread(self.redact, text)

    def redact_data(self, value: Any) -> Any:
        """``value`` with :meth:`redact` applied to every string inside dicts, lists and tuples."""
        if isinstance(value, str):
            return self._redact_field(value)
        if isinstance(value, dict):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact_data(item) for item in value]
        if type(value) is tuple:
            return tuple(self.redact_data(item) for item in value)
        return value

    async def aredact_data(self, value: Any) -> Any:
        """:meth:`redact_data`, in a worker thread when ``value`` holds large text (a thread
        hop costs more than redacting a small result: status and list pages stay inline)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        try:
            return self._redact_small(value, [THREAD_THRESHOLD])
        except _Large:
            return await asyncio.to_thread(self.redact_data, value)

    def _redact_small(self, value: Any, budget: list[int]) -> Any:
        """:meth:`redact_data` while the text seen stays within ``budget`` (every node counts
        at least one, so a huge structure of tiny strings is large too); else ``_Large``."""
        kind = type(value)
        if kind is str:
            budget[0] -= len(value) + 1
            if budget[0] < 0:
                raise _Large
            return self._redact_field(value)
        if kind is dict:
            budget[0] -= len(value)
            return {key: self._redact_small(item, budget) for key, item in value.items()}
        if kind is list or kind is tuple:
            budget[0] -= len(value)
            items = [self._redact_small(item, budget) for item in value]
            return items if kind is list else tuple(items)
        if isinstance(value, str | dict | list):  # subclasses: the general walk
            raise _Large
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message (e.g. on the ``httpx`` logger, which
    logs every request URL at INFO: a Discord webhook URL carries its token)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def strip_url_credentials(url: str) -> str:
    """``https://user:pw@host/x`` -> ``https://host/x`` (for *display* of remotes only).

    The userinfo ends at the first ``@`` of the authority, which itself ends at ``/``, ``?``
    or ``#``: ``http://127.0.0.1:1#@github.com/x`` is shown as it is, never as github.com.
    Security decisions parse the raw URL (``urllib.parse.urlsplit``), never this display form.
    """
    return _replace_userinfo(url, "").replace("://@", "://")
