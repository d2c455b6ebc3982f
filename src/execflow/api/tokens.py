"""`/api/v1/projects/{project}/tokens` and `…/access-keys`: issue, list and revoke a
project's credentials (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from execflow import admin
from execflow.api.deps import PrincipalDep, ServiceDep
from execflow.api.schemas import (
    AccessKeyPublic,
    ErrorBody,
    TokenCreate,
    TokenInfo,
    TokenList,
    TokenPublic,
)
from execflow.store.credentials import ACCESS_KEY

router = APIRouter(prefix="/api/v1/projects", tags=["tokens"])

_ERRORS: dict[int | str, dict[str, type]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
}


@router.post(
    "/{project}/tokens",
    status_code=201,
    response_model=TokenPublic,
    responses={**_ERRORS, 422: {"model": ErrorBody}},
    summary="Create a token (its secret is shown only in this answer)",
)
async def create_token(
    project: str, body: TokenCreate, response: Response, service: ServiceDep, who: PrincipalDep
) -> TokenPublic:
    token, secret = await admin.create_token(
        service, who, project, body.role, body.description, body.expires_at, body.expires_in
    )
    response.headers["Cache-Control"] = "no-store"
    info = TokenInfo.of(token, project, service.clock.now())
    return TokenPublic(**info.model_dump(), token=secret)


@router.get(
    "/{project}/tokens",
    response_model=TokenList,
    responses=_ERRORS,
    summary="List a project's tokens, revoked and expired ones included (never secrets)",
)
async def list_tokens(project: str, service: ServiceDep, who: PrincipalDep) -> TokenList:
    now = service.clock.now()
    tokens = await admin.list_tokens(service, who, project)
    return TokenList(items=[TokenInfo.of(t, project, now) for t in tokens])


@router.get(
    "/{project}/tokens/{token_id}",
    response_model=TokenInfo,
    responses=_ERRORS,
    summary="Get one token (never its secret)",
)
async def get_token(
    project: str, token_id: str, service: ServiceDep, who: PrincipalDep
) -> TokenInfo:
    token = await admin.get_token(service, who, project, token_id)
    return TokenInfo.of(token, project, service.clock.now())


@router.delete(
    "/{project}/tokens/{token_id}",
    response_model=TokenInfo,
    responses={**_ERRORS, 409: {"model": ErrorBody}},
    summary="Revoke a token: it stops working with the next request",
)
async def revoke_token(
    project: str, token_id: str, service: ServiceDep, who: PrincipalDep
) -> TokenInfo:
    token = await admin.revoke_token(service, who, project, token_id)
    return TokenInfo.of(token, project, service.clock.now())


# access keys: the same credentials, for clients that sign requests --------------------------


@router.post(
    "/{project}/access-keys",
    status_code=201,
    response_model=AccessKeyPublic,
    responses={**_ERRORS, 422: {"model": ErrorBody}},
    summary="Create an access key (its secret is shown only in this answer)",
)
async def create_access_key(
    project: str, body: TokenCreate, response: Response, service: ServiceDep, who: PrincipalDep
) -> AccessKeyPublic:
    """For clients that sign each request with the secret (`Authorization: OBS
    <id>:<signature>`, as the OBS SDKs do) instead of sending it. The key has a role, an
    expiry and a last-used time like a token, and resolves to the same kind of principal."""
    key, secret = await admin.create_token(
        service,
        who,
        project,
        body.role,
        body.description,
        body.expires_at,
        body.expires_in,
        kind=ACCESS_KEY,
    )
    response.headers["Cache-Control"] = "no-store"
    info = TokenInfo.of(key, project, service.clock.now())
    return AccessKeyPublic(**info.model_dump(), secret=secret)


@router.get(
    "/{project}/access-keys",
    response_model=TokenList,
    responses=_ERRORS,
    summary="List a project's access keys, revoked and expired ones included (never secrets)",
)
async def list_access_keys(project: str, service: ServiceDep, who: PrincipalDep) -> TokenList:
    now = service.clock.now()
    keys = await admin.list_tokens(service, who, project, ACCESS_KEY)
    return TokenList(items=[TokenInfo.of(k, project, now) for k in keys])


@router.get(
    "/{project}/access-keys/{key_id}",
    response_model=TokenInfo,
    responses=_ERRORS,
    summary="Get one access key (never its secret)",
)
async def get_access_key(
    project: str, key_id: str, service: ServiceDep, who: PrincipalDep
) -> TokenInfo:
    key = await admin.get_token(service, who, project, key_id, ACCESS_KEY)
    return TokenInfo.of(key, project, service.clock.now())


@router.delete(
    "/{project}/access-keys/{key_id}",
    response_model=TokenInfo,
    responses=_ERRORS,
    summary="Revoke an access key: requests it signs are refused from the next one",
)
async def revoke_access_key(
    project: str, key_id: str, service: ServiceDep, who: PrincipalDep
) -> TokenInfo:
    key = await admin.revoke_token(service, who, project, key_id, ACCESS_KEY)
    return TokenInfo.of(key, project, service.clock.now())
