"""The data directory: where a node keeps its files, private to the server's user.

It holds the SQLite database, the sealing keys and the first admin token, so it is made
0700 (and tightened when found looser), and the database file is made 0600 before SQLite
opens it (SQLite gives its journal files the database file's mode). Apart from
`settings.py` so that the CLI's client commands find the token without importing what
configures a server.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("execflow")

DATABASE = "execflow.db"
_FILES = (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", "secret-keys", "admin-token")


def make_private(path: Path) -> None:
    """Create `path` (0700) or tighten it and the server's files in it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)
        log.warning("the data directory %s was open to others (%o): made it 0700", path, mode)
    for name in _FILES:
        file = path / name
        if file.exists() and stat.S_IMODE(file.stat().st_mode) & 0o077:
            file.chmod(0o600)
    database = path / DATABASE
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def default_data_dir() -> Path:
    if env := os.environ.get("EXECFLOW_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "execflow"


def admin_token_path(data_dir: Path) -> Path:
    """The file in which the first start saves the admin token of `default`."""
    return data_dir / "admin-token"
