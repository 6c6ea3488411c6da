"""Creating, reading, listing, cancelling and deleting predictions.

Every query is scoped to the calling key in SQL: another key's prediction is not found.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError

from reel.catalog.registry import ModelSpec, get_spec
from reel.dispatch.base import Dispatcher
from reel.dispatch.fair import Waiting, waiting_states
from reel.errors import Conflict, InvalidInput, NotFound, RateLimited, StorageUnavailable
from reel.lifecycle import transitions
from reel.lifecycle.clock import new_prediction_id, utcnow
from reel.lifecycle.states import ACTIVE, TERMINAL, Status
from reel.logs import prediction_context
from reel.media.fetch import BlockedAddress, FetchError, validate_public_url
from reel.media.images import RENDER_SIZES, closest_aspect_ratio
from reel.predictions.disk_space import ALWAYS_ROOM, FreeSpaceGuard
from reel.predictions.idempotency import IdempotencyStore, IdempotentRequest
from reel.predictions.image_source import ImageSource
from reel.predictions.inputs import SubmitInput, parse_submit, recorded_input
from reel.predictions.keys import Principal
from reel.predictions.limits import Limits, RateLimiter, count_creation
from reel.predictions.retention import KEEP_FOREVER, RetentionPolicy
from reel.storage.base import BlobStore
from reel.store.db import Sessions
from reel.store.tables import Prediction, StoredFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    prediction: Prediction
    sync: bool
    replayed: bool = False
    """True when an Idempotency-Key matched: ``prediction`` is the one created earlier."""


@dataclass(frozen=True)
class SubmitDialect:
    """How one API spells a submit body: its validation, what of it is stored, its image field."""

    name: str
    parse: Callable[[ModelSpec, Any], SubmitInput]
    record: Callable[[dict[str, Any]], dict[str, Any]]
    image_field: str = "image"


WAVESPEED = SubmitDialect("wavespeed", parse_submit, recorded_input)
TEXT_TO_VIDEO_RATIO = "16:9"
"""A text-to-video request without an aspect ratio gets landscape, as WaveSpeed's do."""


@dataclass(frozen=True)
class HistoryQuery:
    page: int = 1
    page_size: int = 20
    model: str | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a time without an offset is read as UTC.

    SQLite keeps timestamps as text without their offset, so comparing with a time in another
    offset would compare wall clocks, and a naive one is refused by the UTC column type.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_PREDICTIONS = Prediction.__table__
_GET_OWNED = select(_PREDICTIONS).where(
    _PREDICTIONS.c.id == bindparam("id"),
    _PREDICTIONS.c.key_id == bindparam("key_id"),
    _PREDICTIONS.c.deleted_at.is_(None),
)
"""One prediction of one key, unless deleted: built once, so its SQL is compiled once."""


class PredictionService:
    def __init__(
        self,
        sessions: Sessions,
        blobs: BlobStore,
        dispatcher: Dispatcher,
        images: ImageSource,
        *,
        allow_private_urls: bool,
        limits: RateLimiter | None = None,
        retention: RetentionPolicy = KEEP_FOREVER,
        space: FreeSpaceGuard = ALWAYS_ROOM,
    ) -> None:
        self._sessions = sessions
        self._limits = limits or RateLimiter(Limits())
        self._blobs = blobs
        self._dispatcher = dispatcher
        self._images = images
        self._allow_private_urls = allow_private_urls
        self._retention = retention
        self._space = space
        self._idempotency = IdempotencyStore(sessions, retention=retention)

    def submit(
        self,
        owner: Principal,
        model: str,
        body: Any,
        webhook: str | None,
        *,
        idempotency_key: str | None = None,
        dialect: SubmitDialect = WAVESPEED,
    ) -> Submission:
        spec = get_spec(model)
        if spec is None:
            raise NotFound(f"model {model!r} is not served here; GET /api/v3/models lists those that are")
        parsed = dialect.parse(spec, body)
        idempotent = None
        if idempotency_key is not None:
            idempotent = IdempotentRequest.of(owner, idempotency_key, dialect.name, model, body, webhook)
            if (earlier := self._idempotency.find(idempotent)) is not None:
                return Submission(self.get(owner, earlier), parsed.enable_sync_mode, replayed=True)
        # After the replay (which creates nothing), before anything is fetched or stored.
        self._space.check()
        if webhook is not None:
            if parsed.enable_base64_output:
                raise InvalidInput(
                    "enable_base64_output", "cannot be combined with ?webhook= (send URLs to webhooks)"
                )
            self._check_webhook(webhook)
        with self._sessions() as session:  # refuse early, before fetching and decoding the image
            self._limits.check(session, owner.key_id, lock=False)

        self._check_lora_urls(parsed)
        prediction_id = new_prediction_id()
        input_blob: str | None = None
        if parsed.image is None:  # text-to-video
            aspect_ratio = parsed.aspect_ratio or TEXT_TO_VIDEO_RATIO
        else:
            accepted = self._images.load(owner, parsed.image, field=dialect.image_field)
            aspect_ratio = parsed.aspect_ratio or closest_aspect_ratio(*accepted.size)
            input_blob = f"inputs/{prediction_id}.{accepted.extension}"
            self._blobs.put_bytes(input_blob, accepted.stored)
        width, height = RENDER_SIZES[aspect_ratio]

        row = Prediction(
            id=prediction_id,
            key_id=owner.key_id,
            model=model,
            status=Status.CREATED,
            input=dialect.record(body),
            params={
                "prompt": parsed.prompt,
                "aspect_ratio": aspect_ratio,
                "width": width,
                "height": height,
                "fps": spec.fps,
                "duration": parsed.duration,
                "num_frames": parsed.duration * spec.fps,
                "seed": parsed.seed,
                "negative_prompt": parsed.negative_prompt,
                "num_inference_steps": parsed.num_inference_steps,
                "guidance_scale": parsed.guidance_scale,
                **{name: [ref.as_param() for ref in refs] for name, refs in parsed.loras.items()},
            },
            input_blob=input_blob,
            outputs=[],
            output_file_ids=[],
            nsfw=[],
            error="",
            progress=0.0,
            inference_ms=0,
            webhook_url=webhook,
            base64_output=parsed.enable_base64_output,
            created_at=utcnow(),
            attempts=0,
        )
        try:
            with self._sessions.begin() as session:
                # Counted again under the key's lock, with the insert: the earlier check raced.
                self._limits.check(session, owner.key_id, lock=True)
                session.add(row)
                count_creation(session, owner.key_id, model, row.created_at)
                if idempotent is not None:
                    self._idempotency.remember(session, idempotent, prediction_id)
                self._dispatcher.submitted(session, prediction_id, model)
        except IntegrityError:
            # A concurrent duplicate recorded the same Idempotency-Key first: answer with its prediction.
            if input_blob is not None:
                self._delete_blob(input_blob, "a duplicate submit")
            if idempotent is None or (earlier := self._idempotency.find(idempotent)) is None:
                raise
            return Submission(self.get(owner, earlier), parsed.enable_sync_mode, replayed=True)
        except RateLimited:
            if input_blob is not None:
                self._delete_blob(input_blob, "a rate-limited submit")
            # A concurrent duplicate of an accepted request: it is answered, not counted.
            if idempotent is not None and (earlier := self._idempotency.find(idempotent)) is not None:
                return Submission(self.get(owner, earlier), parsed.enable_sync_mode, replayed=True)
            raise
        except Exception:
            # Nothing was recorded (the database is down, say): the caller gets the error, and the
            # input stored for a prediction that does not exist must not stay behind.
            if input_blob is not None:
                self._delete_blob(input_blob, "a failed submit")
            raise
        with prediction_context(prediction_id, key_id=owner.key_id, model=model):
            log.info(
                "prediction %s created: model=%s %s %dx%d", prediction_id, model, aspect_ratio, width, height
            )
        return Submission(prediction=row, sync=parsed.enable_sync_mode)

    def _delete_blob(self, key: str, why: str) -> None:
        """Best effort: the rows are already settled, and answering 503 would invite a retry
        that finds nothing. An object left behind is logged for the operator to remove."""
        try:
            self._blobs.delete(key)
        except StorageUnavailable as exc:
            log.error("%s left blob %s behind: %s", why, key, exc.message)

    def _check_lora_urls(self, parsed: SubmitInput) -> None:
        """Refuse a LoRA URL whose host is not allowed now, rather than fail the prediction later
        (the worker's fetch checks again: DNS may change in between)."""
        for name, refs in parsed.loras.items():
            for index, ref in enumerate(refs):
                if ref.kind != "url":
                    continue
                try:
                    validate_public_url(ref.path, allow_private=self._allow_private_urls)
                except BlockedAddress as exc:
                    raise InvalidInput(f"{name}[{index}].path", f"URL refused: {exc.message}") from exc
                except FetchError as exc:
                    raise InvalidInput(f"{name}[{index}].path", exc.message) from exc

    def _check_webhook(self, url: str) -> None:
        if len(url) > 2000:
            raise InvalidInput("webhook", "URL is longer than 2000 characters")
        try:
            validate_public_url(url, allow_private=self._allow_private_urls)
        except BlockedAddress as exc:
            raise InvalidInput("webhook", f"URL refused: {exc.message}") from exc
        except FetchError as exc:
            raise InvalidInput("webhook", exc.message) from exc

    def _owned(self, owner: Principal) -> Select[Prediction]:
        """The caller's predictions that are neither deleted nor expired: an expired one is
        a 404 from the moment it expires, before the workers' sweep deletes it."""
        return select(Prediction).where(Prediction.key_id == owner.key_id, self._retention.live_prediction())

    def get(self, owner: Principal, prediction_id: str) -> Prediction:
        """The prediction, detached. Result polls call this most: one prepared plain query on
        a pooled connection, without an ORM session, and retention checked on the row (building
        and hashing a fresh statement cost twice what running it does, measured)."""
        with self._sessions.single_read() as conn:
            found = conn.execute(_GET_OWNED, {"id": prediction_id, "key_id": owner.key_id}).first()
        if found is None or self._retention.expired(found.finished_at):
            raise NotFound(f"prediction {prediction_id!r} not found")
        return Prediction(**found._mapping)

    def waiting(self, row: Prediction) -> Waiting | None:
        """Where ``row`` stands if it is waiting: its queue position, and whether its key's
        ``max_concurrent`` holds it back (None: it is not waiting)."""
        if row.status != Status.CREATED:
            return None
        with self._sessions() as session:
            states = waiting_states(session, [(row.id, row.model)], self._limits.defaults.max_concurrent)
        return states.get(row.id)

    def history(self, owner: Principal, query: HistoryQuery) -> tuple[int, list[Prediction]]:
        selection = self._owned(owner)
        if query.model:
            selection = selection.where(Prediction.model == query.model)
        if query.status:
            selection = selection.where(Prediction.status == query.status)
        if query.created_after:
            selection = selection.where(Prediction.created_at >= _as_utc(query.created_after))
        if query.created_before:
            selection = selection.where(Prediction.created_at < _as_utc(query.created_before))
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(selection.subquery())) or 0
            rows = session.scalars(
                selection.order_by(Prediction.created_at.desc(), Prediction.id)
                .offset((query.page - 1) * query.page_size)
                .limit(query.page_size)
            ).all()
        return total, list(rows)

    def cancel(self, owner: Principal, prediction_id: str) -> Prediction:
        with self._sessions.begin() as session:
            row = session.scalars(
                self._owned(owner).where(Prediction.id == prediction_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"prediction {prediction_id!r} not found")
            if row.status in TERMINAL:
                raise Conflict(f"prediction {prediction_id} already ended as {row.status}")
            transitions.cancel(row)
        # After the commit, not inside it: aborting takes the queue job's lock, and a worker
        # fetching that job locks the job before the row (see reel.dispatch.procrastinate).
        self._dispatcher.cancelled([prediction_id])
        with prediction_context(prediction_id, key_id=owner.key_id, model=row.model):
            log.info("prediction %s cancelled", prediction_id)
        return row

    def delete(self, owner: Principal, ids: list[str]) -> int:
        """Delete predictions (cancelling active ones) and their files; returns how many."""
        blob_keys: list[str] = []
        was: dict[str, tuple[str, str]] = {}
        with self._sessions.begin() as session:
            rows = session.scalars(self._owned(owner).where(Prediction.id.in_(ids)).with_for_update()).all()
            for row in rows:
                was[row.id] = (row.model, row.status)
                if row.status in ACTIVE:
                    transitions.cancel(row)
                row.deleted_at = utcnow()
                if row.input_blob is not None:
                    blob_keys.append(row.input_blob)
                blob_keys.extend(row.outputs)
            found = [row.id for row in rows]
            if found:
                session.execute(delete(StoredFile).where(StoredFile.prediction_id.in_(found)))
        if found:
            self._dispatcher.cancelled(found)
        for prediction_id, (model, status) in was.items():
            with prediction_context(prediction_id, key_id=owner.key_id, model=model):
                log.info("prediction %s deleted (it was %s)", prediction_id, status)
        for key in blob_keys:
            self._delete_blob(key, "a deleted prediction")
        return len(rows)
