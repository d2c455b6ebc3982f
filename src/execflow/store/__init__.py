"""Persistence: the schema, the store and database set-up."""

from __future__ import annotations

from execflow.store.database import connect, upgrade
from execflow.store.store import LeaseLost, Store

__all__ = ["LeaseLost", "Store", "connect", "upgrade"]
