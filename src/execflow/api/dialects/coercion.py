"""Scalar values as vendors send them, read as the type of the parameter they are for.

Several vendors' clients send every value as text (Alibaba's `Conf`, vRO clients' typed
values) or say a parameter takes "string or number" (Explorer): `"3"` for an integer
parameter means 3. A text is read only when it reads exactly (`"3"`, `"-2.5"`, `"true"`);
anything else is left as it came, for the service to refuse with the parameter named.
"""

from __future__ import annotations

import math
import re
from typing import Any

# at most 18 digits: every such integer is exact in a 64-bit integer
INTEGER_TEXT = re.compile(r"-?\d{1,18}")
NUMBER_TEXT = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def number_of_text(text: str) -> int | float | None:
    """The number `text` writes (an int when it has no fraction or exponent), or None when
    it is not one, or not finite."""
    if INTEGER_TEXT.fullmatch(text):
        return int(text)
    if NUMBER_TEXT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else None
    return None


def boolean_of_text(text: str) -> bool | None:
    """`true` or `false` in any case (as Java's and Go's readers take them), else None."""
    low = text.lower()
    return None if low not in ("true", "false") else low == "true"


def scalar(value: Any, kind: str) -> Any:
    """`value` for a parameter of type `kind` (`integer`, `number`, `boolean`): text that
    reads exactly as one becomes one, and a whole float (which JSON cannot tell from an
    integer) an integer; every other value is returned as it is."""
    if isinstance(value, str):
        if kind == "integer" and INTEGER_TEXT.fullmatch(value):
            return int(value)
        if kind == "number":
            number = number_of_text(value)
            return value if number is None else number
        if kind == "boolean":
            flag = boolean_of_text(value)
            return value if flag is None else flag
        return value
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
