"""Commands that run a server or open its database and keys: `serve`, `db`, `secrets`."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import TextIO

import click

from execflow import __version__, serving
from execflow.api import create_app
from execflow.cli.output import fail
from execflow.datadir import make_private
from execflow.runtime import (
    Runtime,
    load_examples,
    rotate_secret_keys,
    secret_key_fingerprints,
    tune_gc,
)
from execflow.sealing import SecretKeyError, new_key
from execflow.settings import Settings
from execflow.store import connect
from execflow.store.database import current_revision, upgrade


@click.command()
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [default: 8080].")
@click.option("--examples", is_flag=True, help="Load the example workflows into `default`.")
@click.option("--workers", type=int, default=None, help="Worker processes [default: cores].")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    examples: bool,
    workers: int | None,
    access_log: bool,
) -> None:
    """Run the API and the engine (SQLite in the data directory unless
    EXECFLOW_DATABASE_URL names another database)."""
    try:
        settings = Settings.from_env(
            data_dir=ctx.obj["data_dir"], host=host, port=port, workers=workers
        )
    except ValueError as exc:  # a setting that is not valid names its variable
        fail(f"error: {exc}", [])
    make_private(settings.data_dir)
    lock = _lock_data_dir(settings.data_dir)
    try:
        runtime = Runtime.build(settings)
        token = runtime.prepare()
    except SecretKeyError as exc:
        fail(f"error: {exc}", [])
    if token:
        click.echo(
            f"Created project 'default' and an admin token (saved to "
            f"{settings.admin_token_file}):\n\n    {token}\n"
        )
    if examples:
        names = load_examples(runtime.store, runtime.service.clock.now())
        click.echo(f"Loaded examples: {', '.join(names)}")
    click.echo(
        f"execflow {__version__} on http://{settings.host}:{settings.port} "
        f"(database: {_redact(settings.url)})"
    )
    if settings.metrics.mode == "port":
        host, port = settings.metrics.host, settings.metrics.port
        click.echo(f"metrics on http://{f'[{host}]' if ':' in host else host}:{port}/metrics")
    app = create_app(runtime, manage_runtime=True)
    tune_gc()
    try:
        serving.run(app, settings.host, settings.port, access_log=access_log)
    finally:
        lock.close()


def _lock_data_dir(data_dir: Path) -> TextIO:
    handle = (data_dir / "server.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"error: another execflow server is using {data_dir}", [])
    return handle


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply pending schema migrations (serve also does this at start)."""
    settings = Settings.from_env(data_dir=ctx.obj["data_dir"])
    if settings.url.startswith("sqlite"):
        make_private(settings.data_dir)
    engine = connect(settings.url)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")
    engine.dispose()


@click.group()
def secrets() -> None:
    """The keys that seal secret parameter values at rest."""


@secrets.command("new-key")
def secrets_new_key() -> None:
    """Print a new key, for EXECFLOW_SECRET_KEYS (put it first; keep the old ones after it
    until `execflow secrets rotate` has sealed everything with it)."""
    click.echo(new_key())


@secrets.command("rotate")
@click.option("--keep-old", is_flag=True, help="Keep the old keys in the key file.")
@click.pass_context
def secrets_rotate(ctx: click.Context, keep_old: bool) -> None:
    """Seal every secret value with a new key (with EXECFLOW_SECRET_KEYS: its first key).

    Servers may keep running: those reading the same key file take the new key within a
    second. Servers configured with EXECFLOW_SECRET_KEYS need the new key first in it
    (and a restart) before this runs."""
    settings = Settings.from_env(data_dir=ctx.obj["data_dir"])
    try:
        done = rotate_secret_keys(settings, keep_old=keep_old)
    except SecretKeyError as exc:
        fail(f"error: {exc}", [])
    if done.key_file is None:
        click.echo(
            f"sealed {done.resealed} values with the first key of EXECFLOW_SECRET_KEYS; "
            "the other keys may now be removed from it"
        )
    else:
        click.echo(
            f"sealed {done.resealed} values with a new key in {done.key_file} "
            f"({done.retired} old keys removed)"
        )


@secrets.command("fingerprints")
@click.pass_context
def secrets_fingerprints(ctx: click.Context) -> None:
    """Print the fingerprints of this node's keys and of the keys the database records:
    a node must hold every recorded key that is not retired, or it refuses to start."""
    settings = Settings.from_env(data_dir=ctx.obj["data_dir"])
    try:
        held, records = secret_key_fingerprints(settings)
    except SecretKeyError as exc:
        fail(f"error: {exc}", [])
    by_key = {r.fingerprint: r for r in records}
    for name in [*held, *(r.fingerprint for r in records if r.fingerprint not in held)]:
        here = ("seals" if name == held[0] else "held") if name in held else "missing"
        record = by_key.get(name)
        if record is None:
            known = "not recorded"
        elif record.retired_at is not None:
            known = f"retired {record.retired_at:%Y-%m-%d %H:%M:%S}Z"
            here = "" if here == "missing" else here
        else:
            known = f"recorded {record.recorded_at:%Y-%m-%d %H:%M:%S}Z"
        click.echo(f"{name}  {here:<7}  {known}".rstrip())
