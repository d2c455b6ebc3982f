"""The client a command talks to the server with, from the group's options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from execflow.cli.output import fail
from execflow.client import ApiError, Client
from execflow.datadir import admin_token_path
from execflow.errors import ExecflowError


@contextmanager
def connect(ctx: click.Context) -> Iterator[Client]:
    """A client with `--token`, else the admin token saved in `--data-dir`; a refusal or an
    unreachable server is printed and exits 1."""
    token = ctx.obj["token"]
    if not token:
        saved = admin_token_path(ctx.obj["data_dir"])
        if saved.exists():
            token = saved.read_text().strip()
    try:
        yield Client(ctx.obj["url"], token)
    except ApiError as exc:
        fail(f"error: {exc.message} ({exc.status} {exc.code})", exc.problems)
    except ExecflowError as exc:
        fail(f"error: {exc.message}", [])
