"""Remove secrets from text before it leaves the library (tool results, logs, notifications)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"

# Credentials embedded in URLs: https://user:token@host/ or https://token@host/
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
# Well-known token shapes, caught even when nobody registered them as secrets.
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-ant-[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"
)


class Redactor:
    """Replaces registered secret values, URL credentials and well-known token shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; real secrets are long.
        if secret and len(secret) >= 6:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        if not text:
            return text
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        return _TOKEN_SHAPES.sub(REDACTED, text)

    def redact_data(self, value: Any) -> Any:
        """``value`` with :meth:`redact` applied to every string inside dicts, lists and tuples."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_data(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact_data(item) for item in value]
        if type(value) is tuple:
            return tuple(self.redact_data(item) for item in value)
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
    """``https://user:pw@host/x`` -> ``https://host/x`` (for display of remotes)."""
    return _URL_CREDENTIALS.sub(lambda m: m.group("scheme"), url)
