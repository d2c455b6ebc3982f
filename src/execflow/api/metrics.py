"""`GET /metrics`: the node's Prometheus metrics, for tokens of the default project."""

from __future__ import annotations

from fastapi import APIRouter, Response

from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import ErrorBody
from execflow.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
    },
    summary="This node's metrics (tokens of the default project)",
)
async def metrics(service: ServiceDep, who: PrincipalDep) -> Response:
    body = await service.metrics_exposition(who)
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
