"""The node's Prometheus metrics: one `Metrics` per runtime, handed to whoever counts.

Each `Metrics` owns its registry (never the library's global one), so several runtimes in
one process count apart. The methods are what the counting code calls; each is a few
attribute lookups and one locked add, cheap enough for every task run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_http_server

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Listener", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# A tick takes from a tenth of a millisecond (nothing to do) to seconds (a big batch on a
# slow disk); about three buckets a decade over that range.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

ENDED_STATES = ("COMPLETED", "FAILED", "CANCELED")


class Metrics:
    """Counters, histograms and gauges of one node, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open files: read at scrape time only
        self._tick_failures = Counter(
            "execflow_engine_tick_failures", "Engine ticks that raised", registry=r
        )
        self._internal_failures = Counter(
            "execflow_internal_failures",
            "Executions failed by an internal fault (error type internal)",
            registry=r,
        )
        self._lost_attempts = Counter(
            "execflow_lost_attempts",
            "Task attempts lost to a crash, a worker's death or a takeover",
            registry=r,
        )
        self._started = Counter(
            "execflow_executions_started",
            "Executions started: new ones (API, dialects, schedules, children), reruns, retries",
            registry=r,
        )
        ended = Counter(
            "execflow_executions_ended", "Executions that ended, by state", ["state"], registry=r
        )
        # bound once: a labelled child per event would cost a dict lookup under a lock
        self._ended = {state: ended.labels(state) for state in ENDED_STATES}
        self._ended_family = ended
        self._task_runs_family = Counter(
            "execflow_task_runs",
            "Task runs that ended, by action and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self._task_runs: dict[tuple[str, str], Counter] = {}
        self._tick_seconds = Histogram(
            "execflow_engine_tick_seconds",
            "Time an engine tick takes",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._commit_seconds = Histogram(
            "execflow_store_commit_seconds",
            "Time the engine's tick transaction takes to commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._held = Gauge(
            "execflow_executions_held",
            "Executions this node's engine holds in memory",
            registry=r,
        )

    def tick(self, seconds: float, failed: bool = False) -> None:
        """An engine tick took `seconds`; `failed` when it raised."""
        self._tick_seconds.observe(seconds)
        if failed:
            self._tick_failures.inc()

    def commit(self, seconds: float) -> None:
        """The engine's tick transaction took `seconds` to commit."""
        self._commit_seconds.observe(seconds)

    def internal_failure(self) -> None:
        """An execution failed with error type `internal`."""
        self._internal_failures.inc()

    def lost_attempt(self, count: int = 1) -> None:
        """`count` attempts were found lost (a crash, a worker's death, a takeover)."""
        self._lost_attempts.inc(count)

    def execution_started(self, count: int = 1) -> None:
        """`count` executions were committed to run (started, rerun, retried, or children)."""
        self._started.inc(count)

    def execution_ended(self, state: str) -> None:
        """An execution ended in `state` (COMPLETED, FAILED or CANCELED)."""
        child = self._ended.get(state)
        if child is None:  # not a terminal state: counted all the same, never dropped
            child = self._ended[state] = self._ended_family.labels(state)
        child.inc()

    def task_run(self, action: str, outcome: str) -> None:
        """A task run of `action` ended: completed, failed, timeout, canceled or lost."""
        key = (action, outcome)
        child = self._task_runs.get(key)
        if child is None:
            child = self._task_runs[key] = self._task_runs_family.labels(action, outcome)
        child.inc()

    def held(self, count: Callable[[], float]) -> None:
        """`count()` is read at each scrape (maybe from another thread) for the held gauge."""
        self._held.set_function(count)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def listen(self, host: str, port: int) -> Listener:
        """Serve the registry over plain HTTP on `host:port` (port 0: any free one)."""
        server, thread = start_http_server(port, host, self.registry)
        return Listener(server, thread)


class Listener:
    """A running scrape listener; `close` stops it and frees its port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
