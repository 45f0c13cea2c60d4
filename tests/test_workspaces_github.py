"""create_workspace with create_github_repo: GitHub REST (respx) + real git init (in the sandbox).

Every failure must be actionable, never contain the token, and leave no workspace behind.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

from agentkit.config import Settings
from agentkit.executors.local import LocalExecutor
from agentkit.redact import Redactor
from agentkit.tools.base import ToolContext, ToolResult
from agentkit.tools.toolset import Toolset
from agentkit.tools.workspaces import workspace_tools
from agentkit.workspaces.github import GitHubClient, github_web_url, map_github_error
from agentkit.workspaces.service import WorkspaceService
from tests.gitserver import git_available, run_git
from tests.support import require

API = "https://ghe.example.test/api/v3"
TOKEN = "tok-" + secrets.token_hex(20)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "root": str(tmp_path / "root"),
        "github_token": TOKEN,
        "github_api_url": API,
        "github_owner": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


_OPEN: list[WorkspaceService] = []


@pytest_asyncio.fixture(autouse=True)
async def _close_services() -> AsyncIterator[None]:
    """Services made by toolset_for open a Docker connection for the git sandbox: close it."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def toolset_for(settings: Settings, http: httpx.AsyncClient) -> Toolset:
    service = WorkspaceService(LocalExecutor(), settings, http_client=http)
    _OPEN.append(service)
    return Toolset(
        workspace_tools(),
        context=ToolContext(
            settings=settings, workspaces=service, redactor=Redactor(settings.secrets())
        ),
    )


def created(full_name: str, private: bool) -> dict[str, Any]:
    return {
        "full_name": full_name,
        "private": private,
        "visibility": "private" if private else "public",
        "clone_url": f"https://ghe.example.test/{full_name}.git",
        "html_url": f"https://ghe.example.test/{full_name}",
        "default_branch": "main",
    }


def assert_clean(result: ToolResult) -> None:
    assert TOKEN not in result.content
    assert TOKEN not in json.dumps(result.data, default=str)


@pytest.fixture(autouse=True)
def _git() -> None:
    require(git_available(), "git")


@pytest.mark.parametrize("visibility", ["private", "public"])
async def test_created_for_the_tokens_user(
    tmp_path: Path, http: httpx.AsyncClient, visibility: str, agent_image: str
) -> None:
    settings = settings_for(tmp_path, image=agent_image)  # git init runs in the sandbox
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API, assert_all_called=True) as router:
        route = router.post("/user/repos").respond(
            201, json=created("me/demo", visibility == "private")
        )
        result = await toolset.call(
            "create_workspace",
            {"workspace_name": "demo", "create_github_repo": True, "repo_visibility": visibility},
        )
    assert not result.is_error, result.content
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    body = json.loads(request.content)
    assert body == {"name": "demo", "private": visibility == "private", "auto_init": False}
    assert f"me/demo ({visibility})" in result.content
    ws = Path(settings.workspaces_root) / "demo"
    origin = run_git("-C", str(ws), "remote", "get-url", "origin").strip()
    assert origin == "https://ghe.example.test/me/demo.git"
    assert run_git("-C", str(ws), "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert TOKEN not in (ws / ".git" / "config").read_text()
    assert result.data["github"]["visibility"] == visibility
    assert_clean(result)


async def test_created_in_an_organisation(
    tmp_path: Path, http: httpx.AsyncClient, agent_image: str
) -> None:
    settings = settings_for(tmp_path, github_owner="acme", image=agent_image)
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API) as router:
        route = router.post("/orgs/acme/repos").respond(201, json=created("acme/tool", True))
        result = await toolset.call(
            "create_workspace",
            {"workspace_name": "tool", "create_github_repo": True, "repo_visibility": "internal"},
        )
    assert not result.is_error, result.content
    body = json.loads(route.calls.last.request.content)
    assert body["visibility"] == "internal"
    assert body["private"] is True
    assert "acme/tool" in result.content


async def test_internal_needs_an_organisation(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = settings_for(tmp_path)
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API, assert_all_called=False) as router:
        route = router.post("/user/repos").respond(201, json=created("me/x", True))
        result = await toolset.call(
            "create_workspace",
            {"workspace_name": "x", "create_github_repo": True, "repo_visibility": "internal"},
        )
    assert result.is_error
    assert "organisation" in result.content
    assert not route.called
    assert not (Path(settings.workspaces_root) / "x").exists()


RATE_RESET = str(int(time.time()) + 120)

FAILURES = [
    (
        422,
        {
            "message": "Repository creation failed.",
            "errors": [
                {"resource": "Repository", "message": "name already exists on this account"}
            ],
        },
        {},
        "already exists",
    ),
    (401, {"message": "Bad credentials"}, {}, "rejected the token"),
    (
        403,
        {"message": "API rate limit exceeded for user."},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": RATE_RESET},
        "rate limit",
    ),
    (429, {"message": "secondary rate limit"}, {"retry-after": "30"}, "retry in 30 s"),
    (403, {"message": "Resource not accessible by integration"}, {}, "'repo' scope"),
    (500, {"message": "boom"}, {}, "GitHub API error 500"),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), FAILURES)
async def test_github_failures_are_clear_and_leave_nothing(
    tmp_path: Path,
    http: httpx.AsyncClient,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: str,
) -> None:
    settings = settings_for(tmp_path)
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API) as router:
        router.post("/user/repos").respond(status, json=body, headers=headers)
        result = await toolset.call(
            "create_workspace", {"workspace_name": "demo", "create_github_repo": True}
        )
    assert result.is_error
    assert expected in result.content
    assert_clean(result)
    assert not (Path(settings.workspaces_root) / "demo").exists()


async def test_rate_limit_reports_the_reset_time(http: httpx.AsyncClient) -> None:
    reset = str(int(time.time()) + 120)
    response = httpx.Response(
        403,
        json={"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset},
    )
    error = map_github_error(response, name="demo", owner=None, api_url=API)
    seconds = int(str(error).split("resets in ")[1].split(" s")[0])
    assert 100 <= seconds <= 120


async def test_unknown_organisation(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = settings_for(tmp_path, github_owner="nosuchorg")
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API) as router:
        router.post("/orgs/nosuchorg/repos").respond(404, json={"message": "Not Found"})
        result = await toolset.call(
            "create_workspace", {"workspace_name": "demo", "create_github_repo": True}
        )
    assert result.is_error
    assert "organisation 'nosuchorg' was not found" in result.content
    assert "AGENTKIT_GITHUB_OWNER" in result.content


async def test_no_token_and_unreachable_api(tmp_path: Path, http: httpx.AsyncClient) -> None:
    toolset = toolset_for(settings_for(tmp_path, github_token=None), http)
    result = await toolset.call(
        "create_workspace", {"workspace_name": "demo", "create_github_repo": True}
    )
    assert result.is_error
    assert "GITHUB_TOKEN" in result.content
    assert "create_github_repo=false" in result.content

    settings = settings_for(tmp_path)
    toolset = toolset_for(settings, http)
    with respx.mock(base_url=API) as router:
        router.post("/user/repos").mock(side_effect=httpx.ConnectError("connection refused"))
        result = await toolset.call(
            "create_workspace", {"workspace_name": "demo", "create_github_repo": True}
        )
    assert result.is_error
    assert "could not reach the GitHub API" in result.content
    assert not (Path(settings.workspaces_root) / "demo").exists()


async def test_existing_workspace_is_checked_before_github(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    settings = settings_for(tmp_path)
    toolset = toolset_for(settings, http)
    (Path(settings.workspaces_root) / "demo").mkdir(parents=True)
    with respx.mock(base_url=API, assert_all_called=False) as router:
        route = router.post("/user/repos").respond(201, json=created("me/demo", True))
        result = await toolset.call(
            "create_workspace", {"workspace_name": "demo", "create_github_repo": True}
        )
    assert result.is_error
    assert "already exists" in result.content
    assert not route.called


async def test_client_without_shared_http_client(tmp_path: Path) -> None:
    client = GitHubClient(settings_for(tmp_path))
    with respx.mock(base_url=API) as router:
        router.post("/user/repos").respond(201, json=created("me/solo", False))
        repo = await client.create_repo("solo", visibility="public")
    assert repo.full_name == "me/solo"
    assert repo.visibility == "public"


@pytest.mark.parametrize(
    ("api", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://ghe.example.com:8443/api/v3/", "https://ghe.example.com:8443"),
    ],
)
def test_web_url_is_derived_for_enterprise(tmp_path: Path, api: str, web: str) -> None:
    assert github_web_url(settings_for(tmp_path, github_api_url=api)) == web
    explicit = settings_for(tmp_path, github_api_url=api, github_url="https://git.example/")
    assert github_web_url(explicit) == "https://git.example"
