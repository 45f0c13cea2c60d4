"""GitHub REST: create repositories (user or organisation), with every failure mapped in one place.

The base URL comes from ``AGENTKIT_GITHUB_API_URL`` so GitHub Enterprise works
(``https://ghe.example.com/api/v3``). The token travels only in the ``Authorization`` header; it
is never part of a message, a log line or a URL.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from agentkit.config import Settings
from agentkit.errors import GitHubError
from agentkit.redact import Redactor, strip_url_credentials

logger = logging.getLogger("agentkit.workspaces.github")

VISIBILITIES = ("private", "public", "internal")


@dataclass(frozen=True, slots=True)
class CreatedRepo:
    """A repository GitHub created for us."""

    full_name: str
    clone_url: str
    html_url: str
    visibility: str
    default_branch: str | None = None


def github_web_url(settings: Settings) -> str:
    """The web/git origin of the configured GitHub (``https://github.com`` for github.com).

    ``AGENTKIT_GITHUB_URL`` wins; otherwise it is derived from the API URL:
    ``https://api.github.com`` -> ``https://github.com``; ``https://ghe.x/api/v3`` -> ``https://ghe.x``.
    """
    if settings.github_url:
        return settings.github_url.rstrip("/")
    parts = urlsplit(settings.github_api_url)
    host = parts.netloc
    if host.startswith("api."):
        host = host[len("api.") :]
    return urlunsplit((parts.scheme or "https", host, "", "", "")).rstrip("/")


def _token(settings: Settings) -> str:
    if settings.github_token is None or not settings.github_token.get_secret_value():
        raise GitHubError(
            "GITHUB_TOKEN (or GH_TOKEN) is not set, so no GitHub repository can be created. "
            "Set it to a token with the 'repo' scope, or call create_workspace with "
            "create_github_repo=false."
        )
    return settings.github_token.get_secret_value()


def _message(response: httpx.Response) -> tuple[str, list[str]]:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200], []
    if not isinstance(body, dict):
        return "", []
    details: list[str] = []
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            details.append(str(err.get("message") or err.get("code") or ""))
        else:
            details.append(str(err))
    return str(body.get("message") or ""), [d for d in details if d]


def _wait_hint(response: httpx.Response) -> str:
    retry_after = response.headers.get("retry-after")
    if retry_after and retry_after.isdigit():
        return f"retry in {int(retry_after)} s"
    reset = response.headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        seconds = max(0, int(reset) - int(time.time()))
        return f"the limit resets in {seconds} s"
    return "wait a minute and retry"


def map_github_error(
    response: httpx.Response, *, name: str, owner: str | None, api_url: str
) -> GitHubError:
    """The one place that turns a failed GitHub response into an actionable :class:`GitHubError`."""
    status = response.status_code
    message, details = _message(response)
    detail = "; ".join(details) or message
    where = f"{owner}/{name}" if owner else name
    lowered = f"{message} {detail}".lower()
    if status == 401:
        return GitHubError(
            "GitHub rejected the token (401 Bad credentials): GITHUB_TOKEN is wrong, expired or "
            "revoked. Set a valid token with the 'repo' scope."
        )
    if status == 429 or (
        status == 403
        and ("rate limit" in lowered or response.headers.get("x-ratelimit-remaining") == "0")
    ):
        return GitHubError(f"GitHub rate limit reached ({status}); {_wait_hint(response)}.")
    if status == 403:
        return GitHubError(
            f"GitHub refused to create {where} (403 {message or 'Forbidden'}): the token lacks "
            "permission (it needs the 'repo' scope, and membership with repository creation "
            "rights for an organisation)."
        )
    if status == 404 and owner:
        return GitHubError(
            f"GitHub organisation {owner!r} was not found, or the token cannot see it (404). "
            "Check AGENTKIT_GITHUB_OWNER, or unset it to create the repository for the token's "
            "user."
        )
    if status == 404:
        return GitHubError(
            f"GitHub API endpoint not found (404) at {api_url}: check AGENTKIT_GITHUB_API_URL "
            "(for GitHub Enterprise it ends in /api/v3)."
        )
    if status == 422:
        if "already exists" in lowered or "name already" in lowered:
            return GitHubError(
                f"a GitHub repository named {where} already exists (422). Pick another "
                "workspace name, or clone the existing repository with clone_repo."
            )
        return GitHubError(f"GitHub refused the repository {where} (422): {detail}")
    return GitHubError(f"GitHub API error {status} creating {where}: {detail or 'no details'}")


class GitHubClient:
    """A minimal async GitHub REST client: only what workspaces need."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: httpx.AsyncClient | None = None,
        redactor: Redactor | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self._client = http_client
        self._timeout = timeout
        self._redactor = redactor or Redactor(settings.secrets())

    @property
    def api_url(self) -> str:
        return self.settings.github_api_url.rstrip("/")

    async def create_repo(
        self,
        name: str,
        *,
        visibility: str = "private",
        owner: str | None = None,
        description: str | None = None,
    ) -> CreatedRepo:
        """Create ``name`` for the token's user (``owner=None``) or organisation ``owner``."""
        if visibility not in VISIBILITIES:
            raise GitHubError(
                f"repo_visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}"
            )
        if visibility == "internal" and not owner:
            raise GitHubError(
                "repo_visibility 'internal' exists only for organisation repositories; set "
                "AGENTKIT_GITHUB_OWNER or use 'private'"
            )
        token = _token(self.settings)
        path = f"/orgs/{owner}/repos" if owner else "/user/repos"
        payload: dict[str, Any] = {
            "name": name,
            "private": visibility != "public",
            "auto_init": False,
        }
        if owner:
            payload["visibility"] = visibility
        if description:
            payload["description"] = description
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "agentkit",
        }
        url = self.api_url + path
        logger.info("creating GitHub repository %s via POST %s", name, path)
        try:
            if self._client is not None:
                response = await self._client.post(
                    url, json=payload, headers=headers, timeout=self._timeout
                )
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.post(url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            reason = self._redactor.redact(str(exc)) or type(exc).__name__
            raise GitHubError(
                f"could not reach the GitHub API at {self.api_url} ({reason}); check the "
                "network and AGENTKIT_GITHUB_API_URL"
            ) from None
        if response.status_code >= 400:
            error = map_github_error(response, name=name, owner=owner, api_url=self.api_url)
            raise GitHubError(self._redactor.redact(str(error)))
        body = response.json()
        private = bool(body.get("private", visibility != "public"))
        return CreatedRepo(
            full_name=str(body.get("full_name") or (f"{owner}/{name}" if owner else name)),
            clone_url=strip_url_credentials(str(body["clone_url"])),
            html_url=str(body.get("html_url") or ""),
            visibility=str(body.get("visibility") or ("private" if private else "public")),
            default_branch=body.get("default_branch"),
        )
