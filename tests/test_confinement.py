"""Worker confinement: what task code sees of the machine and of the server that runs it.

The first tests hold for any server (clean environment, no inherited files, a scratch
directory emptied between tasks); those marked `root` check what a server running as root
adds: an unprivileged user, and PID and mount namespaces per worker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pwd
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from execflow.executors import LocalExecutor
from execflow.executors.confinement import Confinement, ConfinementError, parse_names
from execflow.settings import Settings

ROOT = os.geteuid() == 0
root = pytest.mark.skipif(not ROOT, reason="workers change user and namespaces only as root")


def sh(script: str, *argv: str) -> dict[str, Any]:
    return {"argv": ["sh", "-c", script, "sh", *argv]}


async def run(executor: LocalExecutor, args: dict[str, Any]) -> dict[str, Any]:
    outcome = await executor.run("command", args)
    assert outcome.ok, outcome.error
    output: dict[str, Any] = outcome.output
    return output


@asynccontextmanager
async def pool(size: int = 1, **options: Any) -> AsyncIterator[LocalExecutor]:
    """Workers confined as any user may confine them: no other user, no namespaces."""
    ex = LocalExecutor(size, confinement=Confinement(**options))
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()
        gc.collect()  # the workers' pipes go while their loop runs, not at a later test


@pytest.fixture
async def plain() -> AsyncIterator[LocalExecutor]:
    async with pool(env={"PASSED_ON": "yes"}) as ex:
        yield ex


@pytest.fixture
async def confined() -> AsyncIterator[LocalExecutor]:
    """What `execflow serve` sets up on this machine (as root: user and namespaces)."""
    ex = LocalExecutor(2, confinement=Confinement.resolve())
    await ex.start()
    yield ex
    await ex.close()
    gc.collect()


async def test_workers_get_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    canary = secrets.token_hex(8)
    for name in ("EXECFLOW_DATABASE_URL", "EXECFLOW_SECRET_KEYS", "DATABASE_URL", "AWS_SECRET"):
        monkeypatch.setenv(name, canary)
    async with pool(env={"PASSED_ON": "yes"}) as plain:
        out = await run(plain, {"argv": ["env"], "inherit_env": True})
        # a task's own variables still reach it
        mine = await run(plain, {"argv": ["sh", "-c", "echo $MINE"], "env": {"MINE": "declared"}})
    env = dict(line.split("=", 1) for line in out["stdout"].splitlines())
    assert canary not in out["stdout"]
    assert not [k for k in env if k.startswith("EXECFLOW_")]
    assert env["PASSED_ON"] == "yes"  # what the confinement says workers get
    assert env["HOME"] == env["TMPDIR"]
    assert env["LANG"] == "C.UTF-8"
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD", "SHLVL", "_", "PASSED_ON"} | {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    }
    assert mine["stdout"] == "declared\n"


async def test_python_tasks_do_not_see_the_servers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECFLOW_ADMIN_TOKEN", "canary-token")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent-canary")
    async with pool() as plain:
        outcome = await plain.run(
            "python", {"function": "tests.fixtures.tasks:reveal_process", "args": {}}
        )
    assert outcome.ok, outcome.error
    seen = outcome.output
    assert "canary-token" not in str(seen["environ"])
    assert "/nonexistent-canary" not in seen["path"]
    assert seen["isolated"] == 1  # python -I: no user site, no PYTHONPATH


async def test_workers_hold_no_file_of_the_server(tmp_path: Path) -> None:
    with (tmp_path / "execflow.db").open("wb"):  # a file the server has open
        async with pool() as plain:
            out = await run(plain, sh('for f in /proc/$$/fd/*; do readlink "$f" || true; done'))
    targets = out["stdout"].split()
    assert str(tmp_path / "execflow.db") not in targets
    for target in targets:
        assert target.startswith(("pipe:", "/dev/null", "/proc/")), targets


async def test_each_task_starts_in_an_empty_scratch_directory(plain: LocalExecutor) -> None:
    first = await run(plain, sh('pwd; echo left > left.txt; mkdir -p d/e; echo x > "$TMPDIR/t"'))
    second = await run(plain, sh("pwd; ls -A"))
    where = first["stdout"].splitlines()[0]
    assert second["stdout"].splitlines() == [where]  # same worker, nothing left over
    assert where != os.getcwd() and not where.startswith(str(Path.home()))


def test_settings_refuse_what_cannot_be_done(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="EXECFLOW_ADMIN"):
        parse_names("PATHS,EXECFLOW_ADMIN")
    with pytest.raises(ValueError, match="not an environment variable"):
        parse_names("A-B")
    monkeypatch.setenv("EXECFLOW_WORKER_NAMESPACES", "sometimes")
    with pytest.raises(ValueError, match="EXECFLOW_WORKER_NAMESPACES"):
        Settings.from_env()
    if ROOT:
        with pytest.raises(ConfinementError, match="no such user"):
            Confinement.resolve("no-such-user-here")
    else:
        with pytest.raises(ConfinementError, match="only a server running as root"):
            Confinement.resolve("root")
        with pytest.raises(ConfinementError, match="as root"):
            Confinement.resolve(namespaces="on")


@root
async def test_as_root_workers_run_as_an_unprivileged_user(
    confined: LocalExecutor, tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "key").write_text("canary")
    out = await run(confined, sh(f"id -un; id -u; cat {private}/key || echo refused"))
    name, uid, *rest = out["stdout"].split()
    assert name == "execflow-worker" and int(uid) == pwd.getpwnam(name).pw_uid != 0
    assert "canary" not in out["stdout"] and rest == ["refused"]
    # and it cannot get root back
    out = await run(confined, sh("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"))
    assert "CapEff:\t0000000000000000" in out["stdout"]
    assert "NoNewPrivs:\t1" in out["stdout"]


@root
async def test_as_root_a_task_sees_neither_other_tasks_processes_nor_their_files(
    confined: LocalExecutor,
) -> None:
    canary = f"canary-{secrets.token_hex(6)}"
    # one task holds a process with a telling argv and a file in its scratch directory ...
    holder = asyncio.ensure_future(
        confined.run(
            "command",
            sh('echo secret > "$TMPDIR/$1"; sh -c \'sleep 30; true\' "$1"', canary),
            may_start=None,
        )
    )
    try:
        for _ in range(100):  # seen from the host, the holder runs ...
            if any(canary in _cmdline(p) for p in os.listdir("/proc") if p.isdigit()):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the holding task never started")
        # ... while the other worker looks for both: every process, its own scratch
        # directory's parent, and the temporary directories
        look = (
            "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ls -A \"$TMPDIR/..\" 2>&1; "
            "find /tmp /var/tmp -name 'canary-*' 2>/dev/null; echo end"
        )
        out = await run(confined, sh(look))
        assert out["stdout"].rstrip().endswith("end")
        assert canary not in out["stdout"]
        assert "Permission denied" in out["stdout"]  # the scratch root is not listed
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


@root
async def test_as_root_nothing_a_task_starts_outlives_its_worker(confined: LocalExecutor) -> None:
    canary = f"canary-{secrets.token_hex(6)}"
    # a process that leaves the worker's process group and session
    task = asyncio.ensure_future(
        confined.run(
            "command", sh('setsid sleep 60 "$1" </dev/null >/dev/null 2>&1 & sleep 60', canary)
        )
    )
    for _ in range(50):
        await asyncio.sleep(0.1)
        if any(canary in _cmdline(p) for p in os.listdir("/proc") if p.isdigit()):
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(50):
        if not any(canary in _cmdline(p) for p in os.listdir("/proc") if p.isdigit()):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a process the task started outlived its worker")


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_worker_interpreter_is_this_one() -> None:
    argv, _ = Confinement().command(sys.executable, Path("/nonexistent"))
    assert argv[:2] == [sys.executable, "-I"]


@root
async def test_as_root_a_worker_user_who_cannot_run_the_install_fails_the_start(
    tmp_path: Path,
) -> None:
    """A virtualenv under a private home: the start says so, instead of every task
    ending `lost`."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    python = private / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    ex = LocalExecutor(1, python=str(python), confinement=Confinement.resolve())
    with pytest.raises(ConfinementError, match="execflow-worker, who cannot start them"):
        await ex.start()
