"""Builds the object graph from settings, once per process. The only place that picks
implementations (SQLite or PostgreSQL, local disk, the dispatcher)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reel.dispatch.base import Dispatcher
from reel.dispatch.local import TableDispatcher
from reel.predictions.files import FileService
from reel.predictions.image_source import ImageLimits, ImageSource
from reel.predictions.keys import KeyService
from reel.predictions.service import PredictionService
from reel.predictions.webhooks import enqueue_final_event
from reel.settings import Settings
from reel.storage.base import BlobStore
from reel.storage.local import LocalBlobStore
from reel.store.db import make_engine, make_session_factory, migrate


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


def build_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    if run_migrations:
        migrate(engine, settings.data_dir)
    sessions = make_session_factory(engine)
    blobs = LocalBlobStore(settings.data_dir / "blobs")
    dispatcher = TableDispatcher(
        sessions,
        lease_s=settings.lease_s,
        max_attempts=settings.max_attempts,
        on_failed=lambda session, row: enqueue_final_event(session, row, settings.public_base, blobs),
    )
    files = FileService(sessions, blobs, settings.max_upload_bytes)
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
    predictions = PredictionService(
        sessions, blobs, dispatcher, images, allow_private_urls=settings.allow_private_urls
    )
    return Services(settings, engine, sessions, blobs, dispatcher, KeyService(sessions), files, predictions)
