"""Persistence: the schema, the store and database set-up."""

from __future__ import annotations

from execflow.store.database import connect, upgrade
from execflow.store.store import Store
from execflow.store.writes import LeaseLost

__all__ = ["LeaseLost", "Store", "connect", "upgrade"]
