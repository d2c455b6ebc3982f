"""Configuration: explicit values, with defaults from `EXECFLOW_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from execflow.datadir import admin_token_path, default_data_dir
from execflow.executors.confinement import Namespaces, parse_names, parse_namespaces
from execflow.limits import Limits, limits_from_env
from execflow.outbound import Network, parse_networks

_ON = frozenset({"on", "true", "yes", "1"})
_OFF = frozenset({"off", "false", "no", "0"})


def parse_switch(name: str, value: str) -> bool:
    """An on/off environment variable; ValueError naming it for anything else."""
    word = value.strip().lower()
    if word in _ON or word in _OFF:
        return word in _ON
    raise ValueError(f"{name} must be on or off, got {value!r}")


# The vendor APIs execflow answers besides its own (see docs/dialects.md): Huawei OBS Data+,
# Alibaba Cloud E-MapReduce, NebulaGraph Explorer, Onedata and VMware vRO.
DIALECTS = frozenset({"obs", "emr", "explorer", "onedata", "vro"})


def parse_dialects(value: str) -> frozenset[str]:
    """`all`, `none`, or a comma-separated list of dialect names; ValueError for others."""
    word = value.strip().lower()
    if word in ("", "all"):
        return DIALECTS
    if word == "none":
        return frozenset()
    names = frozenset(n.strip() for n in word.split(",") if n.strip())
    if unknown := sorted(names - DIALECTS):
        known = ", ".join(sorted(DIALECTS))
        raise ValueError(f"EXECFLOW_DIALECTS: unknown dialect {unknown[0]!r} ({known}, all, none)")
    return names


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _paths(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split(os.pathsep) if p.strip())


def _lease(text: str) -> float:
    value = float(text)
    if not 3 <= value <= 3600:
        raise ValueError("must be between 3 and 3600 seconds")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 86400:  # also refuses nan
        raise ValueError("must be between 0 and 86400 seconds")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:  # also refuses nan
        raise ValueError("must be more than 0 and at most 1 (a fraction of the pool)")
    return value


# settings read from one variable each: (variable, field, parser)
_PARSED: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("EXECFLOW_WORKERS", "workers", int),
    ("EXECFLOW_SHUTDOWN_GRACE", "shutdown_grace", float),
    ("EXECFLOW_CALLBACK_RETRY_FOR", "callback_retry_for", float),
    ("EXECFLOW_MAX_LOST_ATTEMPTS", "max_lost_attempts", _count),
    ("EXECFLOW_LEASE_SECONDS", "lease_seconds", _lease),
    ("EXECFLOW_HEARTBEAT_SECONDS", "heartbeat_seconds", _lease),
    ("EXECFLOW_SPREAD_SECONDS", "spread_seconds", float),
    ("EXECFLOW_PARK_AFTER", "park_after", _seconds),
    # networks the server's own requests may reach although they are not public
    ("EXECFLOW_CALLBACK_ALLOWED_NETWORKS", "callback_allowed_networks", parse_networks),
    ("EXECFLOW_HTTP_ALLOWED_NETWORKS", "http_allowed_networks", parse_networks),
    ("EXECFLOW_PROJECT_POOL_SHARE", "project_pool_share", _share),
    # how workers are confined (see executors/confinement.py)
    ("EXECFLOW_WORKER_NAMESPACES", "worker_namespaces", parse_namespaces),
    ("EXECFLOW_WORKER_ENV", "worker_env", parse_names),
    ("EXECFLOW_TASK_PATH", "task_path", _paths),
)


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where `/metrics` is served: on the API behind a token, on a listener of its own
    (plain HTTP, no authentication), or nowhere."""

    mode: Literal["token", "port", "off"] = "token"
    host: str = "127.0.0.1"
    port: int = 0  # with mode "port"; 0 takes any free port


def parse_metrics(value: str) -> MetricsEndpoint:
    """`token`, `off`, `port:PORT` or `port:HOST:PORT`; ValueError for anything else."""
    word = value.strip()
    if word.lower() in ("token", "off"):
        return MetricsEndpoint("token" if word.lower() == "token" else "off")
    kind, _, where = word.partition(":")
    if kind.lower() == "port" and where:
        host, _, number = where.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if number.isdigit() and int(number) <= 65535:
            return MetricsEndpoint("port", host, int(number))
    raise ValueError(f"EXECFLOW_METRICS must be token, off or port:[HOST:]PORT, got {value!r}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 0  # worker processes; 0 means one per core
    # the most of the workers one project holds while another project uses them (or waits
    # for one); alone, a project may use them all (see engine/shares.py)
    project_pool_share: float = 0.5
    # the user workers run as; None: `execflow-worker` when the server is root, else its own
    worker_user: str | None = None
    worker_namespaces: Namespaces = "auto"  # PID + mount namespaces per worker, as root
    worker_env: tuple[str, ...] = ()  # server environment variables workers get
    task_path: tuple[str, ...] = ()  # directories `python` tasks import their modules from
    node_id: str = ""
    # how long an execution stays a node's without a renewal (every third of it): a crashed
    # node's executions are taken over within this and a poll. Shorter costs the database:
    # each renewal rewrites the lease of every execution held (see bench/README.md)
    lease_seconds: float = 30.0
    # how long a node counts as alive after a heartbeat (one every third of it): a crashed
    # node's executions are taken over within this and a poll, whatever their leases say
    heartbeat_seconds: float = 9.0
    spread_seconds: float = 15.0  # how often a node compares its load with the others'

    poll_seconds: float = 1.0
    # an execution that only waits, for a command or longer than this, leaves memory until
    # it is due or woken (engine/parking.py); 0: never
    park_after: float = 2.0
    sqlite_synchronous: str = "FULL"
    shutdown_grace: float = 10.0  # seconds running tasks may take to finish on shutdown
    max_lost_attempts: int = 3  # lost attempts of a task run again whatever its retry policy
    load_examples: bool = False
    schedules: bool = True  # run workflows' cron schedules on this node
    schedule_poll_seconds: float = 15.0  # how soon newly stored schedules are seen at the latest
    # non-public networks callbacks may go to anyway (loopback, private, ...): none by default
    callback_allowed_networks: tuple[Network, ...] = ()
    callback_retry_for: float = 86400.0  # seconds a failing callback is retried after the end
    # non-public networks `http` tasks may reach anyway: none by default
    http_allowed_networks: tuple[Network, ...] = ()
    # keys that seal secret values, newest first (comma-separated Fernet keys); when empty,
    # those of `secret_key_file`, which is made on first start
    secret_keys: str = field(default="", repr=False)
    secret_key_file: Path | None = None  # default: <data dir>/secret-keys
    limits: Limits = field(default_factory=Limits)
    # the vendor dialects answered (execflow.api.dialects.NAMES): all of them by default
    dialects: frozenset[str] = DIALECTS
    metrics: MetricsEndpoint = MetricsEndpoint()

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        values: dict[str, Any] = {}
        if "EXECFLOW_DATABASE_URL" in env:
            values["database_url"] = env["EXECFLOW_DATABASE_URL"]
        for name, key, kind in _PARSED:
            if name in env:
                try:
                    values[key] = kind(env[name])
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from exc
        if "EXECFLOW_NODE_ID" in env:
            values["node_id"] = env["EXECFLOW_NODE_ID"]
        if env.get("EXECFLOW_WORKER_USER", "").strip():
            values["worker_user"] = env["EXECFLOW_WORKER_USER"].strip()
        if "EXECFLOW_SCHEDULES" in env:
            values["schedules"] = parse_switch("EXECFLOW_SCHEDULES", env["EXECFLOW_SCHEDULES"])
        if "EXECFLOW_SECRET_KEYS" in env:
            values["secret_keys"] = env["EXECFLOW_SECRET_KEYS"]
        if "EXECFLOW_SECRET_KEY_FILE" in env:
            values["secret_key_file"] = Path(env["EXECFLOW_SECRET_KEY_FILE"])
        values["limits"] = limits_from_env(env)
        if "EXECFLOW_DIALECTS" in env:
            values["dialects"] = parse_dialects(env["EXECFLOW_DIALECTS"])
        if "EXECFLOW_METRICS" in env:
            values["metrics"] = parse_metrics(env["EXECFLOW_METRICS"])
        if "EXECFLOW_SQLITE_SYNCHRONOUS" in env:
            values["sqlite_synchronous"] = env["EXECFLOW_SQLITE_SYNCHRONOUS"].upper()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'execflow.db'}"

    @property
    def key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret-keys"

    @property
    def admin_token_file(self) -> Path:
        return admin_token_path(self.data_dir)
