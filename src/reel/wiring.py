"""Builds the object graph from settings, once per process. The only place that picks
implementations (SQLite or PostgreSQL, local disk or S3, the dispatcher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.base import Dispatcher
from reel.dispatch.table import TableDispatcher
from reel.lifecycle.transitions import EndedHook
from reel.predictions.disk_space import FreeSpaceGuard
from reel.predictions.files import FileService
from reel.predictions.image_source import ImageLimits, ImageSource
from reel.predictions.keys import KeyService
from reel.predictions.limits import Limits, RateLimiter
from reel.predictions.readiness import ReadinessService
from reel.predictions.retention import RetentionPolicy, RetentionSweep
from reel.predictions.service import PredictionService
from reel.predictions.usage import UsageService
from reel.predictions.webhooks import enqueue_final_event
from reel.settings import Settings
from reel.storage.base import BlobStore
from reel.storage.local import LocalBlobStore
from reel.store.db import is_postgres, make_engine, make_session_factory, migrate

REVOCATION_MARKER = "keys-revoked"
"""A file in the data dir that a revoke touches: every process on the data dir then reads
its keys afresh (``KeyService``)."""


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    dispatcher: Dispatcher
    keys: KeyService
    files: FileService
    predictions: PredictionService
    readiness: ReadinessService
    usage: UsageService
    retention: RetentionSweep

    @property
    def local_database(self) -> bool:
        """SQLite: a file on this machine, whose reads take microseconds (see
        ``reel.api.deps.quick``). PostgreSQL is a network round trip away."""
        return not is_postgres(self.engine)


def build_blob_store(settings: Settings) -> BlobStore:
    """Local disk (the data dir's ``blobs``, or ``file:///path``) or an S3 bucket (``s3://``)."""
    url = settings.storage_url or ""
    if url.startswith("s3://"):
        from reel.storage.s3 import S3BlobStore, S3Location  # boto3 loads only when used

        return S3BlobStore(
            S3Location.parse(url),
            settings.data_dir / "scratch",
            multipart_threshold_bytes=settings.s3_multipart_threshold_bytes,
            presign_ttl_s=settings.file_url_ttl_s if settings.file_urls == "presigned" else None,
        )
    if settings.file_urls == "presigned":
        raise ValueError("REEL_FILE_URLS=presigned needs S3 storage (REEL_STORAGE_URL=s3://bucket/prefix)")
    if not url:
        return LocalBlobStore(settings.data_dir / "blobs")
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
        raise ValueError(f"REEL_STORAGE_URL: expected s3://bucket/prefix or file:///path, got {url!r}")
    return LocalBlobStore(Path(parts.path))


def guarded_dirs(settings: Settings, blobs: BlobStore) -> list[Path]:
    """Where new work writes, for ``REEL_MIN_FREE_BYTES``: the data dir (database, blobs by
    default), and where the blobs or the S3 scratch files go when that is elsewhere. Not
    local blobs' own ``.scratch``: it is inside their root, on the same disk."""
    directories = [settings.data_dir]
    if isinstance(blobs, LocalBlobStore):
        directories.append(blobs.root)
    else:
        directories.append(blobs.scratch_dir())
    return directories


def build_dispatcher(
    settings: Settings, engine: Engine, sessions: sessionmaker[Session], on_failed: EndedHook
) -> Dispatcher:
    """``REEL_DISPATCH``: procrastinate's queue (PostgreSQL only) or leases in the predictions
    table; ``auto`` picks procrastinate on PostgreSQL."""
    mode = settings.dispatch
    if mode == "auto":
        mode = "procrastinate" if is_postgres(engine) else "table"
    if mode == "procrastinate":
        if not is_postgres(engine):
            raise ValueError(
                "REEL_DISPATCH=procrastinate needs PostgreSQL (REEL_DATABASE_URL=postgresql://...)"
            )
        from reel.dispatch.procrastinate import ProcrastinateDispatcher

        return ProcrastinateDispatcher(
            sessions,
            engine,
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
            on_failed=on_failed,
            default_max_concurrent=settings.key_max_concurrent or None,
        )
    return TableDispatcher(
        sessions,
        lease_s=settings.lease_s,
        max_attempts=settings.max_attempts,
        on_failed=on_failed,
        default_max_concurrent=settings.key_max_concurrent or None,
    )


def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    if run_migrations:
        migrate(engine, settings.data_dir)
    sessions = make_session_factory(engine)
    blobs = build_blob_store(settings)
    dispatcher = build_dispatcher(
        settings,
        engine,
        sessions,
        lambda session, row: enqueue_final_event(session, row, settings.public_base, blobs),
    )
    retention = RetentionPolicy.of_seconds(settings.retention_s)
    space = FreeSpaceGuard(guarded_dirs(settings, blobs), settings.min_free_bytes)
    files = FileService(sessions, blobs, settings.max_upload_bytes, retention=retention, space=space)
    images = ImageSource(
        files,
        settings.public_base,
        ImageLimits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            fetch_timeout_s=settings.fetch_timeout_s,
            allow_private_urls=settings.allow_private_urls,
        ),
    )
    limits = RateLimiter(
        Limits.from_counts(settings.key_max_concurrent, settings.key_per_minute, settings.key_per_day)
    )
    predictions = PredictionService(
        sessions,
        blobs,
        dispatcher,
        images,
        allow_private_urls=settings.allow_private_urls,
        limits=limits,
        retention=retention,
        space=space,
    )
    return Services(
        settings,
        engine,
        sessions,
        blobs,
        dispatcher,
        KeyService(
            sessions,
            cache_s=settings.key_cache_s,
            revocation_marker=settings.data_dir / REVOCATION_MARKER,
        ),
        files,
        predictions,
        ReadinessService(engine, sessions),
        UsageService(sessions, limits),
        RetentionSweep(sessions, blobs, retention),
    )
