"""execflow: a durable, self-hosted workflow execution service."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
