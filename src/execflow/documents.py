"""Reading a JSON or YAML document strictly: duplicate keys refused, aliases bounded, each
problem with its JSON pointer.

Apart from `definition.py` (which checks what a document means) so that whoever only
reads one, the CLI's `apply` among them, needs nothing but PyYAML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

from execflow.errors import Detail, InvalidDefinition


def load_text(text: str | bytes, content_type: str = "application/json") -> Any:
    """Parse a JSON or YAML document; InvalidDefinition if it does not parse, or lists
    every duplicate key (which parsers would otherwise silently drop) with its pointer."""
    try:
        if "yaml" in content_type or "yml" in content_type:
            doc = yaml.load(text, Loader=_StrictLoader)
        else:
            doc = json.loads(text, object_pairs_hook=_keep_duplicates, parse_constant=_no_constant)
    except (yaml.YAMLError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidDefinition(f"the document does not parse: {exc}") from exc
    except RecursionError:
        raise InvalidDefinition("the document does not parse: it is nested too deeply") from None
    if not _within(doc, MAX_VALUES):
        # YAML aliases can make a small text stand for a huge document
        raise InvalidDefinition(f"the document holds more than {MAX_VALUES} values")
    duplicates = list(_duplicates(doc, ""))
    if duplicates:
        raise InvalidDefinition("the document repeats keys", duplicates)
    return doc


# values a definition document may hold once its YAML aliases are expanded
MAX_VALUES = 1_000_000


def _within(doc: Any, budget: int) -> bool:
    """Whether `doc` holds at most `budget` values (shared ones counted each time)."""
    stack = [doc]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _Mapping(dict[Any, Any]):
    """A parsed mapping that remembers the keys it saw more than once."""

    repeated: list[tuple[Any, str]]


def _keep_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _Mapping()
    out.repeated = []
    for key, value in pairs:
        if key in out:
            out.repeated.append((key, ""))
        out[key] = value
    return out


def _duplicates(doc: Any, where: str) -> Iterator[Detail]:
    if isinstance(doc, dict):
        for key, note in getattr(doc, "repeated", []):
            yield Detail(f"{where}{pointer(key)}", f"duplicate key {key!r}{note}")
        for key, value in doc.items():
            yield from _duplicates(value, where + pointer(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _duplicates(value, f"{where}/{i}")


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loading that records duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    out = _Mapping()
    out.repeated = []
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as exc:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"line {line}: a key must be a scalar", key_node.start_mark
            ) from exc
        if key in out:
            out.repeated.append((key, f" (line {key_node.start_mark.line + 1})"))
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def pointer(*parts: object) -> str:
    """A JSON pointer (RFC 6901) to the value under `parts`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
