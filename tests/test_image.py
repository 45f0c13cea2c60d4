"""The agent image: build inputs and their hash, the real image's contents, the entrypoint, errors.

Unit tests (no Docker) cover the context, the hash and the wheel layout. The rest run against a
real dockerd and the real image: the one CI built (``.ci/build-images.sh``) is reused when its
inputs hash matches, otherwise ``ensure_image`` builds it once for the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from aiohttp import web

from agentkit.config import Settings
from agentkit.errors import ImageBuildError, RuntimeUnavailable
from agentkit.runtimes.image import (
    CERTS_DIR,
    DOCKERFILE,
    INPUTS_HASH_LABEL,
    SETTINGS,
    BuildContext,
    BuildSources,
    ImageBuilder,
    ImageInfo,
    build_args,
    collect_context,
    dockerfile_default,
    ensure_image,
    find_build_sources,
    inputs_hash,
)
from tests.support import require

REPO = Path(__file__).resolve().parents[1]
DOCKER_SOCKET = "/var/run/docker.sock"
BASE_IMAGE = os.environ.get("AGENTKIT_BASE_IMAGE", "agentkit-base:bookworm")
HOST_CA_DIR = Path(os.environ.get("AGENTKIT_EXTRA_CA_DIR", "/usr/local/share/ca-certificates"))
TEST_LABEL = "agentkit.test"


def _host_ca_dir() -> Path | None:
    return HOST_CA_DIR if HOST_CA_DIR.is_dir() and any(HOST_CA_DIR.glob("*.crt")) else None


def _image_settings(**overrides: Any) -> Settings:
    """The same inputs .ci/build-images.sh uses, so its image is reused (same hash)."""
    values: dict[str, Any] = {"base_image": BASE_IMAGE, "extra_ca_dir": _host_ca_dir()}
    values.update(overrides)
    return Settings(**values)


def _sources(tmp_path: Path, dockerfile: str, *, settings_json: str = "{}") -> BuildSources:
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir(parents=True, exist_ok=True)
    (docker_dir / DOCKERFILE).write_text(dockerfile)
    (docker_dir / "agent-entrypoint.sh").write_text("#!/bin/sh\nexec true\n")
    (docker_dir / "agentkit-forward.sh").write_text('#!/bin/sh\nexec "$@"\n')
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(settings_json)
    return BuildSources(docker_dir, settings_file)


# --- unit: sources, context, hash ----------------------------------------------------------------


def test_sources_found_in_the_repo_layout() -> None:
    src = find_build_sources()
    assert src.dockerfile == REPO / "docker" / DOCKERFILE
    assert src.settings_file == REPO / ".claude" / "settings.json"


def test_sources_found_in_the_wheel_layout(tmp_path: Path) -> None:
    """Lay the package out as the wheel does (pyproject force-include) and import it from there."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    site = tmp_path / "site"
    shutil.copytree(REPO / "agentkit", site / "agentkit", ignore=shutil.ignore_patterns("_data"))
    for src, dest in mapping.items():
        target = site / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / src).is_dir():
            shutil.copytree(REPO / src, target)
        else:
            shutil.copy2(REPO / src, target)
    code = (
        "from agentkit.runtimes.image import find_build_sources, collect_context\n"
        "s = find_build_sources(); c = collect_context(sources=s)\n"
        "print(s.docker_dir); print(s.settings_file); print(sorted(c.files))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == str(site / "agentkit" / "_data" / "docker")
    assert out[1] == str(site / "agentkit" / "_data" / "claude-settings.json")
    assert DOCKERFILE in out[2]
    assert SETTINGS in out[2]
    assert "agent-entrypoint.sh" in out[2]


def test_context_holds_the_files_and_extra_certs(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ca.mkdir()
    (ca / "corp.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (ca / "notes.txt").write_text("ignored")
    context = collect_context(ca)
    names = set(context.files)
    assert {DOCKERFILE, "agent-entrypoint.sh", SETTINGS, f"{CERTS_DIR}/corp.crt"} <= names
    assert f"{CERTS_DIR}/notes.txt" not in names
    assert context.files["agent-entrypoint.sh"][1] == 0o755
    assert context.files[SETTINGS][0] == (REPO / ".claude" / "settings.json").read_bytes()
    with pytest.raises(ImageBuildError, match="AGENTKIT_EXTRA_CA_DIR"):
        collect_context(tmp_path / "missing")


def test_context_tar_is_deterministic_and_complete(tmp_path: Path) -> None:
    context = collect_context()
    first, second = context.tar(), collect_context().tar()
    assert first == second
    out = tmp_path / "x"
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        tar.extractall(out, filter="data")
    assert members["agent-entrypoint.sh"].mode == 0o755
    assert members[CERTS_DIR].isdir()
    assert (out / DOCKERFILE).read_bytes() == (REPO / "docker" / DOCKERFILE).read_bytes()


def test_hash_is_stable_and_changes_with_each_input(tmp_path: Path) -> None:
    src = _sources(tmp_path, "FROM scratch\n")
    args = {"BASE_IMAGE": "a"}
    base = inputs_hash(collect_context(sources=src), args)
    assert base == inputs_hash(collect_context(sources=src), dict(args))
    assert len(base) == 64

    seen = {base}

    def changed(context: BuildContext, buildargs: Mapping[str, str]) -> None:
        digest = inputs_hash(context, buildargs)
        assert digest not in seen
        seen.add(digest)

    changed(collect_context(sources=src), {"BASE_IMAGE": "b"})
    changed(collect_context(sources=src), {"BASE_IMAGE": "a", "CLAUDE_CODE_VERSION": "1"})
    (src.docker_dir / DOCKERFILE).write_text("FROM scratch\nRUN true\n")
    changed(collect_context(sources=src), args)
    src.settings_file.write_text('{"permissions": {}}')
    changed(collect_context(sources=src), args)
    (src.docker_dir / "agent-entrypoint.sh").write_text("#!/bin/sh\nexec false\n")
    changed(collect_context(sources=src), args)
    ca = tmp_path / "ca"
    ca.mkdir()
    (ca / "one.crt").write_text("cert one")
    changed(collect_context(ca, sources=src), args)
    (ca / "one.crt").write_text("cert two")
    changed(collect_context(ca, sources=src), args)
    # Files that are not certificates do not count.
    before = inputs_hash(collect_context(ca, sources=src), args)
    (ca / "README").write_text("not a cert")
    assert inputs_hash(collect_context(ca, sources=src), args) == before


def test_build_args_from_settings() -> None:
    assert build_args(Settings(base_image=None)) == {}
    assert build_args(Settings(base_image="b:1"), {"X": "y"}) == {"BASE_IMAGE": "b:1", "X": "y"}


def test_dockerfile_pins_the_cli_and_documents_its_args() -> None:
    version = dockerfile_default("CLAUDE_CODE_VERSION")
    assert version is not None
    assert version.count(".") == 2
    assert dockerfile_default("BASE_IMAGE") == "node:20-slim"
    assert dockerfile_default("NOPE") is None


def test_settings_json_uses_real_keys() -> None:
    data = json.loads((REPO / ".claude" / "settings.json").read_text())
    perms = data["permissions"]
    assert perms["defaultMode"] == "bypassPermissions"
    assert isinstance(perms["allow"], list)
    assert isinstance(perms["deny"], list)
    assert any(".ssh" in rule for rule in perms["deny"])
    assert "autoApproval" not in data
    assert "behavior" not in json.dumps(data)


# --- real dockerd ---------------------------------------------------------------------------------


def _docker_available() -> bool:
    return Path(DOCKER_SOCKET).exists() and shutil.which("docker") is not None


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    require(_docker_available(), "dockerd (/var/run/docker.sock)")
    client = aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}")
    try:
        await client.version()
    except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        await client.close()
        require(False, f"dockerd answering on {DOCKER_SOCKET} ({exc})")
    yield client
    await client.close()


async def _has_image(docker: aiodocker.Docker, name: str) -> bool:
    try:
        await docker.images.inspect(name)
    except aiodocker.DockerError:
        return False
    return True


_agent_image: ImageInfo | None = None


@pytest.fixture
async def agent_image(docker: aiodocker.Docker) -> ImageInfo:
    """The real agent image; built only when the CI-built one does not match the inputs."""
    global _agent_image
    if _agent_image is None:
        require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
        _agent_image = await ensure_image(docker, _image_settings())
    return _agent_image


async def _run(
    docker: aiodocker.Docker,
    image: str,
    cmd: Sequence[str] | None = None,
    *,
    entrypoint: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    network_mode: str | None = None,
    timeout: float = 60,
) -> tuple[int, str, str]:
    """Run a container to completion; return (exit code, stdout, stderr)."""
    config: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        "Labels": {TEST_LABEL: "image"},
        "HostConfig": {"Init": True, **({"NetworkMode": network_mode} if network_mode else {})},
        "AttachStdin": False,
        "OpenStdin": False,
    }
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    container = await docker.containers.create(
        config, name=f"agentkit-test-image-{uuid.uuid4().hex[:8]}"
    )
    try:
        await container.start()
        result = await container.wait(timeout=timeout)
        stdout = "".join(await container.log(stdout=True, stderr=False))
        stderr = "".join(await container.log(stdout=False, stderr=True))
        return int(result["StatusCode"]), stdout, stderr
    finally:
        await container.delete(force=True)


async def _sh(docker: aiodocker.Docker, image: str, script: str) -> str:
    code, out, err = await _run(docker, image, ["-c", script], entrypoint=["/bin/sh"])
    assert code == 0, f"exit {code}: {err}{out}"
    return out


@pytest.mark.docker
@pytest.mark.image
async def test_agent_image_matches_current_inputs(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    expected = inputs_hash(
        await asyncio.to_thread(collect_context, _host_ca_dir()), build_args(_image_settings())
    )
    assert agent_image.inputs_hash == expected
    data = await docker.images.inspect(agent_image.tag)
    assert data["Config"]["Labels"][INPUTS_HASH_LABEL] == expected
    assert data["Config"]["User"] == "1001:1001"
    assert data["Config"]["WorkingDir"] == "/workspace"
    assert data["Config"]["Entrypoint"] == ["/usr/local/bin/agent-entrypoint"]
    env = dict(item.split("=", 1) for item in data["Config"]["Env"])
    for key in (
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "DISABLE_ERROR_REPORTING",
    ):
        assert env[key] == "1"
    assert int(env["CLAUDE_CODE_MAX_RETRIES"]) >= 0
    assert int(env["API_TIMEOUT_MS"]) > 0
    # A second ensure with the same inputs does not build.
    again = await ensure_image(docker, _image_settings())
    assert again.built is False
    assert again.id == agent_image.id


@pytest.mark.docker
@pytest.mark.image
async def test_claude_version_is_the_pinned_one(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    code, out, err = await _run(docker, agent_image.tag, ["--version"], entrypoint=["claude"])
    assert code == 0, err
    assert out.strip() == f"{dockerfile_default('CLAUDE_CODE_VERSION')} (Claude Code)"
    assert agent_image.claude_code_version == dockerfile_default("CLAUDE_CODE_VERSION")


@pytest.mark.docker
@pytest.mark.image
async def test_runs_as_claude_1001_with_settings_and_tools(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    out = await _sh(
        docker,
        agent_image.tag,
        'id -u; id -un; echo "$HOME"; pwd; stat -c %u /workspace; '
        "cat /etc/claude-code/managed-settings.json; echo; echo ---; "
        "cat ~/.claude/settings.json; stat -c '%U:%G %a' /etc/claude-code/managed-settings.json "
        "/etc/claude-code ~/.claude/settings.json; echo ---; "
        "for t in git python3 jq node npm curl wget ssh gcc make; do command -v $t; done; "
        "ls /usr/local/lib/node_modules/@anthropic-ai/",
    )
    head, _, rest = out.partition("---\n")
    user, _, tools = rest.partition("---\n")
    lines = head.splitlines()
    assert lines[:5] == ["1001", "claude", "/home/claude", "/workspace", "1001"]
    # the shipped settings are managed settings: root-owned, read-only for the agent
    settings = json.loads("\n".join(lines[5:]))
    assert settings == json.loads((REPO / ".claude" / "settings.json").read_text())
    user_lines = user.splitlines()
    assert json.loads(user_lines[0]) == {}  # the agent's own file starts empty
    assert user_lines[1:] == ["root:root 644", "root:root 755", "claude:claude 644"]
    assert settings["permissions"]["defaultMode"] == "bypassPermissions"
    found = tools.splitlines()
    for tool in ("git", "python3", "jq", "node", "npm", "curl", "wget", "ssh", "gcc", "make"):
        assert any(line.endswith(f"/{tool}") for line in found), f"{tool} missing: {found}"
    # Only the glibc native package for this architecture: no musl variant, no wrapper package.
    packages = [line for line in found if line.startswith("claude-code")]
    assert len(packages) == 1
    assert "musl" not in packages[0]


@pytest.mark.docker
@pytest.mark.image
async def test_the_agent_image_holds_exactly_the_extra_certificates_it_was_built_with(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    """The host's extra CA files where it has them (none on a clean machine), each trusted."""
    ca_dir = _host_ca_dir()
    names = sorted(p.name for p in ca_dir.glob("*.crt")) if ca_dir else []
    script = (
        'echo "$NODE_EXTRA_CA_CERTS $SSL_CERT_FILE"; '
        "for f in /usr/local/share/ca-certificates/agentkit/*.crt; do "
        '  [ -e "$f" ] && openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt "$f";'
        " done; true"
    )
    out = await _sh(docker, agent_image.tag, script)
    lines = out.splitlines()
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    assert lines[0] == f"{bundle} {bundle}"
    assert all(line.endswith(": OK") for line in lines[1:]), lines
    assert sorted(line.split("/")[-1].removesuffix(": OK") for line in lines[1:]) == names


def _certificates(folder: Path) -> dict[str, Path]:
    """Two CAs (one to trust, one not) and a localhost server certificate from each."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    out: dict[str, Path] = {}

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    for label in ("trusted", "stranger"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"agentkit test {label} CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        for name, data in (
            (f"{label}-ca.crt", ca.public_bytes(serialization.Encoding.PEM)),
            (f"{label}-server.crt", server.public_bytes(serialization.Encoding.PEM)),
            (f"{label}-server.key", pem_key(server_key)),
        ):
            out[name] = folder / name
            out[name].write_bytes(data)
    return out


@contextlib.asynccontextmanager
async def _https_server(cert: Path, key: Path) -> AsyncIterator[int]:
    """A local HTTPS server answering ``GET /ping`` with ``pong``; yields its port."""
    import ssl

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


#: the agent Dockerfile up to (not including) this step: tools, extra CAs and the TLS settings
_CLAUDE_STEP = "# 3. Claude Code"


@pytest.mark.docker
@pytest.mark.slow
async def test_extra_ca_files_make_node_and_curl_trust_a_tls_proxy(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    """Self-contained (no host CA files, no network): a CA made here goes into the build
    context's certs/; the image's steps up to its TLS settings are built from it (the same
    Dockerfile text, so the tools layer comes from the agent image's build cache); curl and node
    in that image then reach a local HTTPS server whose certificate that CA signed, and refuse
    one signed by a CA they were not given."""
    require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
    dockerfile = (REPO / "docker" / DOCKERFILE).read_text()
    assert _CLAUDE_STEP in dockerfile, "the Dockerfile's steps changed: update this test"
    certs = await asyncio.to_thread(_certificates, tmp_path)
    context = tmp_path / "context"
    (context / CERTS_DIR).mkdir(parents=True)
    (context / DOCKERFILE).write_text(dockerfile.split(_CLAUDE_STEP)[0])
    shutil.copy(certs["trusted-ca.crt"], context / CERTS_DIR / "proxy.crt")
    (context / CERTS_DIR / "README").write_text("not a certificate: dropped by the build")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(context, arcname=".")
    tag = f"agentkit-test-ca:{uuid.uuid4().hex[:8]}"
    try:
        archive.seek(0)
        log = [
            str(item.get("stream") or item.get("error") or "")
            async for item in docker.images.build(
                fileobj=archive,
                encoding="identity",
                tag=tag,
                path_dockerfile=DOCKERFILE,
                buildargs={"BASE_IMAGE": BASE_IMAGE},
                rm=True,
                forcerm=True,
                stream=True,
            )
        ]
        assert await _has_image(docker, tag), "".join(log)
        probe = (
            "ls /usr/local/share/ca-certificates/agentkit/; "
            "for port in $PORTS; do url=https://localhost:$port/ping; "
            'curl -sS -m 20 "$url" >/dev/null 2>&1; echo "curl $?"; '
            "node -e 'fetch(process.argv[1]).then(r => r.text())"
            '.then(t => console.log("node " + t))'
            '.catch(e => console.log("node " + (e.cause ? e.cause.code : e)))\' "$url"; done'
        )
        async with (
            _https_server(certs["trusted-server.crt"], certs["trusted-server.key"]) as good,
            _https_server(certs["stranger-server.crt"], certs["stranger-server.key"]) as bad,
        ):
            code, out, err = await _run(
                docker,
                tag,
                ["-c", probe],
                entrypoint=["/bin/sh"],
                env={"PORTS": f"{good} {bad}"},
                network_mode="host",
            )
    finally:
        await _remove_image(docker, tag)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "proxy.crt"  # only the certificate was kept
    assert lines[1:3] == ["curl 0", "node pong"]  # the CA given at build time is trusted
    assert lines[3] == "curl 60"  # curl: peer certificate cannot be authenticated
    assert lines[4].startswith("node "), lines
    assert lines[4] != "node pong", lines  # node refuses it too


# --- the entrypoint, against a tiny local Messages API stand-in -----------------------------------


class _Api:
    """Records Messages API requests; answers 400 (not retried) or hangs."""

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        if self.hang:
            await asyncio.sleep(120)
        return web.json_response(
            {"type": "error", "error": {"type": "invalid_request_error", "message": "scripted"}},
            status=400,
        )

    async def _other(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def __aenter__(self) -> _Api:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._other)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def env(self) -> dict[str, str]:
        return {
            "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _prompt_texts(body: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(b.get("text", "") for b in content if isinstance(b, dict))
    return texts


HOSTILE_TASK = "--help; $(touch /tmp/pwned) `id` \"'\n\t\\ ünïcødé * ?"


@pytest.mark.docker
@pytest.mark.image
async def test_entrypoint_passes_the_task_byte_exact_and_streams_json(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    async with _Api() as api:
        code, out, err = await _run(
            docker,
            agent_image.tag,
            env={**api.env(), "AGENTKIT_TASK": HOSTILE_TASK},
            network_mode="host",
        )
    events = _events(out)
    init = next(e for e in events if e.get("type") == "system" and e.get("subtype") == "init")
    assert init["permissionMode"] == "bypassPermissions"
    assert init["cwd"] == "/workspace"
    result = events[-1]
    assert result["type"] == "result", err
    assert result["is_error"] is True
    assert api.bodies, "claude never called the API"
    assert HOSTILE_TASK in _prompt_texts(api.bodies[0])
    assert code == 1, err  # claude's own status for an errored run, passed through


@pytest.mark.docker
@pytest.mark.image
async def test_entrypoint_reads_the_task_from_a_file(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    # The file must exist inside the container: /etc/debian_version holds e.g. "12.12".
    async with _Api() as api:
        _, out, _ = await _run(
            docker,
            agent_image.tag,
            env={
                **api.env(),
                "AGENTKIT_TASK_FILE": "/etc/debian_version",
                "AGENTKIT_TASK": "ignored",
            },
            network_mode="host",
        )
    texts = _prompt_texts(api.bodies[0])
    assert "ignored" not in texts
    assert any(re.fullmatch(r"1\d\.\d+", t) for t in texts), texts
    assert _events(out)[-1]["type"] == "result"


@pytest.mark.docker
@pytest.mark.image
async def test_entrypoint_refuses_bad_input(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    code, _, err = await _run(docker, agent_image.tag)
    assert code == 2
    assert "no task" in err
    code, _, err = await _run(
        docker, agent_image.tag, env={"AGENTKIT_TASK": "x", "AGENTKIT_DEADLINE": "soon"}
    )
    assert code == 2
    assert "AGENTKIT_DEADLINE" in err
    code, _, err = await _run(  # a leading zero would read as octal in sh arithmetic
        docker, agent_image.tag, env={"AGENTKIT_TASK": "x", "AGENTKIT_DEADLINE": "0999999999"}
    )
    assert code == 2
    assert "AGENTKIT_DEADLINE" in err
    code, _, err = await _run(
        docker, agent_image.tag, env={"AGENTKIT_TASK": "x", "AGENTKIT_MAX_TURNS": "1; rm -rf /"}
    )
    assert code == 2
    assert "AGENTKIT_MAX_TURNS" in err
    code, _, err = await _run(
        docker, agent_image.tag, env={"AGENTKIT_TASK": "x", "AGENTKIT_DEADLINE": "1000"}
    )
    assert code == 124
    assert "deadline" in err


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.slow
async def test_entrypoint_enforces_the_deadline_inside_the_container(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    async with _Api(hang=True) as api:
        deadline = int(time.time()) + 8
        code, _, _ = await _run(
            docker,
            agent_image.tag,
            env={**api.env(), "AGENTKIT_TASK": "hang", "AGENTKIT_DEADLINE": str(deadline)},
            network_mode="host",
            timeout=60,
        )
    assert api.bodies, "claude never reached the API"
    # `timeout` exits 124 when SIGTERM at the deadline ended claude; had it needed the SIGKILL
    # 10 s later, the status would be 137
    assert code == 124


# --- building through the Engine API -------------------------------------------------------------


async def _remove_image(docker: aiodocker.Docker, name: str) -> None:
    with contextlib.suppress(aiodocker.DockerError):
        await docker.images.delete(name, force=True)


@pytest.mark.docker
async def test_broken_dockerfile_reports_the_failing_step(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
    src = _sources(
        tmp_path,
        f"FROM {BASE_IMAGE}\nRUN echo fine\nRUN echo about-to-fail-7f3a && false\nRUN echo never\n",
    )
    tag = f"agentkit-test-broken:{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    builder = ImageBuilder(docker, Settings(image=tag), sources=src, progress=lines.append)
    try:
        with pytest.raises(ImageBuildError) as info:
            await builder.ensure()
    finally:
        await _remove_image(docker, tag)
    error = info.value
    assert re.search(r"Step 3/\d+ : RUN echo about-to-fail-7f3a && false", str(error))
    assert "returned a non-zero code: 1" in str(error)
    assert "about-to-fail-7f3a" in error.log.splitlines()[1:]  # the step's own output
    assert "fine" not in error.log.splitlines()  # only the failing step
    assert any(line.startswith("Step 2/") for line in lines)  # progress was streamed
    assert not await _has_image(docker, tag)


@pytest.mark.docker
async def test_unknown_instruction_is_an_image_build_error(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    src = _sources(tmp_path, f"FROM {BASE_IMAGE}\nFROBNICATE now\n")
    tag = f"agentkit-test-broken:{uuid.uuid4().hex[:8]}"
    with pytest.raises(ImageBuildError, match=r"(?i)frobnicate"):
        await ImageBuilder(docker, Settings(image=tag), sources=src).ensure()


@pytest.mark.docker
async def test_builds_only_when_inputs_change(docker: aiodocker.Docker, tmp_path: Path) -> None:
    require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
    src = _sources(
        tmp_path,
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY claude-settings.json /s.json\n"
        "COPY certs/ /certs/\n",
        settings_json='{"v": 1}',
    )
    tag = f"agentkit-test-tiny:{uuid.uuid4().hex[:8]}"
    settings = Settings(image=tag, base_image=BASE_IMAGE, extra_ca_dir=None)
    seen: list[str] = []

    async def progress(line: str) -> None:  # async callbacks are awaited
        await asyncio.sleep(0)
        seen.append(line)

    try:
        first = await ImageBuilder(docker, settings, sources=src, progress=progress).ensure()
        assert first.built is True
        assert any(line.startswith("Successfully tagged") for line in seen)
        data = await docker.images.inspect(tag)
        assert data["Config"]["Labels"][INPUTS_HASH_LABEL] == first.inputs_hash

        second = await ImageBuilder(docker, settings, sources=src).ensure()
        assert second.built is False
        assert second.id == first.id

        # Two concurrent ensure() calls after a change: one build, the other finds it fresh.
        src.settings_file.write_text('{"v": 2}')
        third, fourth = await asyncio.gather(
            ImageBuilder(docker, settings, sources=src).ensure(),
            ImageBuilder(docker, settings, sources=src).ensure(),
        )
        assert sorted([third.built, fourth.built]) == [False, True]
        assert third.id == fourth.id != first.id
        assert third.inputs_hash != first.inputs_hash

        forced = await ImageBuilder(docker, settings, sources=src).build()
        assert forced.built is True
        assert forced.inputs_hash == third.inputs_hash
    finally:
        await _remove_image(docker, tag)


# --- settings.json in force: the real CLI, scripted turns -----------------------------------------


@pytest.mark.docker
@pytest.mark.image
async def test_settings_deny_rules_hold_under_bypass_permissions(
    docker: aiodocker.Docker, agent_image: ImageInfo
) -> None:
    """Full autonomy, except what settings.json denies: reading ~/.ssh and dumping the env."""
    from agentkit.testing import ScriptedAnthropicServer
    from agentkit.testing import replies as reply
    from agentkit.testing.scripts import ClaudeCodeScript

    script = ClaudeCodeScript(
        [
            reply.tool_use("Read", {"file_path": "/home/claude/.ssh/id_test"}),
            reply.tool_use("Bash", {"command": "printenv", "description": "dump env"}),
            reply.tool_use("Bash", {"command": "echo allowed-$((6*7))", "description": "echo"}),
            reply.text("Done."),
        ]
    )
    async with ScriptedAnthropicServer(script) as server:
        setup = (
            "mkdir -p ~/.ssh && echo SECRET-KEY-MATERIAL > ~/.ssh/id_test && "
            "exec /usr/local/bin/agent-entrypoint"
        )
        code, out, err = await _run(
            docker,
            agent_image.tag,
            ["-c", setup],
            entrypoint=["/bin/sh"],
            env={
                "ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
                "ANTHROPIC_BASE_URL": server.url,
                "CLAUDE_CODE_MAX_RETRIES": "0",
                "AGENTKIT_TASK": "probe the permissions",
                "AGENTKIT_SECRET_PROBE": "ENV-SECRET-VALUE",
            },
            network_mode="host",
            timeout=120,
        )
    assert code == 0, err
    assert script.remaining == 0, out[-2000:]
    results = [req.tool_results()[0] for req in script.main_requests[1:]]
    read, env, echo = (json.dumps(r.get("content")) for r in results)
    assert results[0].get("is_error") is True
    assert "SECRET-KEY-MATERIAL" not in read
    assert "denied" in read
    assert results[1].get("is_error") is True
    assert "ENV-SECRET-VALUE" not in env
    assert "denied" in env
    assert "allowed-42" in echo
    assert not results[2].get("is_error")
    assert "SECRET-KEY-MATERIAL" not in out
    assert "ENV-SECRET-VALUE" not in out


async def test_unreachable_engine_is_runtime_unavailable(tmp_path: Path) -> None:
    client = aiodocker.Docker(url=f"unix://{tmp_path}/no-docker.sock")
    try:
        with pytest.raises(RuntimeUnavailable, match="not reachable"):
            await ensure_image(client, Settings(image="agentkit-test-none:x"))
    finally:
        await client.close()


@pytest.mark.docker
async def test_tls_trust_failure_gets_a_hint_and_clean_lines(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
    src = _sources(
        tmp_path,
        f"FROM {BASE_IMAGE}\nRUN echo 'npm ERR! code SELF_SIGNED_CERT_IN_CHAIN' >&2 && false\n",
    )
    tag = f"agentkit-test-broken:{uuid.uuid4().hex[:8]}"
    with pytest.raises(ImageBuildError) as info:
        await ImageBuilder(docker, Settings(image=tag), sources=src).ensure()
    assert "AGENTKIT_EXTRA_CA_DIR" in str(info.value)
    # stderr arrives colored from the engine; the log keeps the text only
    assert "npm ERR! code SELF_SIGNED_CERT_IN_CHAIN" in info.value.log.splitlines()
    assert "\x1b" not in info.value.log


@pytest.mark.docker
async def test_a_failing_progress_callback_is_not_blamed_on_docker(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    require(await _has_image(docker, BASE_IMAGE), f"base image {BASE_IMAGE}")
    src = _sources(tmp_path, f"FROM {BASE_IMAGE}\nRUN echo one\n")

    def progress(line: str) -> None:
        if line.startswith("Step 2/"):
            raise BrokenPipeError(32, "Broken pipe")  # e.g. stdout piped into `head`

    tag = f"agentkit-test-tiny:{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(BrokenPipeError):
            await ImageBuilder(docker, Settings(image=tag), sources=src, progress=progress).ensure()
    finally:
        await _remove_image(docker, tag)
