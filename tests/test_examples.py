"""Every shipped example runs to completion in-process, with outputs that make sense."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml

from execflow.examples import example_files, media, orders, reports
from execflow.records import ExecutionRecord
from execflow.runtime import load_examples
from execflow.states import ExecutionState, TaskRunState
from execflow.store import Store
from tests.harness import Harness, harness

STUB_URL = "http://stub.test/healthz"
STUB_ADDRESS = "93.184.216.34"  # public, so the http action may go there; never connected to
# What each example is started with; an example missing here fails the coverage test.
INPUTS: dict[str, dict[str, Any]] = {
    "daily-sales-report": {"day": "2024-03-01"},
    "media-pipeline": {"object": "cats/tabby.jpg"},
    "service-health-check": {"url": STUB_URL},
    "price-line": {"sku": "A-1", "quantity": 3},
    "purchase-order": {
        "order_id": "PO-7",
        "lines": [{"sku": "A-1", "quantity": 3}, {"sku": "B-2", "quantity": 1}],
    },
}
# Examples that wait for a person: the signal each gets once it waits.
SIGNALS: dict[str, tuple[str, dict[str, Any]]] = {
    "purchase-order": ("approval", {"approved": True, "by": "finance"}),
}

Handler = Callable[[httpx.Request], httpx.Response]


def healthy(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"status": "ok"})


async def stub_dns(host: str, port: int) -> list[str]:
    assert host == "stub.test", host
    return [STUB_ADDRESS]


@asynccontextmanager
async def examples(store: Store, handler: Handler = healthy) -> AsyncIterator[Harness]:
    """A harness whose engine makes HTTP calls to `handler`, with the examples loaded."""
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        harness(store, http=http, resolve=stub_dns) as h,
    ):
        assert sorted(load_examples(store, h.clock.now())) == sorted(INPUTS)
        yield h


def attempts(ex: ExecutionRecord, task: str) -> list[tuple[int, TaskRunState]]:
    return [(t.attempt, t.state) for t in ex.task_runs if t.task_id == task]


def output_of(ex: ExecutionRecord, task: str) -> Any:
    return next(t.output for t in ex.task_runs if t.task_id == task and t.output is not None)


def _example_names() -> list[str]:
    return [yaml.safe_load(text)["name"] for text in example_files().values()]


def test_every_example_has_inputs_here() -> None:
    assert sorted(_example_names()) == sorted(INPUTS)


@pytest.mark.parametrize("name", _example_names())
async def test_example_runs_to_completion(store: Store, name: str) -> None:
    async with examples(store) as h:
        if name not in SIGNALS:
            ex = await h.run(name, INPUTS[name])
        else:
            started = await h.service.start(h.admin, name, INPUTS[name])
            await h.engine.run_until_idle(until=h.clock.now() + timedelta(hours=1))
            ex = await h.service.get_execution(h.admin, started.id)
            assert ex.state == ExecutionState.WAITING_ON_SIGNAL, ex.error
            await h.service.signal(h.admin, ex.id, *SIGNALS[name])
            await h.engine.run_until_idle()
            ex = await h.service.get_execution(h.admin, ex.id)
        assert ex.state == ExecutionState.COMPLETED, ex.error
        assert ex.error is None
        assert ex.outputs
        definition = yaml.safe_load(example_files()[f"{name}.yaml"])
        assert {t.task_id for t in ex.task_runs} == set(definition["tasks"])
        assert all(t.state == TaskRunState.COMPLETED for t in ex.task_runs)


async def test_media_pipeline_outputs(store: Store) -> None:
    async with examples(store) as h:
        ex = await h.run("media-pipeline", {"object": "cats/tabby.jpg"})
    assert ex.state == ExecutionState.COMPLETED, ex.error
    probed = media.probe("uploads", "cats/tabby.jpg")
    assert ex.outputs == {
        "width": probed["width"],
        "height": probed["height"],
        "renditions": 3,
        "published": "uploads/cats/tabby.jpg",
    }
    published = output_of(ex, "publish")
    assert published["content_type"] == "image/jpeg"
    assert published["checksum"] == hashlib.sha256(b"uploads/cats/tabby.jpg").hexdigest()
    sizes = [r["size"] for r in published["renditions"]]
    assert sizes == [64, 256, 1024]
    for r in published["renditions"]:
        assert max(r["width"], r["height"]) <= r["size"]


async def test_media_pipeline_uses_the_sizes_given(store: Store) -> None:
    async with examples(store) as h:
        ex = await h.run("media-pipeline", {"object": "a.png", "bucket": "b", "sizes": [32]})
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert ex.outputs is not None
    assert ex.outputs["renditions"] == 1
    assert ex.outputs["published"] == "b/a.png"
    assert output_of(ex, "publish")["content_type"] == "image/png"


async def test_daily_sales_report_is_repeatable(store: Store) -> None:
    async with examples(store) as h:
        first = await h.run("daily-sales-report", {"day": "2024-03-01"})
        again = await h.run("daily-sales-report", {"day": "2024-03-01"})
        other = await h.run("daily-sales-report", {"day": "2024-03-02", "orders": 50})
    for ex in (first, again, other):
        assert ex.state == ExecutionState.COMPLETED, ex.error
    assert first.id != again.id
    assert first.outputs is not None and again.outputs is not None and other.outputs is not None
    total = first.outputs["total"]
    assert isinstance(total, float) and total > 0
    assert again.outputs == first.outputs
    assert other.outputs["total"] != total
    expected = sum(row["amount"] for row in reports.extract("2024-03-01", 500))
    assert total == pytest.approx(expected, abs=0.05)
    assert first.outputs["best_region"] in reports.REGIONS
    by_region = output_of(first, "by_region")
    assert first.outputs["best_region"] == max(by_region, key=by_region.__getitem__)


async def test_health_check_calls_the_url(store: Store) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    async with examples(store, handler) as h:
        ex = await h.run("service-health-check", {"url": STUB_URL})
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert ex.outputs == {"healthy": True, "status": 200}
    # to the address the name resolved to, under the name
    assert [(r.method, str(r.url)) for r in seen] == [("GET", f"http://{STUB_ADDRESS}/healthz")]
    assert seen[0].headers["host"] == "stub.test"
    assert seen[0].headers["accept"] == "application/json"


async def test_health_check_reports_an_unexpected_status(store: Store) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "degraded"})

    async with examples(store, handler) as h:
        ex = await h.run("service-health-check", {"url": STUB_URL})
        assert ex.outputs == {"healthy": False, "status": 200}
        ex = await h.run("service-health-check", {"url": STUB_URL, "expect": "degraded"})
        assert ex.outputs == {"healthy": True, "status": 200}


async def test_health_check_retries_a_503(store: Store) -> None:
    statuses = [503, 200]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[len(calls)]
        calls.append(status)
        return httpx.Response(status, json={"status": "ok" if status == 200 else "down"})

    async with examples(store, handler) as h:
        ex = await h.run("service-health-check", {"url": STUB_URL})
    assert ex.state == ExecutionState.COMPLETED, ex.error
    assert ex.outputs == {"healthy": True, "status": 200}
    assert calls == [503, 200]
    assert attempts(ex, "call") == [(1, TaskRunState.FAILED), (2, TaskRunState.COMPLETED)]
    failed, succeeded = (t for t in ex.task_runs if t.task_id == "call")
    assert failed.error is not None
    assert failed.error["type"] == "http_status"
    assert "503" in failed.error["message"]
    assert failed.ended_at is not None and succeeded.started_at is not None
    # retry: initial_delay 500ms
    assert (succeeded.started_at - failed.ended_at).total_seconds() == 0.5


async def test_health_check_does_not_retry_a_404(store: Store) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, json={"status": "missing"})

    async with examples(store, handler) as h:
        ex = await h.run("service-health-check", {"url": STUB_URL})
    assert ex.state == ExecutionState.FAILED
    assert len(calls) == 1
    assert attempts(ex, "call") == [(1, TaskRunState.FAILED)]
    assert attempts(ex, "report") == []
    assert ex.error is not None
    assert (ex.error["task"], ex.error["type"]) == ("call", "http_status")


async def test_purchase_order_prices_each_line_in_a_child_and_places_what_was_approved(
    store: Store,
) -> None:
    async with examples(store) as h:
        started = await h.service.start(h.admin, "purchase-order", INPUTS["purchase-order"])
        await h.engine.run_until_idle(until=h.clock.now() + timedelta(hours=1))
        ex = await h.service.get_execution(h.admin, started.id)
        assert ex.state == ExecutionState.WAITING_ON_SIGNAL
        _, priced = await h.service.store_content(h.admin, ex.id, "priced")
        # appended as each child ends, in whatever order they end
        by_sku = sorted(priced, key=lambda line: line["sku"])
        assert by_sku == [orders.quote("A-1", 3), orders.quote("B-2", 1)]
        children, _ = await h.service.list_executions(h.admin, workflow="price-line")
        assert {c.inputs["sku"] for c in children} == {"A-1", "B-2"}
        await h.service.signal(h.admin, ex.id, "approval", {"approved": False, "by": "cfo"})
        await h.engine.run_until_idle()
        ex = await h.service.get_execution(h.admin, ex.id)
        assert ex.outputs == {
            "total": round(sum(line["amount"] for line in priced), 2),
            "approved": False,
            "approved_by": "cfo",
            "placed": [],
        }
