"""An execution page's live parts: each comes back out of band, the keyed ones with a key
that changes only when what they show does."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import re

from tests.test_api import Api, api  # noqa: F401
from tests.test_console import sign_in, waiting_approval

PARTS = ("exec-head", "controls", "signals", "graph", "runs")


def keys(html: str) -> dict[str, str]:
    return dict(re.findall(r'<div id="([a-z-]+)" data-key="([^"]*)"', html))


async def test_the_live_parts_come_out_of_band_and_keep_their_keys(api: Api) -> None:
    execution_id = await waiting_approval(api)
    client = await sign_in(api)
    page = (await client.get(f"/console/executions/{execution_id}")).text
    assert "hx-swap-oob" not in page  # the first page holds the parts as they are
    first = (await client.get(f"/console/executions/{execution_id}/live")).text
    for part in PARTS:
        assert re.search(rf'<div id="{part}"[^>]* hx-swap-oob="true"', first), part
    assert "<html" not in first
    assert keys(first) == keys(page)
    assert keys(first)["signals"] == "approval/approve/1"
    # nothing changed: the same keys, so the browser keeps the forms as they are
    again = (await client.get(f"/console/executions/{execution_id}/live")).text
    assert keys(again) == keys(first)
    r = await api.client.post(
        f"/api/v1/executions/{execution_id}/signals/approval",
        json={"approved": True},
        headers=api.auth(),
    )
    assert r.is_success, r.text
    await api.idle()
    after = keys((await client.get(f"/console/executions/{execution_id}/live")).text)
    assert after["signals"] == "" and after["graph"] != keys(first)["graph"]
    assert after["controls"] != keys(first)["controls"]


async def test_the_counts_per_state_are_exact_for_live_states_and_recent_for_ended_ones(
    api: Api,
) -> None:
    waiting = await waiting_approval(api)
    r = await api.client.post(f"/api/v1/executions/{waiting}/cancel", json={}, headers=api.auth())
    assert r.is_success, r.text
    for _ in range(2):
        await api.client.post(
            "/api/v1/workflows/approval/executions", json={"inputs": {}}, headers=api.auth()
        )
    await api.idle()
    client = await sign_in(api)
    page = (await client.get("/console/executions", params={"workflow": "approval"})).text
    counts = dict(re.findall(r'class="state s-(\w+)"[^<]*</span> <b>(\d+)</b>', page))
    assert counts["WAITING_ON_SIGNAL"] == "2" and counts["CANCELED"] == "1", counts
    assert counts["RUNNING"] == "0" and counts["COMPLETED"] == "0", counts
    assert "counted over the last 24 h" in page
    other = (await client.get("/console/executions", params={"workflow": "none"})).text
    assert not re.search(r"</span> <b>[1-9]", other)
