"""`apply`: store a workflow definition from a file."""

from __future__ import annotations

from pathlib import Path

import click

from execflow.cli.output import fail
from execflow.cli.session import connect
from execflow.documents import load_text


@click.command()
@click.option(
    "-f",
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A YAML or JSON definition.",
)
@click.pass_context
def apply(ctx: click.Context, path: Path) -> None:
    """Create a workflow or add a revision from a definition file."""
    text = path.read_text()
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    raw = load_text(text, "application/yaml" if is_yaml else "application/json")
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str):
        fail(f"error: {path} has no 'name'", [])
    with connect(ctx) as client:
        result = client.apply(str(name), text, is_yaml)
    verb = "created" if result["created"] else "applied"
    click.echo(f"{result['name']}: {verb}, revision {result['revision']}")
