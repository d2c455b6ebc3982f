"""One error hierarchy for execflow; the API layer maps these to HTTP in one place.

ExecflowError
├── InvalidInput          bad request data, with one detail per problem
│   └── InvalidDefinition a workflow definition that does not validate
├── NotAuthenticated      no credential, or one that is unknown, revoked or expired
├── PermissionDenied      a credential without the needed privilege
├── NotFound              no such resource (or not visible to the caller)
├── RateLimited           too many requests of one caller: try again after `retry_after`
├── Unavailable           the database cannot be reached: try again after `retry_after`
├── Conflict              the request contradicts the current state
│   └── StaleState        a guarded update lost a race (expected state changed)
└── TaskFailure           raised inside actions: the task failed, with a message
    └── TaskTimeout       the task ran past its timeout
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Detail:
    """One problem with an input: where (a JSON pointer) and why."""

    pointer: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "reason": self.reason}


class ExecflowError(Exception):
    """Something went wrong in execflow."""

    code = "internal_error"

    def __init__(self, message: str | None = None, details: list[Detail] | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details: list[Detail] = list(details or [])
        super().__init__(self.message)


class InvalidInput(ExecflowError):
    """The request is not valid."""

    code = "invalid_input"


class InvalidDefinition(InvalidInput):
    """The workflow definition is not valid."""

    code = "invalid_definition"


class RateLimited(ExecflowError):
    """Too many requests: try again later."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ExecflowError):
    """The database cannot be reached; try again shortly."""

    code = "unavailable"

    def __init__(self, message: str | None = None, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAuthenticated(ExecflowError):
    """A valid token is required."""

    code = "unauthenticated"


class PermissionDenied(ExecflowError):
    """The token's role does not allow this."""

    code = "forbidden"


class NotFound(ExecflowError):
    """Not found."""

    code = "not_found"


class Conflict(ExecflowError):
    """The request conflicts with the current state."""

    code = "conflict"


class StaleState(Conflict):
    """The resource changed while the request was processed."""

    code = "stale_state"


@dataclass
class TaskFailure(Exception):
    """A task failed; `retryable` False skips the retry policy."""

    message: str
    kind: str = "error"
    retryable: bool = True
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def as_error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "message": self.message}
        out.update(self.data)
        return out


class TaskTimeout(TaskFailure):
    """The task ran past its timeout."""
