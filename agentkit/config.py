"""Settings, read from the environment and an optional ``.env`` file.

Every setting is documented in ``docs/configuration.md``. Names follow ``AGENTKIT_*``; the
seed project's names (``HETZNER_SERVER_IP``, ``HETZNER_SSH_USER``) are accepted as aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentkit.errors import ConfigError
from agentkit.gateway.egress import DEFAULT_ALLOW

#: The controlling model used when AGENTKIT_MODEL is unset.
DEFAULT_MODEL = "claude-sonnet-5-5"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """All agentkit settings. Construct directly to override, e.g. ``Settings(host=None)``."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- where agents run ---------------------------------------------------------------
    host: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_HOST", "HETZNER_SERVER_IP"),
        description="SSH host that runs Docker. Unset: the local machine.",
    )
    ssh_user: str = Field(
        default="root", validation_alias=_env("AGENTKIT_SSH_USER", "HETZNER_SSH_USER")
    )
    ssh_port: int = Field(default=22, validation_alias=_env("AGENTKIT_SSH_PORT"))
    ssh_key: Path | None = Field(default=None, validation_alias=_env("AGENTKIT_SSH_KEY"))
    known_hosts: Path | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_KNOWN_HOSTS"),
        description="known_hosts file used to verify the host key. Default: ~/.ssh/known_hosts.",
    )
    ssh_trust_on_first_use: bool = Field(
        default=False, validation_alias=_env("AGENTKIT_SSH_TRUST_ON_FIRST_USE")
    )
    ssh_connect_timeout: float = Field(
        default=15.0, validation_alias=_env("AGENTKIT_SSH_CONNECT_TIMEOUT")
    )
    ssh_keepalive_interval: float = Field(
        default=15.0, validation_alias=_env("AGENTKIT_SSH_KEEPALIVE_INTERVAL")
    )
    docker_socket: str = Field(
        default="/var/run/docker.sock", validation_alias=_env("AGENTKIT_DOCKER_SOCKET")
    )
    runtime: Literal["docker", "swarm"] = Field(
        default="docker", validation_alias=_env("AGENTKIT_RUNTIME")
    )
    swarm_node: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_SWARM_NODE"),
    )
    swarm_registry: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_SWARM_REGISTRY"),
    )

    # --- model ----------------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_BASE_URL")
    )
    model: str = Field(default=DEFAULT_MODEL, validation_alias=_env("AGENTKIT_MODEL"))
    max_tokens: int = Field(default=4096, validation_alias=_env("AGENTKIT_MAX_TOKENS"))
    max_turns: int = Field(default=30, validation_alias=_env("AGENTKIT_MAX_TURNS"))
    max_retries: int = Field(default=4, validation_alias=_env("AGENTKIT_MAX_RETRIES"))
    tool_result_max_bytes: int = Field(
        default=16_384, validation_alias=_env("AGENTKIT_TOOL_RESULT_MAX_BYTES")
    )

    # --- GitHub -------------------------------------------------------------------------
    github_token: SecretStr | None = Field(
        default=None, validation_alias=_env("GITHUB_TOKEN", "GH_TOKEN")
    )
    github_api_url: str = Field(
        default="https://api.github.com", validation_alias=_env("AGENTKIT_GITHUB_API_URL")
    )
    github_url: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_GITHUB_URL"),
        description=(
            "Web/git base URL of GitHub (https://github.com, https://ghe.example.com). The git "
            "token is only ever sent to this origin; owner/name clone shorthand expands here. "
            "Unset: derived from AGENTKIT_GITHUB_API_URL."
        ),
    )
    github_owner: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_GITHUB_OWNER"),
        description="Organisation to create repositories in. Unset: the token's user.",
    )
    git_author_name: str = Field(
        default="agentkit", validation_alias=_env("AGENTKIT_GIT_AUTHOR_NAME")
    )
    git_author_email: str = Field(
        default="agentkit@localhost", validation_alias=_env("AGENTKIT_GIT_AUTHOR_EMAIL")
    )
    git_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["public"],
        validation_alias=_env("AGENTKIT_GIT_ALLOW"),
        description=(
            "Where clone_repo may fetch from (comma separated): 'public' (https on port 443 to "
            "hosts that resolve only to public addresses), host names, '*.domain', host:port, "
            "IP addresses or CIDR ranges, or '*' for anywhere. The GitHub origin "
            "(AGENTKIT_GITHUB_URL) is always allowed."
        ),
    )
    git_ssh_host_keys: bool = Field(
        default=False,
        validation_alias=_env("AGENTKIT_GIT_SSH_HOST_KEYS"),
        description=(
            "Let ssh clones (git@host:owner/repo) use the agent host's own SSH keys and agent. "
            "Off: ssh URLs are refused; use https (the token from GITHUB_TOKEN)."
        ),
    )
    git_sandbox_memory: str = Field(
        default="1g",
        validation_alias=_env("AGENTKIT_GIT_SANDBOX_MEMORY"),
        description="Memory limit of the short-lived container git runs in for workspace tools.",
    )
    git_sandbox_timeout: float = Field(
        default=300.0,
        validation_alias=_env("AGENTKIT_GIT_SANDBOX_TIMEOUT"),
        description="Seconds one git sandbox may run before it is killed.",
    )
    git_bundle_max: str = Field(
        default="2g",
        validation_alias=_env("AGENTKIT_GIT_BUNDLE_MAX"),
        description="Largest git bundle push_workspace accepts from a workspace's sandbox.",
    )
    git_host_memory: str = Field(
        default="2g",
        validation_alias=_env("AGENTKIT_GIT_HOST_MEMORY"),
        description=(
            "Heap limit (RLIMIT_DATA, via prlimit) of every git process agentkit runs on the host "
            "(mirrors: clone, bundle fetch, push). A pack from a workspace or a remote can declare "
            "objects of any size; this keeps one from exhausting the host. '0': no limit."
        ),
    )

    # --- host layout and containers -------------------------------------------------------
    root: str = Field(default="/opt/agentflow", validation_alias=_env("AGENTKIT_ROOT"))
    image: str = Field(
        default="agentflow-claude-code:latest", validation_alias=_env("AGENTKIT_IMAGE")
    )
    base_image: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_BASE_IMAGE"),
        description="BASE_IMAGE build argument for the agent image. Unset: the Dockerfile's.",
    )
    extra_ca_dir: Path | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_EXTRA_CA_DIR"),
        description="Folder of extra CA certificates (*.crt, PEM) trusted inside the agent image.",
    )
    container_network: str | None = Field(
        default=None, validation_alias=_env("AGENTKIT_CONTAINER_NETWORK")
    )
    container_memory: str = Field(default="4g", validation_alias=_env("AGENTKIT_CONTAINER_MEMORY"))
    container_cpus: float = Field(default=2.0, validation_alias=_env("AGENTKIT_CONTAINER_CPUS"))
    container_pids: int = Field(default=200, validation_alias=_env("AGENTKIT_CONTAINER_PIDS"))
    container_nofile: str = Field(
        default="8192",
        pattern=r"^\s*[0-9]{1,9}\s*(:\s*[0-9]{1,9}\s*)?$",
        validation_alias=_env("AGENTKIT_CONTAINER_NOFILE"),
        description="Open-file limit per agent process: SOFT or SOFT:HARD (hard >= soft).",
    )
    spawn_concurrency: int = Field(
        default=16,
        ge=1,
        validation_alias=_env("AGENTKIT_SPAWN_CONCURRENCY"),
        description="Spawns creating and starting containers at once; more wait (paced).",
    )
    run_retention: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_RUN_RETENTION"),
        description="Keep finished run records this long and/or this many, e.g. '30d,5000'.",
    )
    # --- sessions (agentkit/containers/sessions.py) ------------------------------------------
    session_hold: float = Field(default=1.0, ge=0, validation_alias=_env("AGENTKIT_SESSION_HOLD"))
    approval_timeout: float = Field(
        default=300.0, gt=0, validation_alias=_env("AGENTKIT_APPROVAL_TIMEOUT")
    )
    stall_timeout: float = Field(
        default=600.0, ge=0, validation_alias=_env("AGENTKIT_STALL_TIMEOUT")
    )
    stall_action: Literal["notify", "stop"] = Field(
        default="notify", validation_alias=_env("AGENTKIT_STALL_ACTION")
    )
    session_max_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, validation_alias=_env("AGENTKIT_SESSION_MAX_BYTES")
    )
    container_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["ANTHROPIC_BASE_URL"],
        validation_alias=_env("AGENTKIT_CONTAINER_ENV"),
        description="Host variables passed into agent containers (comma separated).",
    )

    # --- gateway, costs, budgets, egress ---------------------------------------------------
    gateway: bool = Field(
        default=True,
        validation_alias=_env("AGENTKIT_GATEWAY"),
        description=(
            "Run agents behind the gateway (per-run tokens instead of the key, metering, "
            "budgets, egress allowlist). Only with the Docker runtime."
        ),
    )
    gateway_image: str = Field(
        default="agentkit-gateway:latest", validation_alias=_env("AGENTKIT_GATEWAY_IMAGE")
    )
    gateway_extra_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("AGENTKIT_GATEWAY_EXTRA_HOSTS"),
        description="host:ip entries added to the gateway's /etc/hosts (comma separated).",
    )
    gateway_server_tools: bool = Field(
        default=False,
        validation_alias=_env("AGENTKIT_GATEWAY_SERVER_TOOLS"),
        description=(
            "Let agents' requests use the model API's server-side tools (web search/fetch, "
            "code execution, MCP connector, URL sources); these reach past the egress allowlist."
        ),
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("AGENTKIT_MAX_COST_USD"),
        description="Default per-agent budget in US dollars (spawn's max_cost_usd). Unset: none.",
    )
    daily_budget_usd: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("AGENTKIT_DAILY_BUDGET_USD"),
        description="Fleet budget per UTC day in US dollars, over all agents. Unset: none.",
    )
    ledger_retention_days: int = Field(
        default=90,
        ge=0,
        validation_alias=_env("AGENTKIT_LEDGER_RETENTION_DAYS"),
        description=(
            "Days the gateway keeps per-request ledger rows; older ones are folded into daily "
            "aggregates per run, workspace and model. 0: keep every row."
        ),
    )
    pricing: str | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_PRICING"),
        description="JSON price overrides, USD per million tokens by model prefix.",
    )
    egress_allow: str = Field(
        default=DEFAULT_ALLOW,
        validation_alias=_env("AGENTKIT_EGRESS_ALLOW"),
        description="Hosts agents may reach through the gateway's proxy (comma separated).",
    )
    agent_transport: Literal["socket", "network"] = Field(
        default="socket",
        validation_alias=_env("AGENTKIT_AGENT_TRANSPORT"),
        description=(
            "How agents reach the gateway on the Docker runtime: socket (no network at all; "
            "the run's model API and proxy are unix sockets mounted into it) or network (one "
            "internal network per run). The Swarm runtime always uses its overlay."
        ),
    )
    agent_subnet_pool: str = Field(
        default="10.213.0.0/16",
        validation_alias=_env("AGENTKIT_AGENT_SUBNET_POOL"),
        description="IPv4 range the per-run internal networks (one /29 each) are taken from.",
    )
    agent_network_spares: int = Field(
        default=16,
        ge=0,
        le=1024,
        validation_alias=_env("AGENTKIT_AGENT_NETWORK_SPARES"),
        description="Per-run networks each controller keeps made ahead, the gateway on them.",
    )

    # --- adapters -------------------------------------------------------------------------
    discord_webhook_url: SecretStr | None = Field(
        default=None, validation_alias=_env("DISCORD_WEBHOOK_URL")
    )
    discord_bot_token: SecretStr | None = Field(
        default=None, validation_alias=_env("DISCORD_BOT_TOKEN")
    )
    discord_allowed_users: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias=_env("AGENTKIT_DISCORD_ALLOWED_USERS")
    )
    discord_allowed_roles: Annotated[list[int], NoDecode] = Field(
        default_factory=list, validation_alias=_env("AGENTKIT_DISCORD_ALLOWED_ROLES")
    )
    discord_channels: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("AGENTKIT_DISCORD_CHANNELS"),
        description="Channel ids where the bot answers every message (elsewhere: mention or DM).",
    )
    discord_approval_timeout: float = Field(
        default=300.0,
        validation_alias=_env("AGENTKIT_DISCORD_APPROVAL_TIMEOUT"),
        description="Seconds to wait for an approval of a destructive tool before declining it.",
    )
    elevenlabs_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("ELEVENLABS_API_KEY"),
        description="ElevenLabs API key for the voice adapter (private agents need it).",
    )
    elevenlabs_agent_id: str | None = Field(
        default=None,
        validation_alias=_env("ELEVENLABS_AGENT_ID"),
        description="ElevenLabs conversational-AI agent id for the voice adapter.",
    )
    voice_max_chars: int = Field(
        default=300,
        validation_alias=_env("AGENTKIT_VOICE_MAX_CHARS"),
        description="Longest tool answer (characters) spoken by the voice adapter.",
    )

    # --- HTTP API (agentkit serve) ---------------------------------------------------------
    api_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("AGENTKIT_API_TOKEN"),
        description=(
            "Bearer token every `agentkit serve` route but /healthz requires. Unset: serve "
            "refuses to start unless --insecure-localhost."
        ),
    )
    serve_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        validation_alias=_env("AGENTKIT_SERVE_MAX_BODY_BYTES"),
        description="Largest request body `agentkit serve` accepts (bytes); larger is 413.",
    )

    @field_validator(
        "container_env_passthrough",
        "git_allow",
        "gateway_extra_hosts",
        "discord_allowed_users",
        "discord_allowed_roles",
        "discord_channels",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @property
    def workspaces_root(self) -> str:
        return f"{self.root.rstrip('/')}/workspaces"

    @property
    def runs_root(self) -> str:
        return f"{self.root.rstrip('/')}/runs"

    @property
    def mirrors_root(self) -> str:
        """Bare mirrors agentkit owns (pushes and clones go through them)."""
        return f"{self.root.rstrip('/')}/mirrors"

    @property
    def state_root(self) -> str:
        """agentkit's own trusted state (the workspace registry, sandbox exchange folders)."""
        return f"{self.root.rstrip('/')}/state"

    @property
    def is_remote(self) -> bool:
        return bool(self.host)

    def require_api_key(self) -> str:
        """Return the Anthropic API key or raise a one-line actionable :class:`ConfigError`."""
        if self.anthropic_api_key is None or not self.anthropic_api_key.get_secret_value():
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set: export it or put it in .env "
                "(see docs/configuration.md)"
            )
        return self.anthropic_api_key.get_secret_value()

    def secrets(self) -> list[str]:
        """Every secret value configured, for redaction."""
        out: list[str] = []
        for value in (
            self.anthropic_api_key,
            self.github_token,
            self.discord_webhook_url,
            self.discord_bot_token,
            self.elevenlabs_api_key,
            self.api_token,
        ):
            if value is not None and value.get_secret_value():
                out.append(value.get_secret_value())
        return out


def load_settings(**overrides: object) -> Settings:
    """``Settings(**overrides)``, turning validation problems into one readable ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid settings ({problems}); see docs/configuration.md") from None
