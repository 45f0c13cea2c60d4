"""The agent gateway: the only way out for agent containers.

Agents live on an internal Docker network whose only other member is the gateway container.
The gateway holds the real Anthropic key (agents get a per-run token), meters every model
request into a SQLite ledger, enforces per-run and fleet budgets, and runs the egress allowlist
proxy (squid). See docs/gateway.md.

In-container modules (standard library + aiohttp, copied into the gateway image):
:mod:`.server`, :mod:`.proxy`, :mod:`.admin`, :mod:`.squid`, :mod:`.ledger`, :mod:`.budgets`,
:mod:`.metering`, :mod:`.pricing`, :mod:`.egress`. Controller-side modules:
:mod:`.image` (build), :mod:`.host` (ensure network + container), :mod:`.client` (admin API),
:mod:`.agents` (what a run gets: token, env, network), :mod:`.costs` (reports).

This file is copied into the image too: it imports nothing.
"""
