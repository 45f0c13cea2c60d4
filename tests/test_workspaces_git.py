"""The six workspace tools against real git, over LocalExecutor and SSHExecutor.

A smart-HTTP git server on loopback (``tests/gitserver.py``) demands the token with Basic auth,
so clone and push prove the credential path; the token must never show up in ``.git/config``,
any file of the workspace, a tool result, a log record or any process's argv while git runs.
Git in workspaces runs in real sandbox containers (dockerd + the agent image).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agentkit.config import Settings
from agentkit.executors.base import Executor
from agentkit.redact import Redactor
from agentkit.tools.base import ToolContext, ToolResult
from agentkit.tools.toolset import Toolset
from agentkit.tools.workspaces import workspace_tools
from agentkit.workspaces.service import WorkspaceService
from tests.gitserver import GitHTTPServer, git_available, run_git
from tests.support import require

# Deliberately not shaped like a GitHub token: redaction must come from registration, not regex.
TOKEN = "tok-" + secrets.token_hex(20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    require(git_available(), "git")
    with GitHTTPServer(tmp_path / "srv", token=TOKEN) as srv:
        yield srv


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest) -> Executor:
    """Each test runs over this machine and over a real OpenSSH server on loopback."""
    if request.param == "local":
        from agentkit.executors.local import LocalExecutor

        return LocalExecutor()
    executor: Executor = request.getfixturevalue("ssh_executor")
    return executor


def make_settings(tmp_path: Path, server: GitHTTPServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "root": str(tmp_path / "root"),
        "github_token": TOKEN,
        "github_url": server.origin,
        "github_api_url": "https://ghe.invalid/api/v3",
        "github_owner": None,
        "git_author_name": "Agent Kit",
        "git_author_email": "agent@example.invalid",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Kit:
    """A wired toolset + service over one executor, plus helpers for assertions."""

    def __init__(
        self, executor: Executor, settings: Settings, busy: set[str] | None = None
    ) -> None:
        self.settings = settings
        self.busy: set[str] = busy if busy is not None else set()

        async def busy_provider() -> set[str]:
            return set(self.busy)

        self.service = WorkspaceService(executor, settings, busy=busy_provider)
        self.toolset = Toolset(
            workspace_tools(),
            context=ToolContext(
                settings=settings,
                executor=executor,
                workspaces=self.service,
                redactor=Redactor(settings.secrets()),
            ),
        )
        self.results: list[ToolResult] = []

    async def __aenter__(self) -> Kit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.aclose()

    @property
    def root(self) -> Path:
        return Path(self.settings.workspaces_root)

    async def call(self, name: str, **args: Any) -> ToolResult:
        result = await self.toolset.call(name, args)
        self.results.append(result)
        return result

    async def ok(self, name: str, **args: Any) -> ToolResult:
        result = await self.call(name, **args)
        assert not result.is_error, result.content
        return result

    async def error(self, name: str, **args: Any) -> ToolResult:
        result = await self.call(name, **args)
        assert result.is_error, result.content
        return result

    def assert_no_token_anywhere(self) -> None:
        for result in self.results:
            assert TOKEN not in result.content
            assert TOKEN not in json.dumps(result.data, default=str)
        if self.root.exists():
            for path in self.root.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    assert TOKEN.encode() not in path.read_bytes(), path


@pytest_asyncio.fixture
async def kit(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> AsyncIterator[Kit]:
    async with Kit(executor, make_settings(tmp_path, server, image=agent_image)) as kit:
        yield kit


def cmdlines() -> list[str]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                pass
    return out


async def call_while_scanning(kit: Kit, name: str, **args: Any) -> tuple[ToolResult, set[str]]:
    """Run a tool and scan every process's argv until it finishes; return both."""
    task = asyncio.create_task(kit.call(name, **args))
    seen: set[str] = set()
    while not task.done():
        seen.update(cmdlines())
        await asyncio.sleep(0.01)
    return await task, seen


# --- clone + push with the token -------------------------------------------------------------


async def test_clone_and_push_with_token_never_leak_it(
    kit: Kit, server: GitHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.create_repo("acme/private")
    server.hold_seconds = 0.3  # git is talking to the server while we scan the process list

    result, seen = await call_while_scanning(kit, "clone_repo", repo_url="acme/private")
    assert not result.is_error, result.content
    assert "'private'" in result.content
    assert result.data["branch"] == "main"
    assert result.data["remote"] == server.url("acme/private")
    assert any("git" in c and "clone" in c for c in seen), "the scan missed git clone"
    assert not [c for c in seen if TOKEN in c]
    # The server demanded credentials and got exactly the token, as x-access-token.
    assert any(not r.authorized and r.user is None for r in server.requests)
    assert {r.user for r in server.requests if r.authorized} == {"x-access-token"}
    ws = kit.root / "private"
    assert (ws / "README.md").read_text() == "# acme/private\n"
    assert server.url("acme/private") in (ws / ".git" / "config").read_text()

    (ws / "hello.txt").write_text("hi\n")
    server.requests.clear()
    result, seen = await call_while_scanning(
        kit, "push_workspace", workspace_name="private", commit_message="Add hello"
    )
    assert not result.is_error, result.content
    assert result.data["committed"]
    assert result.data["pushed"]
    assert any("git" in c and "push" in c for c in seen), "the scan missed git push"
    assert not [c for c in seen if TOKEN in c]
    assert any(r.authorized and "receive-pack" in r.path for r in server.requests)
    assert server.log("acme/private") == ["Add hello", "initial commit"]
    author = run_git(
        "--git-dir", str(server.bare("acme/private")), "log", "-1", "--format=%an <%ae>"
    )
    assert author.strip() == "Agent Kit <agent@example.invalid>"
    assert server.show("acme/private", "main:hello.txt") == "hi\n"

    kit.assert_no_token_anywhere()
    assert TOKEN not in caplog.text
    assert "git" in caplog.text  # something was logged, and it is clean


async def test_token_is_only_sent_to_the_configured_origin(
    executor: Executor, server: GitHTTPServer, tmp_path: Path
) -> None:
    with GitHTTPServer(tmp_path / "other", token=TOKEN) as other:
        # listed in AGENTKIT_GIT_ALLOW, so git does talk to it: but never with the token
        settings = make_settings(tmp_path, server, git_allow=f"127.0.0.1:{other.port}")
        kit = Kit(executor, settings)
        other.create_repo("evil/grab")
        result = await kit.error("clone_repo", repo_url=other.url("evil/grab"))
    assert "needs credentials" in result.content
    assert all(r.user is None and not r.authorized for r in other.requests)
    assert other.requests, "git never asked the other server"
    assert not (kit.root / "grab").exists()
    kit.assert_no_token_anywhere()


async def test_clone_without_a_token_says_how_to_fix_it(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    async with Kit(executor, make_settings(tmp_path, server, github_token=None)) as kit:
        server.create_repo("acme/private")
        result = await kit.error("clone_repo", repo_url="acme/private")
    assert "GITHUB_TOKEN" in result.content
    assert not (kit.root / "private").exists()


async def test_clone_wrong_token_is_refused(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    wrong = "tok-wrong-" + secrets.token_hex(8)
    async with Kit(executor, make_settings(tmp_path, server, github_token=wrong)) as kit:
        server.create_repo("acme/private")
        result = await kit.error("clone_repo", repo_url="acme/private")
    assert "rejected GITHUB_TOKEN" in result.content
    assert wrong not in result.content
    assert not (kit.root / "private").exists()


async def test_clone_options_and_existing_workspace(kit: Kit, server: GitHTTPServer) -> None:
    server.create_repo("acme/lib")
    server.commit_on_server("acme/lib", "two.txt", "2\n", "second")
    bare = server.bare("acme/lib")
    run_git("--git-dir", str(bare), "branch", "dev", "main~1")

    await kit.ok(
        "clone_repo", repo_url=server.url("acme/lib"), workspace_name="lib-dev", branch="dev"
    )
    assert run_git("-C", str(kit.root / "lib-dev"), "branch", "--show-current").strip() == "dev"
    assert not (kit.root / "lib-dev" / "two.txt").exists()

    result = await kit.ok("clone_repo", repo_url="acme/lib", shallow=True)
    assert result.data["name"] == "lib"
    count = run_git("-C", str(kit.root / "lib"), "rev-list", "--count", "HEAD").strip()
    assert count == "1"

    again = await kit.error("clone_repo", repo_url="acme/lib")
    assert "already exists" in again.content
    assert (kit.root / "lib" / "two.txt").exists()  # untouched

    missing = await kit.error("clone_repo", repo_url="acme/lib", workspace_name="x", branch="nope")
    assert "'nope' does not exist" in missing.content
    assert not (kit.root / "x").exists()

    gone = await kit.error("clone_repo", repo_url="acme/missing")
    assert "not found" in gone.content
    assert not (kit.root / "missing").exists()


# --- create / push -----------------------------------------------------------------------------


async def test_create_then_push_lifecycle(kit: Kit, server: GitHTTPServer) -> None:
    bare = server.create_repo("acme/fresh", files={})
    result = await kit.ok("create_workspace", workspace_name="fresh")
    assert result.data["branch"] == "main"
    assert result.data["last_commit"] is None
    ws = kit.root / "fresh"

    no_remote = await kit.error("push_workspace", workspace_name="fresh", commit_message="x")
    assert "no pinned origin" in no_remote.content
    assert "origin_url" in no_remote.content

    # An origin in the workspace's own .git/config is never taken: the push still refuses.
    run_git("-C", str(ws), "remote", "add", "origin", server.url("acme/fresh"))
    still = await kit.error("push_workspace", workspace_name="fresh", commit_message="x")
    assert "no pinned origin" in still.content

    empty = await kit.error(
        "push_workspace",
        workspace_name="fresh",
        commit_message="x",
        origin_url=server.url("acme/fresh"),
    )
    assert "no commits and no changes" in empty.content
    assert (await kit.service.origin("fresh")) is None  # a push that failed pins nothing

    (ws / "a.txt").write_text("a\n")
    pushed = await kit.ok(
        "push_workspace",
        workspace_name="fresh",
        commit_message="First",
        origin_url=server.url("acme/fresh"),
    )
    assert (await kit.service.origin("fresh")) is not None  # pinned by the push that succeeded
    assert "Committed and pushed" in pushed.content
    assert server.log("acme/fresh") == ["First"]
    # the upstream is configured in the workspace (its tracking ref is not: the workspace
    # never talks to the origin itself)
    merge = run_git("-C", str(ws), "config", "branch.main.merge").strip()
    assert merge == "refs/heads/main"

    again = await kit.ok("push_workspace", workspace_name="fresh", commit_message="Nothing")
    assert "remote is up to date" in again.content
    assert again.data["committed"] is False
    assert again.data["up_to_date"] is True

    # A local commit made by an agent, nothing uncommitted: it is pushed as is.
    (ws / "b.txt").write_text("b\n")
    run_git("-C", str(ws), "add", "b.txt")
    run_git("-C", str(ws), "commit", "-q", "-m", "agent commit")
    existing = await kit.ok("push_workspace", workspace_name="fresh", commit_message="unused")
    assert "Nothing new to commit; pushed" in existing.content
    assert server.log("acme/fresh") == ["agent commit", "First"]

    # Push to another branch.
    (ws / "c.txt").write_text("c\n")
    await kit.ok("push_workspace", workspace_name="fresh", commit_message="C", branch="topic")
    assert server.log("acme/fresh", "topic")[0] == "C"
    assert bare.exists()
    kit.assert_no_token_anywhere()


async def test_rejected_pushes_are_explained(kit: Kit, server: GitHTTPServer) -> None:
    server.create_repo("acme/busy")
    await kit.ok("clone_repo", repo_url="acme/busy")
    ws = kit.root / "busy"
    server.commit_on_server("acme/busy", "theirs.txt", "x\n", "their change")

    (ws / "mine.txt").write_text("mine\n")
    result = await kit.error("push_workspace", workspace_name="busy", commit_message="Mine")
    assert "non-fast-forward" in result.content
    assert "git pull --rebase origin main" in result.content
    assert "is saved in the workspace" in result.content
    assert run_git("-C", str(ws), "log", "-1", "--format=%s").strip() == "Mine"

    server.reject_pushes_to("acme/busy", "release")
    protected = await kit.error(
        "push_workspace", workspace_name="busy", commit_message="x", branch="release"
    )
    assert "protected branch" in protected.content
    assert "pull request" in protected.content
    kit.assert_no_token_anywhere()


# --- branches ---------------------------------------------------------------------------------


async def test_create_branch(kit: Kit, server: GitHTTPServer) -> None:
    server.create_repo("acme/br")
    server.commit_on_server("acme/br", "b.txt", "b\n", "second")
    await kit.ok("clone_repo", repo_url="acme/br")
    ws = str(kit.root / "br")

    res = await kit.ok("create_branch", workspace_name="br", branch_name="feature/x")
    assert run_git("-C", ws, "branch", "--show-current").strip() == "feature/x"
    assert res.data["head"] == run_git("-C", ws, "rev-parse", "main").strip()

    res = await kit.ok("create_branch", workspace_name="br", branch_name="old", from_ref="main~1")
    assert run_git("-C", ws, "branch", "--show-current").strip() == "old"
    assert res.data["head"] == run_git("-C", ws, "rev-parse", "main~1").strip()

    dup = await kit.error("create_branch", workspace_name="br", branch_name="main")
    assert "already exists" in dup.content
    for bad in ("a..b", "-x", "has space", "x.lock", "HEAD", "a:b"):
        res = await kit.error("create_branch", workspace_name="br", branch_name=bad)
        assert "not valid for git" in res.content
    nope = await kit.error("create_branch", workspace_name="br", branch_name="y", from_ref="nope")
    assert "not a branch, tag or commit" in nope.content
    opt = await kit.error(
        "create_branch", workspace_name="br", branch_name="y", from_ref="--orphan"
    )
    assert "starts with '-'" in opt.content
    assert run_git("-C", ws, "branch", "--show-current").strip() == "old"

    # Works on a workspace without commits too.
    await kit.ok("create_workspace", workspace_name="empty")
    await kit.ok("create_branch", workspace_name="empty", branch_name="dev")
    branch = run_git("-C", str(kit.root / "empty"), "symbolic-ref", "--short", "HEAD").strip()
    assert branch == "dev"


# --- list / delete ----------------------------------------------------------------------------


async def test_list_workspaces(kit: Kit, server: GitHTTPServer) -> None:
    empty = await kit.ok("list_workspaces")
    assert "No workspaces yet" in empty.content

    server.create_repo("acme/one")
    await kit.ok("clone_repo", repo_url="acme/one")
    await kit.ok("create_workspace", workspace_name="two")
    (kit.root / "two" / "new.txt").write_text("x")
    (kit.root / "not-a-repo").mkdir()
    (kit.root / ".hidden").mkdir()
    kit.busy = {str(kit.root / "two")}

    result = await kit.ok("list_workspaces")
    rows = {w["name"]: w for w in result.data["workspaces"]}
    assert list(rows) == ["not-a-repo", "one", "two"]
    one, two = rows["one"], rows["two"]
    assert one["branch"] == "main"
    assert one["dirty"] is False
    assert one["agent_running"] is False
    assert one["remote"] == server.url("acme/one")
    assert one["last_commit"]["subject"] == "initial commit"
    assert "ago" in one["last_commit"]["age"] or "second" in one["last_commit"]["age"]
    assert two["dirty"] is None  # no git runs where an agent works (see below)
    assert two["agent_running"] is True
    assert two["branch"] is None
    assert two["last_commit"] is None
    assert rows["not-a-repo"]["error"] == "not a git repository"
    assert "two: agent working" in result.content
    kit.busy = set()
    done = {w["name"]: w for w in (await kit.ok("list_workspaces")).data["workspaces"]}
    assert done["two"]["dirty"] is True
    assert done["two"]["changed_files"] == 1
    assert done["two"]["remote"] is None
    assert "two [main] dirty (1 changed)" in (await kit.ok("list_workspaces")).content


async def test_host_git_never_runs_in_a_workspace(
    tmp_path: Path, server: GitHTTPServer, monkeypatch: pytest.MonkeyPatch, agent_image: str
) -> None:
    """Every host git process is seen by a wrapper on PATH: none ever runs in a workspace
    (busy or not); git there runs only in the sandbox. Host git runs only on the mirror."""
    from agentkit.executors.local import LocalExecutor

    settings = make_settings(tmp_path, server, image=agent_image)
    async with Kit(LocalExecutor(), settings) as kit:
        await _guarded(kit, tmp_path, server, monkeypatch)


async def _guarded(
    kit: Kit, tmp_path: Path, server: GitHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.create_repo("acme/guarded")
    await kit.ok("clone_repo", repo_url="acme/guarded")
    ws = kit.root / "guarded"
    (ws / "work.txt").write_text("in progress")
    log = tmp_path / "git-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True)
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real_git.stdout.strip()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    kit.busy = {str(ws)}

    listed = await kit.ok("list_workspaces")
    assert listed.data["workspaces"][0]["agent_running"] is True
    push = await kit.error("push_workspace", workspace_name="guarded", commit_message="wip")
    assert "while an agent is working in it" in push.content
    branch = await kit.error("create_branch", workspace_name="guarded", branch_name="b")
    assert "while an agent is working in it" in branch.content
    calls = log.read_text() if log.exists() else ""
    assert str(ws) not in calls

    kit.busy = set()
    await kit.ok("list_workspaces")
    await kit.ok("create_branch", workspace_name="guarded", branch_name="next")
    await kit.ok("push_workspace", workspace_name="guarded", commit_message="done")
    calls = log.read_text()
    assert str(ws) not in calls
    assert kit.service.mirrors.path("guarded") in calls  # the wrapper does see host git
    assert server.log("acme/guarded", "next")[0] == "done"


async def test_list_shows_the_pinned_origin_never_the_workspace_config(
    kit: Kit, server: GitHTTPServer
) -> None:
    await kit.ok("create_workspace", workspace_name="cred", origin_url="acme/cred")
    run_git(
        "-C",
        str(kit.root / "cred"),
        "remote",
        "set-url",
        "origin",
        "https://someone:hunter2-secret@example.com/a/b.git",
    )
    result = await kit.ok("list_workspaces")
    assert "hunter2" not in result.content
    assert "example.com" not in json.dumps(result.data)
    assert result.data["workspaces"][0]["remote"] == server.url("acme/cred")
    # credentials are refused where an origin is pinned
    bad = await kit.error(
        "create_workspace",
        workspace_name="cred2",
        origin_url="https://someone:hunter2-secret@example.com/a/b.git",
    )
    assert "credentials" in bad.content
    assert "hunter2" not in bad.content


async def test_delete_workspace(kit: Kit, tmp_path: Path) -> None:
    await kit.ok("create_workspace", workspace_name="doomed")
    ws = kit.root / "doomed"
    kit.busy = {str(ws)}
    refused = await kit.error("delete_workspace", workspace_name="doomed")
    assert "an agent is working in it" in refused.content
    assert ws.exists()

    kit.busy = {str(ws) + "/"}  # a seed-style path with a trailing slash is the same workspace
    assert (await kit.call("delete_workspace", workspace_name=str(ws))).is_error
    kit.busy = set()
    deleted = await kit.ok("delete_workspace", workspace_name=str(ws))
    assert "Deleted workspace 'doomed'" in deleted.content
    assert not ws.exists()

    missing = await kit.error("delete_workspace", workspace_name="doomed")
    assert "does not exist" in missing.content

    # A symlink planted in the root is not followed out of it.
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (kit.root / "link").symlink_to(outside)
    link = await kit.error("delete_workspace", workspace_name="link")
    assert "symbolic link" in link.content
    assert (outside / "keep.txt").read_text() == "keep"


async def test_changes_refused_when_agent_status_is_unknown(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    """The busy check fails closed: delete, push and create_branch all refuse."""

    async def broken() -> set[str]:
        raise RuntimeError("docker is down")

    settings = make_settings(tmp_path, server, image=agent_image)
    async with WorkspaceService(executor, settings, busy=broken) as service:
        await service.create("keep", origin_url="acme/keep")
        (Path(settings.workspaces_root) / "keep" / "x.txt").write_text("x")
        toolset = Toolset(workspace_tools(), context=ToolContext(workspaces=service))
        for tool, extra in (
            ("delete_workspace", {}),
            ("push_workspace", {"commit_message": "m"}),
            ("create_branch", {"branch_name": "b"}),
        ):
            result = await toolset.call(tool, {"workspace_name": "keep", **extra})
            assert result.is_error, tool
            assert "cannot check whether an agent is working" in result.content, tool
        assert (Path(settings.workspaces_root) / "keep").exists()
        listed = await toolset.call("list_workspaces", {})
    assert listed.data["workspaces"][0]["agent_running"] is None
    assert listed.data["workspaces"][0]["dirty"] is True  # the sandbox may run: it is safe
    assert server.requests == []  # nothing was pushed


# --- names through the tools ------------------------------------------------------------------

BAD = ["../x", "/etc", "a/b", ".git", "-rf", "x" * 300, "\uff4dain", "\u0430pp", "..", "/"]


@pytest.mark.parametrize(
    ("tool", "extra"),
    [
        ("create_workspace", {}),
        ("push_workspace", {"commit_message": "m"}),
        ("create_branch", {"branch_name": "b"}),
        ("delete_workspace", {}),
        ("clone_repo", {"repo_url": "acme/x"}),
    ],
)
async def test_bad_names_are_refused_by_every_tool(
    kit: Kit, tool: str, extra: dict[str, str]
) -> None:
    kit.root.mkdir(parents=True)
    for name in BAD:
        result = await kit.error(tool, workspace_name=name, **extra)
        assert "workspace" in result.content
    assert sorted(p.name for p in kit.root.iterdir()) == []
    assert Path("/etc/passwd").exists()


# --- hardening against a tampered workspace ---------------------------------------------------


async def test_tampered_git_config_and_hooks_do_not_run_on_the_host(
    kit: Kit, server: GitHTTPServer, tmp_path: Path
) -> None:
    server.create_repo("acme/tamper")
    await kit.ok("clone_repo", repo_url="acme/tamper")
    ws = kit.root / "tamper"
    marker = tmp_path / "pwned"

    hook = ws / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    (ws / ".git" / "hooks" / "pre-push").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (ws / ".git" / "hooks" / "pre-push").chmod(0o755)
    (ws / "f.txt").write_text("f\n")
    await kit.ok("push_workspace", workspace_name="tamper", commit_message="with hooks present")
    assert not marker.exists(), "a workspace hook ran on the host"

    # Configuration that runs commands or redirects the push is harmless now: git in the
    # workspace runs only in the sandbox, and the push goes from the mirror to the pinned origin.
    (ws / ".gitattributes").write_text("*.txt filter=evil\n")
    run_git("-C", str(ws), "config", "filter.evil.clean", f"touch {marker}; cat")
    run_git("-C", str(ws), "config", "url.http://127.0.0.1:1/.insteadOf", server.origin)
    (ws / "g.txt").write_text("g\n")
    listed = await kit.ok("list_workspaces")
    assert listed.data["workspaces"][0]["dirty"] is True
    await kit.ok("push_workspace", workspace_name="tamper", commit_message="filter")
    assert not marker.exists(), "a clean filter ran on the host"
    assert server.log("acme/tamper")[:2] == ["filter", "with hooks present"]


async def test_workspace_owned_by_the_agent_user_stays_usable(
    kit: Kit, server: GitHTTPServer
) -> None:
    """After a spawn the workspace belongs to uid 1001; git on the host still works there (no
    'dubious ownership') and hands what it wrote back to that owner."""
    require(os.geteuid() == 0, "root (to chown the workspace to the agent uid 1001)")
    server.create_repo("acme/owned")
    await kit.ok("clone_repo", repo_url="acme/owned")
    ws = kit.root / "owned"
    run_git("-C", str(ws), "status")  # as root, before the chown
    subprocess.run(["chown", "-R", "1001:1001", "--", str(ws)], check=True)
    (ws / "agent.txt").write_text("from the agent\n")
    os.chown(ws / "agent.txt", 1001, 1001)

    listed = await kit.ok("list_workspaces")
    assert listed.data["workspaces"][0]["dirty"] is True
    await kit.ok("push_workspace", workspace_name="owned", commit_message="Agent work")
    await kit.ok("create_branch", workspace_name="owned", branch_name="next")
    assert server.log("acme/owned")[0] == "Agent work"
    foreign = [p for p in ws.rglob("*") if p.lstat().st_uid != 1001]
    assert foreign == []


async def test_dot_git_pointing_elsewhere_is_refused(kit: Kit, server: GitHTTPServer) -> None:
    server.create_repo("acme/elsewhere")
    await kit.ok("clone_repo", repo_url="acme/elsewhere")
    await kit.ok("create_workspace", workspace_name="decoy", origin_url="acme/elsewhere")
    decoy = kit.root / "decoy"
    (decoy / ".git").rename(kit.root / "decoy-git")
    (decoy / ".git").write_text(f"gitdir: {kit.root / 'elsewhere' / '.git'}\n")
    result = await kit.error("push_workspace", workspace_name="decoy", commit_message="x")
    assert "not a git repository" in result.content
    (decoy / ".git").unlink()
    (decoy / ".git").symlink_to(kit.root / "elsewhere" / ".git")
    result = await kit.error("create_branch", workspace_name="decoy", branch_name="b")
    assert "not a git repository" in result.content
    listed = await kit.ok("list_workspaces")
    rows = {w["name"]: w for w in listed.data["workspaces"]}
    assert rows["decoy"]["error"] == "not a git repository"
    assert server.log("acme/elsewhere") == ["initial commit"]


async def test_credential_helper_answers_only_for_the_token_origin(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    """Second layer: even a network command run with auth=True (as for a push to a rewritten
    URL) gives the token to no other origin."""
    from agentkit.workspaces.git import Git

    settings = make_settings(tmp_path, server)
    git = Git(executor, settings, Redactor(settings.secrets()))
    server.create_repo("acme/mine")
    ours = await git.run(["ls-remote", server.url("acme/mine")], auth=True, check=False)
    assert ours.ok, ours.stderr
    assert "refs/heads/main" in ours.stdout
    with GitHTTPServer(tmp_path / "other", token=TOKEN) as other:
        other.create_repo("evil/grab")
        theirs = await git.run(["ls-remote", other.url("evil/grab")], auth=True, check=False)
    assert not theirs.ok
    assert other.requests
    assert all(r.user is None for r in other.requests)


async def test_git_output_echoing_the_token_is_redacted_by_the_service(
    kit: Kit, server: GitHTTPServer
) -> None:
    """A server that echoes the token back (remote: lines) never gets it into an error, even
    when the service is used without a Toolset."""
    from agentkit.errors import ToolError

    server.create_repo("acme/echo")
    hook = server.bare("acme/echo") / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho 'debug: token={TOKEN}' >&2\nexit 1\n")
    hook.chmod(0o755)
    await kit.ok("clone_repo", repo_url="acme/echo")
    (kit.root / "echo" / "x.txt").write_text("x\n")
    with pytest.raises(ToolError) as info:
        await kit.service.push("echo", "try")
    assert "The server said: remote: debug: token=[REDACTED]" in str(info.value)
    assert TOKEN not in str(info.value)

    with pytest.raises(ToolError) as info:  # git echoes its argument in the error
        await kit.service.git.run(["show", TOKEN], cwd=kit.service.mirrors.path("echo"))
    assert "unknown revision" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_busy_check_sees_through_a_symlinked_root(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    """The agent service reports resolved paths; a root behind a symlink must still match."""
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    settings = make_settings(tmp_path, server, root=str(tmp_path / "linked"), image=agent_image)
    async with Kit(executor, settings) as kit:
        await _busy_through_link(kit, real)


async def _busy_through_link(kit: Kit, real: Path) -> None:
    await kit.ok("create_workspace", workspace_name="busy")
    kit.busy = {str(real / "workspaces" / "busy")}
    refused = await kit.error("delete_workspace", workspace_name="busy")
    assert "in use" in refused.content
    listed = await kit.ok("list_workspaces")
    assert listed.data["workspaces"][0]["agent_running"] is True
    kit.busy = set()
    await kit.ok("delete_workspace", workspace_name="busy")
    assert not (real / "workspaces" / "busy").exists()
