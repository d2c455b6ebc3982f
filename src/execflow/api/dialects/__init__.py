"""Vendor dialects: each a router answering one cloud product's API over the same service.

`ROUTERS` names the router of each dialect; `create_app` mounts those the settings turn on
(`EXECFLOW_DIALECTS`, all by default). docs/dialects.md maps each vendor's concepts.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from execflow.api.dialects import emr
from execflow.settings import DIALECTS

ROUTERS: dict[str, APIRouter] = {"emr": emr.router}


def mount(app: FastAPI, names: frozenset[str]) -> None:
    """Mount the routers of the dialects named (each of DIALECTS once it is written)."""
    unknown = names - DIALECTS
    if unknown:
        raise ValueError(f"unknown dialects: {', '.join(sorted(unknown))}")
    for name in sorted(names):
        router = ROUTERS.get(name)
        if router is not None:
            app.include_router(router)
