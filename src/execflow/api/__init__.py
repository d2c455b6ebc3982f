"""The HTTP API: the native `/api/v1` routes (dialects come later)."""

from __future__ import annotations

from execflow.api.app import create_app

__all__ = ["create_app"]
