"""A long-lived worker process: reads one task per line on stdin, answers one line on stdout.

Run as `python -m execflow.executors.worker`. The worker leads its own process
group, so killing the group also kills any command it started; a watchdog ends
the group if the engine that started it disappears.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

from pydantic import ValidationError

from execflow.actions import ACTIONS
from execflow.errors import TaskFailure


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.killpg(0, signal.SIGKILL)


def handle(message: dict[str, Any]) -> dict[str, Any]:
    """Run one task request and describe its outcome (never raises)."""
    action = ACTIONS.get(message.get("action", ""))
    if action is None or action.pool is None:
        return _failure(f"no pool action {message.get('action')!r}", "internal", False)
    try:
        args = action.args.model_validate(message.get("args", {}))
        return {"ok": True, "output": action.pool(args)}
    except TaskFailure as exc:
        return {"ok": False, "error": exc.as_error(), "retryable": exc.retryable}
    except ValidationError as exc:
        return _failure(f"invalid arguments: {exc}", "arguments", False)
    except Exception as exc:  # user code: any exception is the task's failure
        tail = traceback.format_exc().splitlines()[-20:]
        message_text = f"{type(exc).__name__}: {exc}"
        return {
            "ok": False,
            "error": {"type": "exception", "message": message_text, "traceback": tail},
            "retryable": True,
        }


def _failure(message: str, kind: str, retryable: bool) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message}, "retryable": retryable}


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    hello = json.loads(requests.readline() or b"{}")
    for entry in reversed(hello.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for line in requests:
        reply = handle(json.loads(line))
        try:
            data = json.dumps(reply, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            data = json.dumps(_failure(f"the result is not JSON: {exc}", "result", False))
        replies.write(data.encode() + b"\n")
        replies.flush()


def main() -> None:
    # Keep the protocol on a private copy of stdout; user prints go to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
