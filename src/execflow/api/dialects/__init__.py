"""Vendor dialects: each a router answering one cloud product's API over the same service.

`ROUTERS` names the router of each dialect; `create_app` mounts those the settings turn on
(`EXECFLOW_DIALECTS`, all by default). docs/dialects.md maps each vendor's concepts.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from execflow.api.dialects import emr, explorer, obs, onedata, vro
from execflow.settings import DIALECTS

ROUTERS: dict[str, APIRouter] = {
    "obs": obs.router,
    "emr": emr.router,
    "explorer": explorer.router,
    "onedata": onedata.router,
    "vro": vro.router,
}


def mount(app: FastAPI, names: frozenset[str]) -> None:
    """Mount the routers of the dialects named."""
    unknown = names - DIALECTS
    if unknown:
        raise ValueError(f"unknown dialects: {', '.join(sorted(unknown))}")
    for name in sorted(names):
        app.include_router(ROUTERS[name])
