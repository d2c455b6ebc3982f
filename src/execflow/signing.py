"""Signed requests: an access key's secret signs each request instead of travelling with it.

`obs_string_to_sign` is the string the OBS SDKs sign (their "V2" scheme, also S3's before
SigV4): the method, `Content-MD5`, `Content-Type`, the date (empty when `x-obs-date` is
sent instead), the `x-obs-*` headers in order, and the resource: the path, with the query
parameters that name a sub-resource. The signature is base64(HMAC-SHA1(secret, string)), and
the request says `Authorization: OBS <access key id>:<signature>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

# how far a signed request's date may be from the server's clock, either way
MAX_SKEW_SECONDS = 15 * 60

# query parameters that are part of what is signed (the rest are not)
_SUBRESOURCES = frozenset(
    {
        "acl", "append", "backtosource", "bucketstatus", "cors", "delete", "deletebucket",
        "directcoldaccess", "dispolicy", "encryption", "fileinterface", "inventory", "length",
        "lifecycle", "location", "logging", "metadata", "modify", "name", "notification",
        "obscompresspolicy", "object-lock", "partnumber", "policy", "policystatus", "position",
        "publicaccessblock", "quota", "rename", "replication", "requestpayment",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore",
        "retention", "storageclass", "storageinfo", "storagepolicy", "tagging", "torrent",
        "truncate", "uploadid", "uploads", "versionid", "versioning", "versions", "website",
        "x-image-process", "x-image-save-bucket", "x-image-save-object", "x-oss-process",
        "x-obs-accesslabel", "x-workflow-prefix", "x-workflow-start", "x-workflow-limit",
        "x-workflow-template-name", "x-workflow-graph-name", "x-workflow-execution-state",
        "x-workflow-execution-type", "x-workflow-next-marker",
    }
)  # fmt: skip


class SignatureError(Exception):
    """Why a signed request is refused (said to the caller)."""


def parse_obs_authorization(value: str) -> tuple[str, str, str] | None:
    """(scheme, access key id, signature) of `OBS id:signature` or `AWS id:signature`."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme not in ("OBS", "AWS"):
        return None
    key_id, colon, signature = rest.strip().partition(":")
    if not colon or not key_id or not signature:
        raise SignatureError(f"give `Authorization: {scheme} <access key id>:<signature>`")
    return scheme, key_id, signature


def obs_string_to_sign(
    method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], prefix: str = "x-obs-"
) -> str:
    """The string a request's signature covers. `headers` have lower-case names;
    `raw_path` is the path as sent (percent-encoded), `raw_query` the query string."""
    signed = {k: v for k, v in headers.items() if k.startswith(prefix)}
    date = "" if f"{prefix}date" in signed else headers.get("date", "")
    lines = [method, headers.get("content-md5", ""), headers.get("content-type", ""), date]
    for name in sorted(signed):
        value = signed[name]
        lines.append(f"{name}:{value.strip() if name.startswith(prefix + 'meta-') else value}")
    resource = raw_path or "/"
    subresources = []
    for part in raw_query.split("&") if raw_query else ():
        name, equals, value = part.partition("=")
        name = unquote(name)
        if name.lower() in _SUBRESOURCES or name.lower().startswith(prefix):
            subresources.append((name, unquote(value) if equals else None))
    if subresources:
        subresources.sort(key=lambda kv: kv[0])
        resource += "?" + "&".join(k if v is None else f"{k}={v}" for k, v in subresources)
    return "\n".join(lines) + "\n" + resource


def obs_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_at(headers: Mapping[str, str], prefix: str = "x-obs-") -> datetime:
    """When the request says it was signed; SignatureError if it says nothing usable."""
    text = headers.get(f"{prefix}date") or headers.get("date")
    if not text:
        raise SignatureError("a signed request needs a Date (or x-obs-date) header")
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise SignatureError(f"the request date {text!r} is not an HTTP date") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def check_obs_request(
    secret: str,
    signature: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    now: datetime,
    prefix: str = "x-obs-",
) -> None:
    """SignatureError unless `signature` is this request's, signed within the allowed skew."""
    when = signed_at(headers, prefix)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureError(
            f"the request was signed at {when.isoformat()}, more than "
            f"{MAX_SKEW_SECONDS // 60} minutes from the server's time"
        )
    expected = obs_signature(
        secret, obs_string_to_sign(method, raw_path, raw_query, headers, prefix)
    )
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("the signature does not match the request")


# Alibaba Cloud's RPC style -----------------------------------------------------------------
#
# The parameters (the query, and a form body's fields) sorted by name, each name and value
# percent-encoded (RFC 3986: only A-Z a-z 0-9 - _ . ~ stay), joined as a query string; the
# string to sign is the method, "%2F" and that query string encoded again, joined by "&"; the
# signature is base64(HMAC(secret + "&", string)) in the `Signature` parameter, the key's id
# in `AccessKeyId`, with `Timestamp` (ISO 8601, UTC) and a `SignatureNonce` used only once.

ACS_METHODS = {"HMAC-SHA1": hashlib.sha1, "HMAC-SHA256": hashlib.sha256}


def _acs_encode(text: str) -> str:
    return quote(text, safe="~")


def acs_string_to_sign(method: str, params: list[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in params if k != "Signature")
    query = "&".join(f"{_acs_encode(k)}={_acs_encode(v)}" for k, v in pairs)
    return f"{method}&{_acs_encode('/')}&{_acs_encode(query)}"


def acs_signature(secret: str, string_to_sign: str, method: str = "HMAC-SHA1") -> str:
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), ACS_METHODS[method])
    return base64.b64encode(digest.digest()).decode()


def check_acs_request(
    secret: str, method: str, params: list[tuple[str, str]], now: datetime
) -> str:
    """SignatureError unless the `Signature` among `params` is theirs, made within the
    allowed skew; returns the request's `SignatureNonce` (the caller refuses it again)."""
    given = dict(params)
    algorithm = given.get("SignatureMethod", "")
    if algorithm not in ACS_METHODS:
        raise SignatureError(f"SignatureMethod must be one of {', '.join(ACS_METHODS)}")
    nonce = given.get("SignatureNonce", "")
    if not nonce:
        raise SignatureError("a signed request needs a SignatureNonce")
    try:
        when = datetime.fromisoformat(given.get("Timestamp", "").replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError(
            "Timestamp must be an ISO 8601 time such as 2030-01-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureError(
            f"the request was signed at {when.isoformat()}, more than "
            f"{MAX_SKEW_SECONDS // 60} minutes from the server's time"
        )
    expected = acs_signature(secret, acs_string_to_sign(method, params), algorithm)
    if not hmac.compare_digest(expected.encode(), given.get("Signature", "").encode()):
        raise SignatureError("the signature does not match the request")
    return nonce


class NonceCache:
    """Nonces this node saw within the allowed skew: a replay to the same node is refused
    without a write (the store's `use_nonce` is what every node shares)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], datetime] = {}

    def first_use(self, key_id: str, nonce: str, now: datetime) -> bool:
        if len(self._seen) > 100_000 or not self._seen:
            horizon = MAX_SKEW_SECONDS * 2
            self._seen = {
                k: at for k, at in self._seen.items() if (now - at).total_seconds() < horizon
            }
        if (key_id, nonce) in self._seen:
            return False
        self._seen[(key_id, nonce)] = now
        return True
