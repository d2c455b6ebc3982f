"""The `execflow` command: run the server, and drive it over HTTP."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click

from execflow import __version__, levels, serving
from execflow.api import create_app
from execflow.auth import ROLES
from execflow.client import ApiError, Client
from execflow.datadir import default_data_dir
from execflow.documents import load_text
from execflow.errors import ExecflowError
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

TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@contextmanager
def _client(ctx: click.Context) -> Iterator[Client]:
    token = ctx.obj["token"]
    if not token:
        saved = Settings(data_dir=ctx.obj["data_dir"]).admin_token_file
        if saved.exists():
            token = saved.read_text().strip()
    client = Client(ctx.obj["url"], token)
    try:
        yield client
    except ApiError as exc:
        _fail(f"error: {exc.message} ({exc.status} {exc.code})", exc.problems)
    except ExecflowError as exc:
        _fail(f"error: {exc.message}", [])
    finally:
        client.close()


def _fail(message: str, problems: list[dict[str, str]]) -> NoReturn:
    click.echo(message, err=True)
    for p in problems:
        click.echo(f"  {p.get('pointer', '')}: {p.get('reason', '')}", err=True)
    sys.exit(1)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


@main.command()
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
        _fail(f"error: {exc}", [])
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(settings.data_dir)
    try:
        runtime = Runtime.build(settings)
        token = runtime.prepare()
    except SecretKeyError as exc:
        _fail(f"error: {exc}", [])
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
        _fail(f"error: another execflow server is using {data_dir}", [])
    return handle


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@main.command()
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
        _fail(f"error: {path} has no 'name'", [])
    with _client(ctx) as client:
        result = client.apply(str(name), text, is_yaml)
    verb = "created" if result["created"] else "applied"
    click.echo(f"{result['name']}: {verb}, revision {result['revision']}")


def _coerce(kind: str, text: str) -> Any:
    if kind == "string":
        return text
    if kind == "boolean" and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command()
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
    with _client(ctx) as client:
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
            _print_json(started)
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
                _print_json(ex["outputs"])
            if ex.get("error"):
                click.echo(f"error: {ex['error'].get('message', ex['error'])}", err=True)
            return ex
        time.sleep(0.2)


@main.command()
@click.argument("execution_id")
@click.pass_context
def watch(ctx: click.Context, execution_id: str) -> None:
    """Follow an execution's task states live until it ends; exit 0 only on COMPLETED."""
    with _client(ctx) as client:
        final = _watch(client, execution_id)
    sys.exit(0 if final["state"] == "COMPLETED" else 1)


@main.command()
@click.argument("execution_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries until it ends.")
@click.option("--level", type=click.Choice(levels.NAMES), help="Only entries this severe or more.")
@click.option("--task", help="Only entries of this task.")
@click.pass_context
def logs(
    ctx: click.Context, execution_id: str, follow: bool, level: str | None, task: str | None
) -> None:
    """Print an execution's audit log: state changes, retries, who did what, task output."""
    with _client(ctx) as client:
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


@main.command()
@click.argument("execution_id")
@click.pass_context
def get(ctx: click.Context, execution_id: str) -> None:
    """Show an execution with its task runs (JSON)."""
    with _client(ctx) as client:
        _print_json(client.execution(execution_id))


@main.command("ls")
@click.option("--workflow", help="Only this workflow's executions.")
@click.option("--state", help="Only executions in this state.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
def list_executions(
    ctx: click.Context, workflow: str | None, state: str | None, limit: int
) -> None:
    """List executions, newest first."""
    with _client(ctx) as client:
        page = client.executions(workflow=workflow, state=state, limit=limit)
    for ex in page["items"]:
        click.echo(f"{ex['id']}  {ex['state']:<17} {ex['workflow']:<24} {ex['started_at']}")
    if not page["items"]:
        click.echo("no executions", err=True)


@main.command()
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
    with _client(ctx) as client:
        ex = client.cancel(execution_id, force=force, grace=grace)
    click.echo(f"{ex['id']}: cancel requested ({ex['state']})")


@main.command()
@click.argument("execution_id")
@click.pass_context
def suspend(ctx: click.Context, execution_id: str) -> None:
    """Suspend an execution: no new task run starts, running ones finish."""
    with _client(ctx) as client:
        ex = client.control(execution_id, "suspend")
    click.echo(f"{ex['id']}: suspend requested ({ex['state']})")


@main.command()
@click.argument("execution_id")
@click.pass_context
def resume(ctx: click.Context, execution_id: str) -> None:
    """Resume a suspended execution."""
    with _client(ctx) as client:
        ex = client.control(execution_id, "resume")
    click.echo(f"{ex['id']}: resume requested ({ex['state']})")


@main.command()
@click.argument("execution_id")
@click.pass_context
def retry(ctx: click.Context, execution_id: str) -> None:
    """Run a failed or cancelled execution again from where it stopped (completed tasks keep
    their outputs)."""
    with _client(ctx) as client:
        ex = client.control(execution_id, "retry")
    click.echo(f"{ex['id']}: retrying ({ex['state']})")


@main.command()
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
    with _client(ctx) as client:
        inputs: dict[str, Any] = {}
        if params:
            original = client.execution(execution_id)
            declared = client.workflow(original["workflow"])["definition"].get("parameters", {})
            for key, value in _pairs(params, "-p"):
                inputs[key] = _coerce(declared.get(key, {}).get("type", "string"), value)
        _print_json(client.rerun(execution_id, from_task, inputs))


@main.command()
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
    with _client(ctx) as client:
        ex = client.signal(execution_id, name, payload)
    click.echo(f"{ex['id']}: signal {name} delivered ({ex['state']})")


@main.group()
def project() -> None:
    """Manage projects (admins of the default project)."""


_ACTIONS_HELP = (
    "Comma-separated actions its workflows may use, or 'all'. The code actions (python,"
    " command) run the workflow's own code on the workers."
)


def _actions(given: str) -> list[str] | None:
    return None if given.strip() == "all" else [a.strip() for a in given.split(",") if a.strip()]


def _shown_actions(project: dict[str, Any]) -> str:
    actions = project.get("actions")
    return "all" if actions is None else ",".join(actions) or "none"


@project.command("create")
@click.argument("name")
@click.option("--actions", default=None, help=_ACTIONS_HELP + " [default: no code actions]")
@click.pass_context
def project_create(ctx: click.Context, name: str, actions: str | None) -> None:
    """Create project NAME."""
    with _client(ctx) as client:
        if actions is None:
            created = client.create_project(name)
        else:
            # 'all' is sent as null, which is not the default: say it explicitly
            body = {"name": name, "actions": _actions(actions)}
            created = client.request("POST", "/api/v1/projects", json=body)
    click.echo(f"project {created['name']} created (actions: {_shown_actions(created)})")


@project.command("update")
@click.argument("name")
@click.option("--actions", required=True, help=_ACTIONS_HELP)
@click.pass_context
def project_update(ctx: click.Context, name: str, actions: str) -> None:
    """Change project NAME's settings (admins of the default project)."""
    with _client(ctx) as client:
        updated = client.update_project(name, _actions(actions))
    click.echo(f"project {updated['name']} updated (actions: {_shown_actions(updated)})")


@project.command("list")
@click.pass_context
def project_list(ctx: click.Context) -> None:
    """List the projects this token may see, with the actions each may use."""
    with _client(ctx) as client:
        items = client.list_projects()["items"]
    for p in items:
        click.echo(f"{p['name']}\t{p['created_at']}\t{_shown_actions(p)}")


@main.group()
def token() -> None:
    """Manage tokens (admins of their project, or of the default project)."""


@token.command("create")
@click.option("--project", default="default", show_default=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--description", default="")
@click.option("--expires-in", help="A lifetime such as 30d or 12h (default: no expiry)")
@click.pass_context
def token_create(
    ctx: click.Context, project: str, role: str, description: str, expires_in: str | None
) -> None:
    """Create a token and print it (it is shown only once)."""
    with _client(ctx) as client:
        created = client.create_token(project, role, description, expires_in)
    click.echo(created["token"])


@token.command("list")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def token_list(ctx: click.Context, project: str) -> None:
    """List a project's tokens: id, role, state, expiry, last use, description."""
    with _client(ctx) as client:
        _print_credentials(client.list_tokens(project)["items"])


@token.command("revoke")
@click.argument("token_id")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, project: str) -> None:
    """Revoke TOKEN_ID; it stops working at once."""
    with _client(ctx) as client:
        revoked = client.revoke_token(project, token_id)
    click.echo(f"token {revoked['id']} revoked")


@main.group("access-key")
def access_key() -> None:
    """Manage access keys: an id and a secret for clients that sign their requests (as the
    OBS SDKs do) instead of sending a token."""


@access_key.command("create")
@click.option("--project", default="default", show_default=True)
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--description", default="")
@click.option("--expires-in", help="A lifetime such as 30d or 12h (default: no expiry)")
@click.pass_context
def access_key_create(
    ctx: click.Context, project: str, role: str, description: str, expires_in: str | None
) -> None:
    """Create an access key and print its id and secret (the secret is shown only once)."""
    with _client(ctx) as client:
        created = client.create_token(project, role, description, expires_in, "access-keys")
    click.echo(f"access key id: {created['id']}\nsecret:        {created['secret']}")


@access_key.command("list")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def access_key_list(ctx: click.Context, project: str) -> None:
    """List a project's access keys: id, role, state, expiry, last use, description."""
    with _client(ctx) as client:
        _print_credentials(client.list_tokens(project, "access-keys")["items"])


def _print_credentials(items: list[dict[str, Any]]) -> None:
    """One tab-separated line per token or access key; `-` for what is not set."""
    for c in items:
        fields = (c["id"], c["role"], c["state"], c["expires_at"], c["last_used_at"])
        click.echo(
            "\t".join("-" if f is None else str(f) for f in fields) + "\t" + c["description"]
        )


@access_key.command("revoke")
@click.argument("key_id")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def access_key_revoke(ctx: click.Context, key_id: str, project: str) -> None:
    """Revoke KEY_ID; requests it signs are refused from the next one."""
    with _client(ctx) as client:
        revoked = client.revoke_token(project, key_id, "access-keys")
    click.echo(f"access key {revoked['id']} revoked")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply pending schema migrations (serve also does this at start)."""
    settings = Settings.from_env(data_dir=ctx.obj["data_dir"])
    if settings.url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = connect(settings.url)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")
    engine.dispose()


@main.group()
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
        _fail(f"error: {exc}", [])
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
        _fail(f"error: {exc}", [])
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


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
