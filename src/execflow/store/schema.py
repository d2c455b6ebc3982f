"""The database schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Alembic migrations in `execflow/migrations` create exactly this; a test
checks that they agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json: Any = JSON().with_variant(JSONB(), "postgresql")
# a JSON column whose Python None is SQL NULL (not the JSON null), so IS NULL finds it
SqlNullJson: Any = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

projects = Table(
    "projects",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # signs the callbacks of the project's executions (X-Execflow-Signature); made on first
    # use, kept sealed
    Column("callback_secret", Text),
    # the actions its workflows may use, a JSON list of names; NULL: every action
    Column("actions", SqlNullJson),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
    # the token that created this one (None for the first admin token, made at setup)
    Column("created_by", String(32)),
    # "token" (a bearer secret, kept as a hash) or "access_key" (an id and a secret that
    # signs requests: the secret is kept sealed, since checking a signature needs it)
    Column("kind", String(16), nullable=False, default="token", server_default="token"),
    Column("sealed_secret", Text),
    # a session (`Service.open_session`): it lives only as long as what opened it, so it
    # never counts as the admin token the default project must keep
    Column("session", Boolean, nullable=False, default=False, server_default=false()),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("latest_revision", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("project_id", "name"),
)

revisions = Table(
    "revisions",
    metadata,
    Column("workflow_id", String(32), ForeignKey("workflows.id"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("definition", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

executions = Table(
    "executions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project_id", String(32), ForeignKey("projects.id"), nullable=False),
    Column("workflow_id", String(32), ForeignKey("workflows.id"), nullable=False),
    Column("workflow_name", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("state", String(24), nullable=False),
    Column("inputs", Json, nullable=False),
    # The names of the inputs whose values are sealed (ciphertext in `inputs`): secret
    # parameters, and whatever a parent handed its child out of its own secrets.
    Column("sealed_inputs", SqlNullJson),
    Column("labels", Json, nullable=False),
    Column("outputs", Json),
    Column("error", Json),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("started_by", String(32)),
    # When the first task may start (a start may be put off until then).
    Column("scheduled_at", UTCDateTime),
    # The floor of what the audit log keeps (a syslog severity, 7 = debug).
    Column("log_level", Integer, nullable=False, default=6, server_default="6"),
    # How many times it was retried from its failure; task runs of earlier rounds that did
    # not complete are history, the others' outputs are kept.
    Column("round", Integer, nullable=False, default=0, server_default="0"),
    # The execution this one re-runs part of, and the parent whose task started this one.
    Column("rerun_of", String(32)),
    Column("parent_id", String(32)),
    Column("parent_task", String(64)),
    # How many parents it has, and the execution at the top of its chain (null: itself):
    # the engine bounds how deep children nest and how many one start makes by these.
    Column("depth", Integer, nullable=False, default=0, server_default="0"),
    Column("root_id", String(32)),
    # The callback: its URL, and the execution row doubles as its outbox entry: once the
    # execution has ended, a deliverer sends it (pending -> delivered | failed) and records
    # each attempt, so a crash between the end and the send loses nothing.
    Column("callback_url", Text),
    Column("callback_state", String(16)),
    Column("callback_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("callback_next_at", UTCDateTime),
    Column("callback_last_status", Integer),
    Column("callback_last_error", Text),
    Column("callback_lease_until", UTCDateTime),
    # Initial content given at start for the workflow's stores, over the definition's.
    Column("store_overlay", Json),
    # Which engine advances this execution, and until when: another engine may
    # take it over once the lease has expired (after a crash, say).
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime),
    # Set while the execution is parked (it only waits: for a timer, a signal, a child, a
    # resume) and no engine holds it in memory: when an engine is to claim it again. Its
    # lease then belongs to nobody and expires at the same time, so claims skip it until
    # then; whatever wakes it earlier (a command for it) clears both. NULL: not parked.
    Column("wake_at", UTCDateTime),
    UniqueConstraint("workflow_id", "name"),
    Index("ix_executions_project_created", "project_id", "created_at", "id"),
    # the console's filters, newest first, and its counts per state, with millions stored
    Index("ix_executions_project_state_created", "project_id", "state", "created_at", "id"),
    Index(
        "ix_executions_project_workflow_created", "project_id", "workflow_name", "created_at", "id"
    ),
    Index("ix_executions_project_name", "project_id", "name"),
    Index("ix_executions_state_lease", "state", "lease_expires_at"),
    Index("ix_executions_lease_owner", "lease_owner"),
    Index("ix_executions_parent", "parent_id"),
    Index("ix_executions_root", "root_id"),
    Index("ix_executions_callback", "callback_state", "callback_next_at"),
    Index("ix_executions_wake", "wake_at"),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("execution_id", String(32), ForeignKey("executions.id"), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("output", Json),
    Column("error", Json),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    # When a SCHEDULED attempt may start, or when a sleeping one wakes up.
    Column("wake_at", UTCDateTime),
    # What a RUNNING attempt waits for from outside, e.g. {"signal": name, "schema": {...}}.
    Column("waiting", Json),
    Column("round", Integer, nullable=False, default=0, server_default="0"),
    # For one item of a fan-out (`for_each`): its index. Such rows are named `task[index]`.
    Column("item", Integer),
    UniqueConstraint("execution_id", "task_id", "attempt"),
)

# Executions of workflows that declare `concurrency`, in the line for a slot (`admitted_at`
# null) or holding one for their round (a retried execution queues again). Each waits under
# the limit of the revision it runs; engines admit the oldest first (engine/admission.py).
# Rows go with their execution.
admissions = Table(
    "admissions",
    metadata,
    Column(
        "execution_id",
        String(32),
        ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("workflow_id", String(32), nullable=False),
    Column("round", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("admitted_at", UTCDateTime),
    Index("ix_admissions_workflow_queued", "workflow_id", "queued_at"),
)

# Requests for an execution that its engine carries out (cancel, suspend, resume, a
# signal): committed before they are acknowledged, done in the engine's tick transaction.
commands = Table(
    "commands",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("execution_id", String(32), ForeignKey("executions.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payload", Json),
    Column("actor", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime),
    Index("ix_commands_pending", "done_at", "execution_id"),
)

# The audit log of each execution: engine events, who did what, and task output lines.
events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("execution_id", String(32), ForeignKey("executions.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("level", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("task_id", String(64)),
    Column("attempt", Integer),
    Column("message", Text, nullable=False),
    Column("data", Json),
    Column("actor", String(64)),
    Index("ix_events_execution", "execution_id", "id"),
)

# Idempotency-Key of start requests: the same key with the same request gives the same
# execution for a retention period; the same key with another request is refused.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("project_id", String(32), ForeignKey("projects.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_digest", String(64), nullable=False),
    Column("execution_id", String(32), ForeignKey("executions.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# What tasks wrote to an execution's stores, in order: a list's items, a map's puts (the
# latest per key wins), a value's sets (the latest wins). Initial content is not here: it
# comes from the definition and the start's overlay.
store_entries = Table(
    "store_entries",
    metadata,
    Column("execution_id", String(32), ForeignKey("executions.id"), primary_key=True),
    Column("store", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("key", Text),
    Column("value", Json),
    Column("task_id", String(80)),
    Column("at", UTCDateTime, nullable=False),
)

# Nonces of requests signed in Alibaba Cloud's style, while a replay would still be in time:
# shared by every node, so a signed request is taken once by the whole cluster. The nonce is
# kept as its SHA-256 (a client chooses its length).
signature_nonces = Table(
    "signature_nonces",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("nonce_hash", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_signature_nonces_expires", "expires_at"),
)

# The fingerprints (`sealing.fingerprint`) of the keys that seal values in this database, so a
# node without one of them refuses to start instead of failing on the first value it cannot
# open; `retired_at` is set once a rotation has sealed every value with a newer key.
secret_keys = Table(
    "secret_keys",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime),
)

# The engines (nodes) and their heartbeats. A node beats every third of its heartbeat time;
# once `expires_at` has passed, any node may take over the executions it holds, whatever
# their own leases say, so a crashed node's work moves on within seconds while each
# execution's lease is renewed far less often.
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("beat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # executions other nodes asked this one to hand over (it has more than its share)
    Column("wants", Integer, nullable=False, server_default="0"),
)
