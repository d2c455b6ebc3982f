"""The `execflow` command: run the server, and drive it over HTTP.

Each command is imported when it is looked up (`LazyCommands`), from the module of its
kind: those that talk to a server over HTTP (`executions`, `workflows`, `credentials`)
import the client and none of the server, so they answer at once; `serve`, `db` and
`secrets` (`server`) import what they run or open. docs/architecture.md says which module
may import what."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

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


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from its module the first time it is read
    (to run it, or to show it in the group's help): listing their names imports nothing."""

    def __init__(self, where: Mapping[str, str]) -> None:
        self._where = dict(where)  # name -> "module:attribute" in this package
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._where[name]} is not a click command")
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._where.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._where or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._where), **dict.fromkeys(self._loaded)})

    def __len__(self) -> int:
        return len(self._where.keys() | self._loaded.keys())


@click.group(
    commands=LazyCommands(COMMANDS), context_settings={"help_option_names": ["-h", "--help"]}
)
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
