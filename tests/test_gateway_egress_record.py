"""Refused egress is recorded within bounds (agentkit.gateway.egress_record): per run the first
MAX_ROWS_PER_RUN refusals and one row saying the rest are only counted, a bounded queue that
drops and counts its overflow, written in batches - with the real ledger, and end to end with
an agent flooding the real squid in the real gateway container."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from agentkit.containers.service import AgentService
from agentkit.executors.local import LocalExecutor
from agentkit.gateway.egress_record import (
    CAPPED,
    MAX_QUEUED,
    MAX_ROWS_PER_RUN,
    EgressRecorder,
    EgressRow,
)
from agentkit.gateway.host import gateway_names
from agentkit.gateway.ledger import AsyncLedger
from tests import test_gateway_e2e as e2e
from tests.test_gateway_e2e import _exec, _inspect, _settings
from tests.test_gateway_egress import _wait_until

gateway_image = e2e.gateway_image
gateway_cleanup = e2e.gateway_cleanup


def row(run_id: str | None, n: int) -> EgressRow:
    return EgressRow(
        time.time(), run_id, "10.0.0.2", "GET", f"http://refused-{n}.test/", "TCP_DENIED/403"
    )


class Background:
    """Runs the recorder's writes as tasks and waits for them (what the gateway's own
    ``background``/``drain`` do)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.add(asyncio.ensure_future(coro))

    async def drain(self) -> None:
        while self.tasks:
            task = self.tasks.pop()
            await task


def egress_rows(path: Path) -> list[tuple[str | None, str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(r[0], r[1]) for r in db.execute("SELECT run_id, target FROM egress ORDER BY id")]
    finally:
        db.close()


async def test_refusals_past_a_runs_cap_are_counted_not_recorded(tmp_path: Path) -> None:
    ledger = AsyncLedger(str(tmp_path / "ledger.sqlite"))
    await ledger.open()
    background = Background()
    recorder = EgressRecorder(ledger, background)
    try:
        for n in range(5_000):
            recorder.offer(row("flood", n))
            if n < 3:
                recorder.offer(row("quiet", n))
    finally:
        await background.drain()
        await ledger.close()
    rows = egress_rows(tmp_path / "ledger.sqlite")
    flood = [target for run, target in rows if run == "flood"]
    assert len(flood) == MAX_ROWS_PER_RUN + 1
    assert flood[-1] == CAPPED
    assert flood[:3] == [f"http://refused-{n}.test/" for n in range(3)]  # the first ones, in order
    assert recorder.unrecorded == {"flood": 5_000 - MAX_ROWS_PER_RUN - 1}
    assert [t for run, t in rows if run == "quiet"] == [
        f"http://refused-{n}.test/" for n in range(3)
    ]


async def test_a_full_queue_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    ledger = AsyncLedger(str(tmp_path / "ledger.sqlite"))
    await ledger.open()
    background = Background()
    recorder = EgressRecorder(ledger, background)
    try:
        # one refusal each from many runs, offered faster than any write (no await between)
        for n in range(MAX_QUEUED + 500):
            recorder.offer(row(f"run-{n}", n))
        assert recorder.overflow == 500
    finally:
        await background.drain()
        await ledger.close()
    assert len(egress_rows(tmp_path / "ledger.sqlite")) == MAX_QUEUED


FLOOD = r"""
import base64, os, socket, sys
login = os.environ["HTTPS_PROXY"].split("//", 1)[1].rsplit("@", 1)
auth = base64.b64encode(login[0].encode()).decode()
host = login[1].split(":")[0]
total, sent, answered = int(sys.argv[1]), 0, 0
s = socket.create_connection((host, 3128))
while sent < total:
    batch = b"".join(
        b"GET http://refused-%d.test/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic %s\r\n\r\n"
        % (sent + i, auth.encode()) for i in range(50))
    s.sendall(batch)
    sent += 50
    got = 0
    while got < 50:
        chunk = s.recv(65536)
        if not chunk:
            s = socket.create_connection((host, 3128))
            break
        got += chunk.count(b"HTTP/1.1 ")
    answered += got
print("FLOOD", sent, answered)
"""


@pytest.mark.docker
@pytest.mark.image
@pytest.mark.slow
@pytest.mark.usefixtures("gateway_cleanup")
async def test_an_agent_flooding_refused_egress_gets_bounded_rows_and_the_gateway_stays_up(
    agent_image: str, gateway_image: str, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path / "root", agent_image, anthropic_api_key="sk-ant-unused", egress_allow=""
    )
    gw_name, _, _ = gateway_names(settings.root)
    ledger = Path(settings.root) / "gateway" / "ledger.sqlite"
    async with LocalExecutor() as executor, AgentService(executor, settings) as agents:
        flooder = await agents.spawn("flood", "flood", 300_000, entrypoint=["sleep", "300"])
        started = (await _inspect(gw_name))["State"]["StartedAt"]
        out = await _exec(flooder.id, ["python3", "-c", FLOOD, "3000"], user="1001")
        assert "FLOOD 3000" in out, out

        async def check() -> bool:
            return (flooder.id, CAPPED) in egress_rows(ledger)

        await _wait_until(check, "the flood's cap row in the ledger")
        mine = [t for run, t in egress_rows(ledger) if run == flooder.id]
        assert len(mine) == MAX_ROWS_PER_RUN + 1  # not one row per refusal
        state = (await _inspect(gw_name))["State"]
        assert state["StartedAt"] == started  # the gateway was never restarted
        assert not state["OOMKilled"]
