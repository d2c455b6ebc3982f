"""What tasks log comes back line by line from real worker processes, as it happens."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from execflow import levels
from execflow.executors import LocalExecutor, Outcome, TaskLog
from execflow.executors.worker import LOG_LINES_PER_TASK

FIXTURES = "tests.fixtures.tasks"


@pytest.fixture
async def executor() -> AsyncIterator[LocalExecutor]:
    ex = LocalExecutor(1)  # one worker: consecutive tasks run in the same process
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()


async def run(
    ex: LocalExecutor, action: str, args: dict[str, Any]
) -> tuple[Outcome, list[TaskLog]]:
    lines: list[TaskLog] = []
    outcome = await ex.run(action, args, lines.append)
    return outcome, lines


def py(function: str, **args: Any) -> dict[str, Any]:
    return {"function": f"{FIXTURES}:{function}", "args": args}


def child(code: str, *argv: str, **options: Any) -> dict[str, Any]:
    """`command` arguments running `code` in a Python child (no shell)."""
    return {"argv": [sys.executable, "-c", code, *argv], **options}


def out(message: str) -> TaskLog:
    return TaskLog(levels.INFO, "stdout", message)


def err(message: str) -> TaskLog:
    return TaskLog(levels.WARNING, "stderr", message)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_logging_records_keep_their_level_and_logger(executor: LocalExecutor) -> None:
    outcome, lines = await run(executor, "python", py("log_levels"))
    assert outcome == Outcome(True, output="logged")
    name = "tests.levels"
    assert lines[:5] == [
        TaskLog(levels.DEBUG, "logging", f"{name}: debug 7", name),
        TaskLog(levels.INFO, "logging", f"{name}: info", name),
        TaskLog(levels.WARNING, "logging", f"{name}: warning", name),
        TaskLog(levels.ERROR, "logging", f"{name}: error", name),
        TaskLog(levels.CRITICAL, "logging", f"{name}: critical", name),
    ]
    # One record, one line: the traceback comes along with its newlines escaped.
    assert len(lines) == 6
    failed = lines[5]
    assert (failed.level, failed.stream, failed.logger) == (levels.ERROR, "logging", name)
    assert failed.message.startswith(f"{name}: failed\\x0aTraceback (most recent call last):")
    assert failed.message.endswith("\\x0aValueError: bad value")
    assert "\n" not in failed.message


async def test_prints_go_out_line_by_line(executor: LocalExecutor) -> None:
    outcome, lines = await run(executor, "python", py("print_lines"))
    assert outcome == Outcome(True, output=None)
    assert lines == [out("out 1"), err("err 1"), out("out 2 and more"), out("partial last line")]


async def test_logging_from_a_thread_of_the_task(executor: LocalExecutor) -> None:
    _, lines = await run(executor, "python", py("log_from_thread"))
    assert lines == [TaskLog(levels.INFO, "logging", "tests.thread: hi", "tests.thread")]


async def test_command_lines_in_order_per_stream_with_the_tails_unchanged(
    executor: LocalExecutor,
) -> None:
    code = (
        "import sys\n"
        "for i in range(3):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "sys.stdout.write('no newline')\n"
    )
    outcome, lines = await run(executor, "command", child(code))
    assert outcome.ok
    assert outcome.output == {
        "exit_code": 0,
        "stdout": "out 0\nout 1\nout 2\nno newline",
        "stderr": "err 0\nerr 1\nerr 2\n",
    }
    assert [x for x in lines if x.stream == "stdout"] == [
        *(out(f"out {i}") for i in range(3)),
        out("no newline"),
    ]
    assert [x for x in lines if x.stream == "stderr"] == [err(f"err {i}") for i in range(3)]
    assert len(lines) == 7


async def test_command_tail_bytes_and_failing_exit_code(executor: LocalExecutor) -> None:
    code = "import sys\nfor i in range(100):\n    print(f'line {i}')\nsys.exit(3)\n"
    outcome, lines = await run(executor, "command", child(code, tail_bytes=10))
    full = "".join(f"line {i}\n" for i in range(100))
    assert outcome == Outcome(
        False,
        error={
            "type": "exit_code",
            "message": f"{sys.executable} exited with 3",
            "exit_code": 3,
            "stdout": full[-10:],
            "stderr": "",
        },
        retryable=True,
    )
    assert lines == [out(f"line {i}") for i in range(100)]


async def test_an_over_long_command_line_is_cut(executor: LocalExecutor) -> None:
    code = "print('x' * 100_000)\nprint('next')\n"
    outcome, lines = await run(executor, "command", child(code))
    assert outcome.output["stdout"] == ("x" * 100_000 + "\nnext\n")[-8192:]
    assert lines == [out("x" * 8192 + "…"), out("next")]


async def test_control_characters_and_line_breaks_are_escaped(executor: LocalExecutor) -> None:
    value = "a\x1b[31mred\x00\rb\nERROR forged\x9b2J\u2028x"
    _, lines = await run(executor, "python", py("log_value", value=value))
    assert lines == [
        TaskLog(
            levels.WARNING,
            "logging",
            "tests.value: value=a\\x1b[31mred\\x00\\x0db\\x0aERROR forged\\x9b2J\\u2028x",
            "tests.value",
        ),
        # On stdout a newline ends a line: the second part is a line of the same stream.
        out("a\\x1b[31mred\\x00\\x0db"),
        out("ERROR forged\\x9b2J\\u2028x"),
    ]
    code = "import sys\nsys.stdout.write('\\x1b[2Jclear\\r\\x07\\n')\n"
    _, from_command = await run(executor, "command", child(code))
    assert from_command == [out("\\x1b[2Jclear\\x0d\\x07")]
    for line in [*lines, *from_command]:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line.message)


async def test_at_most_ten_thousand_lines_per_task(executor: LocalExecutor) -> None:
    assert LOG_LINES_PER_TASK == 10_000
    outcome, lines = await run(executor, "python", py("many_lines", count=10_050))
    assert outcome == Outcome(True, output=10_050)
    assert lines[:-1] == [out(f"line {i}") for i in range(10_000)]
    dropped = "50 more log lines of this task were dropped (at most 10000 are kept)"
    assert lines[-1] == TaskLog(levels.WARNING, "logging", dropped)
    # The next task on the same worker has its own allowance.
    _, lines = await run(executor, "python", py("many_lines", count=3))
    assert lines == [out(f"line {i}") for i in range(3)]


async def test_python_lines_arrive_while_the_task_runs(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    lines: list[TaskLog] = []

    def on_log(line: TaskLog) -> None:
        lines.append(line)
        flag.touch()  # the task waits for this: it ends only if the line came first

    outcome = await executor.run("python", py("log_then_wait", flag=str(flag), timeout=20), on_log)
    assert outcome == Outcome(True, output="flag seen")
    assert lines == [TaskLog(levels.INFO, "logging", "tests.wait: waiting", "tests.wait")]


async def test_command_lines_arrive_while_it_runs(executor: LocalExecutor, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    code = (
        "import os, sys, time\n"
        "print('ready', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit(9)\n"
        "    time.sleep(0.01)\n"
        "print('done')\n"
    )
    lines: list[TaskLog] = []

    def on_log(line: TaskLog) -> None:
        lines.append(line)
        flag.touch()

    outcome = await executor.run("command", child(code, str(flag)), on_log)
    assert outcome.ok, outcome
    assert lines == [out("ready"), out("done")]


async def test_cancel_still_kills_the_command(executor: LocalExecutor) -> None:
    code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(60)\n"
    got: asyncio.Queue[TaskLog] = asyncio.Queue()
    task = asyncio.create_task(executor.run("command", child(code), got.put_nowait))
    pid = int((await asyncio.wait_for(got.get(), 20)).message)
    assert _alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the command outlived its cancelled task"
        await asyncio.sleep(0.02)
    # A fresh worker took the killed one's place.
    outcome, _ = await run(executor, "python", py("add", a=1, b=2))
    assert outcome == Outcome(True, output=3)


async def test_no_handler_leaks_between_tasks(executor: LocalExecutor) -> None:
    first, lines = await run(executor, "python", py("root_logging", message="first"))
    assert len(first.output["handlers"]) == 1 and first.output["level"] == 10
    assert lines == [TaskLog(levels.INFO, "logging", "root: first", "root")]
    # A task that leaves a handler (writing to its captured stderr) and a level on the root.
    installed, _ = await run(executor, "python", py("install_root_handler"))
    assert installed.ok
    second, lines = await run(executor, "python", py("root_logging", message="second"))
    assert second.output == first.output
    assert lines == [TaskLog(levels.INFO, "logging", "root: second", "root")]
    # Without a listener nothing is captured: the worker's own logging is as it started.
    plain = await executor.run("python", py("root_logging", message="plain"))
    assert plain.output == {"handlers": [], "level": 30}
