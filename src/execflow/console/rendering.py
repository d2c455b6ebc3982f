"""Pages from templates: one autoescaping Jinja2 environment, and the filters pages use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from execflow.console.session import Visitor


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("execflow.console", "templates"),
        autoescape=True,  # every value a page shows is text unless a template says otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty
    env.filters["when"] = when
    env.filters["ms"] = duration
    return env


def pretty(value: Any) -> str:
    """A value as indented JSON text (escaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60_000:.1f} min"


ENV = _environment()


def page(
    request: Request,
    template: str,
    who: Visitor | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render `template` with the visitor (None on the sign-in page) and `context`."""
    html = ENV.get_template(template).render(request=request, who=who, **context)
    return HTMLResponse(html, status_code=status)
