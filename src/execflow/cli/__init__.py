"""The `execflow` command: run the server, and drive it over HTTP.

Each command is imported when it is run, from the module of its kind: those that talk to a
server over HTTP (`executions`, `workflows`, `credentials`) import the client and none of
the server, so they answer at once; `serve`, `db` and `secrets` (`server`) import what they
run or open. docs/architecture.md says which module may import what."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from execflow import __version__
from execflow.datadir import default_data_dir

# command -> "module:attribute" of the package that defines it
COMMANDS = {
    "apply": "workflows:apply",
    "start": "executions:start",
    "watch": "executions:watch",
    "logs": "executions:logs",
    "get": "executions:get",
    "ls": "executions:list_executions",
    "cancel": "executions:cancel",
    "suspend": "executions:suspend",
    "resume": "executions:resume",
    "retry": "executions:retry",
    "rerun": "executions:rerun",
    "signal": "executions:signal",
    "project": "credentials:project",
    "token": "credentials:token",
    "access-key": "credentials:access_key",
    "serve": "server:serve",
    "db": "server:db",
    "secrets": "server:secrets",
}


class LazyGroup(click.Group):
    """A group whose commands are imported the first time one is looked up (to run it, or
    to list it in the group's help), so a command costs only its own module's imports."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="execflow")
@click.option(
    "--url",
    envvar="EXECFLOW_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The server to talk to.",
)
@click.option(
    "--token",
    envvar="EXECFLOW_TOKEN",
    help="Defaults to the admin token saved in the local data directory.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the server keeps its data (default: EXECFLOW_DATA_DIR or ~/.local/share/execflow).",
)
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, data_dir: Path | None) -> None:
    """execflow: durable workflow executions over HTTP."""
    ctx.obj = {"url": url, "token": token, "data_dir": data_dir or default_data_dir()}
