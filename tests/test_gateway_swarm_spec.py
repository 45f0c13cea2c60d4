"""The gateway's swarm service spec, without an engine: what it holds and what it must not."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentkit.config import Settings
from agentkit.errors import ConfigError
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.swarm_host import (
    CONFIG_LABEL,
    SPEC_LABEL,
    SwarmGatewayHost,
    config_secret_name,
    swarm_hosts,
)

NODE = "taaertjqeacfp749cvileo1n0"


def _host(**kw: Any) -> SwarmGatewayHost:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        host=None,
        root="/srv/agentkit",
        runtime="swarm",
        anthropic_api_key="sk-ant-spec-secret",
        **kw,
    )
    # the spec is built without the engine: no client is needed for it
    return SwarmGatewayHost(LocalExecutor(), settings, None, node_id=NODE)  # type: ignore[arg-type]


def test_the_service_spec_names_the_secret_and_never_holds_the_key() -> None:
    host = _host(gateway_extra_hosts=["mirror.test:10.1.2.3"])
    spec = host._spec("sha256:abc", "secretid", "agentkit-gateway-x-0123")
    assert "sk-ant-spec-secret" not in json.dumps(spec)
    task = spec["TaskTemplate"]
    container = task["ContainerSpec"]
    assert container["Env"] == []
    assert container["Image"] == "sha256:abc"  # the ensured image itself, not a tag that moves
    assert container["Secrets"] == [
        {
            "SecretID": "secretid",
            "SecretName": "agentkit-gateway-x-0123",
            "File": {
                "Name": "/etc/agentkit-gateway/config.json",
                "UID": "0",
                "GID": "0",
                "Mode": 0o400,
            },
        }
    ]
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["Command"][:3] == ["setpriv", "--no-new-privs", "--"]
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/srv/agentkit/gateway", "Target": "/var/lib/agentkit-gateway"}
    ]
    assert container["Hosts"] == ["10.1.2.3 mirror.test"]
    assert task["Placement"]["Constraints"] == [f"node.id=={NODE}"]
    assert task["Networks"] == [
        {"Target": host.network, "Aliases": ["gateway"]},
        {"Target": "bridge"},
    ]
    assert task["RestartPolicy"]["Condition"] == "any"
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["UpdateConfig"]["Order"] == "stop-first"  # never two gateways on one ledger
    assert spec["EndpointSpec"] == {"Mode": "dnsrr"}
    assert spec["Labels"]["agentkit.root"] == "/srv/agentkit"
    assert spec["Labels"][CONFIG_LABEL] == "agentkit-gateway-x-0123"


def test_any_change_of_the_spec_changes_its_hash_label() -> None:
    def label(host: SwarmGatewayHost, secret: str = "s-1") -> str:
        return str(host._spec("sha256:abc", "id", secret)["Labels"][SPEC_LABEL])

    base = label(_host())
    assert base == label(_host())
    assert base != label(_host(), "s-2")  # a new config secret
    assert base != label(_host(gateway_extra_hosts=["m.test:192.0.2.9"]))
    assert base != label(_host(container_network="outward"))


def test_the_secret_name_follows_the_config_content() -> None:
    a = config_secret_name("agentkit-gateway-x", b'{"api_key": "one"}')
    assert a == config_secret_name("agentkit-gateway-x", b'{"api_key": "one"}')
    assert a != config_secret_name("agentkit-gateway-x", b'{"api_key": "two"}')
    assert a.startswith("agentkit-gateway-x-")
    assert len(a) <= 64  # the engine's limit for secret names


def test_extra_hosts_become_host_lines_and_bad_entries_are_refused() -> None:
    assert swarm_hosts(["a.test:192.0.2.1", "b.test:192.0.2.2"]) == [
        "192.0.2.1 a.test",
        "192.0.2.2 b.test",
    ]
    with pytest.raises(ConfigError, match="name:ip"):
        swarm_hosts(["no-address"])


def test_the_gateway_needs_a_network_with_a_way_out() -> None:
    with pytest.raises(ConfigError, match="AGENTKIT_CONTAINER_NETWORK"):
        _host(container_network="none")._spec("sha256:abc", "id", "name")
