"""`python`: call `module:function` with keyword arguments in a worker process."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

from pydantic import Field

from execflow.actions.base import Action, Args, Placement
from execflow.errors import TaskFailure

_FUNCTION = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"


class PythonArgs(Args):
    function: str = Field(pattern=_FUNCTION, description="'package.module:function'")
    args: dict[str, Any] = Field(default_factory=dict)


_cache: dict[str, Callable[..., Any]] = {}


def resolve(ref: str) -> Callable[..., Any]:
    """Import and cache the callable named by `module:function`."""
    found = _cache.get(ref)
    if found is not None:
        return found
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskFailure(f"cannot import module {module_name!r}: {exc}", "import", False) from exc
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise TaskFailure(f"{module_name!r} has no attribute {attr!r}", "import", False)
    if not callable(target):
        raise TaskFailure(f"{ref!r} is not callable", "import", False)
    _cache[ref] = target
    return target  # type: ignore[no-any-return]


def run(args: PythonArgs) -> Any:
    func = resolve(args.function)
    result = func(**args.args)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise TaskFailure(f"the result of {args.function} is not JSON: {exc}", "result") from exc
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


ACTION = Action("python", PythonArgs, Placement.POOL, "Call a Python function", pool=run)
