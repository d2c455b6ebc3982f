"""Vendor dialects: each a router answering one cloud product's API over the same service.

`ROUTERS` names the router of each dialect; `create_app` mounts those the settings turn on
(`EXECFLOW_DIALECTS`, all by default). docs/dialects.md maps each vendor's concepts.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI
from starlette.types import Scope

from execflow.api.dialects import (
    emr,
    emr_shapes,
    explorer,
    explorer_shapes,
    obs,
    obs_shapes,
    onedata,
    onedata_shapes,
    root,
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

Claim = Callable[[Scope], bool]


def _prefix(prefix: str) -> Claim:
    def claim(scope: Scope) -> bool:
        return str(scope["path"]).startswith(prefix)

    return claim


def _obs(scope: Scope) -> bool:
    return str(scope["path"]).startswith("/v2/") or root.kind_of(scope) == "obs"


# The requests each dialect answers, and how it writes an error: a request refused before
# routing (a body too large or not JSON, no such route) gets the vendor's envelope too.
# Where several APIs share a path (`/`), `root.kind_of` decides by what the request is.
ENVELOPES: dict[str, tuple[Claim, Render]] = {
    "obs": (_obs, obs_shapes.render),
    "emr": (root.claims("emr"), emr_shapes.render),
    "explorer": (_prefix("/api-open/"), explorer_shapes.render),
    "onedata": (_prefix("/api/v3/oneprovider/"), onedata_shapes.render),
    "vro": (_prefix("/vco/"), vro.render),
}


def envelopes(names: frozenset[str]) -> Callable[[Scope], Render | None]:
    """For a request, the error renderer of the dialect (among `names`) answering it."""
    chosen = [ENVELOPES[name] for name in sorted(names)]

    def render_for(scope: Scope) -> Render | None:
        return next((render for claim, render in chosen if claim(scope)), None)

    return render_for


def mount(app: FastAPI, names: frozenset[str]) -> None:
    """Mount the routers of the dialects named."""
    unknown = names - DIALECTS
    if unknown:
        raise ValueError(f"unknown dialects: {', '.join(sorted(unknown))}")
    for name in sorted(names):
        app.include_router(ROUTERS[name])
