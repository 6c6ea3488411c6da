"""Time and identifiers, in one place so every layer agrees on their format."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_ms(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as the API returns timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_prediction_id() -> str:
    """A random UUID (122 random bits) as 32 hex characters: opaque and unguessable, and a valid
    UUID v4 when Runway's dialect shows it with dashes."""
    return uuid.uuid4().hex


def new_file_id() -> str:
    return secrets.token_urlsafe(24)
