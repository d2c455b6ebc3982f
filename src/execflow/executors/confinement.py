"""What a worker process may see and do: the confinement task code runs in.

Task code (the `python` and `command` actions) is written by whoever may store workflows
with code actions, and it runs in worker processes. Those start:

- with a clean environment: a minimal PATH, a UTF-8 locale, HOME and TMPDIR in the
  worker's scratch directory, and only the server variables named in
  `EXECFLOW_WORKER_ENV`; never the server's `EXECFLOW_*` settings, database URL or keys;
- with no file of the server open (only their request and reply pipes) and an isolated
  interpreter (`python -I`: no PYTHONPATH, no user site, not the server's directory);
- in a scratch directory of their own, and each task in a fresh directory inside it that
  is removed when the task ends;
- where the server runs as root, as an unprivileged user (`EXECFLOW_WORKER_USER`,
  `execflow-worker` by default, made with `useradd` when missing), so the data directory
  (0700 to the server's user) and the files in it are out of reach;
- where the server runs as root, each in PID and mount namespaces of its own
  (`EXECFLOW_WORKER_NAMESPACES`, `auto` by default): a task sees only its worker's
  processes (not another task's argv, environment or directory), and nothing it starts
  outlives its worker.

Scratch directories are private to the workers' user (0700) under a root that nobody else
may list, with random names: a task cannot find another worker's.

See docs/security.md for what a task can still reach.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("execflow")

DEFAULT_USER = "execflow-worker"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs in the fresh interpreter: put the server's import path (and the task path) in
# front, then serve. The path is data on argv: nothing of the server's environment.
_BOOT = (
    "import json,sys;sys.path[:0]=json.loads(sys.argv[1]);"
    "from execflow.executors.worker import main;main()"
)

Namespaces = Literal["auto", "on", "off"]


def parse_namespaces(value: str) -> Namespaces:
    word = value.strip().lower()
    if word in ("auto", "on", "off"):
        return word  # type: ignore[return-value]
    raise ValueError(f"must be auto, on or off, got {value!r}")


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of environment variable names."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ValueError(f"{name!r} is not an environment variable name")
        if name.startswith("EXECFLOW_"):
            raise ValueError(f"{name} is the server's own setting: it never reaches tasks")
    return names


class ConfinementError(RuntimeError):
    """The workers cannot be confined as configured (a missing user, no `unshare`)."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Confinement:
    """How worker processes are started. The default keeps the server's user and no
    namespaces, with a clean environment and scratch directories (what any user can do);
    `resolve` turns the settings into the real thing."""

    account: Account | None = None  # run workers as this user (the server must be root)
    namespaces: bool = False  # PID and mount namespaces per worker (the server must be root)
    task_path: tuple[str, ...] = ()  # directories tasks' modules are imported from, first
    env: dict[str, str] = field(default_factory=dict)  # passed to every worker as is

    @classmethod
    def resolve(
        cls,
        user: str | None = None,
        namespaces: Namespaces = "auto",
        task_path: Sequence[str] = (),
        pass_env: Sequence[str] = (),
    ) -> Confinement:
        """The confinement the settings ask for on this machine. As root, workers drop to
        `user` (default `execflow-worker`, created when missing); `user` "root" keeps
        them root. Raises `ConfinementError` when asked for what cannot be done."""
        root = os.geteuid() == 0
        account = None
        if user is None and root:
            account = _account(DEFAULT_USER, create=True)
        elif user is not None:
            if not root and user != pwd.getpwuid(os.geteuid()).pw_name:
                raise ConfinementError(
                    f"EXECFLOW_WORKER_USER={user}: only a server running as root can run "
                    "its workers as another user"
                )
            account = _account(user, create=user == DEFAULT_USER)
            if account.uid == os.geteuid():
                account = None
        wanted = namespaces == "on" or (namespaces == "auto" and root)
        usable = root and shutil.which("unshare") is not None
        if namespaces == "on" and not usable:
            raise ConfinementError(
                "EXECFLOW_WORKER_NAMESPACES=on needs a server running as root with "
                "util-linux's unshare"
            )
        if account is not None and shutil.which("setpriv") is None:
            raise ConfinementError(
                f"workers should run as {account.name}, and that needs util-linux's setpriv"
            )
        env = {name: os.environ[name] for name in pass_env if name in os.environ}
        paths = tuple(str(Path(p).resolve()) for p in task_path)
        return cls(account, bool(wanted and usable), paths, env)

    def import_path(self) -> list[str]:
        """The worker's import path: the task path, then the server's own (absolute: the
        worker's directory is its scratch directory, not the server's)."""
        entries = [*self.task_path]
        for entry in sys.path:
            absolute = os.path.abspath(entry or os.curdir)
            if absolute not in entries:
                entries.append(absolute)
        return entries

    def environment(self, scratch: str) -> dict[str, str]:
        # the interpreter's own directory first: tools installed with it (a virtualenv's)
        bin_dir = os.path.dirname(sys.executable)
        path = DEFAULT_PATH if bin_dir in DEFAULT_PATH.split(":") else f"{bin_dir}:{DEFAULT_PATH}"
        return {
            **self.env,
            "PATH": path,
            "LANG": "C.UTF-8",
            "HOME": scratch,
            "TMPDIR": scratch,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }

    def command(self, python: str, scratch: Path) -> tuple[list[str], dict[str, Any]]:
        """The argv and `subprocess` options that start one worker in `scratch`. The user
        is dropped by `setpriv` (the event loop's subprocess support may not do it)."""
        argv = [python, "-I", "-c", _BOOT, json.dumps(self.import_path())]
        if self.account is not None:
            a = self.account
            drop = ["setpriv", f"--reuid={a.uid}", f"--regid={a.gid}", "--clear-groups"]
            argv = [*drop, "--no-new-privs", "--", *argv]
        if self.namespaces:
            # its own PID namespace, and a mount namespace for that namespace's /proc
            argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--", *argv]
        return argv, {"env": self.environment(str(scratch)), "cwd": str(scratch)}

    def probe(self, python: str) -> None:
        """Check that the workers' user can run `python` and import the worker from the
        server's import path (a virtualenv under a private home is a common miss); raises
        `ConfinementError` saying what to change."""
        if self.account is None:
            return
        argv, _ = replace(self, namespaces=False).command(python, Path("/"))
        argv[-2] = _BOOT.replace("main;main()", "main")  # import it, do not serve
        done = subprocess.run(
            argv,
            env=self.environment("/"),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfinementError(
                f"task workers run as {self.account.name}, who cannot start them from "
                f"{python} ({why}): install execflow where that user can read it (its "
                "virtualenv, the interpreter it links to, the task modules), or set "
                "EXECFLOW_WORKER_USER to a user who can"
            )

    def describe(self) -> str:
        who = self.account.name if self.account else "the server's user"
        return f"workers run as {who}" + (", each in its own namespaces" if self.namespaces else "")


class Scratch:
    """The scratch directories of one pool's workers: one per worker, private to the
    worker's user, under a root that others can pass through but not list."""

    def __init__(self, account: Account | None) -> None:
        self._account = account
        self.root = Path(tempfile.mkdtemp(prefix="execflow-scratch-"))
        self.root.chmod(0o711)

    def make(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="w-", dir=self.root))
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)
        path.chmod(0o700)
        return path

    def remove(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _account(name: str, create: bool) -> Account:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise ConfinementError(f"EXECFLOW_WORKER_USER={name}: no such user") from None
        _create(name)
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0 and name != "root":
        raise ConfinementError(f"EXECFLOW_WORKER_USER={name} has uid 0: it would be root")
    return Account(name, entry.pw_uid, entry.pw_gid)


def _create(name: str) -> None:
    """Make the workers' system user (no home, no login, a group of its own)."""
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ConfinementError(
            f"there is no user {name} for workers and no useradd to make one: create it "
            "(a system user without login), or set EXECFLOW_WORKER_USER"
        )
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    argv = [useradd, "--system", "--user-group", "--no-create-home"]
    argv += ["--home-dir", "/nonexistent", "--shell", nologin, name]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)  # made (perhaps by another node at the same time)
        log.info("made the system user %s for task workers", name)
        return
    raise ConfinementError(f"could not create the workers' user {name}: {done.stderr.strip()}")
