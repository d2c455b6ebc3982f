"""The only place that talks SQL: every use case and engine write is one transaction here.

`Store` is composed of one part per job, each a mixin over `base.StoreBase` (the engine,
the threads calls run on, the connections reads keep): see docs/architecture.md.
"""

from __future__ import annotations

from execflow.store.commands import Commands
from execflow.store.credentials import Credentials
from execflow.store.executions import Executions
from execflow.store.leases import Leases
from execflow.store.sealed import SealedValues
from execflow.store.starts import Starts
from execflow.store.workflows import Workflows

__all__ = ["Store"]


class Store(Credentials, Workflows, SealedValues, Starts, Executions, Commands, Leases):
    """Every database operation of the service and the engines. Writes run on their own
    threads and reads on others (`StoreBase`); run writes with `call`, reads with `read`."""
