"""A second, real Docker Engine on this machine: a swarm worker, or a plain engine.

Started by tests (``extra_engine`` fixture factory): its own data root, exec root, socket and
containerd namespace, its own bridge interface (``akn<tag>``, created here on a 198.18.x
benchmarking /24 that no traffic leaves), no iptables; joined to the local swarm as a worker
on 127.0.0.1:<port> when asked, and given images from the main engine (``docker save`` then
``docker load``). Swarm sees it as a second node: agents pinned to it run there, and killing
its dockerd is a node disappearing mid-run. Everything is undone afterwards (the node is
killed and removed from the swarm, its processes stopped, its mounts and bridge released).

Never ``--bridge none``: dockerd then deletes the host's ``docker0`` on start (it "removes the
default bridge"), which breaks every container of the main engine. Teardown kills the engine
instead of making it leave the swarm, so it never tears down interfaces the main engine shares
(``docker_gwbridge``); the manager removes the node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket as socketlib
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import require


@dataclass
class Engine:
    root: Path
    socket: str
    namespace: str
    process: subprocess.Popen[bytes] | None  # dockerd on this host
    bridge: str
    container: str | None = None  # or dockerd in this container (Docker-in-Docker)
    node_id: str | None = None

    def docker(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.decode()[-500:]}")
        return done.stdout.decode().strip()

    def answers(self) -> bool:
        done = subprocess.run(
            ["docker", "-H", f"unix://{self.socket}", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        return done.returncode == 0

    @property
    def alive(self) -> bool:
        if self.container is not None:
            return _main("inspect", "-f", "{{.State.Running}}", self.container) == "true"
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """The node disappears: dockerd and its containerd die at once (SIGKILL)."""
        if self.container is not None:
            _main("rm", "-f", self.container)
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _pids_of_namespace(namespace: str) -> list[int]:
    """This engine's leftover containerd shims (by their unique namespace argument)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"-namespace" in argv and namespace.encode() in argv:
                pids.append(int(entry))
    return pids


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


NODE_IMAGE = "agentkit-swarm-node:test"


def node_image() -> str:
    """The Docker-in-Docker node image (docker/Dockerfile.swarm-node: Debian's docker.io in the
    local base image), built once if missing."""
    if _main("image", "inspect", "-f", "{{.Id}}", NODE_IMAGE):
        return NODE_IMAGE
    dockerfile = Path(__file__).resolve().parent.parent / "docker" / "Dockerfile.swarm-node"
    base = os.environ.get("AGENTKIT_TEST_BASE_IMAGE", "agentkit-base:bookworm")
    subprocess.run(
        ["docker", "build", "-q", "-t", NODE_IMAGE, "--build-arg", f"BASE_IMAGE={base}", "-"],
        input=dockerfile.read_bytes(),
        capture_output=True,
        check=True,
        timeout=900,
    )
    return NODE_IMAGE


def _main(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, check=False, timeout=60)
    return done.stdout.decode().strip()


@pytest.fixture
def extra_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Engine]]:
    """``start(join=True, images=(...,))`` -> a running second engine (undone afterwards)."""
    require(shutil.which("dockerd") is not None, "dockerd (Debian's docker.io)")
    started: list[Engine] = []

    def start(
        *,
        join: bool = True,
        images: tuple[str, ...] = (),
        dind: bool = False,
        share: tuple[str, ...] = (),
    ) -> Engine:
        """A second engine; ``dind``: inside a container of the node image, seeing ``share``
        (host paths, e.g. the workspaces root) at the same paths."""
        tag = secrets.token_hex(4)
        root = Path(f"/tmp/agentkit-node-{tag}")  # short: unix socket paths are limited
        root.mkdir()
        namespace = f"agentkit-node-{tag}"
        socket = str(root / "docker.sock")
        bridge = f"akn{tag}"
        subnet = f"198.18.{secrets.randbelow(250) + 1}"
        for cmd in (
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        had_docker0 = Path("/sys/class/net/docker0").exists()
        log = (tmp_path_factory.mktemp("node") / "dockerd.log").open("wb")
        daemon_args = [
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "docker.pid"),
            "-H",
            f"unix://{socket}",
            "--bridge",
            bridge,
            "--iptables=false",
            "--ip-masq=false",
            "--containerd-namespace",
            namespace,
            "--containerd-plugins-namespace",
            namespace + "-p",
        ]
        if dind:
            # Docker-in-Docker: dockerd in a container of the node image, on the host's network
            # (so it reaches the manager on 127.0.0.1). --privileged would be simplest, but
            # this machine lacks CAP_SYS_RESOURCE (runc: "unable to apply caps"), so: every
            # other capability, no seccomp/apparmor, all devices, the cgroup tree writable.
            container = namespace
            mounts = [arg for path in (str(root), *share) for arg in ("-v", f"{path}:{path}")]
            subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    container,
                    "--label",
                    "agentkit.test=swarm-node",
                    "--cap-add",
                    "ALL",
                    "--cap-drop",
                    "SYS_RESOURCE",
                    "--security-opt",
                    "seccomp=unconfined",
                    "--security-opt",
                    "apparmor=unconfined",
                    "--device-cgroup-rule",
                    "a *:* rwm",
                    "-v",
                    "/sys/fs/cgroup:/sys/fs/cgroup",
                    "--network",
                    "host",
                    *mounts,
                    node_image(),
                    *daemon_args,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            engine = Engine(root, socket, namespace, None, bridge, container=container)
        else:
            process = subprocess.Popen(
                ["dockerd", *daemon_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            engine = Engine(root, socket, namespace, process, bridge)
        started.append(engine)
        deadline = time.monotonic() + 60
        while not engine.answers():
            if not engine.alive or time.monotonic() > deadline:
                raise RuntimeError(f"second dockerd did not start (see {log.name})")
            time.sleep(0.2)
        if had_docker0 and not Path("/sys/class/net/docker0").exists():
            raise RuntimeError("the second dockerd removed the host's docker0: refusing to go on")
        if join:
            token = _main("swarm", "join-token", "-q", "worker")
            port = str(2380 + secrets.randbelow(500))
            engine.docker(
                "swarm", "join", "--token", token,
                "--advertise-addr", f"127.0.0.1:{port}", "--listen-addr", f"127.0.0.1:{port}",
                "127.0.0.1:2377",
            )  # fmt: skip
            engine.node_id = engine.docker("info", "--format", "{{.Swarm.NodeID}}")
        for image in images:
            saved = subprocess.run(
                ["docker", "save", image], capture_output=True, check=True, timeout=300
            ).stdout
            engine.docker("load", "-q", stdin=saved)
        return engine

    yield start
    for engine in started:
        if engine.alive:
            engine.kill()  # not `swarm leave`: that tears down interfaces shared with the host
        if engine.node_id:
            _main("node", "rm", "--force", engine.node_id)
        for shim in _pids_of_namespace(engine.namespace):  # and the containers they ran
            for pid in [*_children(shim), shim]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(engine.root))
        ]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, timeout=30)
        shutil.rmtree(engine.root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", engine.bridge], check=False, timeout=30)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A real Docker registry (Debian's ``docker-registry``) on 127.0.0.1, for this test."""
    binary = shutil.which("docker-registry")
    require(binary is not None, "docker-registry (apt install docker-registry)")
    assert binary is not None
    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            url = f"http://127.0.0.1:{port}/v2/"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start (see {log.name})")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        # the tags pushes left on the main engine (the image itself stays)
        tags = _main("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
        for tag in tags:
            if tag.startswith(f"127.0.0.1:{port}/"):
                _main("rmi", tag)
