"""A real smart-HTTP git server on 127.0.0.1 for tests: ``git http-backend`` behind a small
threaded HTTP server that demands a token with Basic auth (401 otherwise), like a private GitHub
repository.

Usage::

    with GitHTTPServer(tmp_path / "srv", token="ghp_...") as server:
        server.create_repo("acme/demo")             # bare repo with one commit on main
        url = server.url("acme/demo")             # http://127.0.0.1:PORT/acme/demo.git

``server.requests`` records (method, path, user, authorized) for every request;
``hold_seconds`` delays every authorized request so a test can look at the process list while
git is talking to the server.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

GIT = shutil.which("git") or "git"


def git_available() -> bool:
    return shutil.which("git") is not None


def run_git(*args: str, cwd: str | Path | None = None, input: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        # tests play the agent too: workspaces belong to the agent user (uid 1001)
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }
    out = subprocess.run(
        [GIT, *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


@dataclass
class Request:
    method: str
    path: str
    user: str | None
    authorized: bool


@dataclass
class GitHTTPServer:
    """Serve bare repositories under ``root`` at ``http://127.0.0.1:<port>/<owner>/<name>.git``."""

    root: Path
    token: str
    hold_seconds: float = 0.0
    requests: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> GitHTTPServer:
        self.root.mkdir(parents=True, exist_ok=True)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitHTTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, full_name: str) -> str:
        return f"{self.origin}/{full_name}.git"

    # --- repositories -----------------------------------------------------------------------

    def bare(self, full_name: str) -> Path:
        return self.root / f"{full_name}.git"

    def create_repo(self, full_name: str, *, files: dict[str, str] | None = None) -> Path:
        """A bare repository with one commit on ``main`` (or empty when ``files == {}``)."""
        bare = self.bare(full_name)
        bare.parent.mkdir(parents=True, exist_ok=True)
        run_git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        run_git("config", "http.receivepack", "true", cwd=bare)
        if files is None:
            files = {"README.md": f"# {full_name}\n"}
        if files:
            with tempfile.TemporaryDirectory() as tmp:
                run_git("init", "--quiet", "--initial-branch=main", tmp)
                for name, text in files.items():
                    (Path(tmp) / name).write_text(text)
                run_git("add", "--all", cwd=tmp)
                run_git("commit", "--quiet", "-m", "initial commit", cwd=tmp)
                run_git("push", "--quiet", str(bare), "main", cwd=tmp)
        return bare

    def commit_on_server(self, full_name: str, path: str, text: str, message: str) -> str:
        """Add a commit to ``main`` of the bare repository (another contributor's push)."""
        bare = self.bare(full_name)
        with tempfile.TemporaryDirectory() as tmp:
            run_git("clone", "--quiet", str(bare), tmp)
            (Path(tmp) / path).write_text(text)
            run_git("add", "--all", cwd=tmp)
            run_git("commit", "--quiet", "-m", message, cwd=tmp)
            run_git("push", "--quiet", "origin", "HEAD:main", cwd=tmp)
            return run_git("rev-parse", "HEAD", cwd=tmp).strip()

    def reject_pushes_to(self, full_name: str, branch: str) -> None:
        """Install a pre-receive hook that refuses updates of ``branch`` (a protected branch)."""
        hook = self.bare(full_name) / "hooks" / "pre-receive"
        hook.write_text(
            "#!/bin/sh\n"
            "while read old new ref; do\n"
            f'  if [ "$ref" = "refs/heads/{branch}" ]; then\n'
            f'    echo "GH006: Protected branch update failed for refs/heads/{branch}." >&2\n'
            "    exit 1\n"
            "  fi\n"
            "done\n"
        )
        hook.chmod(0o755)

    def log(self, full_name: str, ref: str = "main") -> list[str]:
        """Subjects of the commits on ``ref`` in the bare repository, newest first."""
        out = run_git("--git-dir", str(self.bare(full_name)), "log", "--format=%s", ref)
        return out.splitlines()

    def show(self, full_name: str, spec: str) -> str:
        return run_git("--git-dir", str(self.bare(full_name)), "show", spec)

    # --- HTTP -------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> tuple[bool, str | None]:
        if not header or not header.startswith("Basic "):
            return False, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False, None
        return password == self.token, user

    def _body(self, handler: BaseHTTPRequestHandler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    handler.rfile.readline()
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            return b"".join(chunks)
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        body = self._body(handler)
        ok, user = self._authorized(handler.headers.get("Authorization"))
        self.requests.append(Request(handler.command, parts.path, user, ok))
        if not ok:
            payload = b"authentication required\n"
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="agentkit-test"')
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if self.hold_seconds:
            time.sleep(self.hold_seconds)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user or "",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        if handler.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = handler.headers["Content-Encoding"]
        if handler.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = handler.headers["Git-Protocol"]
        proc = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if not name:
                continue
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name, value.strip()))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
