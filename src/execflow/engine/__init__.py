"""The engine: the scheduler loop, timers, retries and recovery."""

from __future__ import annotations

from execflow.engine.engine import DefinitionCache, Engine, EngineSettings

__all__ = ["DefinitionCache", "Engine", "EngineSettings"]
