"""``list_workspaces`` over N workspaces: this checkout (git in one sandbox container per
changed workspace, reports of unchanged ones reused) beside a baseline checkout (e.g. ``main``
before issue 9: host git), one run. This checkout is measured twice: with every workspace
changed before each listing (a sandbox each), and with nothing changed.

    .venv/bin/python bench/workspaces.py [--workspaces 20] [--n 5] [--baseline /work/main]
    .venv/bin/python bench/workspaces.py --handover 100000 [--n 5]

``--handover FILES`` measures instead what a writing sandbox (push, create_branch) does first on
the host: hand the workspace to uid 1001 (``launch.HAND_OVER``, ownership fixed only where
wrong) on a FILES-file workspace, against an empty workspace and against ``chown -R -h`` (what
it did before), in the same run. Needs root (chown).

Needs dockerd and the agent image (``AGENTKIT_IMAGE``, default ``agentflow-claude-code:latest``).
The same workspaces (one commit, one changed file each) are listed by both checkouts, each in its
own Python process importing that checkout's ``agentkit``, through the Toolset on the local
executor. Also measured in the same run, as floors: one bare ``git status`` on the host, and one
sandbox container (create, start, wait, logs, remove) on a folder that is no repository.

Prints p50 wall times (ms) and the ratios after/before and after/floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

MEASURE = r"""
import asyncio, json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from agentkit.config import Settings
from agentkit.executors.local import LocalExecutor
from agentkit.tools.base import ToolContext
from agentkit.tools.toolset import Toolset
from agentkit.tools.workspaces import workspace_tools
from agentkit.workspaces.service import WorkspaceService

async def main():
    settings = Settings(_env_file=None, root=sys.argv[2], image=sys.argv[4])
    service = WorkspaceService(LocalExecutor(), settings)
    toolset = Toolset(workspace_tools(), context=ToolContext(workspaces=service))
    times = []
    cold = sys.argv[5] == "cold"
    for i in range(int(sys.argv[3]) + 1):
        if cold:  # every workspace changed since the last listing
            for ws in Path(sys.argv[2], "workspaces").iterdir():
                (ws / "file0.txt").write_text(f"changed {i}\n")
        start = time.perf_counter()
        result = await toolset.call("list_workspaces", {})
        took = (time.perf_counter() - start) * 1000
        assert not result.is_error, result.content
        rows = result.data["workspaces"]
        assert all(r["dirty"] for r in rows), rows[:1]
        if i:
            times.append(took)
    close = getattr(service, "aclose", None)
    if close is not None:
        await close()
    print(json.dumps({"p50": statistics.median(times), "rows": len(rows)}))

asyncio.run(main())
"""


def make_workspaces(root: Path, count: int) -> None:
    from tests.gitserver import run_git

    for i in range(count):
        ws = root / "workspaces" / f"ws-{i:02d}"
        ws.mkdir(parents=True)
        run_git("init", "-q", str(ws))
        for j in range(20):
            (ws / f"file{j}.txt").write_text(f"{i} {j}\n")
        run_git("-C", str(ws), "add", ".")
        run_git("-C", str(ws), "commit", "-qm", f"commit of workspace {i}")
        (ws / "file0.txt").write_text("changed\n")


def measure(checkout: Path, root: Path, n: int, image: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(checkout), str(root), str(n), image, mode],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(root),
    )
    if out.returncode != 0:
        raise SystemExit(f"measuring {checkout} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def floors(root: Path, image: str, n: int) -> tuple[float, float]:
    """p50 ms of one host ``git status`` and of one empty sandbox container."""
    from agentkit.config import Settings
    from agentkit.executors.local import LocalExecutor
    from agentkit.redact import Redactor
    from agentkit.runtimes.docker import DockerRuntime
    from agentkit.runtimes.docker_engine import open_docker
    from agentkit.workspaces.sandbox import GitSandbox

    ws = root / "workspaces" / "ws-00"
    git_times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(["git", "-C", str(ws), "status", "--porcelain"], capture_output=True)
        git_times.append((time.perf_counter() - start) * 1000)
    settings = Settings(_env_file=None, root=str(root), image=image)
    runtime = DockerRuntime(await open_docker(LocalExecutor(), settings))
    sandbox = GitSandbox(lambda: _same(runtime), settings, Redactor([]))
    box_times = []
    empty = root / "empty"
    empty.mkdir()
    try:
        for i in range(n + 1):
            start = time.perf_counter()
            await sandbox.run(str(empty), "info", writable=False)  # not a repository: exits
            if i:
                box_times.append((time.perf_counter() - start) * 1000)
    finally:
        await runtime.aclose()
    return statistics.median(git_times), statistics.median(box_times) if box_times else 0.0


async def _same(runtime: object) -> object:
    return runtime


def _p50_ms(argv: list[str], n: int) -> float:
    subprocess.run(argv, check=True, capture_output=True)  # warm: the shell, the inode cache
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def handover(files: int, n: int) -> None:
    """p50 ms of the hand-over on an empty and on a ``files``-file workspace (see the top)."""
    from agentkit.containers.launch import HAND_OVER

    def hand_over(ws: Path) -> list[str]:
        return ["sh", "-c", HAND_OVER + 'hand_over "$1" "$2"', "hand-over", str(ws), "1001:1001"]

    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-own-"))
    try:
        empty, big = tmp / "empty", tmp / "big"
        empty.mkdir()
        for i in range(files):
            folder = big / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                folder.mkdir(parents=True)
            (folder / f"f{i}").touch()
        (big / ".git").mkdir()
        subprocess.run(["chown", "-R", "-h", "1001:1001", str(tmp)], check=True)
        floor = _p50_ms(hand_over(empty), n)
        owned = _p50_ms(hand_over(big), n)
        before = _p50_ms(["chown", "-R", "-h", "1001:1001", "--", str(big)], n)
        walks = []
        for _ in range(n):  # one entry the host wrote: the whole tree is walked, one chown
            (big / "host.txt").touch()
            os.chown(big / "host.txt", 0, 0)
            start = time.perf_counter()
            subprocess.run(hand_over(big), check=True, capture_output=True)
            walks.append((time.perf_counter() - start) * 1000)
        walked = statistics.median(walks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"hand-over before a writing sandbox, {files} files, p50 of {n} (load {load:.1f}):")
    rows = [
        ("empty workspace (floor)", floor),
        ("all files the agent's already", owned),
        ("one file the host's (tree walked)", walked),
        ("before: chown -R -h", before),
    ]
    for label, ms in rows:
        print(f"  {label:36} {ms:8.1f} ms {ms / floor:7.2f}x floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, help="checkout to compare with")
    parser.add_argument("--handover", type=int, default=0, help="measure the hand-over instead")
    args = parser.parse_args()
    if args.handover:
        handover(args.handover, args.n)
        return
    image = os.environ.get("AGENTKIT_IMAGE", "agentflow-claude-code:latest")
    tmp = Path(tempfile.mkdtemp(prefix="agentkit-bench-ws-"))
    try:
        root = tmp / "root"
        make_workspaces(root, args.workspaces)
        cold = measure(HERE, root, args.n, image, "cold")
        warm = measure(HERE, root, args.n, image, "warm")
        before = measure(args.baseline, root, args.n, image, "cold") if args.baseline else None
        git_floor, box_floor = asyncio.run(floors(root, image, args.n))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"list_workspaces over {args.workspaces} workspaces, p50 of {args.n} runs:")
    print(f"  this checkout, every workspace changed:  {cold['p50']:8.1f} ms (a sandbox each)")
    print(f"  this checkout, nothing changed:          {warm['p50']:8.1f} ms (reports reused)")
    if before is not None:
        print(f"  baseline {args.baseline} (host git):  {before['p50']:8.1f} ms")
        print(f"  ratio changed/before:                    {cold['p50'] / before['p50']:8.2f}x")
        print(f"  ratio unchanged/before:                  {warm['p50'] / before['p50']:8.2f}x")
    print(f"  floor: one host git status               {git_floor:8.1f} ms")
    print(f"  floor: one empty sandbox container       {box_floor:8.1f} ms")
    if box_floor:
        print(
            f"  changed / (workspaces x empty sandbox):  "
            f"{cold['p50'] / (args.workspaces * box_floor):8.2f}x (1.0 = fully serial)"
        )


if __name__ == "__main__":
    main()
