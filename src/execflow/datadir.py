"""Where a node keeps its files: the data directory and the admin token saved in it.

Apart from `settings.py` so that the CLI's client commands find the token without
importing what configures a server."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    if env := os.environ.get("EXECFLOW_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "execflow"


def admin_token_path(data_dir: Path) -> Path:
    """The file in which the first start saves the admin token of `default`."""
    return data_dir / "admin-token"
