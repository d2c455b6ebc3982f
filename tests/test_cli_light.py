"""The commands that talk to a server over HTTP import none of the server: a fresh
interpreter runs them without loading the API, the engine, the store or their libraries
(their speed is measured by the CLI figures of bench/README.md, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from execflow.cli import COMMANDS, main
from tests.test_server import REPO_ROOT, free_port, server_env

# what only a server needs; httpx too, whose import took most of a command's time
SERVER = (
    "execflow.api",
    "execflow.engine",
    "execflow.store",
    "execflow.runtime",
    "execflow.service",
    "execflow.scheduler",
    "execflow.serving",
    "execflow.executors",
    "execflow.settings",
    "execflow.definition",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "uvicorn",
    "alembic",
    "pydantic",
    "httpx",
)
SERVER_COMMANDS = {"serve", "db", "secrets"}
CLIENT_COMMANDS = sorted(set(COMMANDS) - SERVER_COMMANDS)

# runs `execflow` with each argv in turn, looks up the commands named, and prints the
# modules then loaded
_SCRIPT = """
import json, sys
import click
from execflow.cli import main
argvs, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for argv in argvs:
    try:
        main(argv, prog_name="execflow")
    except SystemExit:
        pass
context = click.Context(main)
for name in names:
    assert main.get_command(context, name) is not None, name
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(argvs: list[list[str]], names: list[str] | None = None) -> list[str]:
    """The modules a fresh interpreter holds once it has run `argvs` and looked up `names`."""
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(argvs), json.dumps(names or [])],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def _server_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m in SERVER or m.startswith(tuple(f"{s}." for s in SERVER))]


def test_importing_the_command_loads_no_command() -> None:
    modules = _loaded([])
    assert _server_modules(modules) == []
    assert not [m for m in modules if m.startswith("execflow.cli.")]


def test_version_and_get_import_no_server_code() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: `get` fails after its request
    modules = _loaded([["--version"], ["--url", url, "get", "some-id"]])
    assert "execflow.cli.executions" in modules
    assert _server_modules(modules) == []


def test_every_client_command_imports_no_server_code() -> None:
    modules = _loaded([], CLIENT_COMMANDS)
    assert {"execflow.cli.workflows", "execflow.cli.credentials"} <= set(modules)
    assert _server_modules(modules) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_is_found_under_its_name(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
