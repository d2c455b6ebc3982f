"""Commands on executions: start, follow, list, show and steer them over HTTP."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import click

from execflow import levels
from execflow.cli.output import print_json
from execflow.cli.session import connect
from execflow.client import Client

TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


def _coerce(kind: str, text: str) -> Any:
    if kind == "string":
        return text
    if kind == "boolean" and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.command()
@click.argument("workflow")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="An input; typed by the workflow's parameters. Repeatable.",
)
@click.option("--inputs", "inputs_file", type=click.File(), help="Inputs as a JSON object.")
@click.option("--name", help="A name for the execution, unique per workflow.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--revision", type=int, help="Defaults to the latest.")
@click.option("--wait", is_flag=True, help="Follow the tasks live; exit 0 only on COMPLETED.")
@click.option("--at", "scheduled_at", help="Start no earlier than this ISO 8601 time (with zone).")
@click.option(
    "--log-level",
    type=click.Choice(levels.NAMES),
    help="The floor of what the audit log keeps [default: info].",
)
@click.pass_context
def start(
    ctx: click.Context,
    workflow: str,
    params: tuple[str, ...],
    inputs_file: TextIO | None,
    name: str | None,
    labels: tuple[str, ...],
    revision: int | None,
    wait: bool,
    scheduled_at: str | None,
    log_level: str | None,
) -> None:
    """Start an execution of WORKFLOW."""
    with connect(ctx) as client:
        inputs: dict[str, Any] = json.load(inputs_file) if inputs_file else {}
        if params:
            declared = client.workflow(workflow)["definition"].get("parameters", {})
            for item in params:
                key, sep, value = item.partition("=")
                if not sep:
                    raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-p")
                kind = declared.get(key, {}).get("type", "string")
                inputs[key] = _coerce(kind, value)
        body: dict[str, Any] = {"inputs": inputs, "labels": dict(_pairs(labels, "--label"))}
        if name:
            body["name"] = name
        if revision is not None:
            body["revision"] = revision
        if scheduled_at:
            body["scheduled_at"] = scheduled_at
        if log_level:
            body["log_level"] = log_level
        started = client.start(workflow, body)
        if not wait:
            print_json(started)
            return
        click.echo(f"started {started['id']} ({workflow} r{started['revision']})", err=True)
        final = _watch(client, started["id"])
    sys.exit(0 if final["state"] == "COMPLETED" else 1)


def _pairs(items: tuple[str, ...], hint: str) -> Iterator[tuple[str, str]]:
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=hint)
        yield key, value


_MARKS = {"RUNNING": "…", "SCHEDULED": "⏲", "COMPLETED": "✓", "FAILED": "✗", "CANCELED": "⊘"}


def _watch(client: Client, execution_id: str) -> Any:
    """Show task states as they change until the execution ends; returns the final execution."""
    live = sys.stdout.isatty()
    shown: dict[tuple[str, int], str] = {}
    lines = 0
    while True:
        ex = client.execution(execution_id)
        rows = [
            f"  {_MARKS.get(t['state'], '?')} {t['task']:<24} {t['state']:<10} "
            f"attempt {t['attempt']}" + (f"  {t['error']['message']}" if t.get("error") else "")
            for t in ex["tasks"]
        ]
        header = f"{ex['workflow']} {ex['id']}: {ex['state']}"
        if live:
            if lines:
                click.echo(f"\x1b[{lines}F\x1b[J", nl=False)
            click.echo("\n".join([header, *rows]))
            lines = len(rows) + 1
        else:
            for t in ex["tasks"]:
                key = (t["task"], t["attempt"])
                if shown.get(key) != t["state"]:
                    shown[key] = t["state"]
                    click.echo(f"{t['task']} attempt {t['attempt']}: {t['state']}")
        if ex["state"] in TERMINAL:
            if not live:
                click.echo(header)
            if ex.get("outputs"):
                print_json(ex["outputs"])
            if ex.get("error"):
                click.echo(f"error: {ex['error'].get('message', ex['error'])}", err=True)
            return ex
        time.sleep(0.2)


@click.command()
@click.argument("execution_id")
@click.pass_context
def watch(ctx: click.Context, execution_id: str) -> None:
    """Follow an execution's task states live until it ends; exit 0 only on COMPLETED."""
    with connect(ctx) as client:
        final = _watch(client, execution_id)
    sys.exit(0 if final["state"] == "COMPLETED" else 1)


@click.command()
@click.argument("execution_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries until it ends.")
@click.option("--level", type=click.Choice(levels.NAMES), help="Only entries this severe or more.")
@click.option("--task", help="Only entries of this task.")
@click.pass_context
def logs(
    ctx: click.Context, execution_id: str, follow: bool, level: str | None, task: str | None
) -> None:
    """Print an execution's audit log: state changes, retries, who did what, task output."""
    with connect(ctx) as client:
        if follow:
            for entry in client.follow(execution_id, level=level):
                if task is None or entry.get("task") == task:
                    click.echo(_log_line(entry))
            return
        after: int | None = 0
        while after is not None:
            page = client.logs(execution_id, level=level, task=task, after=after, limit=500)
            for entry in page["items"]:
                click.echo(_log_line(entry))
            after = page["next_after"]


def _log_line(entry: dict[str, Any]) -> str:
    where = f" [{entry['task']}#{entry['attempt']}]" if entry.get("task") else ""
    who = f" (by {entry['actor']})" if entry.get("actor") else ""
    # a message may quote what a task or a caller gave (an error's text): one line each,
    # with no control characters, whatever that text holds
    message = levels.clean_line(str(entry["message"]), limit=1 << 20)
    return f"{entry['at']} {entry['level']:<7}{where} {message}{who}"


@click.command()
@click.argument("execution_id")
@click.pass_context
def get(ctx: click.Context, execution_id: str) -> None:
    """Show an execution with its task runs (JSON)."""
    with connect(ctx) as client:
        print_json(client.execution(execution_id))


@click.command("ls")
@click.option("--workflow", help="Only this workflow's executions.")
@click.option("--state", help="Only executions in this state.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
def list_executions(
    ctx: click.Context, workflow: str | None, state: str | None, limit: int
) -> None:
    """List executions, newest first."""
    with connect(ctx) as client:
        page = client.executions(workflow=workflow, state=state, limit=limit)
    for ex in page["items"]:
        click.echo(f"{ex['id']}  {ex['state']:<17} {ex['workflow']:<24} {ex['started_at']}")
    if not page["items"]:
        click.echo("no executions", err=True)


@click.command()
@click.argument("execution_id")
@click.option("--force", is_flag=True, help="Stop running tasks at once.")
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    help="Seconds running tasks may take to finish [server default: 30].",
)
@click.pass_context
def cancel(ctx: click.Context, execution_id: str, force: bool, grace: float | None) -> None:
    """Cancel an execution: nothing new starts, running tasks may finish within a grace
    period, then they are stopped."""
    with connect(ctx) as client:
        ex = client.cancel(execution_id, force=force, grace=grace)
    click.echo(f"{ex['id']}: cancel requested ({ex['state']})")


@click.command()
@click.argument("execution_id")
@click.pass_context
def suspend(ctx: click.Context, execution_id: str) -> None:
    """Suspend an execution: no new task run starts, running ones finish."""
    with connect(ctx) as client:
        ex = client.control(execution_id, "suspend")
    click.echo(f"{ex['id']}: suspend requested ({ex['state']})")


@click.command()
@click.argument("execution_id")
@click.pass_context
def resume(ctx: click.Context, execution_id: str) -> None:
    """Resume a suspended execution."""
    with connect(ctx) as client:
        ex = client.control(execution_id, "resume")
    click.echo(f"{ex['id']}: resume requested ({ex['state']})")


@click.command()
@click.argument("execution_id")
@click.pass_context
def retry(ctx: click.Context, execution_id: str) -> None:
    """Run a failed or cancelled execution again from where it stopped (completed tasks keep
    their outputs)."""
    with connect(ctx) as client:
        ex = client.control(execution_id, "retry")
    click.echo(f"{ex['id']}: retrying ({ex['state']})")


@click.command()
@click.argument("execution_id")
@click.option("--from", "from_task", required=True, help="Run this task and all after it.")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an input; typed by the workflow's parameters. Repeatable.",
)
@click.pass_context
def rerun(ctx: click.Context, execution_id: str, from_task: str, params: tuple[str, ...]) -> None:
    """Start a new execution that re-runs EXECUTION_ID from a task, reusing the outputs of
    everything else it completed. Prints the new execution."""
    with connect(ctx) as client:
        inputs: dict[str, Any] = {}
        if params:
            original = client.execution(execution_id)
            declared = client.workflow(original["workflow"])["definition"].get("parameters", {})
            for key, value in _pairs(params, "-p"):
                inputs[key] = _coerce(declared.get(key, {}).get("type", "string"), value)
        print_json(client.rerun(execution_id, from_task, inputs))


@click.command()
@click.argument("execution_id")
@click.argument("name")
@click.option("-d", "--data", default="null", show_default=True, help="The payload, as JSON.")
@click.pass_context
def signal(ctx: click.Context, execution_id: str, name: str, data: str) -> None:
    """Deliver signal NAME (an approval, an answer) to the task of EXECUTION_ID waiting for
    it; the payload becomes that task's output."""
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    with connect(ctx) as client:
        ex = client.signal(execution_id, name, payload)
    click.echo(f"{ex['id']}: signal {name} delivered ({ex['state']})")
