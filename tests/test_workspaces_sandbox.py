"""The trust boundary (issue 9): a workspace an agent wrote is hostile, and the host never runs
a program its repository data can configure.

Each test plants what an attacker would (nested repositories with filters, submodules with
``receivepack``, a ``pushurl`` with a hook, ``commondir`` / ``alternates`` into another
workspace, an empty ``.git`` inside a parent checkout, symlinked workspaces) and checks, with
real git, the real token-demanding git server and real sandbox containers, that nothing runs on
the host, the token goes nowhere else, and no other repository's data is reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agentkit.executors.base import Executor
from agentkit.executors.local import LocalExecutor
from tests.gitserver import GitHTTPServer, git_available, run_git
from tests.support import require
from tests.test_workspaces_git import TOKEN, Kit, make_settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    require(git_available(), "git")
    with GitHTTPServer(tmp_path / "srv", token=TOKEN) as srv:
        yield srv


@pytest.fixture(params=["local", "ssh"])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "local":
        return LocalExecutor()
    executor: Executor = request.getfixturevalue("ssh_executor")
    return executor


@pytest_asyncio.fixture
async def kit(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> AsyncIterator[Kit]:
    async with Kit(executor, make_settings(tmp_path, server, image=agent_image)) as kit:
        yield kit


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


# --- list_workspaces: nested repositories ------------------------------------------------------


async def test_nested_repo_and_submodule_filters_never_run_on_the_host(
    kit: Kit, server: GitHTTPServer, tmp_path: Path
) -> None:
    marker = tmp_path / "host-marker"
    evil = f"touch {marker}; cat"
    await kit.ok("create_workspace", workspace_name="nest")
    ws = kit.root / "nest"
    # an embedded repository recorded as a gitlink: `git status` recurses into it
    inner = ws / "inner"
    inner.mkdir()
    run_git("init", "-q", str(inner))
    (inner / "a.txt").write_text("a\n")
    run_git("-C", str(inner), "add", "a.txt")
    run_git("-C", str(inner), "commit", "-qm", "inner")
    run_git("-C", str(inner), "config", "filter.evil.clean", evil)
    (inner / ".gitattributes").write_text("*.txt filter=evil\n")
    (ws / "top.txt").write_text("top\n")
    run_git("-C", str(ws), "add", "top.txt", "inner")
    run_git("-C", str(ws), "commit", "-qm", "outer")
    (inner / "a.txt").write_text("b\n")  # same size: git must hash it, through the filter
    # and a real submodule whose config (in .git/modules) sets a filter too
    lib = server.create_repo("acme/lib")
    run_git("-C", str(ws), "-c", "protocol.file.allow=always", "submodule", "add", str(lib), "sub")
    run_git("-C", str(ws), "commit", "-qm", "add sub")
    run_git("-C", str(ws / "sub"), "config", "filter.evil.clean", evil)
    (ws / "sub" / ".gitattributes").write_text("* filter=evil\n")
    readme = ws / "sub" / "README.md"
    readme.write_text(readme.read_text().upper())  # same size again

    listed = await kit.ok("list_workspaces")
    row = listed.data["workspaces"][0]
    assert row["error"] is None, row
    assert row["branch"] == "main"
    assert row["dirty"] is True
    assert row["last_commit"]["subject"] == "add sub"
    assert not marker.exists(), "a nested repository's filter ran on the host"


async def test_a_workspace_filter_cannot_write_to_the_sandbox_filesystem(
    kit: Kit, tmp_path: Path
) -> None:
    """The sandbox's root filesystem is read-only: a clean filter (run by `git status` in the
    sandbox) finds only the sandbox's own bounded /tmp writable - not the agent user's home,
    /var/tmp or the root - and says so in the error git reports."""
    probe = (
        "for d in / /home/* /var/tmp /usr/local/bin /tmp; do "
        '(: > "$d/pwned") 2> /dev/null && echo "WROTE $d" >&2; done; '
        "echo probe-done >&2; exit 1"
    )
    await kit.ok("create_workspace", workspace_name="probe")
    ws = kit.root / "probe"
    (ws / "a.txt").write_text("a\n")
    run_git("-C", str(ws), "add", "a.txt")
    run_git("-C", str(ws), "commit", "-qm", "first")
    run_git("-C", str(ws), "config", "filter.probe.clean", probe)
    run_git("-C", str(ws), "config", "filter.probe.required", "true")
    (ws / ".gitattributes").write_text("*.txt filter=probe\n")
    (ws / "a.txt").write_text("b\n")  # same size: status must hash it, through the filter

    listed = await kit.ok("list_workspaces")
    error = listed.data["workspaces"][0]["error"] or ""
    assert "probe-done" in error, error  # the filter ran (in the sandbox) and reported
    assert re.findall(r"WROTE (/\S*)", error) == ["/tmp"], (
        error
    )  # only the tmpfs; the image's own /tmp is hidden
    assert not (ws / "pwned").exists()


# --- push_workspace: submodules, pushurl hooks, a rewritten remote ----------------------------


async def test_push_never_runs_workspace_configured_programs_and_the_origin_is_pinned(
    kit: Kit, server: GitHTTPServer, tmp_path: Path
) -> None:
    leaks = tmp_path / "leaks"
    leaks.mkdir()
    server.create_repo("acme/app")
    lib = server.create_repo("acme/lib2")
    await kit.ok("clone_repo", repo_url="acme/app")
    ws = kit.root / "app"
    run_git("-C", str(ws), "-c", "protocol.file.allow=always", "submodule", "add", str(lib), "lib")
    # the submodule has an unpushed commit and a receivepack that would get the token
    (ws / "lib" / "new.txt").write_text("new\n")
    run_git("-C", str(ws / "lib"), "add", "new.txt")
    run_git("-C", str(ws / "lib"), "commit", "-qm", "sub change")
    receivepack = script(
        leaks / "rp.sh", f'env > {leaks}/receivepack.env\nexec git-receive-pack "$@"'
    )
    run_git("-C", str(ws / "lib"), "config", "remote.origin.receivepack", str(receivepack))
    run_git("-C", str(ws), "config", "push.recurseSubmodules", "on-demand")
    # a pushurl to a local bare repository whose pre-receive hook would see the token
    trap = tmp_path / "trap.git"
    run_git("init", "-q", "--bare", str(trap))
    script(trap / "hooks" / "pre-receive", f"env > {leaks}/hook.env")
    run_git("-C", str(ws), "config", "remote.origin.pushurl", str(trap))
    # and the url itself rewritten to another server that asks for credentials
    with GitHTTPServer(tmp_path / "other", token=TOKEN) as other:
        other.create_repo("evil/grab")
        run_git("-C", str(ws), "remote", "set-url", "origin", other.url("evil/grab"))
        (ws / "work.txt").write_text("work\n")
        pushed = await kit.ok("push_workspace", workspace_name="app", commit_message="Work")
        assert other.requests == []
    assert pushed.data["remote"] == server.url("acme/app")
    assert server.log("acme/app")[0] == "Work"
    assert server.log("acme/lib2") == ["initial commit"]  # the submodule was not pushed
    assert run_git("--git-dir", str(trap), "for-each-ref").strip() == ""
    assert sorted(p.name for p in leaks.iterdir()) == ["rp.sh"]  # neither program ran
    assert files_holding(tmp_path, TOKEN.encode()) == []
    kit.assert_no_token_anywhere()


# --- other repositories: commondir, alternates, a parent checkout ------------------------------


async def test_commondir_and_alternates_do_not_reach_another_workspace(
    kit: Kit, server: GitHTTPServer
) -> None:
    secret = "victim-secret-" + TOKEN[-8:]
    await kit.ok("create_workspace", workspace_name="victim", origin_url="acme/victim")
    victim = kit.root / "victim"
    (victim / "secret.txt").write_text(secret)
    run_git("-C", str(victim), "add", "secret.txt")
    run_git("-C", str(victim), "commit", "-qm", "victim's work")
    victim_sha = run_git("-C", str(victim), "rev-parse", "HEAD").strip()

    # commondir: create_branch would check out the victim's files into the attacker's tree
    await kit.ok("create_workspace", workspace_name="thief", origin_url="acme/thief")
    thief = kit.root / "thief"
    (thief / ".git" / "commondir").write_text("../../victim/.git\n")
    branched = await kit.call(
        "create_branch", workspace_name="thief", branch_name="grab", from_ref=victim_sha
    )
    assert branched.is_error, branched.content
    assert not (thief / "secret.txt").exists()
    assert secret not in branched.content
    assert run_git("-C", str(victim), "branch", "--list", "grab").strip() == ""
    (thief / ".git" / "commondir").unlink()

    # alternates: push would read the victim's objects and push them with the token
    thief_remote = server.create_repo("acme/thief", files={})
    (thief / ".git" / "objects" / "info" / "alternates").write_text(
        "../../../victim/.git/objects\n"
    )
    (thief / ".git" / "refs" / "heads" / "main").write_text(victim_sha + "\n")
    pushed = await kit.call("push_workspace", workspace_name="thief", commit_message="x")
    assert pushed.is_error, pushed.content
    assert run_git("--git-dir", str(thief_remote), "for-each-ref").strip() == ""
    assert files_holding(server.root, secret.encode()) == []
    assert files_holding(Path(kit.service.mirrors.root), secret.encode()) == []


async def test_empty_dot_git_inside_a_parent_checkout_reaches_nothing(
    executor: Executor, tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    run_git("init", "-q", str(parent))
    (parent / "private.txt").write_text("parent's secret\n")
    run_git("-C", str(parent), "add", "private.txt")
    run_git("-C", str(parent), "commit", "-qm", "parent secret commit")
    before = run_git("-C", str(parent), "log", "--format=%H %s")
    settings = make_settings(tmp_path, server, image=agent_image, root=str(parent / "agentkit"))
    async with Kit(executor, settings) as kit:
        await kit.ok("create_workspace", workspace_name="hollow", origin_url="acme/hollow")
        hollow = kit.root / "hollow"
        subprocess.run(["rm", "-rf", str(hollow / ".git")], check=True)
        (hollow / ".git").mkdir()
        (hollow / "mine.txt").write_text("mine\n")
        listed = await kit.ok("list_workspaces")
        row = listed.data["workspaces"][0]
        assert row["error"], row
        assert row["last_commit"] is None
        assert "parent secret" not in listed.content
        pushed = await kit.error("push_workspace", workspace_name="hollow", commit_message="x")
        assert "not a git repository" in pushed.content
        assert "secret" not in pushed.content
        branched = await kit.error("create_branch", workspace_name="hollow", branch_name="b")
        assert "not a git repository" in branched.content
        assert "secret" not in branched.content
    assert run_git("-C", str(parent), "log", "--format=%H %s") == before
    assert run_git("-C", str(parent), "branch", "--list", "b").strip() == ""
    assert server.requests == []


# --- symlinked workspaces ----------------------------------------------------------------------


async def test_symlinked_workspace_is_refused_by_every_workspace_tool(
    kit: Kit, server: GitHTTPServer, tmp_path: Path
) -> None:
    server.create_repo("acme/real")
    await kit.ok("clone_repo", repo_url="acme/real")
    real = kit.root / "real"
    (real / "wip.txt").write_text("wip\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    (kit.root / "alias").symlink_to(real)
    (kit.root / "away").symlink_to(outside)
    head = run_git("-C", str(real), "rev-parse", "HEAD")
    for name in ("alias", "away"):
        for tool, extra in (
            ("push_workspace", {"commit_message": "via link", "origin_url": "acme/real"}),
            ("create_branch", {"branch_name": "via-link"}),
            ("delete_workspace", {}),
            ("create_workspace", {}),
            ("clone_repo", {"repo_url": "acme/real"}),
        ):
            result = await kit.error(tool, workspace_name=name, **extra)
            assert "symbolic link" in result.content or "already exists" in result.content
    listed = await kit.ok("list_workspaces")
    assert [w["name"] for w in listed.data["workspaces"]] == ["real"]
    assert run_git("-C", str(real), "rev-parse", "HEAD") == head
    assert run_git("-C", str(real), "branch", "--list", "via-link").strip() == ""
    assert (real / "wip.txt").exists()
    assert (outside / "keep.txt").read_text() == "keep\n"
    assert server.log("acme/real") == ["initial commit"]


# --- the token is only in the process that pushes from the mirror -------------------------------


class EnvironScanner(threading.Thread):
    """Reads every process's environment on this machine (containers' too) until stopped and
    records (pid, cwd, argv) of each one that holds ``needle``."""

    def __init__(self, needle: bytes) -> None:
        super().__init__(daemon=True)
        self.needle = needle
        self.seen: dict[int, tuple[str, str]] = {}
        self.scans = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        own = os.getpid()
        while not self.stopped.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == own:
                    continue
                try:
                    with open(f"/proc/{entry}/environ", "rb") as fh:
                        if self.needle not in fh.read():
                            continue
                    cwd = os.readlink(f"/proc/{entry}/cwd")
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        argv = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
                except OSError:
                    continue
                self.seen.setdefault(int(entry), (cwd, argv))
            self.scans += 1


async def test_token_is_only_in_the_process_that_pushes_from_the_mirror(
    executor: Executor,
    tmp_path: Path,
    server: GitHTTPServer,
    agent_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two independent views of one push. A thread reads every process's environment on this
    machine (container processes and sshd's children included) while the push runs; every
    process that holds the token must have been started in the mirror. Locally, a ``git``
    wrapper first on PATH also logs every host git process (its arguments and whether it got
    the token): exactly one, ``git -C <mirror> ... push``."""
    local = isinstance(executor, LocalExecutor)
    log = tmp_path / "git-calls.log"
    if local:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True)
        script(
            bin_dir / "git",
            f'has=no; [ -n "${{AGENTKIT_GIT_TOKEN:-}}" ] && has=yes\n'
            f'printf "%s|%s|%s\\n" "$has" "$PWD" "$*" >> {log}\n'
            f'exec {real_git.stdout.strip()} "$@"',
        )
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    server.create_repo("acme/scan")
    settings = make_settings(tmp_path, server, image=agent_image)
    async with Kit(executor, settings) as kit:
        await kit.ok("clone_repo", repo_url="acme/scan")
        (kit.root / "scan" / "x.txt").write_text("x\n")
        log.write_text("")
        server.hold_seconds = 0.3  # git is talking to the server while the thread scans
        scanner = EnvironScanner(TOKEN.encode())
        scanner.start()
        try:
            await kit.ok("push_workspace", workspace_name="scan", commit_message="Scanned")
        finally:
            scanner.stopped.set()
            await asyncio.to_thread(scanner.join, 10)
        mirror = kit.service.mirrors.path("scan")
    assert scanner.scans > 3
    assert scanner.seen, "the scan never saw the push (it holds the token for ~0.3 s)"
    for pid, (cwd, argv) in scanner.seen.items():
        assert cwd == mirror, (pid, cwd, argv)  # git push and its helpers, in the mirror only
    assert any(" push " in argv for _, argv in scanner.seen.values())
    assert server.log("acme/scan")[0] == "Scanned"
    if local:
        calls = [line.split("|", 2) for line in log.read_text().splitlines()]
        with_token = [c for c in calls if c[0] == "yes"]
        assert len(with_token) == 1, calls
        assert with_token[0][2].split(" -c ")[0] == f"-C {mirror}"
        assert " push --porcelain " in with_token[0][2]
        assert all(str(kit.root) not in c[1] and str(kit.root) not in c[2] for c in calls)


# --- the sandbox container itself ----------------------------------------------------------------


async def test_sandbox_container_is_hardened_and_never_an_agent(
    tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    """The create request of a sandbox (the Docker runtime's body), and a real one created on the
    engine: not listed by list_claude_agents, not touchable by the agent tools."""
    from agentkit.containers.service import AgentService
    from agentkit.runtimes.docker import DockerRuntime
    from agentkit.tools.base import ToolContext
    from agentkit.tools.containers import container_tools
    from agentkit.tools.toolset import Toolset
    from agentkit.workspaces.sandbox import GitSandbox

    key = "sk-ant-test-" + TOKEN[-12:]
    settings = make_settings(tmp_path, server, image=agent_image, anthropic_api_key=key)
    ws = tmp_path / "root" / "workspaces" / "one"
    ws.mkdir(parents=True)
    async with AgentService(LocalExecutor(), settings) as agents:
        runtime = await agents.runtime()
        sandbox = GitSandbox(agents.runtime, settings, agents.redactor)
        spec = sandbox.spec("agentkit-git-test-" + TOKEN[-6:], str(ws), "info", [], writable=False)
        body = DockerRuntime.create_body(spec)
        host = body["HostConfig"]
        assert body["User"] == "1001:1001"
        assert host["CapDrop"] == ["ALL"]
        assert host["CapAdd"] == []
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["NetworkMode"] == "none"
        assert host["Init"] is True
        assert host["Privileged"] is False
        assert host["PidsLimit"] > 0
        assert host["Memory"] > 0
        assert host["Mounts"] == [
            {"Type": "bind", "Source": str(ws), "Target": "/workspace", "ReadOnly": True}
        ]
        assert host["ReadonlyRootfs"] is True
        assert list(host["Tmpfs"]) == ["/tmp"]
        assert "size=67108864" in host["Tmpfs"]["/tmp"].split(",")
        env = "\n".join(body["Env"])
        assert TOKEN not in env
        assert key not in env
        assert int(host["LogConfig"]["Config"]["max-size"]) <= 16 << 20  # a flood stays small
        await runtime.create(spec)
        try:
            inspected = json.loads(
                subprocess.run(
                    ["docker", "inspect", spec.name], capture_output=True, check=True, text=True
                ).stdout
            )[0]["HostConfig"]["LogConfig"]
            assert inspected["Type"] == "json-file"
            assert inspected["Config"]["max-file"] == "1"
            toolset = Toolset(container_tools(), context=ToolContext(agents=agents))
            listed = await toolset.call("list_claude_agents", {})
            assert spec.name not in listed.content
            assert spec.name not in str(listed.data)
            stop = await toolset.call("stop_claude_agent", {"container_id": spec.name})
            assert stop.is_error
        finally:
            await runtime.remove(spec.name, force=True)


# --- reports reused while nothing changed ------------------------------------------------------


async def test_list_reuses_a_report_only_while_nothing_in_the_workspace_changed(
    kit: Kit, server: GitHTTPServer
) -> None:
    """An agent cannot hide a change by setting file times back: ctime gives it away."""
    await kit.ok("create_workspace", workspace_name="w", origin_url="acme/w")
    ws = kit.root / "w"
    (ws / "a.txt").write_text("a\n")
    run_git("-C", str(ws), "add", "a.txt")
    run_git("-C", str(ws), "commit", "-qm", "first")
    stamp = Path(kit.service.reports.directory) / "w.stamp"

    def row(result: object) -> dict[str, object]:
        return result.data["workspaces"][0]  # type: ignore[attr-defined,no-any-return]

    await kit.ok("list_workspaces")  # changes from just before a run are looked at once more
    first = row(await kit.ok("list_workspaces"))
    assert first["dirty"] is False
    ran_at = stamp.stat().st_mtime_ns
    again = row(await kit.ok("list_workspaces"))
    assert again["last_commit"]["hash"] == first["last_commit"]["hash"]  # type: ignore[index]
    assert {**again, "last_commit": None} == {**first, "last_commit": None}
    assert stamp.stat().st_mtime_ns == ran_at  # no sandbox ran for it

    before = (ws / "a.txt").stat()
    (ws / "a.txt").write_text("b\n")  # same size, times set back: only ctime moves
    os.utime(ws / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    changed = row(await kit.ok("list_workspaces"))
    assert changed["dirty"] is True
    assert changed["changed_files"] == 1

    run_git("-C", str(ws), "commit", "-qam", "second")
    committed = row(await kit.ok("list_workspaces"))
    assert committed["dirty"] is False
    assert committed["last_commit"]["subject"] == "second"  # type: ignore[index]

    (ws / "a.txt").chmod(0o755)
    assert row(await kit.ok("list_workspaces"))["dirty"] is True


async def test_a_push_hands_over_only_what_is_not_the_sandboxs(
    kit: Kit, server: GitHTTPServer
) -> None:
    """Before a writing sandbox the workspace is handed to uid 1001 only where ownership is
    wrong: files the agent already owns keep their ctime (a `chown -R` would touch all of
    them), and what host git left in .git alone (a commit run as another user) is found and
    fixed, so the sandbox can commit."""
    server.create_repo("acme/own")
    await kit.ok("clone_repo", repo_url="acme/own")
    ws = kit.root / "own"
    deep = ws / "sub" / "deep.txt"
    deep.parent.mkdir()
    deep.write_text("the agent's\n")
    for path in (deep.parent, deep):
        os.chown(path, 1001, 1001)
    # host git as another user (here the test's uid): only .git gets its files
    run_git("-C", str(ws), "add", "sub")
    run_git("-C", str(ws), "commit", "-qm", "by the host")
    host_uid = os.getuid()
    assert host_uid != 1001
    assert any(p.stat().st_uid == host_uid for p in (ws / ".git").iterdir())
    before = deep.stat().st_ctime_ns
    await kit.ok("list_workspaces")  # a sandbox run: time passes without a sleep
    new = ws / "sub" / "new.txt"
    new.write_text("new\n")
    os.chown(new, 1001, 1001)

    await kit.ok("push_workspace", workspace_name="own", commit_message="agent work")
    assert server.log("acme/own")[0] == "agent work"
    assert deep.stat().st_ctime_ns == before  # owned already: not touched
    wrong = [p for p in ws.rglob("*") if os.lstat(p).st_uid != 1001 or os.lstat(p).st_gid != 1001]
    assert wrong == []


# --- the pinned origin ---------------------------------------------------------------------------


async def test_pinned_origin_changes_only_through_set_origin(
    kit: Kit, server: GitHTTPServer, tmp_path: Path
) -> None:
    server.create_repo("acme/first")
    second = server.create_repo("acme/second", files={})
    await kit.ok("clone_repo", repo_url="acme/first")
    ws = kit.root / "first"
    (ws / "x.txt").write_text("x\n")
    refused = await kit.error(
        "push_workspace",
        workspace_name="first",
        commit_message="x",
        origin_url=server.url("acme/second"),
    )
    assert "cannot change" in refused.content
    assert run_git("--git-dir", str(second), "for-each-ref").strip() == ""
    with pytest.raises(Exception, match="not supported"):
        await kit.service.set_origin("first", "file:///etc")
    # an origin is checked like a clone source (AGENTKIT_GIT_ALLOW): no internal addresses
    with pytest.raises(Exception, match="AGENTKIT_GIT_ALLOW"):
        await kit.service.set_origin("first", "http://169.254.169.254/x.git")
    await kit.ok("create_workspace", workspace_name="fresh")
    internal = await kit.error(
        "push_workspace",
        workspace_name="fresh",
        commit_message="m",
        origin_url="http://10.0.0.1/x.git",
    )
    assert "AGENTKIT_GIT_ALLOW" in internal.content
    assert await kit.service.origin("fresh") is None
    origin = await kit.service.set_origin("first", "acme/second")
    assert origin.url == server.url("acme/second")
    assert origin.source == "set_origin"
    await kit.ok("push_workspace", workspace_name="first", commit_message="moved")
    assert server.log("acme/second")[0] == "moved"
    listed = await kit.ok("list_workspaces")
    rows = {w["name"]: w for w in listed.data["workspaces"]}
    assert rows["first"]["remote"] == server.url("acme/second")
    # the registry lives outside the workspaces, and deleting the workspace drops its entry
    registry = Path(kit.service.registry.path("first"))
    assert not registry.is_relative_to(kit.root)
    assert registry.exists()
    await kit.ok("delete_workspace", workspace_name="first")
    assert not registry.exists()
    assert not Path(kit.service.mirrors.path("first")).exists()


async def test_a_workspace_that_makes_git_hang_is_stopped_and_the_others_still_listed(
    tmp_path: Path, server: GitHTTPServer, agent_image: str
) -> None:
    from agentkit.workspaces.sandbox import sandbox_labels

    settings = make_settings(tmp_path, server, image=agent_image, git_sandbox_timeout=3)
    async with Kit(LocalExecutor(), settings) as kit:
        for name in ("calm", "stuck"):
            await kit.ok("create_workspace", workspace_name=name)
            ws = kit.root / name
            (ws / "a.txt").write_text("a\n")
            run_git("-C", str(ws), "add", "a.txt")
            run_git("-C", str(ws), "commit", "-qm", f"{name} work")
        stuck = kit.root / "stuck"
        run_git("-C", str(stuck), "config", "filter.slow.clean", "sleep 1000; cat")
        (stuck / ".gitattributes").write_text("*.txt filter=slow\n")
        (stuck / "a.txt").write_text("b\n")  # same size: status must hash it, through the filter
        listed = await kit.ok("list_workspaces")
        rows = {w["name"]: w for w in listed.data["workspaces"]}
        assert rows["calm"]["last_commit"]["subject"] == "calm work"
        assert "took longer than 3 s" in rows["stuck"]["error"]
        runtime = await kit.service._runtime()
        assert await runtime.list(sandbox_labels(settings.root)) == []


async def test_the_stale_sweep_goes_by_each_sandboxs_own_deadline(tmp_path: Path) -> None:
    """Sandboxes left an hour ago: one of another controller whose deadline (a longer timeout)
    is still ahead stays; one whose deadline passed is removed; so is an old unlabelled one.
    The runtime is the memory runtime (its runs' creation times can be an hour back)."""
    from agentkit.config import Settings
    from agentkit.redact import Redactor
    from agentkit.runtimes.base import RunSpec
    from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
    from agentkit.workspaces.sandbox import LABEL_DEADLINE, GitSandbox, sandbox_labels

    async def nothing(run: MemoryRun) -> int:
        return 0

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, root=str(tmp_path / "root"), git_sandbox_timeout=300
    )
    runtime = MemoryRuntime(nothing, images=[settings.image])
    hour_ago = time.time() - 3600
    left = {
        "live": {LABEL_DEADLINE: str(int(time.time() + 3600))},
        "dead": {LABEL_DEADLINE: str(int(hour_ago + 300))},
        "unlabelled": {},
    }
    for name, extra in left.items():
        await runtime.create(
            RunSpec(name, settings.image, {**sandbox_labels(settings.root), **extra}, {})
        )
        runtime.runs[name].created_at = hour_ago

    sandbox = GitSandbox(lambda: _given(runtime), settings, Redactor([]))
    spec = sandbox.spec("x", str(tmp_path), "info", [], writable=False, deadline=time.time() + 9)
    assert int(spec.labels[LABEL_DEADLINE]) >= time.time() + 8  # the deadline travels with it
    await sandbox.run(str(tmp_path), "info", writable=False)  # the first run sweeps
    assert sorted(runtime.runs) == ["live"]
    await runtime.aclose()


async def _given(runtime: Any) -> Any:
    return runtime


# --- the host side of a bundle -------------------------------------------------------------------


async def test_the_host_takes_only_a_plain_verified_bounded_bundle(
    executor: Executor, tmp_path: Path, server: GitHTTPServer
) -> None:
    """What a sandbox leaves in the exchange folder is checked before host git reads it: a
    symlink (to a host file), a file over AGENTKIT_GIT_BUNDLE_MAX or a non-bundle is refused."""
    from agentkit.errors import ToolError
    from agentkit.redact import Redactor
    from agentkit.workspaces.git import Git
    from agentkit.workspaces.mirror import Mirrors

    settings = make_settings(tmp_path, server, git_bundle_max="4k")
    mirrors = Mirrors(executor, settings, Git(executor, settings, Redactor([])))
    await mirrors.ensure("m")
    secret = tmp_path / "host-secret"
    secret.write_text("secret\n")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    link = exchange / "out.bundle"
    link.symlink_to(secret)
    with pytest.raises(ToolError, match="did not leave a bundle"):
        await mirrors.take_bundle("m", str(link))
    link.unlink()
    link.write_bytes(b"x" * 5000)
    with pytest.raises(ToolError, match="AGENTKIT_GIT_BUNDLE_MAX"):
        await mirrors.take_bundle("m", str(link))
    link.write_bytes(b"# v2 git bundle\nnot really\n")
    with pytest.raises(ToolError, match="bundle"):
        await mirrors.take_bundle("m", str(link))
    # a real bundle is taken
    repo = tmp_path / "src"
    run_git("init", "-q", str(repo))
    (repo / "f.txt").write_text("f\n")
    run_git("-C", str(repo), "add", "f.txt")
    run_git("-C", str(repo), "commit", "-qm", "c")
    run_git("-C", str(repo), "bundle", "create", "-q", str(link), "HEAD")
    sha = await mirrors.take_bundle("m", str(link))
    assert sha == run_git("-C", str(repo), "rev-parse", "HEAD").strip()
