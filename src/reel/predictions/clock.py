"""Time and identifiers, in one place so every layer agrees on their format."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_ms(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as the API returns timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_prediction_id() -> str:
    """32 hex characters from 128 random bits: opaque and unguessable."""
    return secrets.token_hex(16)


def new_file_id() -> str:
    return secrets.token_urlsafe(24)
