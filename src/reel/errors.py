"""Error types shared by every layer.

Layers below HTTP raise these; only ``reel.api.errors`` maps them to status codes and the
API's envelope. Each message says what happened and, where it helps, what to do.
"""

from __future__ import annotations


class ReelError(Exception):
    """Base class: a failure the caller caused or can act on (never a bug)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ReelError):
    """A request field is missing or wrong. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TooLarge(InvalidInput):
    """A body, upload or image is over a configured limit."""


class Unauthorized(ReelError):
    """No API key, or one that is unknown or revoked."""


class NotFound(ReelError):
    """The thing does not exist, or belongs to another key (the two are indistinguishable)."""


class Conflict(ReelError):
    """The request is valid but the thing's current state does not allow it."""


class IdempotencyMismatch(InvalidInput):
    """An ``Idempotency-Key`` was reused with a different request; retrying cannot fix it."""


class ServiceUnavailable(ReelError):
    """Something Reel depends on is down (HTTP 503). Nothing the caller sent was wrong; the same
    request may succeed later, and workers wait and retry."""


class StorageUnavailable(ServiceUnavailable):
    """The blob store (an S3 bucket) could not be reached or refused the request."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached, e.g. while PostgreSQL restarts. Raised in place of the
    driver's error by ``reel.store.db``."""


class RateLimited(ReelError):
    """A key is over one of its rate limits (HTTP 429): nothing was created, and the same
    request succeeds after ``retry_after_s`` seconds (sent as ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class LowDiskSpace(ServiceUnavailable):
    """The server's disk is nearly full (``REEL_MIN_FREE_BYTES``): new work is refused up front
    rather than failed part-way through writing it."""
