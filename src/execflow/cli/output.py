"""What every command prints the same way: JSON, and a failure before exiting 1."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click


def fail(message: str, problems: list[dict[str, str]]) -> NoReturn:
    click.echo(message, err=True)
    for p in problems:
        click.echo(f"  {p.get('pointer', '')}: {p.get('reason', '')}", err=True)
    sys.exit(1)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))
