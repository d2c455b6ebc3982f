"""`python -m execflow.cli`, as the `execflow` command."""

from __future__ import annotations

import os

from execflow.cli import main

if __name__ == "__main__":
    # the server's worker processes inherit it: their output is not held back
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
