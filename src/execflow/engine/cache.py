"""Parsed definitions by revision, shared by the engine and the service."""

from __future__ import annotations

from execflow.definition import Definition, parse_definition
from execflow.store import Store


class DefinitionCache:
    """Parsed definitions by (workflow id, revision); revisions never change once stored."""

    def __init__(self, store: Store, size: int = 512) -> None:
        self._store = store
        self._size = size
        self._items: dict[tuple[str, int], Definition] = {}

    def put(self, workflow_id: str, revision: int, definition: Definition) -> None:
        if len(self._items) >= self._size:
            self._items.pop(next(iter(self._items)))
        self._items[(workflow_id, revision)] = definition

    async def get(self, workflow_id: str, revision: int) -> Definition:
        found = self._items.get((workflow_id, revision))
        if found is None:
            rec = await self._store.read(self._store.get_revision, workflow_id, revision)
            found = parse_definition(rec.definition)
            self.put(workflow_id, revision, found)
        return found
