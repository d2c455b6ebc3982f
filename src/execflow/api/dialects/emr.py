"""Alibaba Cloud E-MapReduce data development (API 2016-04-08) as a dialect.

The RPC style: every call is `GET` or `POST /` with `Action`, `Version` and the action's
parameters in the query string or a form body, signed with an access key (or sent with a
token). This module checks the common parameters and the caller; the actions are in
`emr_actions.py`, the shapes and tables in `emr_shapes.py`. docs/dialects.md says what maps
to what.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from execflow.api.dialects.base import caller, dialect_route, service_of
from execflow.api.dialects.emr_actions import ACTIONS, Call
from execflow.api.dialects.emr_shapes import (
    VERSION,
    MissingParameter,
    UnknownAction,
    UnknownVersion,
    alibaba_request_id,
    document,
    invalid,
    render,
)
from execflow.api.dialects.root import claims

__all__ = ["ACTIONS", "router"]

# `/` is shared with other APIs: this router answers the requests `root.kind_of` says are EMR's
router = APIRouter(route_class=dialect_route(render, claims("emr")), include_in_schema=False)


@router.api_route("/", methods=["GET", "POST"])
async def rpc(request: Request) -> Response:
    """One RPC call: check the common parameters, authenticate, run the action."""
    pairs = list(request.query_params.multi_items())
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        pairs += [(k, str(v)) for k, v in (await request.form()).multi_items()]
    params = dict(pairs)
    request.state.emr_params = pairs  # what a signature covers, for its error message
    request.state.emr_format = params.get("Format", "")
    if params.get("Format", "JSON").upper() not in ("JSON", "XML"):
        raise invalid("Format", "JSON or XML")
    action = params.get("Action", "")
    if not action:
        raise MissingParameter("Action")
    if not params.get("Version"):
        raise MissingParameter("Version")
    if params["Version"] != VERSION:
        raise UnknownVersion(f"Version {params['Version']!r} is not valid: use {VERSION}")
    handler = ACTIONS.get(action)
    if handler is None:
        raise UnknownAction(f"The action {action!r} is not found in version {VERSION}")
    who = await caller(request)
    body = await handler(Call(service_of(request), who, params))
    return document(
        request, f"{action}Response", {"RequestId": alibaba_request_id(request), **body}
    )
