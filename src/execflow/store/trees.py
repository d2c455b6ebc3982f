"""The reads behind the bound on the executions one start makes through children.

Synchronous like `Store`'s methods: run them with `store.read`. A tree is counted by its
root (`executions.root_id`, indexed), which every child carries.
"""

from __future__ import annotations

import sqlalchemy as sa

from execflow.store import schema as s
from execflow.store.store import Store


def tree_size(store: Store, root_id: str) -> int:
    """How many executions the execution `root_id` has made through children, at every
    depth (itself not counted)."""
    e = s.executions
    q = sa.select(sa.func.count()).select_from(e).where(e.c.root_id == root_id)
    with store.reading() as conn:
        return int(conn.execute(q).scalar_one())
