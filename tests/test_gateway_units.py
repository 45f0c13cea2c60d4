"""Pure parts of the gateway: prices, the SSE usage reader, budgets, the allowlist, reports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentkit.agent.events import Usage
from agentkit.gateway.budgets import RunEntry, Runs, day_start, token_sha256
from agentkit.gateway.costs import bar_plot, group_rows, parse_since
from agentkit.gateway.egress import (
    MAX_CONNECTIONS_PER_CLIENT,
    expand_allowlist,
    parse_access_line,
    squid_config,
)
from agentkit.gateway.metering import MAX_LINE, SSEUsage, usage_from_json
from agentkit.gateway.pricing import PriceTable, TokenCounts, parse_overrides
from agentkit.testing import reply

USAGE = reply.usage(
    input_tokens=1500,
    output_tokens=321,
    cache_creation_input_tokens=200,
    cache_read_input_tokens=9000,
)


def sse_bytes(answer: Any, model: str = "claude-sonnet-5-5") -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in answer.sse_events(model)
    )


def test_prices_longest_prefix_then_family_then_default() -> None:
    table = PriceTable()
    assert table.price("claude-opus-4-1-20250805").input == 15
    assert table.price("claude-opus-5-5").input == 5
    assert table.price("claude-sonnet-5-5").output == 15
    assert table.price("claude-3-5-haiku-latest").input == 0.8
    assert table.price("claude-haiku-4-5").input == 1
    assert table.price("something-else").input == 3
    tokens = TokenCounts(1_000_000, 1_000_000, 1_000_000, 1_000_000)
    assert table.cost("claude-sonnet-5-5", tokens) == pytest.approx(3 + 15 + 0.3 + 3.75)


def test_price_overrides_replace_and_add_with_clear_errors() -> None:
    table = PriceTable(parse_overrides('{"claude-sonnet-5": {"input": 2, "output": 10}}'))
    assert table.price("claude-sonnet-5-5").input == 2
    assert table.price("claude-sonnet-5-5").cache_read == pytest.approx(0.2)
    assert table.price("claude-sonnet-4-5").input == 3
    for bad in ("[1]", "{", '{"x": {"input": 1}}', '{"x": {"input": -1, "output": 1}}'):
        with pytest.raises(ValueError, match="AGENTKIT_PRICING"):
            parse_overrides(bad)


def test_sse_usage_reads_start_and_delta_in_any_chunking() -> None:
    raw = sse_bytes(reply.text("hello " * 50, usage=USAGE))
    for size in (1, 7, 64, len(raw)):
        meter = SSEUsage()
        for i in range(0, len(raw), size):
            meter.feed(raw[i : i + size])
        assert meter.tokens == TokenCounts.from_mapping(USAGE)
        assert meter.model == "claude-sonnet-5-5"
        assert meter.stopped


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=40))
def test_sse_usage_is_independent_of_chunk_boundaries(cuts: list[int]) -> None:
    raw = sse_bytes(reply.tool_use("Bash", {"command": "ls"}, usage=USAGE))
    meter, pos = SSEUsage(), 0
    for cut in cuts:
        meter.feed(raw[pos : pos + cut])
        pos += cut
    meter.feed(raw[pos:])
    assert meter.tokens == TokenCounts.from_mapping(USAGE)


def test_sse_usage_skips_over_long_lines_and_keeps_memory_bounded() -> None:
    meter = SSEUsage()
    meter.feed(b"event: content_block_delta\ndata: " + b"x" * (MAX_LINE * 3))
    assert len(meter._buf) <= MAX_LINE + 1
    meter.feed(b"\n\n" + sse_bytes(reply.text("ok", usage=USAGE)))
    assert meter.tokens == TokenCounts.from_mapping(USAGE)


def test_newer_delta_counts_win_and_errors_are_noted() -> None:
    meter = SSEUsage()
    meter.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m",'
        b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"input_tokens":7,'
        b'"output_tokens":30,"cache_read_input_tokens":2}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'
    )
    assert meter.tokens == TokenCounts(7, 30, 2, 0)
    assert meter.error == "overloaded_error"
    assert usage_from_json(b'{"model":"m","usage":{"input_tokens":3}}') == (
        TokenCounts(3, 0, 0, 0),
        "m",
    )
    assert usage_from_json(b"not json") == (TokenCounts(), None)


def test_budget_checks() -> None:
    runs = Runs(fleet_daily_usd=10.0)
    runs.set_day(day_start(1_000_000.0), 0.0)
    entry = RunEntry("r1", "/ws", max_cost_usd=1.0, expires=2_000_000.0)
    runs.add(token_sha256("tok"), entry)
    assert runs.lookup("tok") is entry
    assert runs.lookup("other") is None
    assert runs.check(entry, now=1_000_000.0) is None
    runs.add_cost(entry, 1.0, 1_000_000.0)
    refusal = runs.check(entry, now=1_000_000.0)
    assert refusal is not None
    assert refusal.budget
    assert refusal.status == 403
    assert "max_cost_usd" in refusal.message
    assert runs.check(entry, now=2_000_001.0) is not None  # expired beats everything
    fleet = RunEntry("r2", None, None, None)
    runs.add(token_sha256("t2"), fleet)
    runs.add_cost(fleet, 9.5, 1_000_000.0)
    assert runs.check(fleet, now=1_000_000.0) is not None  # 10.5 of 10 today
    assert runs.check(fleet, now=1_000_000.0 + 86_400) is None  # a new UTC day
    runs.end("r2")
    ended = runs.check(runs.lookup("t2"), now=1_000_000.0)
    assert ended is not None
    assert ended.status == 401


def test_allowlist_expansion_and_squid_config() -> None:
    allow = expand_allowlist(
        "git, npm, .example.com, *.corp.test, 203.0.113.7",
        git_url="https://ghe.internal.test",
        environ={"NPM_CONFIG_REGISTRY": "https://npm.mirror.test/repo/"},
    )
    assert allow == [
        "ghe.internal.test",
        "npm.mirror.test",
        ".example.com",
        ".corp.test",
        "203.0.113.7",
    ]
    assert len(expand_allowlist("pypi,debian", environ={})) == 4
    for bad in ("exa mple.com", "-bad.com", "a..b", "x" * 300, "http://x/"):
        with pytest.raises(ValueError, match="AGENTKIT_EGRESS_ALLOW"):
            expand_allowlist(bad, environ={})
    conf = squid_config(["a.test", ".a.test"], port=3128, log_port=3130, own_names=["gw"])
    assert "acl allowed dstdomain -n .a.test\n" in conf  # squid refuses a and .a together
    assert conf.rstrip().endswith("http_access deny all")
    assert "http_access deny gateway_self" in conf
    open_conf = squid_config(["*"], port=3128, log_port=3130)
    assert open_conf.index("deny private_dst") < open_conf.index("http_access allow all")
    line = parse_access_line("1764570000.123 172.20.0.3 - TCP_DENIED/403 CONNECT evil.test:443")
    assert line is not None
    assert line.refused
    assert (line.client, line.target) == ("172.20.0.3", "evil.test:443")
    assert parse_access_line("garbage") is None


def test_usage_carries_cost_and_adds_up() -> None:
    total = Usage()
    turn = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25)
    total.add(turn)
    total.add(turn)
    assert total.cost_usd == pytest.approx(0.5)
    assert total.tokens == TokenCounts(20, 10, 0, 0)


def test_cost_groups_plot_and_since() -> None:
    rows = [
        {
            "at": 86_400 * 2 + 5,
            "source": "agent",
            "run_id": "a",
            "workspace": "/w/one",
            "input_tokens": 10,
            "cost_usd": 1.0,
        },
        {
            "at": 86_400 * 2 + 9,
            "source": "agent",
            "run_id": "b",
            "workspace": "/w/two",
            "input_tokens": 5,
            "cost_usd": 3.0,
        },
        {"at": 86_400 * 3, "source": "controller", "run_id": None, "cost_usd": 0.5},
        {
            "at": 86_400 * 3,
            "source": "agent",
            "run_id": "b",
            "note": "refused: budget",
            "cost_usd": 0.0,
        },
    ]
    by_agent, total = group_rows(rows, "agent")
    assert [(g.key, g.cost_usd) for g in by_agent] == [("b", 3.0), ("a", 1.0), ("controller", 0.5)]
    assert total.requests == 3
    assert total.cost_usd == pytest.approx(4.5)
    by_day, _ = group_rows(rows, "day")
    assert [g.key for g in by_day] == ["1970-01-03", "1970-01-04"]
    by_ws, _ = group_rows(rows, "workspace")
    assert {g.key for g in by_ws} == {"one", "two", "controller"}
    plot = bar_plot(by_day, width=10)
    assert plot[0].split()[1] == "█" * 10
    assert plot[1].split()[1] == "█▎"  # 0.5 / 4.0 of 10 cells = 1.25 cells: one and 2/8
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1970-01-02") == 86_400
    assert parse_since(None) == 0.0
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday")


def _access_rules(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line.startswith("http_access ")]


def test_a_refused_name_is_never_resolved_by_squid() -> None:
    # squid resolves a name to evaluate a dst ACL: with an allowlist, the rules a refused name
    # meets before "deny all" must all be name/port/method based (no DNS exfiltration)
    conf = squid_config(["a.test", "203.0.113.7"], port=3128, log_port=3130, own_names=["gw"])
    dst_acls = {
        line.split()[1] for line in conf.splitlines() if line.startswith("acl ") and " dst " in line
    }
    rules = _access_rules(conf)
    assert rules[-1] == "http_access deny all"
    assert not any(set(rule.split()[2:]) & dst_acls for rule in rules)
    # with *, the listed names still go first, then private addresses are refused
    open_rules = _access_rules(squid_config(["*", "mirror.test"], port=3128, log_port=3130))
    assert open_rules.index("http_access allow allowed") < open_rules.index(
        "http_access deny private_dst"
    )
    assert open_rules[-1] == "http_access allow all"


def test_allowed_hosts_are_open_on_80_and_443_only_unless_a_port_is_listed() -> None:
    allow = expand_allowlist(
        "a.test, b.test:8443, git", git_url="https://git.test:3000/org", environ={}
    )
    assert allow == ["a.test", "b.test:8443", "git.test:3000"]
    assert expand_allowlist("git", git_url="https://github.com:443", environ={}) == ["github.com"]
    with pytest.raises(ValueError, match="bad port"):
        expand_allowlist("a.test:99999", environ={})
    rules = _access_rules(squid_config(allow, port=3128, log_port=3130))
    conf = squid_config(allow, port=3128, log_port=3130)
    assert "acl SSL_ports port 443" in conf
    assert "acl Safe_ports port 80 443" in conf
    deny_ports = rules.index("http_access deny !Safe_ports")
    assert rules.index("http_access deny CONNECT !SSL_ports") < deny_ports
    assert deny_ports < rules.index("http_access allow allowed")  # a.test: 80/443 only
    # b.test and git.test only on their own port, allowed before the port rules
    for i, (host, port) in enumerate([("b.test", 8443), ("git.test", 3000)]):
        assert f"acl allowed_host{i} dstdomain -n {host}" in conf
        assert f"acl allowed_port{i} port {port}" in conf
        assert rules.index(f"http_access allow allowed_host{i} allowed_port{i}") < deny_ports
    assert "acl allowed dstdomain -n a.test\n" in conf


def test_squid_bounds_connections_and_slow_requests_per_agent() -> None:
    conf = squid_config(["a.test"], port=3128, log_port=3130)
    assert f"client_ip_max_connections {MAX_CONNECTIONS_PER_CLIENT}\n" in conf
    assert "request_timeout 60 seconds\n" in conf


def test_squid_serves_only_the_agents_network_when_it_is_known() -> None:
    conf = squid_config(["a.test"], port=3128, log_port=3130, clients=["172.30.0.0/16"])
    assert "acl agents src 172.30.0.0/16\n" in conf
    assert _access_rules(conf)[0] == "http_access deny !agents"


def test_the_api_address_is_the_one_on_the_agents_network_or_none() -> None:
    from agentkit.gateway.addresses import address_in, interface_addresses

    mine = ["127.0.0.1", "172.17.0.3", "172.30.0.2"]
    assert address_in(["172.30.0.0/16"], mine) == "172.30.0.2"
    assert address_in(["fd00::/64", "172.17.0.0/16"], mine) == "172.17.0.3"
    for subnets in ([], ["10.9.0.0/24"], ["not a subnet"]):
        with pytest.raises(RuntimeError, match="rather than listen on every interface"):
            address_in(subnets, mine)
    assert "127.0.0.1" in interface_addresses()  # read from this machine's interfaces
    assert address_in(["127.0.0.0/8"]) == "127.0.0.1"


def test_squid_demands_the_runs_login_first_and_logs_only_the_user() -> None:
    helper = ["/usr/bin/python3", "-I", "-S", "/opt/x/proxy_auth.py", "/run/s/auth.sock"]
    conf = squid_config(
        ["a.test"], port=3128, log_port=3130, clients=["10.213.0.0/16"], auth_helper=helper
    )
    assert f"auth_param basic program {' '.join(helper)}\n" in conf
    # a checked login is not trusted for squid's default 2 hours: a dead run's token dies at once
    assert "auth_param basic credentialsttl 1 seconds\n" in conf
    rules = _access_rules(conf)
    assert rules[:2] == ["http_access deny !agents", "http_access deny !run_login"]
    logformat = next(line for line in conf.splitlines() if line.startswith("logformat "))
    assert " %un " in logformat  # the user name (the run id), never the password
    with pytest.raises(ValueError, match="white space"):
        squid_config(["a.test"], port=3128, log_port=3130, auth_helper=["/a b/helper"])


def test_access_lines_name_the_run_by_its_login_not_its_address() -> None:
    line = parse_access_line(
        "1764570000.123 10.213.0.3 claude-agent-1764570000000-abc123 TCP_DENIED/403 GET "
        "http://evil.test/x"
    )
    assert line is not None
    assert line.refused
    assert line.run_id == "claude-agent-1764570000000-abc123"
    # a refused login names nobody, whatever user name the client claimed
    claimed = parse_access_line(
        "1764570000.1 10.213.0.3 claude-agent-1764570000000-abc123 TCP_DENIED/407 GET http://x/"
    )
    assert claimed is not None
    assert claimed.refused
    assert claimed.run_id is None
    anonymous = parse_access_line("1764570000.1 10.213.0.3 - TCP_DENIED/407 CONNECT x:443")
    assert anonymous is not None
    assert anonymous.run_id is None
    odd = parse_access_line("1764570000.1 10.213.0.3 a%20b TCP_DENIED/403 GET http://x/")
    assert odd is not None
    assert odd.run_id is None


def test_a_proxy_login_is_the_live_token_of_the_run_it_names() -> None:
    runs = Runs()
    runs.add(token_sha256("tok-a"), RunEntry("run-a", None, None, expires=2_000.0))
    runs.add(token_sha256("tok-b"), RunEntry("run-b", None, None, expires=None))
    assert runs.login("run-a", "tok-a", now=1_000.0)
    assert not runs.login("run-b", "tok-a", now=1_000.0)  # another run's token
    assert not runs.login("run-a", "tok-x", now=1_000.0)
    assert not runs.login("run-a", "tok-a", now=3_000.0)  # expired with its deadline
    runs.end("run-b")
    assert not runs.login("run-b", "tok-b", now=1_000.0)  # its run ended


def test_run_subnets_are_taken_from_the_pool_around_what_is_used() -> None:
    import ipaddress

    from agentkit.errors import ConfigError
    from agentkit.gateway.run_networks import RUN_PREFIX, free_subnet, parse_pool

    pool = parse_pool("10.213.0.0/27")
    first = free_subnet(pool, ["172.17.0.0/16", "10.213.0.0/29"])
    assert str(first) == "10.213.0.8/29"
    assert str(free_subnet(pool, ["10.213.0.0/28"], skip=["10.213.0.16/29"])) == "10.213.0.24/29"
    assert free_subnet(pool, ["10.0.0.0/8"]) is None  # the whole pool is used by another network
    assert len(list(ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=RUN_PREFIX))) >= 200
    for bad in ("10.213.0.0/30", "fd00::/64", "10.213.0.1/16", "nonsense"):
        with pytest.raises(ConfigError, match="AGENTKIT_AGENT_SUBNET_POOL"):
            parse_pool(bad)
