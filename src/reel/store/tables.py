"""SQLAlchemy tables. The same models serve SQLite and PostgreSQL; Alembic migrations mirror them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # SQLite keeps no offset: store every instant in UTC so comparisons are by instant.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Public part of the key (``rk_<id>_<secret>``): looked up directly, never secret."""
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 hex of the whole key; compared in constant time."""
    webhook_secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Per-key limits (``reel.predictions.limits``); None: the server-wide default applies.
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Predictions of this key generating at once; more wait (THROTTLED in Runway's view)."""
    per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Submissions accepted per rolling minute; more are refused with 429."""
    per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Predictions created per UTC day; more are refused with 429."""
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When a prediction of this key last started: between keys with equal turns, the one
    served longest ago goes first (``reel.dispatch.fair``)."""


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The request as given, with inline image data replaced by a short placeholder."""
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The validated generation parameters the worker runs with."""
    input_blob: Mapped[str | None] = mapped_column(String(300), nullable=True)
    """Storage key of the input image: as sent when it opens upright in RGB (JPEG, PNG, WebP),
    else a PNG of it (``reel.media.images.accept_image``); None for text-to-video."""
    outputs: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Storage keys of the output videos."""
    output_file_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    nsfw: Mapped[list[bool]] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(Text, default="")
    failure_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """Why a failed prediction failed, as a ``reel.lifecycle.failures.FailureCode``; None: unknown."""
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    inference_ms: Mapped[int] = mapped_column(Integer, default=0)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    base64_output: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    """When it ended; retention (``REEL_RETENTION_S``) counts from here."""
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Dispatch state: who holds the prediction and until when (see reel.dispatch.table).
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    """The procrastinate job carrying this prediction (PostgreSQL dispatch); None otherwise."""

    __table_args__ = (
        Index("ix_predictions_key_created", "key_id", "created_at"),
        Index("ix_predictions_status_created", "status", "created_at"),
        Index("ix_predictions_model_status_created", "model", "status", "created_at"),
    )


class DailyUsage(Base):
    """How many predictions a key created for a model on a UTC day: the ledger that ``per_day``
    and the usage reports read. Retention keeps it (it holds no content), so usage stays
    reported after the predictions themselves are deleted."""

    __tablename__ = "daily_usage"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    created: Mapped[int] = mapped_column(Integer, default=0)


class StoredFile(Base):
    """An uploaded file or a generated output, served at ``/files/{id}/{filename}``."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Unguessable: the file URL is a capability, like a CDN link."""
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    """``upload`` or ``output``."""
    blob_key: Mapped[str] = mapped_column(String(300))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer, default=0)
    declared_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    upload_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the one-time PUT credential; cleared once the bytes arrived."""
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    prediction_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    """When the file stops being usable and is swept (Runway's ephemeral uploads); None: kept."""


class IdempotencyRecord(Base):
    """An ``Idempotency-Key`` a key sent on submit, and the prediction it created (24 h)."""

    __tablename__ = "idempotency_keys"

    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the canonical request (dialect, model, body, webhook)."""
    prediction_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """Sent as the ``webhook-id`` header; the same on every retry."""
    prediction_id: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    """``pending``, ``delivered`` or ``failed`` (gave up)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    """When it was delivered or given up on; retention counts from here. None while pending."""


class Worker(Base):
    """A running worker process, for readiness and the model listing."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    models: Mapped[dict[str, Any]] = mapped_column(JSON)
    """model id → {"backend": kind, "ready": bool, "reason": str}."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
