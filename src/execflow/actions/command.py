"""`command`: run an argv list (never through a shell) in a worker process."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from pydantic import Field

from execflow.actions.base import Action, Args, Placement
from execflow.errors import TaskFailure


class CommandArgs(Args):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    inherit_env: bool = True
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0])
    tail_bytes: int = Field(default=8192, ge=0, le=1_048_576)


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode("utf-8", errors="replace") if limit else ""


def run(args: CommandArgs) -> Any:
    env = {**os.environ, **args.env} if args.inherit_env else dict(args.env)
    try:
        # The worker leads its own process group, so a cancel kills this child with it.
        done = subprocess.run(
            args.argv,
            env=env,
            cwd=args.cwd,
            stdin=subprocess.DEVNULL,  # the worker's stdin carries its task requests
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise TaskFailure(f"command not found: {args.argv[0]!r}", "command", False) from exc
    except (NotADirectoryError, PermissionError) as exc:
        raise TaskFailure(f"cannot run {args.argv[0]!r}: {exc}", "command", False) from exc
    output = {
        "exit_code": done.returncode,
        "stdout": _tail(done.stdout, args.tail_bytes),
        "stderr": _tail(done.stderr, args.tail_bytes),
    }
    if done.returncode not in args.ok_exit_codes:
        raise TaskFailure(f"{args.argv[0]} exited with {done.returncode}", "exit_code", data=output)
    return output


ACTION = Action("command", CommandArgs, Placement.POOL, "Run a command (argv list)", pool=run)
