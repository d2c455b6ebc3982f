"""Request-scoped pieces: the service, and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from execflow.records import Principal
from execflow.service import Service

_bearer = HTTPBearer(auto_error=False, description="A token: `Authorization: Bearer <token>`")
_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, description="The same token")


async def get_service(request: Request) -> Service:
    # async on purpose: FastAPI runs plain functions on a thread pool, a hop per request
    service: Service = request.app.state.service
    return service


async def get_principal(
    service: Annotated[Service, Depends(get_service)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    secret = bearer.credentials if bearer is not None else header
    return await service.authenticate(secret)


ServiceDep = Annotated[Service, Depends(get_service)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
