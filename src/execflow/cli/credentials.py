"""Commands that administer projects, tokens and access keys over HTTP."""

from __future__ import annotations

from typing import Any

import click

from execflow.auth import ROLES
from execflow.cli.session import connect


@click.group()
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
    with connect(ctx) as client:
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
    with connect(ctx) as client:
        updated = client.update_project(name, _actions(actions))
    click.echo(f"project {updated['name']} updated (actions: {_shown_actions(updated)})")


@project.command("list")
@click.pass_context
def project_list(ctx: click.Context) -> None:
    """List the projects this token may see, with the actions each may use."""
    with connect(ctx) as client:
        items = client.list_projects()["items"]
    for p in items:
        click.echo(f"{p['name']}\t{p['created_at']}\t{_shown_actions(p)}")


@click.group()
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
    with connect(ctx) as client:
        created = client.create_token(project, role, description, expires_in)
    click.echo(created["token"])


@token.command("list")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def token_list(ctx: click.Context, project: str) -> None:
    """List a project's tokens: id, role, state, expiry, last use, description."""
    with connect(ctx) as client:
        _print_credentials(client.list_tokens(project)["items"])


@token.command("revoke")
@click.argument("token_id")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, project: str) -> None:
    """Revoke TOKEN_ID; it stops working at once."""
    with connect(ctx) as client:
        revoked = client.revoke_token(project, token_id)
    click.echo(f"token {revoked['id']} revoked")


@click.group("access-key")
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
    with connect(ctx) as client:
        created = client.create_token(project, role, description, expires_in, "access-keys")
    click.echo(f"access key id: {created['id']}\nsecret:        {created['secret']}")


@access_key.command("list")
@click.option("--project", default="default", show_default=True)
@click.pass_context
def access_key_list(ctx: click.Context, project: str) -> None:
    """List a project's access keys: id, role, state, expiry, last use, description."""
    with connect(ctx) as client:
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
    with connect(ctx) as client:
        revoked = client.revoke_token(project, key_id, "access-keys")
    click.echo(f"access key {revoked['id']} revoked")
