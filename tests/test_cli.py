"""The `execflow` command against a real server process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from execflow.cli import main
from tests.test_control import APPROVAL
from tests.test_server import REPO_ROOT, Server, free_port, poll, server_env, start_server

pytestmark = pytest.mark.slow

TYPED: dict[str, Any] = {
    "name": "typed",
    "parameters": {
        "n": {"type": "integer", "required": True},
        "s": {"type": "string", "default": "x"},
    },
    "tasks": {"show": {"action": "echo", "with": {"n": "${{ params.n }}", "s": "${{ params.s }}"}}},
    "outputs": {"n": "${{ tasks.show.output.n }}", "s": "${{ tasks.show.output.s }}"},
}
FAILING: dict[str, Any] = {
    "name": "failing",
    "tasks": {
        "t": {
            "action": "python",
            "with": {"function": "tests.fixtures.tasks:boom", "args": {"message": "kaput"}},
        }
    },
}
SLOW: dict[str, Any] = {
    "name": "slow",
    "tasks": {
        "t": {
            "action": "python",
            "with": {"function": "tests.fixtures.tasks:slow", "args": {"seconds": 30}},
        }
    },
}


@dataclass
class Cli:
    server: Server
    runner: CliRunner

    def __call__(self, *args: str, token: str | None = None) -> Result:
        base = ["--url", self.server.url, "--data-dir", str(self.server.data_dir)]
        if token:
            base += ["--token", token]
        return self.runner.invoke(main, [*base, *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("cli") / "data", free_port())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("definitions")
    for wf in (TYPED, FAILING, SLOW, APPROVAL):
        (folder / f"{wf['name']}.yaml").write_text(yaml.safe_dump(wf))
    return folder


@pytest.fixture
def cli(server: Server) -> Cli:
    env: dict[str, str | None] = {"EXECFLOW_TOKEN": None, "EXECFLOW_URL": None}
    return Cli(server, CliRunner(env=env))


@pytest.fixture
def applied(cli: Cli, definitions: Path) -> Cli:
    """The CLI, with the test workflows applied (a no-op when they already are)."""
    for wf in (TYPED, FAILING, SLOW, APPROVAL):
        result = cli("apply", "-f", str(definitions / f"{wf['name']}.yaml"))
        assert result.exit_code == 0, result.output
    return cli


def outputs_of(stdout: str) -> Any:
    """The JSON document `start --wait` prints after the task lines."""
    lines = stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{") :]))


def test_apply_prints_the_revision(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "rev.yaml"
    wf: dict[str, Any] = {"name": "rev", "tasks": {"a": {"action": "echo", "with": {"v": 1}}}}
    path.write_text(yaml.safe_dump(wf))
    result = cli("apply", "-f", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "rev: created, revision 1\n"
    assert cli("apply", "-f", str(path)).stdout == "rev: applied, revision 1\n"
    wf["tasks"]["a"]["with"]["v"] = 2
    path.write_text(yaml.safe_dump(wf))
    assert cli("apply", "-f", str(path)).stdout == "rev: applied, revision 2\n"


def test_apply_json_and_an_invalid_definition(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "json-wf.json"
    good.write_text(json.dumps({"name": "json-wf", "tasks": {"a": {"action": "echo"}}}))
    result = cli("apply", "-f", str(good))
    assert result.exit_code == 0, result.output
    assert result.stdout == "json-wf: created, revision 1\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "tasks": {"a": {"action": "nope"}}}))
    result = cli("apply", "-f", str(bad))
    assert result.exit_code == 1
    assert "/tasks/a/action" in result.stderr


def test_start_wait_completes_and_types_params(applied: Cli) -> None:
    result = applied("start", "typed", "-p", "n=3", "-p", "s=3", "--wait")
    assert result.exit_code == 0, result.output
    assert "show attempt 1: COMPLETED" in result.stdout
    assert outputs_of(result.stdout) == {"n": 3, "s": "3"}
    assert result.stderr.startswith("started ")


def test_start_wait_exits_1_on_a_failed_execution(applied: Cli) -> None:
    result = applied("start", "failing", "--wait")
    assert result.exit_code == 1, result.output
    assert "t attempt 1: FAILED" in result.stdout
    assert "FAILED" in result.stdout.splitlines()[-1]
    assert "RuntimeError: kaput" in result.stderr


@pytest.mark.parametrize(
    ("params", "pointer"),
    [(["n=three"], "/inputs/n"), (["n=1", "zzz=1"], "/inputs/zzz"), (["s=a"], "/inputs/n")],
)
def test_bad_input_names_the_field(applied: Cli, params: list[str], pointer: str) -> None:
    before = applied("ls", "--workflow", "typed", "--limit", "500").stdout
    result = applied("start", "typed", *(a for p in params for a in ("-p", p)))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: " in result.stderr
    assert f"  {pointer}: " in result.stderr
    # Nothing was started.
    assert applied("ls", "--workflow", "typed", "--limit", "500").stdout == before


def test_malformed_param_is_a_usage_error(applied: Cli) -> None:
    result = applied("start", "typed", "-p", "n")
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.stderr


def test_start_without_wait_then_get_ls_and_cancel(applied: Cli) -> None:
    result = applied("start", "slow")
    assert result.exit_code == 0, result.output
    started = json.loads(result.stdout)
    execution_id = started["id"]
    assert started["workflow"] == "slow"

    def running() -> bool:
        return bool(applied.server.execution(execution_id)["state"] == "RUNNING")

    poll("the slow task to run", running)
    result = applied("get", execution_id)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["state"]) == (execution_id, "RUNNING")
    assert [(t["task"], t["state"]) for t in shown["tasks"]] == [("t", "RUNNING")]

    listed = applied("ls").stdout.splitlines()
    line = next(line for line in listed if line.startswith(execution_id))
    assert line.split()[1:3] == ["RUNNING", "slow"]
    only_running = applied("ls", "--state", "RUNNING").stdout
    assert execution_id in only_running
    assert execution_id not in applied("ls", "--state", "COMPLETED").stdout

    result = applied("cancel", execution_id, "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{execution_id}: cancel requested")
    ex = applied.server.wait_state(execution_id, {"CANCELED", "COMPLETED", "FAILED"}, 10)
    assert ex["state"] == "CANCELED"
    assert ex["tasks"][0]["state"] == "CANCELED"


def test_suspend_signal_and_resume(applied: Cli) -> None:
    execution_id = json.loads(applied("start", "approval").stdout)["id"]
    applied.server.wait_state(execution_id, {"WAITING_ON_SIGNAL"}, 10)

    result = applied("suspend", execution_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{execution_id}: suspend requested")
    applied.server.wait_state(execution_id, {"SUSPENDED"}, 10)

    result = applied("signal", execution_id, "approval", "-d", '{"approved": "no"}')
    assert result.exit_code == 1
    assert "/payload/approved" in result.stderr
    result = applied("signal", execution_id, "approval", "-d", "{oops")
    assert result.exit_code == 2
    assert "not JSON" in result.stderr
    result = applied("signal", execution_id, "approval", "-d", '{"approved": true, "by": "cli"}')
    assert result.exit_code == 0, result.output
    assert f"{execution_id}: signal approval delivered" in result.stdout

    result = applied("resume", execution_id)
    assert result.exit_code == 0, result.output
    ex = applied.server.wait_state(execution_id, {"COMPLETED", "FAILED", "CANCELED"}, 10)
    assert (ex["state"], ex["outputs"]) == ("COMPLETED", {"approved_by": "cli"})
    result = applied("resume", execution_id)
    assert result.exit_code == 1
    assert "not suspended" in result.stderr


def test_logs_follow_an_execution_live_until_it_ends(applied: Cli) -> None:
    execution_id = json.loads(applied("start", "approval", "--log-level", "debug").stdout)["id"]
    applied.server.wait_state(execution_id, {"WAITING_ON_SIGNAL"}, 10)

    def approve_soon() -> None:
        time.sleep(0.5)  # let `logs -f` print what is there and wait for more
        path = f"/api/v1/executions/{execution_id}/signals/approval"
        r = applied.server.client.post(path, json={"approved": True, "by": "bob"})
        assert r.status_code == 202, r.text

    approver = threading.Thread(target=approve_soon)
    approver.start()
    result = applied("logs", execution_id, "-f")
    approver.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.endswith("execution waiting_on_signal") for line in lines)
    received = next(line for line in lines if "signal approval received" in line)
    assert " notice  [approve#1] " in received and "(by " in received
    assert lines[-1].endswith("execution completed")

    result = applied("logs", execution_id, "--level", "notice")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    result = applied("watch", execution_id)
    assert result.exit_code == 0, result.output
    assert "approval" in result.stdout and "COMPLETED" in result.stdout
    result = applied("logs", "ghost")
    assert result.exit_code == 1
    assert "not found" in result.stderr


def test_start_at_a_later_time(applied: Cli) -> None:
    result = applied("start", "typed", "-p", "n=1", "--at", "2026-01-01T00:00:00")
    assert result.exit_code == 1
    assert "/scheduled_at" in result.stderr
    when = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    result = applied("start", "typed", "-p", "n=1", "--at", when)
    assert result.exit_code == 0, result.output
    execution_id = json.loads(result.stdout)["id"]
    assert applied.server.execution(execution_id)["state"] in {"INITIALIZING", "WAITING"}
    ex = applied.server.wait_state(execution_id, {"COMPLETED"}, 10)
    assert datetime.fromisoformat(ex["tasks"][0]["started_at"]) >= datetime.fromisoformat(when)


def test_retry_and_rerun(applied: Cli) -> None:
    result = applied("start", "failing", "--wait")
    assert result.exit_code == 1
    failed = result.stderr.split()[1]
    result = applied("retry", failed)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{failed}: retrying (RUNNING)"
    ex = applied.server.wait_state(failed, {"FAILED"}, 10)
    assert [(t["attempt"], t["round"]) for t in ex["tasks"]] == [(1, 0), (2, 1)]

    result = applied("start", "typed", "-p", "n=1", "--wait")
    done = result.stderr.split()[1]
    result = applied("rerun", done, "--from", "show", "-p", "n=5")
    assert result.exit_code == 0, result.output
    rerun = json.loads(result.stdout)
    ex = applied.server.wait_state(rerun["id"], {"COMPLETED"}, 10)
    assert (ex["outputs"], ex["rerun_of"]) == ({"n": 5, "s": "x"}, done)
    result = applied("rerun", done, "--from", "nope")
    assert result.exit_code == 1
    assert "/from_task" in result.stderr


def test_cancel_of_an_ended_execution_is_refused(applied: Cli) -> None:
    result = applied("start", "typed", "-p", "n=1", "--wait")
    assert result.exit_code == 0, result.output
    execution_id = result.stderr.split()[1]
    result = applied("cancel", execution_id)
    assert result.exit_code == 1
    assert "409" in result.stderr
    assert "already ended" in result.stderr


def test_inputs_file_with_params_over_it(applied: Cli, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"n": 5, "s": "from-file"}))
    result = applied("start", "typed", "--inputs", str(inputs), "-p", "s=cli", "--wait")
    assert result.exit_code == 0, result.output
    assert outputs_of(result.stdout) == {"n": 5, "s": "cli"}


def test_get_an_unknown_execution_fails(cli: Cli) -> None:
    result = cli("get", "no-such-execution")
    assert result.exit_code == 1
    assert "404" in result.stderr


def test_ls_with_no_match(cli: Cli) -> None:
    result = cli("ls", "--workflow", "never-applied")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no executions" in result.stderr


def test_token_create_viewer_reads_but_cannot_write(cli: Cli) -> None:
    result = cli("token", "create", "--role", "viewer", "--description", "ci")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token and "\n" not in token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=cli.server.url, headers=headers) as http:
        assert http.get("/api/v1/workflows").status_code == 200
        r = http.put("/api/v1/workflows/viewer-wf", json={"tasks": {"a": {"action": "echo"}}})
        assert r.status_code == 403, r.text
    # The CLI uses an explicit token over the saved admin token.
    assert cli("ls", token=token).exit_code == 0
    result = cli("token", "create", "--role", "viewer", token=token)
    assert result.exit_code == 1
    assert "403" in result.stderr


def test_projects_and_tokens_are_administered_from_the_cli(cli: Cli) -> None:
    assert cli("project", "create", "team-a").exit_code == 0
    result = cli("project", "create", "team-a")
    assert result.exit_code == 1 and "409" in result.stderr
    rows = [line.split("\t") for line in cli("project", "list").stdout.splitlines()]
    assert [(name, actions) for name, _, actions in rows] == [
        ("default", "all"),
        ("team-a", "echo,http,signal,sleep,workflow"),
    ]
    result = cli("project", "update", "team-a", "--actions", "echo,python")
    assert result.exit_code == 0 and "actions: echo,python" in result.stdout, result.output
    result = cli("project", "update", "team-a", "--actions", "echo,shell")
    assert result.exit_code != 0 and "'shell'" in result.output, result.output
    assert cli("project", "update", "team-a", "--actions", "all").exit_code == 0
    assert cli("project", "list").stdout.splitlines()[1].endswith("\tall")
    result = cli("project", "create", "team-b", "--actions", "echo")
    assert "actions: echo)" in result.stdout, result.output
    result = cli(
        "token", "create", "--project", "team-a", "--role", "scheduler", "--expires-in", "7d"
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    listed = cli("token", "list", "--project", "team-a").stdout.splitlines()
    assert len(listed) == 1 and secret not in listed[0]
    token_id, role, state, expires, last_used = listed[0].split("\t")[:5]
    assert (role, state, last_used) == ("scheduler", "active", "-") and expires != "-"
    assert cli("ls", token=secret).exit_code == 0
    result = cli("token", "revoke", token_id, "--project", "team-a")
    assert result.exit_code == 0, result.output
    assert "revoked" in cli("token", "list", "--project", "team-a").stdout
    result = cli("ls", token=secret)
    assert result.exit_code == 1 and "401" in result.stderr
    result = cli("token", "create", "--role", "root")
    assert result.exit_code == 2 and "root" in result.stderr


def test_access_keys_are_administered_from_the_cli(cli: Cli) -> None:
    assert cli("project", "create", "team-k").exit_code == 0
    result = cli("access-key", "create", "--project", "team-k", "--role", "viewer")
    assert result.exit_code == 0, result.output
    id_line, secret_line = result.stdout.splitlines()
    key_id, secret = id_line.split()[-1], secret_line.split()[-1]
    listed = cli("access-key", "list", "--project", "team-k").stdout.splitlines()
    assert [line.split("\t")[:3] for line in listed] == [[key_id, "viewer", "active"]]
    assert secret not in "".join(listed)
    assert cli("token", "list", "--project", "team-k").stdout == ""
    result = cli("access-key", "revoke", key_id, "--project", "team-k")
    assert result.exit_code == 0 and f"access key {key_id} revoked" in result.stdout
    assert "revoked" in cli("access-key", "list", "--project", "team-k").stdout


def test_a_bad_token_is_refused(cli: Cli) -> None:
    result = cli("ls", token="not-a-token")
    assert result.exit_code == 1
    assert "401" in result.stderr


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner(env={"EXECFLOW_TOKEN": None})
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(main, ["--url", url, "--data-dir", str(tmp_path), "ls"])
    assert result.exit_code == 1
    assert f"cannot reach {url}" in result.stderr


def test_db_upgrade_migrates_a_new_data_dir(tmp_path: Path) -> None:
    runner = CliRunner(env={"EXECFLOW_DATABASE_URL": None})
    args = ["--data-dir", str(tmp_path / "fresh"), "db", "upgrade"]
    first = runner.invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("database at revision ")
    assert (tmp_path / "fresh" / "execflow.db").exists()
    again = runner.invoke(main, args, catch_exceptions=False)
    assert again.stdout == first.stdout


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL_COMMANDS = [(), *_commands(main)]


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "execflow")
def test_help_works_on_every_command(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert " ".join(["main", *command]) in result.stdout.splitlines()[0]


def test_help_lists_the_commands() -> None:
    assert {
        "apply",
        "cancel",
        "db",
        "get",
        "ls",
        "rerun",
        "resume",
        "retry",
        "serve",
        "signal",
        "start",
        "suspend",
        "token",
    } <= set(main.commands)


def test_the_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "execflow.cli", "--version"],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("execflow, version ")


def test_a_log_message_cannot_forge_lines_in_the_cli() -> None:
    from execflow.cli.executions import _log_line

    entry = {
        "at": "2030-01-01T00:00:00Z",
        "level": "error",
        "message": "boom\n2030-01-01T00:00:01Z info    all good\x1b[2J",
        "task": "t",
        "attempt": 1,
    }
    line = _log_line(entry)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("boom\\x0a2030-01-01T00:00:01Z info    all good\\x1b[2J")
