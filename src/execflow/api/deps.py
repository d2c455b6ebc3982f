"""Request-scoped pieces: the service, and the authenticated caller."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

from execflow.errors import NotAuthenticated
from execflow.records import Principal
from execflow.service import Service, SignedRequest
from execflow.signing import SignatureError, parse_obs_authorization


async def get_service(request: Request) -> Service:
    # async on purpose: FastAPI runs plain functions on a thread pool, a hop per request
    service: Service = request.app.state.service
    return service


async def get_principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <token>` or `X-Auth-Token: <token>`, or from
    an access key's signature (`Authorization: OBS <key id>:<signature>`, or Alibaba
    Cloud's `AccessKeyId` and `Signature` parameters).

    One plain dependency reading the headers: FastAPI's security classes cost more per
    request than the token lookup; the schemes are declared in the OpenAPI document instead.
    """
    headers = request.headers
    service: Service = request.app.state.service
    authorization = headers.get("authorization", "")
    try:
        signed = parse_obs_authorization(authorization)
    except SignatureError as exc:
        raise NotAuthenticated(str(exc)) from None
    if signed is not None:
        scheme, key_id, signature = signed
        if (md5 := headers.get("content-md5")) is not None:
            # the one header by which the signature covers the body: it must be the body's
            digest = base64.b64encode(hashlib.md5(await request.body()).digest()).decode()
            if not hmac.compare_digest(md5.strip().encode(), digest.encode()):
                raise NotAuthenticated("the body does not match its Content-MD5")
        scope = request.scope
        return await service.authenticate_signed(
            SignedRequest(
                key_id,
                signature,
                request.method,
                scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0],
                scope.get("query_string", b"").decode("latin-1"),
                {k.lower(): v for k, v in headers.items()},
                "x-obs-" if scheme == "OBS" else "x-amz-",
            )
        )
    # Alibaba Cloud's RPC style: the signature and the key's id among the parameters, in
    # the query or (where RPC calls go, on /) a form body.
    query = request.query_params
    rpc = request.url.path == "/"
    form = False
    params: list[tuple[str, str]] = []
    named: Mapping[str, str] = query
    if rpc:  # only there: the native API's requests pay nothing for it
        form = headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        params = list(query.multi_items())
        if form:
            params += [(k, str(v)) for k, v in (await request.form()).multi_items()]
        named = dict(params)
    if "Signature" in named and "AccessKeyId" in named:
        # It covers the parameters and nothing else, not the path nor another body: so it
        # is taken only on / with no body but a form, or a signed query could be replayed
        # against any route with any body.
        if not rpc or (not form and await request.body()):
            raise NotAuthenticated(
                "an Alibaba Cloud RPC signature is taken for RPC calls only (on /, with their"
                " parameters in the query or a form body)"
            )
        return await service.authenticate_signed(
            SignedRequest(
                named["AccessKeyId"],
                named["Signature"],
                request.method,
                "",
                "",
                {},
                scheme="acs",
                params=tuple(params),
            )
        )
    secret = headers.get("x-auth-token")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        secret = credentials.strip()
    return await service.authenticate(secret)


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "A token"},
    "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token", "description": "A token"},
    "signature": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`OBS <access key id>:<signature>`: a request signed with an access key",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}, {"signature": []}]

ServiceDep = Annotated[Service, Depends(get_service)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
