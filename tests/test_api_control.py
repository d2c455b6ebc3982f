"""Steering executions over HTTP: signals, suspend and resume, graceful and forced cancel, and
the audit log, through the real ASGI app."""

# The `api` fixture is imported from test_api, so every test argument named `api` "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.test_api import HELLO, Api, api  # noqa: F401
from tests.test_api_workflows import assert_error, execution, pointers, put, started
from tests.test_control import APPROVAL, COUNTER
from tests.test_fanout import STORES


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


# the audit log -------------------------------------------------------------------------------


async def logs(api: Api, execution_id: str, **params: Any) -> Any:
    r = await api.client.get(
        f"/api/v1/executions/{execution_id}/logs", params=params, headers=api.auth()
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_audit_log_records_state_changes_and_who_did_what(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    await post(api, f"{execution_id}/signals/approval", json={"approved": True, "by": "ada"})
    await api.idle()
    items = (await logs(api, execution_id))["items"]
    messages = [e["message"] for e in items]
    assert messages == [
        "execution running",
        "execution waiting_on_signal",
        "signal approval received",
        "execution running",
        "execution completed",
    ]
    assert [e["id"] for e in items] == sorted(e["id"] for e in items)
    signal = items[2]
    assert (signal["level"], signal["kind"], signal["task"]) == ("notice", "signal", "approve")
    assert signal["actor"] is not None
    assert items[1]["data"] == {"from": "RUNNING", "to": "WAITING_ON_SIGNAL"}

    notice = (await logs(api, execution_id, level="notice"))["items"]
    assert [e["message"] for e in notice] == ["signal approval received"]
    assert (await logs(api, execution_id, task="approve"))["items"] == [signal]
    first = await logs(api, execution_id, limit=3)
    rest = await logs(api, execution_id, after=first["next_after"])
    assert [e["id"] for e in first["items"] + rest["items"]] == [e["id"] for e in items]
    assert rest["next_after"] is None


async def test_log_level_at_start_sets_what_is_kept(api: Api) -> None:
    await put(api, APPROVAL)
    r = await api.client.post(
        "/api/v1/workflows/approval/executions",
        json={"log_level": "loud"},
        headers=api.auth(),
    )
    assert "/log_level" in pointers(r)
    assert_error(r, 422)
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []

    execution_id = await started(api, "approval", log_level="debug")
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["log_level"] == "debug"
    messages = [e["message"] for e in (await logs(api, execution_id))["items"]]
    assert messages[:3] == ["task prepare started", "execution running", "task prepare completed"]

    quiet = await started(api, "approval", log_level="error")
    await api.idle()
    assert (await logs(api, quiet))["items"] == []


async def test_bad_log_queries_are_refused(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    path = f"/api/v1/executions/{execution_id}"
    for params in ({"level": "chatty"}, {"after": "-1"}, {"limit": "0"}):
        assert_error(await api.client.get(f"{path}/logs", params=params, headers=api.auth()), 422)
    r = await api.client.get(f"{path}/events", params={"level": "x"}, headers=api.auth())
    assert_error(r, 422)
    assert_error(await api.client.get("/api/v1/executions/ghost/logs", headers=api.auth()), 404)
    assert_error(await api.client.get("/api/v1/executions/ghost/events", headers=api.auth()), 404)
    assert_error(await api.client.get(f"{path}/events"), 401)


async def test_events_stream_the_log_and_end_with_the_execution(api: Api) -> None:
    execution_id = await waiting_for_approval(api)
    await post(api, f"{execution_id}/signals/approval", json={"approved": True, "by": "ada"})
    await api.idle()
    items = (await logs(api, execution_id))["items"]
    r = await api.client.get(
        f"/api/v1/executions/{execution_id}/events",
        headers={**api.auth(), "Last-Event-ID": str(items[0]["id"])},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    fields = [dict(line.split(": ", 1) for line in b.splitlines()) for b in blocks]
    assert [f.get("event") for f in fields] == ["state", "signal", "state", "state", "end"]
    assert [f.get("id") for f in fields[:-1]] == [str(e["id"]) for e in items[1:]]
    assert json.loads(fields[-2]["data"])["message"] == "execution completed"


# a start put off until later -----------------------------------------------------------------


async def test_a_scheduled_start_waits_and_reads_its_time_in_expressions(api: Api) -> None:
    wf = {
        "name": "later",
        "tasks": {"t": {"action": "echo", "with": {"at": "${{ execution.scheduled_at }}"}}},
        "outputs": {"at": "${{ tasks.t.output.at }}"},
    }
    await put(api, wf)
    r = await api.client.post(
        "/api/v1/workflows/later/executions",
        json={"scheduled_at": "2026-01-01T00:00:00"},
        headers=api.auth(),
    )
    assert pointers(r) == {"/scheduled_at": "give a time zone (e.g. Z or +02:00)"}
    when = datetime.now(UTC) + timedelta(seconds=0.3)
    execution_id = await started(api, "later", scheduled_at=when.isoformat())
    await api.runtime.engine.tick()
    detail = await execution(api, execution_id)
    assert (detail["state"], detail["tasks"]) == ("WAITING", [])
    assert datetime.fromisoformat(detail["scheduled_at"]) == when
    await api.idle()
    detail = await execution(api, execution_id)
    assert detail["state"] == "COMPLETED"
    assert datetime.fromisoformat(detail["outputs"]["at"]) == when
    assert datetime.fromisoformat(detail["tasks"][0]["started_at"]) >= when


# idempotent starts and dry runs ----------------------------------------------------------------


async def keyed(api: Api, key: str, **body: Any) -> Any:
    headers = {**api.auth(), "Idempotency-Key": key}
    body.setdefault("inputs", {"who": "ada"})
    return await api.client.post("/api/v1/workflows/hello/executions", json=body, headers=headers)


async def test_an_idempotency_key_gives_the_same_execution_for_the_same_request(
    api: Api,
) -> None:
    await put(api, HELLO)
    first = await keyed(api, "order-42")
    assert first.status_code == 202, first.text
    again = await keyed(api, "order-42")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    other = await keyed(api, "order-42", inputs={"who": "bob"})
    assert "order-42" in assert_error(other, 409)["description"]
    assert_error(await keyed(api, "bad key with spaces"), 422)
    assert_error(await keyed(api, "x" * 256), 422)
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert [e["id"] for e in r.json()["items"]] == [first.json()["id"]]
    fresh = await keyed(api, "order-43")
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


async def test_an_idempotency_key_expires_after_its_retention(api: Api) -> None:
    await put(api, HELLO)
    api.runtime.service.idempotency_retention = 0.0
    first = await keyed(api, "once")
    second = await keyed(api, "once", inputs={"who": "bob"})
    assert second.status_code == 202, second.text
    assert second.json()["id"] != first.json()["id"]


async def test_a_dry_run_validates_and_plans_without_storing(api: Api) -> None:
    await put(api, HELLO)
    path = "/api/v1/workflows/hello/executions"
    r = await api.client.post(
        path,
        params={"dry_run": "true"},
        json={"inputs": {"who": "ada", "secret": "hush"}, "log_level": "debug"},
        headers=api.auth(),
    )
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["dry_run"] is True
    assert plan["inputs"] == {"who": "ada", "times": 2, "secret": "******"}
    assert plan["log_level"] == "debug"
    assert [(t["id"], t["needs"], t["level"]) for t in plan["tasks"]] == [
        ("greet", [], 0),
        ("again", ["greet"], 1),
    ]
    assert "hush" not in r.text
    r = await api.client.post(
        path, params={"dry_run": "true"}, json={"inputs": {"times": "x"}}, headers=api.auth()
    )
    assert set(pointers(r)) == {"/inputs/times", "/inputs/who"}
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []


# retry and rerun -------------------------------------------------------------------------------


async def test_retry_and_rerun_over_http(api: Api) -> None:
    await put(api, COUNTER)
    await put(api, APPROVAL)
    execution_id = await waiting_for_approval(api)
    assert_error(await post(api, f"{execution_id}/retry"), 409)  # not failed or cancelled
    await post(api, f"{execution_id}/cancel", params={"force": "true"})
    await api.idle()
    r = await post(api, f"{execution_id}/retry")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "RUNNING"
    await api.idle()
    detail = await execution(api, execution_id)
    assert (detail["state"], detail["round"]) == ("WAITING_ON_SIGNAL", 1)
    assert [(t["task"], t["attempt"], t["round"], t["state"]) for t in detail["tasks"]] == [
        ("prepare", 1, 0, "COMPLETED"),
        ("approve", 1, 0, "CANCELED"),
        ("approve", 2, 1, "RUNNING"),
    ]
    assert_error(await post(api, "ghost/retry"), 404)

    original = await started(api, "counter", inputs={"n": 2})
    await api.idle()
    r = await post(api, f"{original}/rerun", json={"from_task": "c", "inputs": {"n": 3}})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/executions/{r.json()['id']}"
    await api.idle()
    rerun = await execution(api, r.json()["id"])
    assert (rerun["state"], rerun["outputs"], rerun["rerun_of"]) == (
        "COMPLETED",
        {"z": 40},
        original,
    )

    r = await post(api, f"{original}/rerun", json={"from_task": "x", "inputs": {"n": "y"}})
    assert set(pointers(r)) == {"/from_task", "/inputs/n"}
    assert_error(await post(api, f"{original}/rerun", json={}), 422)
    assert_error(await post(api, f"{execution_id}/rerun", json={"from_task": "pay"}), 409)


# callbacks -----------------------------------------------------------------------------------


async def test_a_callback_to_a_private_address_is_refused_at_start(api: Api) -> None:
    await put(api, HELLO)
    for url, why in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest", "169.254.169.254"),
        ("ftp://example.com/hook", "http"),
        ("http://localhost/hook", "localhost"),
    ]:
        r = await api.client.post(
            "/api/v1/workflows/hello/executions",
            json={"inputs": {"who": "ada"}, "callback": url},
            headers=api.auth(),
        )
        assert why in pointers(r)["/callback"], (url, r.text)
    r = await api.client.get("/api/v1/executions", headers=api.auth())
    assert r.json()["items"] == []

    execution_id = await started(api, callback="https://hooks.example.com/done")
    detail = await execution(api, execution_id)
    assert detail["callback"] == {
        "url": "https://hooks.example.com/done",
        "state": "pending",
        "attempts": 0,
        "next_at": None,
        "last_status": None,
        "last_error": None,
    }


# fan-out and stores ---------------------------------------------------------------------------


async def test_stores_and_fan_out_items_over_http(api: Api) -> None:
    await put(api, STORES)
    r = await api.client.post(
        "/api/v1/workflows/collect/executions",
        json={"stores": {"seen": "nope", "ghost": 1}},
        headers=api.auth(),
    )
    assert set(pointers(r)) == {"/stores/seen", "/stores/ghost"}
    execution_id = await started(api, "collect", stores={"seen": ["a", "b"]})
    await api.idle()
    path = f"/api/v1/executions/{execution_id}"
    r = await api.client.get(f"{path}/stores/seen", params={"limit": 2}, headers=api.auth())
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["type"], page["total"], page["items"], page["next_offset"]) == (
        "list",
        5,
        ["a", "b"],
        2,
    )
    r = await api.client.get(f"{path}/stores/seen", params={"offset": 2}, headers=api.auth())
    assert r.json()["items"] == [{"w": "apple"}, {"w": "fig"}, {"w": "kiwi"}]
    r = await api.client.get(f"{path}/stores/lengths", headers=api.auth())
    assert r.json()["items"][0] == {"key": "kiwi", "value": {"word": "kiwi", "n": 4}}
    assert_error(await api.client.get(f"{path}/stores/ghost", headers=api.auth()), 404)

    r = await api.client.get(f"{path}/tasks/measure/items", params={"limit": 2}, headers=api.auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(t["task"], t["item"], t["state"]) for t in body["items"]] == [
        ("measure[0]", 0, "COMPLETED"),
        ("measure[1]", 1, "COMPLETED"),
    ]
    assert body["next_offset"] == 2
    assert_error(await api.client.get(f"{path}/tasks/done/items", headers=api.auth()), 404)
    detail = await execution(api, execution_id)
    assert [t["task"] for t in detail["tasks"]] == ["measure", "remember", "done"]


# definitions of the new features, through PUT ---------------------------------------------------


async def test_bad_schedules_fan_outs_stores_and_sub_workflows_are_refused_with_pointers(
    api: Api,
) -> None:
    bad = {
        "name": "bad",
        "stores": {"found": {"type": "map"}},
        "schedules": [{"name": "nightly", "cron": "0 25 * * *", "timezone": "Nowhere/City"}],
        "tasks": {
            "each": {"action": "echo", "for_each": "${{ 42"},
            "many": {"action": "echo", "for_each": "${{ [1] }}", "concurrency": 0},
            "call": {"action": "workflow", "with": {"workflow": "no such name!"}},
            "keep": {"action": "echo", "store": {"name": "found"}},
            "wait": {"action": "signal", "with": {"name": "go", "schema": {"type": "nope"}}},
        },
    }
    r = await put(api, bad)
    assert set(pointers(r)) >= {
        "/schedules/0/cron",
        "/schedules/0/timezone",
        "/tasks/each/for_each",
        "/tasks/many/concurrency",
        "/tasks/call/with/workflow",
        "/tasks/keep/store/key",
        "/tasks/wait/with/schema",
    }
    assert_error(r, 422)
    assert_error(await api.client.get("/api/v1/workflows/bad", headers=api.auth()), 404)


async def test_a_schedule_starts_executions_seen_over_http(api: Api) -> None:
    wf = {
        "name": "ticking",
        "parameters": {"who": {"type": "string", "required": True}},
        "schedules": [{"name": "minutely", "cron": "* * * * *", "inputs": {"who": "cron"}}],
        "tasks": {"hi": {"action": "echo", "with": {"who": "${{ params.who }}"}}},
    }
    r = await put(api, wf)
    assert r.status_code == 201, r.text
    scheduler = api.runtime.scheduler
    assert scheduler is not None
    later = datetime.now(UTC) + timedelta(minutes=2)
    started = await scheduler.tick(later)
    assert len(started) == 1
    await api.runtime.engine.tick()
    r = await api.client.get(
        "/api/v1/executions", params={"workflow": "ticking"}, headers=api.auth()
    )
    [item] = r.json()["items"]
    detail = await execution(api, item["id"])
    # the slot is a minute or two ahead of the real clock: the execution waits for it
    assert detail["state"] == "WAITING"
    slot = datetime.fromisoformat(detail["scheduled_at"])
    assert datetime.now(UTC) < slot <= later
    assert detail["inputs"] == {"who": "cron"}
    assert detail["name"].startswith("minutely-")
    assert detail["labels"] == {"execflow.schedule": "minutely"}
    assert await scheduler.tick(later) == []  # a slot starts once
