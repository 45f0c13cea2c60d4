"""clone_repo reaches only allowed hosts (AGENTKIT_GIT_ALLOW), over both executors, with real git.

A model (or a prompt injection it read) chooses the clone URL, so a clone is a server-side
request: loopback, private, link-local and metadata addresses are refused unless listed, in any
spelling (``localhost``, ``2130706433``), a redirect cannot move an allowed clone elsewhere, and
ssh clones never log in with the host's keys unless a setting says so. Each refusal is proven
by a real listener that must see no connection at all.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import Settings
from agentkit.errors import ConfigError, PermissionDeniedError, ToolError
from agentkit.executors.base import Executor
from agentkit.workspaces.service import WorkspaceService
from agentkit.workspaces.urls import GitAllowlist, check_destination, parse_repo_url
from tests.gitserver import GitHTTPServer, git_available
from tests.support import require

TOKEN = "tok-allow-0123456789abcdef"


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class Redirector:
    """An HTTP server that answers every request with a redirect to ``target``."""

    def __init__(self, target: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    item = Listener()
    yield item
    item.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    require(git_available(), "git")
    with GitHTTPServer(tmp_path / "srv", token=TOKEN) as srv:
        srv.create_repo("acme/demo")
        yield srv


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "local":
        from agentkit.executors.local import LocalExecutor

        return LocalExecutor()
    ssh: Executor = request.getfixturevalue("ssh_executor")
    return ssh


def service(executor: Executor, tmp_path: Path, **overrides: Any) -> WorkspaceService:
    values: dict[str, Any] = {
        "root": str(tmp_path / "root"),
        "github_token": TOKEN,
        "github_url": "https://github.com",
        "github_api_url": "https://ghe.invalid/api/v3",
    }
    values.update(overrides)
    return WorkspaceService(executor, Settings(_env_file=None, **values))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a/b.git",
        "http://localhost:{port}/a/b.git",
        "http://2130706433:{port}/a/b.git",  # 127.0.0.1 as one decimal number
        "http://127.1:{port}/a/b.git",
        "https://127.0.0.1:{port}/a/b.git",
        "git://127.0.0.1:{port}/a/b.git",
    ],
)
async def test_loopback_in_any_spelling_is_refused_before_connecting(
    executor: Executor, tmp_path: Path, listener: Listener, url: str
) -> None:
    ws = service(executor, tmp_path)
    with pytest.raises(PermissionDeniedError) as info:
        await ws.clone(url.format(port=listener.port), "x")
    assert "AGENTKIT_GIT_ALLOW" in str(info.value)
    assert listener.accepted == 0
    assert not (tmp_path / "root" / "workspaces" / "x").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data.git",
        "https://169.254.169.254/x.git",
        "https://10.1.2.3/x.git",
        "https://192.168.0.1/x.git",
        "https://[::1]/x.git",
        "https://[::ffff:127.0.0.1]/x.git",
        "https://100.64.0.1/x.git",
    ],
)
async def test_metadata_private_and_link_local_addresses_are_refused(
    executor: Executor, tmp_path: Path, url: str
) -> None:
    with pytest.raises(PermissionDeniedError):
        await service(executor, tmp_path).clone(url, "x")


async def test_a_listed_host_is_reached(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    """Listed by host:port, the clone goes through (it authenticates: not the token origin)."""
    ws = service(executor, tmp_path, git_allow=f"127.0.0.1:{server.port}")
    with pytest.raises(PermissionDeniedError) as info:
        await ws.clone(server.url("acme/demo"), "demo")
    assert "needs credentials" in str(info.value)
    assert server.requests, "the listed server was not contacted"
    assert all(r.user is None for r in server.requests), "the token went to a non-origin host"


async def test_the_configured_github_origin_is_always_allowed(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    # the clone completes: the workspace is populated in the git sandbox (the agent image)
    async with service(
        executor, tmp_path, github_url=server.origin, git_allow="", image=agent_image
    ) as ws:
        info = await ws.clone(server.url("acme/demo"), "demo")
    assert info.branch == "main"


async def test_a_redirect_cannot_move_an_allowed_clone_to_a_host_that_is_not(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    redirect = Redirector(server.origin)
    try:
        ws = service(executor, tmp_path, git_allow=f"127.0.0.1:{redirect.port}")
        with pytest.raises(Exception):  # noqa: B017 - any failure; what matters is below
            await ws.clone(f"http://127.0.0.1:{redirect.port}/acme/demo.git", "demo")
        assert redirect.hits >= 1
        assert server.requests == [], "git followed the redirect to an address never checked"
    finally:
        redirect.close()


async def test_ssh_clones_are_refused_unless_host_keys_are_allowed(
    executor: Executor, tmp_path: Path
) -> None:
    with pytest.raises(PermissionDeniedError) as info:
        await service(executor, tmp_path).clone("git@github.com:octo/hello.git")
    assert "AGENTKIT_GIT_SSH_HOST_KEYS" in str(info.value)


async def test_star_allows_anything(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, git_allow="*")  # type: ignore[call-arg]

    async def never(host: str) -> list[str]:
        raise AssertionError("no resolution needed with '*'")

    repo = parse_repo_url("http://10.0.0.1:8080/a/b.git", "https://github.com")
    target = await check_destination(repo, settings, never)
    assert target.git_options == ()


async def test_public_hosts_are_pinned_to_the_checked_addresses() -> None:
    """A public name is pinned (http.curloptResolve) and redirects are off: a second DNS
    answer (rebinding) or a redirect cannot reach an address that was not checked."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    async def public(host: str) -> list[str]:
        return ["140.82.112.3", "2606:50c0:8000::153"]

    repo = parse_repo_url("https://git.example.org/a/b.git", "https://github.com")
    target = await check_destination(repo, settings, public)
    assert "http.followRedirects=false" in target.git_options
    assert (
        "http.curloptResolve=git.example.org:443:140.82.112.3,[2606:50c0:8000::153]"
        in target.git_options
    )

    async def mixed(host: str) -> list[str]:
        return ["140.82.112.3", "10.0.0.7"]  # one private answer is enough to refuse

    with pytest.raises(PermissionDeniedError) as info:
        await check_destination(repo, settings, mixed)
    assert "10.0.0.7" in str(info.value)


@pytest.mark.parametrize("entry", ["exa mple.com", "host:port", "10.0.0.0/99", "-x"])
def test_bad_allowlist_entries_are_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        GitAllowlist.parse([entry])
    assert "AGENTKIT_GIT_ALLOW" in str(info.value)


def test_allowlist_entries_match_names_wildcards_ports_and_ranges() -> None:
    allow = GitAllowlist.parse(["git.corp.example", "*.internal", "gitea.lan:3000", "10.0.0.0/8"])
    assert allow.names_host("git.corp.example", 443)
    assert allow.names_host("a.b.internal", 22)
    assert not allow.names_host("internal", 443)
    assert allow.names_host("gitea.lan", 3000)
    assert not allow.names_host("gitea.lan", 3001)
    assert allow.lists_address("10.20.30.40")
    assert not allow.lists_address("11.0.0.1")


@pytest.mark.parametrize(
    "url",
    ["https://bücher.example/x.git", "https://exa\u0307mple.com/x.git"],
)
def test_non_ascii_host_names_are_refused(url: str) -> None:
    """curl resolves the punycode form of a Unicode name, past a pin made for the Unicode form."""
    with pytest.raises(ToolError) as info:
        parse_repo_url(url, "https://github.com")
    assert "punycode" in str(info.value)


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::1", "64:ff9b::a00:1", "::7f00:1", "fec0::1", "fe80::1", "::ffff:10.0.0.1"],
)
async def test_ipv6_forms_that_reach_ipv4_or_local_ranges_are_not_public(address: str) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    async def resolves(host: str) -> list[str]:
        return [address]

    repo = parse_repo_url("https://git.example.org/a/b.git", "https://github.com")
    with pytest.raises(PermissionDeniedError):
        await check_destination(repo, settings, resolves)


async def test_a_chosen_origin_on_the_token_origin_must_belong_to_the_configured_owner(
    executor: Executor, tmp_path: Path
) -> None:
    """With AGENTKIT_GITHUB_OWNER set, a model cannot point the token at any repository it can
    write (another organisation's production repository, say) through origin_url."""
    ws = service(executor, tmp_path, github_owner="acme")
    with pytest.raises(PermissionDeniedError) as info:
        await ws.create("w1", origin_url="other-org/prod")
    assert "AGENTKIT_GITHUB_OWNER" in str(info.value)
    assert not (tmp_path / "root" / "workspaces" / "w1").exists()
    await ws.create("w2", origin_url="acme/tool")
    origin = await ws.origin("w2")
    assert origin is not None
    assert origin.url == "https://github.com/acme/tool.git"
