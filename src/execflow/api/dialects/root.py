"""What a request outside every API's own path prefix is for, decided in one place.

Several APIs share the root: Alibaba EMR's RPC calls (`GET` or `POST /` with `Action`),
OBS calls in virtual-host style (`/?obsworkflowtriggerpolicy`, the bucket in the host name)
and in path style (`/{bucket}?obsworkflowtriggerpolicy`), and the web console's door for
browsers (`GET /` as a page). A route at such a path answers only the requests `kind_of`
gives its kind (the `claim` of `base.dialect_route`), and a refusal made before any
route (the body guard, no such route or method) is written in that kind's envelope
(`dialects.ENVELOPES`). So a new API at `/` is one rule here, not a change to the others.

The rules, in order; the first that holds decides:

1. the query names an OBS workflow sub-resource: `obs` (whatever the path);
2. at `/`, an `Action` in the query, or a form body: `emr` (its parameters are in either);
3. the request is signed OBS's way (`Authorization: OBS …` or `AWS …`, or `x-obs-date`):
   `obs`, so that an OBS SDK's call that execflow does not answer is refused in OBS's shape;
4. at `/`, a browser's page request (`GET` or `HEAD` whose `Accept` names `text/html`):
   `console`, which sends it on to the web console;
5. at `/`, anything else: `emr`, whose RPC endpoint says that `Action` is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import Scope

# Paths that belong to one API by their prefix (the native API and the dialects with a
# prefix of their own): never classified here.
OWN_PREFIXES = ("/api/", "/api-open/", "/vco/", "/v2/")
# OBS's bucket sub-resources of its workflow service (what `WorkflowClient` sends).
OBS_SUBRESOURCES = frozenset({"obsworkflowtriggerpolicy"})
_FORM = b"application/x-www-form-urlencoded"


def kind_of(scope: Scope) -> str | None:
    """The API a request is for (`obs`, `emr`, `console`), or None when no rule claims it."""
    path: str = scope["path"]
    if path.startswith(OWN_PREFIXES):
        return None
    if obs_subresource(scope):
        return "obs"
    headers = dict(scope.get("headers") or ())
    if path == "/" and ("Action" in _query_names(scope) or _is_form(headers)):
        return "emr"
    if _signed_by_obs(headers):
        return "obs"
    if path == "/" and _browser_page(scope, headers):
        return "console"
    return "emr" if path == "/" else None


def claims(kind: str) -> Callable[[Scope], bool]:
    """The claim of a route answering `kind`'s requests."""

    def claim(scope: Scope) -> bool:
        return kind_of(scope) == kind

    return claim


def obs_subresource(scope: Scope) -> bool:
    """Whether the query names one of OBS's workflow sub-resources of a bucket."""
    return bool(_query_names(scope) & OBS_SUBRESOURCES)


def _query_names(scope: Scope) -> set[str]:
    raw: bytes = scope.get("query_string") or b""
    return {name for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}


def _is_form(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"content-type", b"").split(b";")[0].strip().lower() == _FORM


def _browser_page(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    # an RPC client sends no `text/html` in Accept (the SDKs ask for JSON or XML, or `*/*`)
    return scope.get("method") in ("GET", "HEAD") and b"text/html" in headers.get(b"accept", b"")


def _signed_by_obs(headers: dict[bytes, bytes]) -> bool:
    scheme = headers.get(b"authorization", b"").split(b" ", 1)[0]
    return scheme in (b"OBS", b"AWS") or b"x-obs-date" in headers
