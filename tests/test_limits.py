"""Limits: bodies, documents, workflows, fan-outs, inputs and start rates; each refusal is a
4xx that names what is over, and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from execflow.api import create_app
from execflow.clock import ManualClock
from execflow.limits import Limits, RateLimiter, limits_from_env, parse_size
from execflow.runtime import Runtime
from execflow.settings import Settings
from tests.test_api import Api
from tests.test_api_access import assert_error, new_token
from tests.test_api_control import waiting_for_approval

SMALL = Limits(
    max_body=64 * 1024,
    max_depth=8,
    max_tasks=20,
    max_items=5,
    max_inputs=1024,
    start_rate=1.0,
    start_burst=3,
)
FLAT = {
    "name": "flat",
    "parameters": {"x": {"type": "object"}, "n": {"type": "number"}, "s": {"type": "string"}},
    "tasks": {"a": {"action": "echo", "with": {"x": "${{ params.x }}"}}},
}


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path, sqlite_synchronous="OFF", node_id="lim", shutdown_grace=0, limits=SMALL
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    assert token is not None
    runtime.service.clock = ManualClock(datetime.now(UTC))
    async with runtime.running(loop=False):
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client, runtime, token)
            r = await client.put("/api/v1/workflows/flat", json=FLAT, headers=api.auth())
            assert r.status_code == 201, r.text
            yield api


def clock(api: Api) -> ManualClock:
    c = api.runtime.service.clock
    assert isinstance(c, ManualClock)
    return c


async def executions(api: Api) -> int:
    r = await api.client.get("/api/v1/executions", params={"limit": 100}, headers=api.auth())
    return len(r.json()["items"])


async def start(api: Api, body: bytes | dict[str, Any], **headers: str) -> httpx.Response:
    clock(api).advance(10)  # these tests are not about the rate
    h = {**api.auth(), "Content-Type": "application/json", **headers}
    if isinstance(body, dict):
        return await api.client.post("/api/v1/workflows/flat/executions", json=body, headers=h)
    return await api.client.post("/api/v1/workflows/flat/executions", content=body, headers=h)


# bodies ---------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_by_its_length_before_it_is_read(
    small: Api,
) -> None:
    r = await start(small, b'{"inputs": {"s": "' + b"a" * 70_000 + b'"}}')
    error = assert_error(r, 413)
    assert error["id"] == "too_large"
    assert error["details"] == [
        {"pointer": "", "reason": "at most 65536 bytes (EXECFLOW_MAX_BODY)"}
    ]
    assert await executions(small) == 0


async def test_a_streamed_body_is_cut_off_at_the_limit(small: Api) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"inputs": {"s": "'
        for _ in range(1_000):  # 1 MB on offer; no Content-Length
            sent += 1
            yield b"a" * 1000
        yield b'"}}'

    r = await small.client.post(
        "/api/v1/workflows/flat/executions",
        content=chunks(),
        headers={**small.auth(), "Content-Type": "application/json"},
    )
    assert_error(r, 413)
    assert "content-length" not in r.request.headers
    assert sent < 100  # reading stopped at the limit
    assert await executions(small) == 0


async def test_a_content_length_that_is_not_a_number_is_400(small: Api) -> None:
    r = await start(small, b"{}", **{"Content-Length": "lots"})
    assert assert_error(r, 400)["details"][0]["pointer"] == "header:Content-Length"


@pytest.mark.parametrize(
    ("body", "pointer", "reason"),
    [
        (
            b'{"inputs": {"x": ' + b"[" * 9 + b"]" * 9 + b"}}",
            "/inputs/x/0/0/0/0/0/0",
            "nested deeper than 8",
        ),
        (b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", None, "nested deeper than 8"),
        (b'{"inputs": {"s": "\xff\xfe"}}', "", "the body is not UTF-8 (byte 18)"),
        (b'{"inputs": {"s": "a\x00b"}}', "", "not JSON: Invalid control character"),
        (b'{"inputs": {"s": "a\\u0000b"}}', "/inputs/s", "contains a NUL character"),
        (b'{"inputs": {"a\\u0000": 1}}', "/inputs", "key contains a NUL character"),
        (b'{"inputs": {"s": "\\ud800"}}', "/inputs/s", "contains a lone surrogate"),
        (b'{"inputs": {"n": 1e400}}', "", "the number 1e400 is out of range"),
        (b'{"inputs": {"n": -1e400}}', "", "the number -1e400 is out of range"),
        (b'{"inputs": {"n": NaN}}', "", "NaN is not a JSON number"),
        (b'{"inputs": {"n": Infinity}}', "", "Infinity is not a JSON number"),
        (b'{"inputs": ', "", "not JSON: Expecting value"),
        (b"\xef\xbb\xbf{}", "", "not JSON: Unexpected UTF-8 BOM"),
    ],
)
async def test_malformed_json_is_422_naming_where_and_changes_nothing(
    small: Api, body: bytes, pointer: str | None, reason: str
) -> None:
    r = await start(small, body)
    error = assert_error(r, 422)
    [detail] = error["details"]
    assert reason in detail["reason"], detail
    if pointer is not None:
        assert detail["pointer"] == pointer
    assert await executions(small) == 0


async def test_a_document_within_the_depth_is_taken(small: Api) -> None:
    # {"inputs": {"x": {"a": [[[[[ ]]]]]}}} is 8 deep at its innermost list
    x: Any = []
    for _ in range(4):
        x = [x]
    r = await start(small, {"inputs": {"x": {"a": x}}})
    assert r.status_code == 202, r.text


# workflows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [21, 10_000])
async def test_a_workflow_with_too_many_tasks_is_refused(small: Api, count: int) -> None:
    tasks = {
        f"t{i}": {"action": "echo", **({"needs": [f"t{i - 1}"]} if i else {})} for i in range(count)
    }
    body = {"name": "big", "tasks": tasks}
    r = await small.client.put("/api/v1/workflows/big", json=body, headers=small.auth())
    error = assert_error(r, 413 if count == 10_000 else 422)
    if count == 21:
        assert error["details"] == [
            {"pointer": "/tasks", "reason": "21 tasks; at most 20 (EXECFLOW_MAX_TASKS)"}
        ]
    r = await small.client.get("/api/v1/workflows/big", headers=small.auth())
    assert r.status_code == 404


async def test_a_workflow_with_a_cycle_is_refused(small: Api) -> None:
    body = {
        "name": "loop",
        "tasks": {"a": {"action": "echo", "needs": ["b"]}, "b": {"action": "echo", "needs": ["a"]}},
    }
    r = await small.client.put("/api/v1/workflows/loop", json=body, headers=small.auth())
    error = assert_error(r, 422)
    assert error["details"][0]["pointer"].startswith("/tasks/")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "name: bomb\na: &a [x,x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "the document holds more than 1000000 values",
        ),
        ("name: deep\nx: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("name: deep\nx: " + "[" * 20 + "]" * 20, "nested deeper than 8"),
        ('name: nul\ndescription: "a\\0b"\n', "contains a NUL character"),
        ("name: inf\nx: .inf\n", "not a finite number"),
    ],
)
async def test_yaml_definitions_are_bounded_too(small: Api, text: str, reason: str) -> None:
    r = await small.client.put(
        "/api/v1/workflows/bomb",
        content=text.encode(),
        headers={**small.auth(), "Content-Type": "application/yaml"},
    )
    error = assert_error(r, 422)
    assert reason in error["description"] + str(error["details"]), error


async def test_a_fan_out_over_the_item_limit_fails_its_task(small: Api) -> None:
    body = {
        "name": "fan",
        "parameters": {"items": {"type": "array"}},
        "tasks": {"each": {"action": "echo", "for_each": "${{ params.items }}"}},
    }
    r = await small.client.put("/api/v1/workflows/fan", json=body, headers=small.auth())
    assert r.status_code == 201, r.text
    ids = []
    for items in ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]):
        clock(small).advance(10)
        r = await small.client.post(
            "/api/v1/workflows/fan/executions",
            json={"inputs": {"items": items}},
            headers=small.auth(),
        )
        ids.append(r.json()["id"])
    await small.idle()
    ok, over = [
        (await small.client.get(f"/api/v1/executions/{i}", headers=small.auth())).json()
        for i in ids
    ]
    assert ok["state"] == "COMPLETED"
    assert over["state"] == "FAILED"
    assert over["error"]["message"] == "6 items; at most 5 (EXECFLOW_MAX_ITEMS)"


# inputs ------------------------------------------------------------------------------------


async def test_inputs_over_the_limit_are_refused(small: Api) -> None:
    r = await start(small, {"inputs": {"s": "é" * 600}})  # 1,200 bytes of UTF-8
    error = assert_error(r, 422)
    assert {
        "pointer": "/inputs",
        "reason": "1208 bytes of JSON; at most 1024 (EXECFLOW_MAX_INPUTS)",
    } in error["details"]
    r = await start(small, {"inputs": {"s": "é" * 500}})
    assert r.status_code == 202, r.text


async def test_a_signal_payload_over_the_limit_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, sqlite_synchronous="OFF", node_id="s", shutdown_grace=0, limits=SMALL
    )
    runtime = Runtime.build(settings)
    token = runtime.prepare()
    assert token
    async with runtime.running(loop=False):
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            api = Api(client, runtime, token)
            execution_id = await waiting_for_approval(api)
            r = await client.post(
                f"/api/v1/executions/{execution_id}/signals/approval",
                json={"approved": True, "by": "x" * 2000},
                headers=api.auth(),
            )
            error = assert_error(r, 422)
            assert error["details"][0]["pointer"] == "/payload"
            r = await client.get(f"/api/v1/executions/{execution_id}", headers=api.auth())
            assert r.json()["pending_signals"]  # still waiting


# start rate ---------------------------------------------------------------------------------


async def test_a_token_that_starts_too_fast_gets_429_with_retry_after(small: Api) -> None:
    url = "/api/v1/workflows/flat/executions"
    clock(small).advance(60)
    codes = [
        (await small.client.post(url, json={}, headers=small.auth())).status_code for _ in range(3)
    ]
    assert codes == [202, 202, 202]  # the burst
    r = await small.client.post(url, json={}, headers=small.auth())
    error = assert_error(r, 429)
    assert error["id"] == "too_many_requests"
    assert r.headers["retry-after"] == "1"
    assert "at most 1 executions a second" in error["description"]
    assert await executions(small) == 3
    # another token has its own allowance
    other = await new_token(small, "default", "scheduler")
    r = await small.client.post(url, json={}, headers=small.auth(other))
    assert r.status_code == 202, r.text
    # once the time has passed, the first token may start again, one a second
    clock(small).advance(1)
    assert (await small.client.post(url, json={}, headers=small.auth())).status_code == 202
    assert (await small.client.post(url, json={}, headers=small.auth())).status_code == 429
    # reading is not limited
    for _ in range(5):
        assert (
            await small.client.get("/api/v1/executions", headers=small.auth())
        ).status_code == 200


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    bucket = RateLimiter(rate=2.0, burst=2)
    assert [bucket.take("a", t0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take("a", t0) == pytest.approx(0.5)
    assert bucket.take("a", t0 + timedelta(seconds=0.5)) == 0.0
    assert bucket.take("a", t0 + timedelta(hours=1)) == 0.0
    assert bucket.take("a", t0 + timedelta(hours=1)) == 0.0
    assert bucket.take("a", t0 + timedelta(hours=1)) > 0  # never more than the burst
    assert RateLimiter(rate=0, burst=1).take("a", t0) == 0.0  # 0: no limit


# configuration -------------------------------------------------------------------------------


def test_limits_come_from_the_environment() -> None:
    env = {
        "EXECFLOW_MAX_BODY": "4MiB",
        "EXECFLOW_MAX_DEPTH": "16",
        "EXECFLOW_MAX_TASKS": "50",
        "EXECFLOW_MAX_ITEMS": "7",
        "EXECFLOW_MAX_INPUTS": "512KiB",
        "EXECFLOW_START_RATE": "0",
        "EXECFLOW_START_BURST": "9",
    }
    assert limits_from_env(env) == Limits(4 << 20, 16, 50, 7, 512 << 10, 0.0, 9)
    assert limits_from_env({}) == Limits()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EXECFLOW_MAX_BODY", "1 TB", "EXECFLOW_MAX_BODY must be a size such as 1048576"),
        ("EXECFLOW_MAX_DEPTH", "0", "EXECFLOW_MAX_DEPTH must be a whole number of 1 or more"),
        ("EXECFLOW_MAX_TASKS", "many", "EXECFLOW_MAX_TASKS must be a whole number"),
        ("EXECFLOW_START_RATE", "-1", "EXECFLOW_START_RATE must be a number of starts per second"),
        ("EXECFLOW_START_RATE", "inf", "EXECFLOW_START_RATE must be a number"),
    ],
)
def test_bad_limits_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        limits_from_env({name: value})


def test_sizes_read_as_powers_of_1024() -> None:
    assert [parse_size("x", v) for v in ["10", "10b", "2KiB", "2k", "3MiB", "1GiB"]] == [
        10,
        10,
        2048,
        2048,
        3 << 20,
        1 << 30,
    ]


def test_a_bad_limit_stops_the_server_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "EXECFLOW_DATA_DIR": str(tmp_path), "EXECFLOW_MAX_BODY": "huge"}
    done = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: EXECFLOW_MAX_BODY must be a size")
