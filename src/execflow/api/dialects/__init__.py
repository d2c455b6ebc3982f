"""Vendor dialects: each a router answering one cloud product's API over the same service.

`ROUTERS` names the router of each dialect; `create_app` mounts those the settings turn on
(`EXECFLOW_DIALECTS`, all by default). docs/dialects.md maps each vendor's concepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import APIRouter, FastAPI

from execflow.api.dialects import (
    emr,
    emr_shapes,
    explorer,
    explorer_shapes,
    obs,
    obs_shapes,
    onedata,
    onedata_shapes,
    vro,
)
from execflow.api.dialects.base import Render
from execflow.settings import DIALECTS

ROUTERS: dict[str, APIRouter] = {
    "obs": obs.router,
    "emr": emr.router,
    "explorer": explorer.router,
    "onedata": onedata.router,
    "vro": vro.router,
}

# The paths each dialect answers, and how it writes an error: a request refused before
# routing (a body too large or not JSON, no such route) gets the vendor's envelope too.
ENVELOPES: dict[str, tuple[re.Pattern[str], Render]] = {
    "obs": (re.compile(r"/v2/"), obs_shapes.render),
    "emr": (re.compile(r"/\Z"), emr_shapes.render),
    "explorer": (re.compile(r"/api-open/"), explorer_shapes.render),
    "onedata": (re.compile(r"/api/v3/oneprovider/"), onedata_shapes.render),
    "vro": (re.compile(r"/vco/"), vro.render),
}


def envelopes(names: frozenset[str]) -> Callable[[str], Render | None]:
    """For a request path, the error renderer of the dialect (among `names`) answering it."""
    chosen = [ENVELOPES[name] for name in sorted(names)]

    def render_for(path: str) -> Render | None:
        return next((render for paths, render in chosen if paths.match(path)), None)

    return render_for


def mount(app: FastAPI, names: frozenset[str]) -> None:
    """Mount the routers of the dialects named."""
    unknown = names - DIALECTS
    if unknown:
        raise ValueError(f"unknown dialects: {', '.join(sorted(unknown))}")
    for name in sorted(names):
        app.include_router(ROUTERS[name])
