"""The dashboard in a real browser (Playwright + Debian's Chromium) against a real server with a
real agent: an unauthenticated load is refused, the fleet table shows the running agent live,
its stream grows on the agent page, and stop works after a confirmation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import browser_page, chromium_available
from tests.serve_support import TOKEN, agent_server, chatty_script, spawn, wait_for
from tests.support import require

pytestmark = [
    pytest.mark.docker,
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.usefixtures("agent_cleanup"),
]


@pytest.fixture
def chromium() -> None:
    require(chromium_available(), "Chromium (/usr/bin/chromium, apt package chromium)")


@pytest.mark.usefixtures("chromium")
async def test_dashboard_shows_a_live_agent_its_stream_and_stops_it(
    agent_image: str, tmp_path: Path
) -> None:
    script = chatty_script(40, 0.7)  # runs for ~30 s unless stopped
    async with agent_server(tmp_path, agent_image, script) as (srv, _model), browser_page() as page:
        # unauthenticated: the shell asks for a token, shows no data, and the API says 401
        await page.goto(srv.url + "/")
        await page.wait_for_selector("#gate-form", state="visible")
        assert await page.is_hidden("#overview")
        await page.fill("#token", "not-the-token-at-all")
        await page.click("#gate-form button[type=submit]")
        await page.wait_for_selector("#gate-error", state="visible")
        assert "Refused" in await page.inner_text("#gate-error")
        assert await page.is_hidden("#overview")
        api = await page.goto(srv.url + "/v1/agents")
        assert api is not None
        assert api.status == 401
        assert "missing or wrong API token" in await page.inner_text("body")

        page.console_errors.clear()  # type: ignore[attr-defined]  # the 401s above were expected

        # with the token: the fleet table, live
        await page.goto(srv.url + "/")
        await page.fill("#token", TOKEN)
        await page.click("#gate-form button[type=submit]")
        await page.wait_for_selector("#overview", state="visible")
        await page.wait_for_selector("#live[data-state=live]")
        assert await page.is_visible("#fleet-empty")
        agent_id = await spawn(srv, "browser-ws")  # spawned outside the page: it must show up
        row = f'#fleet tr[data-id="{agent_id}"]'
        await page.wait_for_selector(f'{row}[data-state="running"]', timeout=120_000)
        assert "browser-ws" in await page.inner_text(row)
        await page.wait_for_function(
            "(sel) => Number(document.querySelector(sel).children[5].textContent) >= 1",
            arg=row,
            timeout=120_000,
        )  # turns counted live
        assert await page.inner_text("#stat-running") == "1"

        # the agent page: its stream grows as the agent works, tool calls folded
        await page.click(row)
        await page.wait_for_selector("#agent", state="visible")
        assert agent_id in await page.inner_text("#agent-id")
        await page.wait_for_function(
            "() => document.querySelectorAll('#stream .ev-tool').length >= 2"
        )
        before = await page.eval_on_selector_all("#stream > li", "items => items.length")
        await page.wait_for_function(
            "(n) => document.querySelectorAll('#stream > li').length > n + 1",
            arg=before,
            timeout=120_000,
        )
        folded = page.locator("#stream details.tool").first
        assert await folded.get_attribute("open") is None  # folded until clicked
        assert "echo step 0" in await folded.inner_text()
        await folded.locator("summary").click()
        await page.wait_for_selector("#stream details.tool[open] pre")

        # stop: cancel first (still running), then confirm
        await page.click("#stop")
        await page.wait_for_selector("#confirm[open]")
        await page.click("#confirm button[value=cancel]")
        await page.wait_for_selector("#confirm", state="hidden")
        async with srv.client() as client:
            assert (await client.get(f"/v1/agents/{agent_id}")).json()["state"] == "running"
        await page.click("#stop")
        await page.wait_for_selector("#confirm[open]")
        await page.click("#confirm-stop")
        await page.wait_for_selector('#agent-state[data-state="stopped"]', timeout=120_000)
        assert await page.is_hidden("#stop")
        async with srv.client() as client:
            assert (await client.get(f"/v1/agents/{agent_id}")).json()["state"] == "stopped"

        # back on the fleet page the row says stopped too
        await page.click("#crumbs a")
        await page.wait_for_selector(f'{row}[data-state="stopped"]', timeout=120_000)
        assert page.console_errors == []  # type: ignore[attr-defined]
        await wait_for(lambda: srv.state.streams.open <= 1, 30, "the agent page's stream to end")
