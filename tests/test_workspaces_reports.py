"""Parsing a git sandbox's output (untrusted: bounded, linear, display only) and commit ages."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from agentkit.workspaces.reports import parse_commit, relative_age, workspace_report
from agentkit.workspaces.sandbox import SandboxResult, Section, parse_sections


def line(name: str, status: int, data: bytes) -> bytes:
    return b"@%s %d %s" % (name.encode(), status, base64.b64encode(data))


def test_sections_keep_any_bytes_and_ignore_everything_else() -> None:
    raw = b"\n".join(
        [
            b"noise from a filter @status 0 AAAA",
            line("status", 0, b"# branch.head main\n\x00\xff"),
            line("status", 0, b"# branch.head spoofed\n"),  # a second one is ignored
            b"@bad.NAME 0 AAAA",
            b"@last 12345 AAAA",  # status too long
            b"@last 0 not-base64!",
            b"@changed 0",
            line("changed", 0, b"3"),
        ]
    )
    sections = parse_sections(raw)
    assert sections == {
        "status": Section(0, b"# branch.head main\n\x00\xff"),
        "changed": Section(0, b"3"),
    }


def test_hostile_output_shapes_are_ignored() -> None:
    evil = b"@" + b"a" * 4_000_000 + b" 0 " + b"A" * 4_000_000
    assert parse_sections(evil + b"\n" + b"@ " * 1_000_000 + b"\n@x 0 A===") == {}


def test_commit_parsing_is_bounded_and_computes_the_age() -> None:
    now = int(time.time())
    sha = "a" * 40
    subject = "x\x1b[31m" + "y" * 2000
    commit = parse_commit(Section(0, f"{sha}\x1f{subject}\x1fspoofed\x1f{now - 120}\n".encode()))
    assert commit is not None
    assert commit.hash == sha
    assert len(commit.subject) == 500
    assert "\x1b" not in commit.subject
    assert commit.age == "2 minutes ago"
    assert parse_commit(Section(0, b"not-a-sha\x1fs\x1fa\x1f1")) is None
    assert parse_commit(Section(128, b"")) is None


def test_relative_age_follows_gits_steps() -> None:
    now = 1_800_000_000.0
    cases = {
        0: "0 seconds ago",
        1: "1 second ago",
        89: "89 seconds ago",
        90: "2 minutes ago",
        3600 * 5: "5 hours ago",
        86400 * 3: "3 days ago",
        86400 * 20: "3 weeks ago",
        86400 * 100: "3 months ago",
        86400 * 800: "2 years ago",
        -5: "in the future",
    }
    for ago, text in cases.items():
        assert relative_age(int(now - ago), now) == text, ago


def test_report_of_a_broken_or_silent_sandbox_is_an_error_row() -> None:
    norepo = SandboxResult(0, {"norepo": Section(1, b"")})
    assert workspace_report("w", "/p", norepo, remote=None, agent_running=False).error == (
        "not a git repository"
    )
    silent = workspace_report("w", "/p", SandboxResult(0, {}), remote=None, agent_running=None)
    assert silent.error is not None
    assert "no answer" in silent.error
    huge = SandboxResult(
        0, {"status": Section(0, b"# branch.head main\n"), "changed": Section(0, b"9" * 50)}
    )
    report = workspace_report("w", "/p", huge, remote=None, agent_running=False)
    assert report.changed_files == 0
    assert report.branch == "main"


async def test_a_workspace_without_git_is_listed_without_a_sandbox(tmp_path: Path) -> None:
    """No .git entry at all: the host says "not a git repository" (what the sandbox would say)
    without starting one; a .git that is anything (even a dangling link) still gets a sandbox."""
    from agentkit.config import Settings
    from agentkit.executors.local import LocalExecutor
    from agentkit.runtimes.memory import MemoryRun, MemoryRuntime
    from agentkit.workspaces.service import WorkspaceService

    started: list[str] = []

    async def sandbox(run: MemoryRun) -> int:  # plays the script's answer for a non-repository
        started.append(run.spec.mounts[0].source)
        run.emit(line("norepo", 1, b"").decode())
        return 0

    settings = Settings(_env_file=None, root=str(tmp_path / "root"))  # type: ignore[call-arg]
    workspaces = tmp_path / "root" / "workspaces"
    (workspaces / "plain").mkdir(parents=True)
    (workspaces / "plain" / "notes.txt").write_text("no repository here\n")
    (workspaces / "linked").mkdir()
    (workspaces / "linked" / ".git").symlink_to("/nonexistent")
    runtime = MemoryRuntime(sandbox, images=[settings.image])
    async with WorkspaceService(LocalExecutor(), settings, runtime=runtime) as service:
        rows = {row.name: row for row in await service.list()}
    assert rows["plain"].error == rows["linked"].error == "not a git repository"
    assert (rows["plain"].dirty, rows["plain"].branch) == (None, None)
    assert [Path(p).name for p in started] == ["linked"]
