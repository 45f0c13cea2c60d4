"""Settings: names, seed aliases, parsing, errors, and that every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.config import Settings, load_settings
from agentkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _env_names() -> list[str]:
    names: list[str] = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.extend(getattr(alias, "choices", []) or [])
    return [n for n in names if isinstance(n, str)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in _env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def test_defaults_are_local_executor(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.host is None
    assert not s.is_remote
    assert s.root == "/opt/agentflow"
    assert s.workspaces_root == "/opt/agentflow/workspaces"
    assert s.image == "agentflow-claude-code:latest"


def test_seed_aliases_are_accepted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HETZNER_SERVER_IP", "203.0.113.7")
    clean_env.setenv("HETZNER_SSH_USER", "deploy")
    clean_env.setenv("GH_TOKEN", "ghp_" + "x" * 30)
    s = Settings()
    assert s.host == "203.0.113.7"
    assert s.ssh_user == "deploy"
    assert s.github_token is not None
    assert s.github_token.get_secret_value() == "ghp_" + "x" * 30


def test_primary_name_wins_over_alias(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTKIT_HOST", "primary.example")
    clean_env.setenv("HETZNER_SERVER_IP", "alias.example")
    assert Settings().host == "primary.example"


def test_comma_separated_lists(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTKIT_CONTAINER_ENV", "ANTHROPIC_BASE_URL, HTTP_PROXY")
    clean_env.setenv("AGENTKIT_DISCORD_ALLOWED_USERS", "12,34")
    s = Settings()
    assert s.container_env_passthrough == ["ANTHROPIC_BASE_URL", "HTTP_PROXY"]
    assert s.discord_allowed_users == [12, 34]


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENTKIT_MODEL=claude-test\nAGENTKIT_SSH_PORT=2222\n")
    s = Settings()
    assert s.model == "claude-test"
    assert s.ssh_port == 2222


def test_missing_api_key_is_one_actionable_line(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        Settings().require_api_key()
    message = str(info.value)
    assert "ANTHROPIC_API_KEY" in message
    assert "\n" not in message


def test_invalid_value_becomes_config_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTKIT_SSH_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="AGENTKIT_SSH_PORT"):
        load_settings()


def test_secrets_are_listed_for_redaction(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    clean_env.setenv("GITHUB_TOKEN", "ghp_secret_value_123")
    assert set(Settings().secrets()) == {"sk-ant-secret-value", "ghp_secret_value_123"}


def test_every_setting_is_documented() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in _env_names() if f"`{name}`" not in reference]
    assert not missing, f"document these settings in docs/configuration.md: {missing}"


def _doc_default(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def test_documented_defaults_match_settings() -> None:
    """Every setting with a concrete default shows exactly that default in its table row."""
    rows: dict[str, str] = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            for name in cells[0].replace("`", "").split("/"):
                rows[name.strip()] = cells[1]
    wrong = []
    for field in Settings.model_fields.values():
        default = field.get_default(call_default_factory=True)
        if default is None or default == []:
            continue  # documented in words ("unset", "empty", the effective default)
        name = str(field.validation_alias.choices[0])  # type: ignore[union-attr]
        if f"`{_doc_default(default)}`" not in rows.get(name, ""):
            wrong.append(f"{name}: code {default!r}, docs {rows.get(name)!r}")
    assert not wrong, f"fix the defaults in docs/configuration.md: {wrong}"


def test_missing_or_empty_api_key_message_and_a_set_key(clean_env: pytest.MonkeyPatch) -> None:
    expected = (
        "ANTHROPIC_API_KEY is not set: export it or put it in .env (see docs/configuration.md)"
    )
    for settings in (Settings(), Settings(anthropic_api_key="")):
        with pytest.raises(ConfigError) as info:
            settings.require_api_key()
        assert str(info.value) == expected
    assert Settings(anthropic_api_key="sk-ant-x").require_api_key() == "sk-ant-x"


def test_every_invalid_value_is_named_in_one_message(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTKIT_SSH_PORT", "not-a-port")
    clean_env.setenv("AGENTKIT_CONTAINER_PIDS", "many")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid settings (AGENTKIT_SSH_PORT: Input should be a valid integer, unable to parse "
        "string as an integer; AGENTKIT_CONTAINER_PIDS: Input should be a valid integer, unable "
        "to parse string as an integer); see docs/configuration.md"
    )
    assert info.value.__cause__ is None  # pydantic's long report is not chained


def test_an_invalid_list_item_is_named_by_its_position(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTKIT_DISCORD_ALLOWED_USERS", "1,x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid settings (AGENTKIT_DISCORD_ALLOWED_USERS.1: Input should be a valid integer, "
        "unable to parse string as an integer); see docs/configuration.md"
    )


def test_the_folders_under_the_root(clean_env: pytest.MonkeyPatch) -> None:
    for root in ("/srv/agentkit", "/srv/agentkit/"):
        s = Settings(root=root)
        assert s.workspaces_root == "/srv/agentkit/workspaces"
        assert s.runs_root == "/srv/agentkit/runs"
        assert s.mirrors_root == "/srv/agentkit/mirrors"
        assert s.state_root == "/srv/agentkit/state"
    assert Settings(host="box").is_remote is True
    assert Settings(host="").is_remote is False
