"""Masking secrets in what execflow shows and writes: the values, as given and as commonly
transformed, and the secret parts of workflow documents (`masked_document`).

`Secrets(texts)` computes once, per execution, every form of each secret text that masking
looks for; `redact` then masks a JSON value, string by string. What it catches is listed in
`variants`; what it does not (any other transformation, fragments, a secret spread over
several values) is stated in docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from execflow.sealing import SECRET_MASK

# Secrets this long or longer are masked wherever they occur in a text; shorter ones (a PIN
# of 1 or 2 digits) only where they are the whole value, or every "5" in every text goes.
MASKED_WITHIN = 4
# Base64 of a secret inside a longer base64 text (`user:token`, as HTTP Basic sends it) is
# found by the characters that encode its bytes alone: at least this many, so that a short
# run of base64 characters is not taken for a secret by chance.
_B64_CORE = 8


def _base64(data: bytes) -> set[str]:
    """The base64 texts of `data`, standard and URL-safe, padded or not, and the part of
    them that encodes `data` whatever comes before and after it in a longer text."""
    found = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        found |= {whole, whole.rstrip("=")}
        for offset in range(3):
            # `data` after `offset` bytes of something else: the groups of three bytes
            # that hold only `data` encode to the same characters every time
            text = encode(bytes(offset) + data).decode()
            start = 4 * -(-offset // 3)
            end = 4 * ((offset + len(data)) // 3)
            if end - start >= _B64_CORE:
                found.add(text[start:end])
    return found


def variants(text: str) -> tuple[set[str], set[str]]:
    """The forms of a secret text that masking catches: (those matched whatever their
    case, those matched exactly). Whatever their case: the text (upper, lower, title,
    capitalized, swapped, any mix), reversed, and its UTF-8 in hexadecimal. Exactly:
    JSON-escaped (as `json.dumps` and the `tojson` filter write it), URL-quoted
    (`urlencode`, `quote`, `quote_plus`), HTML-escaped, and base64 (standard and URL-safe,
    with or without padding, alone or inside a longer base64 text)."""
    any_case = {
        text,
        text[::-1],
        text.upper(),
        text.lower(),
        text.casefold(),
        binascii.hexlify(text.encode()).decode(),
    }
    escaped = json.dumps(text)[1:-1]
    exact = {
        escaped,
        json.dumps(text, ensure_ascii=False)[1:-1],
        # Jinja's tojson: JSON with the characters HTML gives a meaning to escaped
        escaped.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027"),
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
        html.escape(text),
        # markupsafe's (Jinja's `escape` filter)
        html.escape(text, quote=False).replace('"', "&#34;").replace("'", "&#39;"),
    }
    exact |= _base64(text.encode())
    exact -= any_case
    return any_case, exact


class Secrets:
    """The secret texts of one execution and every form of them masking looks for,
    computed once. False when there are none.

    Most texts hold no secret, so a text is first searched for a few keys, case-folded:
    every form contains one of them (the text folded, reversed, in hexadecimal, and the
    base64 of its bytes alone). Only a text holding a key is matched against every form,
    by a regular expression compiled when one is first needed."""

    __slots__ = ("_forms", "_keys", "_pattern", "_shortest", "_whole", "_whole_folded", "texts")

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = tuple(sorted(set(texts), key=len, reverse=True))
        forms: dict[str, bool] = {}  # each form, and whether it matches whatever its case
        self._whole: set[str] = set()
        self._whole_folded: set[str] = set()
        for text in self.texts:
            any_case, exact = variants(text)
            if len(text) >= MASKED_WITHIN:
                forms.update((v, False) for v in exact if len(v) >= MASKED_WITHIN)
                forms.update((v, True) for v in any_case if len(v) >= MASKED_WITHIN)
            else:
                # a short secret is masked only as a whole value, in any of its forms
                self._whole_folded |= {v.casefold() for v in any_case}
                self._whole |= exact
        # longest first: where forms overlap, the longest is masked whole
        self._forms = sorted(forms.items(), key=lambda f: len(f[0]), reverse=True)
        folded = sorted({v.casefold() for v in forms}, key=len)
        # a key that holds another is found only where that one is: the shorter will do
        keys: list[str] = []
        for key in folded:
            if not any(k in key for k in keys):
                keys.append(key)
        self._keys = tuple(keys)
        self._shortest = min(map(len, keys), default=0)
        self._pattern: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.texts)

    def __repr__(self) -> str:
        return f"Secrets({len(self.texts)} values)"  # never the values

    def mask(self, text: str) -> str:
        """`text` with every form of every secret in it replaced by the mask."""
        if self._whole and (text in self._whole or text.casefold() in self._whole_folded):
            return SECRET_MASK
        if not self._keys or len(text) < self._shortest:
            return text
        folded = text.casefold()
        for key in self._keys:
            if key in folded:
                return self._matcher().sub(SECRET_MASK, text)
        return text

    def _matcher(self) -> re.Pattern[str]:
        if self._pattern is None:
            forms = (f"(?i:{re.escape(v)})" if fold else re.escape(v) for v, fold in self._forms)
            self._pattern = re.compile("|".join(forms))
        return self._pattern


NO_SECRETS = Secrets(())


def redact(value: Any, secrets: Secrets | Iterable[str]) -> Any:
    """A copy of a JSON value with every form of every secret replaced by the mask."""
    if not isinstance(secrets, Secrets):
        secrets = Secrets(secrets)
    if not secrets:
        return value
    return _redact(value, secrets)


def _redact(value: Any, secrets: Secrets) -> Any:
    if isinstance(value, str):
        return secrets.mask(value)
    if isinstance(value, dict):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets) for v in value]
    if not isinstance(value, bool) and isinstance(value, int | float):
        text = str(value)
        if secrets.mask(text) != text:
            return SECRET_MASK
    return value


# workflow documents ---------------------------------------------------------------------------


def masked_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A workflow definition document as shown to people: each secret parameter's `default`
    and `enum`, and the inputs its schedules give it, replaced by the mask."""
    doc = dict(document)
    params = doc.get("parameters")
    if not isinstance(params, Mapping):
        return doc
    secret = {n for n, spec in params.items() if isinstance(spec, Mapping) and spec.get("secret")}
    if not secret:
        return doc
    doc["parameters"] = {
        name: masked_parameter(spec) if name in secret else spec for name, spec in params.items()
    }
    if isinstance(doc.get("schedules"), list):
        doc["schedules"] = [
            {
                **schedule,
                "inputs": {
                    k: SECRET_MASK if k in secret and v is not None else v
                    for k, v in schedule["inputs"].items()
                },
            }
            if isinstance(schedule, Mapping) and isinstance(schedule.get("inputs"), Mapping)
            else schedule
            for schedule in doc["schedules"]
        ]
    return doc


def masked_parameter(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A secret parameter's declaration with its default and its choices masked."""
    shown = dict(spec)
    if shown.get("default") is not None:
        shown["default"] = SECRET_MASK
    if isinstance(shown.get("enum"), list):
        shown["enum"] = [SECRET_MASK for _ in shown["enum"]]
    return shown
