"""Steering executions over HTTP: signals, suspend and resume, graceful and forced cancel, and
the audit log, through the real ASGI app."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

from tests.test_api import Api, api  # noqa: F401
from tests.test_api_workflows import assert_error, execution, pointers, put, started
from tests.test_control import APPROVAL


async def post(api: Api, path: str, token: str | None = None, **kw: Any) -> Any:
    return await api.client.post(f"/api/v1/executions/{path}", headers=api.auth(token), **kw)


async def waiting_for_approval(api: Api) -> str:
    await put(api, APPROVAL)
    execution_id = await started(api, "approval")
    await api.idle()
    return execution_id


async def test_pending_signals_are_listed_with_their_schema_and_a_signal_completes_it(
    api: Api,
) -> None:
    execution_id = await waiting_for_approval(api)
    detail = await execution(api, execution_id)
    assert detail["state"] == "WAITING_ON_SIGNAL"
    [pending] = detail["pending_signals"]
    assert pending["name"] == "approval" and pending["task"] == "approve"
    assert pending["schema"]["properties"]["approved"] == {"type": "boolean"}
    assert pending["description"] == "Approve the payment"

    r = await post(api, f"{execution_id}/signals/approval", json={"approved": True, "by": "ada"})
    assert r.status_code == 202, r.text
    assert r.json()["id"] == execution_id
    await api.idle()
    detail = await execution(api, execution_id)
    assert (detail["state"], detail["outputs"]) == ("COMPLETED", {"approved_by": "ada"})
    assert detail["pending_signals"] == []


async def test_a_bad_payload_is_422_and_an_unawaited_signal_409_and_nothing_changes(
    api: Api,
) -> None:
    execution_id = await waiting_for_approval(api)
    r = await post(api, f"{execution_id}/signals/approval", json={"approved": "yes"})
    assert pointers(r) == {"/payload/approved": "'yes' is not of type 'boolean'"}
    assert_error(r, 422)
    r = await post(api, f"{execution_id}/signals/approval", content=b"{not json")
    assert_error(r, 422)
    r = await post(api, f"{execution_id}/signals/elsewhere", json={})
    assert "nothing waits for signal 'elsewhere'" in assert_error(r, 409)["description"]
    r = await post(api, "ghost/signals/approval", json={"approved": True})
    assert_error(r, 404)
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["state"] == "WAITING_ON_SIGNAL"
    assert [t["state"] for t in detail["tasks"] if t["task"] == "approve"] == ["RUNNING"]


async def test_suspend_and_resume(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    r = await post(api, f"{execution_id}/suspend")
    assert r.status_code == 202, r.text
    await api.idle()
    assert (await execution(api, execution_id))["state"] == "SUSPENDED"
    assert_error(await post(api, f"{execution_id}/suspend"), 409)

    await post(api, f"{execution_id}/signals/approval", json={"approved": True, "by": "x"})
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["state"] == "SUSPENDED"
    assert [t["task"] for t in detail["tasks"]] == ["prepare", "approve"]

    r = await post(api, f"{execution_id}/resume")
    assert r.status_code == 202, r.text
    await api.idle()
    assert (await execution(api, execution_id))["state"] == "COMPLETED"
    assert_error(await post(api, f"{execution_id}/resume"), 409)
    assert_error(await post(api, f"{execution_id}/suspend"), 409)
    assert_error(await post(api, "ghost/resume"), 404)


async def test_cancel_takes_force_and_a_grace_period(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    r = await post(api, f"{execution_id}/cancel", params={"grace": "-5"})
    assert_error(r, 422)
    r = await post(api, f"{execution_id}/cancel", params={"force": "maybe"})
    assert_error(r, 422)
    assert (await execution(api, execution_id))["cancel_requested"] is False

    r = await post(api, f"{execution_id}/cancel", params={"force": "true"})
    assert r.status_code == 202, r.text
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["state"] == "CANCELED"
    assert [t["state"] for t in detail["tasks"] if t["task"] == "approve"] == ["CANCELED"]


async def test_a_viewer_cannot_steer_an_execution(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    r = await api.client.post(
        "/api/v1/projects/default/tokens", json={"role": "viewer"}, headers=api.auth()
    )
    viewer = r.json()["token"]
    for path in ("suspend", "resume", "cancel", "signals/approval"):
        r = await post(api, f"{execution_id}/{path}", token=viewer, json={"approved": True})
        assert_error(r, 403)
    await api.idle()
    assert (await execution(api, execution_id))["state"] == "WAITING_ON_SIGNAL"
