"""Request-scoped pieces: the service, and the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from execflow.records import Principal
from execflow.service import Service


async def get_service(request: Request) -> Service:
    # async on purpose: FastAPI runs plain functions on a thread pool, a hop per request
    service: Service = request.app.state.service
    return service


async def get_principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <token>` or `X-Auth-Token: <token>`.

    One plain dependency reading the headers: FastAPI's security classes cost more per
    request than the token lookup; the schemes are declared in the OpenAPI document instead.
    """
    headers = request.headers
    secret = headers.get("x-auth-token")
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        secret = credentials.strip()
    service: Service = request.app.state.service
    return await service.authenticate(secret)


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "A token"},
    "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token", "description": "A token"},
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}]

ServiceDep = Annotated[Service, Depends(get_service)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
