"""The worker: claims predictions, runs their backend, stores the video, ends the prediction.

While a prediction runs, a heartbeat thread extends the claim and writes progress; when
the heartbeat is refused (cancelled, deleted, taken over) the backend's cancel check turns
true and generation stops at its next step (so does an abort the dispatcher is notified
of). Every write that ends a prediction is fenced on ``worker_id`` and ``status =
processing``, so a worker that lost its claim can never overwrite the result of the one
that took over.

The database may go away for a while (a PostgreSQL restart): the loop waits and retries,
the heartbeat keeps trying, a finished video waits for its write, and a prediction the
worker cannot start is handed back.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from reel.backends.base import Backend, GenerationCancelled, GenerationError, GenerationRequest
from reel.dispatch.base import Claim, held_by
from reel.lifecycle.clock import new_file_id, utcnow
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.media.safety import NsfwClassifier
from reel.media.video import H264Writer
from reel.predictions.views import OUTPUT_FILENAME
from reel.predictions.webhooks import enqueue_final_event
from reel.store.tables import Prediction, StoredFile
from reel.wiring import Services
from reel.worker.periodic import UNAVAILABLE

log = logging.getLogger(__name__)

"""The database or the blob store is unreachable, or SQLite stayed locked: worth waiting for,
never a reason to fail a prediction."""
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0

T = TypeVar("T")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass
class _Running:
    claim: Claim
    progress: float = 0.0
    lost: threading.Event = field(default_factory=threading.Event)
    """Set when the heartbeat is refused: cancelled, deleted or taken over."""
    done: threading.Event = field(default_factory=threading.Event)


class Worker:
    def __init__(
        self,
        services: Services,
        backends: dict[str, Backend],
        worker_id: str,
        *,
        nsfw: NsfwClassifier | None = None,
    ) -> None:
        self._services = services
        self._settings = services.settings
        self._backends = backends
        self.worker_id = worker_id
        self._nsfw = nsfw or NsfwClassifier()
        self._heartbeat_s = max(0.1, min(1.0, self._settings.lease_s / 4))
        self.shutting_down = threading.Event()

    def run_forever(self) -> None:
        log.info("worker %s serving %s", self.worker_id, ", ".join(sorted(self._backends)))
        delay = FIRST_RETRY_S
        while not self.shutting_down.is_set():
            try:
                worked = self.run_once()
            except UNAVAILABLE as exc:
                log.warning("worker %s: %s; retrying in %.1f s", self.worker_id, _first_line(exc), delay)
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            delay = FIRST_RETRY_S
            if not worked:
                # Returns when a prediction may be waiting (a notification), or after a poll interval.
                self._services.dispatcher.wait_for_work(list(self._backends), self.shutting_down)

    def run_once(self) -> bool:
        """Run the next waiting prediction, if any. Returns whether there was one."""
        dispatcher = self._services.dispatcher
        claim = dispatcher.claim(self.worker_id, list(self._backends))
        if claim is None:
            return False
        running = _Running(claim)
        beat = threading.Thread(target=self._heartbeat, args=(running,), daemon=True)
        beat.start()
        handed_back = False
        try:
            handed_back = self._run(running)
        except UNAVAILABLE as exc:
            log.warning("prediction %s: %s; handing it back", claim.prediction_id, _first_line(exc))
            handed_back = self._hand_back(claim)
            raise  # run_forever waits before claiming again, rather than spin on the outage
        finally:
            running.done.set()
            beat.join()
            if not handed_back:
                dispatcher.finished(claim)
        return True

    def _hand_back(self, claim: Claim) -> bool:
        try:
            self._services.dispatcher.release(claim)
        except UNAVAILABLE as exc:
            # The claim's lease runs out and the dispatcher gives the prediction to a worker then.
            log.warning("prediction %s: could not hand it back either (%s)", claim.prediction_id, exc)
        return True

    def _until_written(self, claim: Claim, write: Callable[[], T]) -> T:
        """``write()``, retried while the database is away; it is fenced, so a retry that comes
        after the claim was lost writes nothing. Gives up only when the worker stops."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return write()
            except UNAVAILABLE as exc:
                if self.shutting_down.is_set():
                    raise
                log.warning(
                    "prediction %s: cannot record its end yet (%s); retrying in %.1f s",
                    claim.prediction_id,
                    _first_line(exc),
                    delay,
                )
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)

    def _heartbeat(self, running: _Running) -> None:
        dispatcher = self._services.dispatcher
        while not running.done.wait(self._heartbeat_s):
            try:
                alive = dispatcher.heartbeat(running.claim, running.progress)
            except UNAVAILABLE as exc:  # the generation goes on; its end waits for the database
                log.warning(
                    "heartbeat for %s failed (%s); retrying", running.claim.prediction_id, _first_line(exc)
                )
                continue
            except Exception:  # nor must a bug here kill it
                log.exception("heartbeat for %s failed; retrying", running.claim.prediction_id)
                continue
            if not alive and not running.done.is_set():
                log.info("prediction %s was cancelled or taken over; stopping", running.claim.prediction_id)
                running.lost.set()
                return

    def _run(self, running: _Running) -> bool:
        """Generate and record ``running``'s prediction. Returns whether it was handed back."""
        claim = running.claim
        with self._services.sessions() as session:
            row = session.get(Prediction, claim.prediction_id)
            if row is None:
                return False
            params = dict(row.params)
            input_blob = row.input_blob
        backend = self._backends[claim.model]
        image = Image.open(io.BytesIO(self._services.blobs.read_bytes(input_blob))).convert("RGB")
        request = GenerationRequest(
            prediction_id=claim.prediction_id,
            model=claim.model,
            prompt=params["prompt"],
            image=image,
            width=params["width"],
            height=params["height"],
            fps=params["fps"],
            num_frames=params["num_frames"],
            seed=params.get("seed"),
            params={
                k: v
                for k, v in params.items()
                if k in ("negative_prompt", "duration", "num_inference_steps", "guidance_scale")
            },
        )
        scratch = self._services.blobs.scratch_dir() / f"{claim.prediction_id}-{claim.attempt}.mp4"
        log.info(
            "prediction %s: generating with %s backend (attempt %d)",
            claim.prediction_id,
            backend.kind,
            claim.attempt,
        )

        def on_progress(fraction: float) -> None:
            running.progress = max(running.progress, min(0.99, max(0.0, fraction)))

        def is_cancelled() -> bool:
            return running.lost.is_set() or claim.cancelled.is_set() or self.shutting_down.is_set()

        started = time.monotonic()
        try:
            with H264Writer(scratch, width=request.width, height=request.height, fps=request.fps) as sink:
                backend.generate(request, sink, on_progress, is_cancelled)
        except GenerationCancelled:
            scratch.unlink(missing_ok=True)
            lost = running.lost.is_set() or claim.cancelled.is_set()
            if self.shutting_down.is_set() and not lost:
                log.info("prediction %s handed back: worker shutting down", claim.prediction_id)
                return self._hand_back(claim)
            log.info("prediction %s: generation stopped (cancelled or taken over)", claim.prediction_id)
            return False
        except GenerationError as exc:
            self._fail(claim, str(exc), FailureCode.GENERATION)
            return False
        except Exception as exc:
            log.exception("prediction %s: %s backend crashed", claim.prediction_id, backend.kind)
            self._fail(
                claim,
                f"internal error in the {backend.kind} backend: {type(exc).__name__}: {exc}",
                FailureCode.INTERNAL,
            )
            return False
        inference_ms = int((time.monotonic() - started) * 1000)
        # Counted by bench/fault_drill.py: a generation that ran to its end, kept or not.
        log.info("prediction %s: generation finished (attempt %d)", claim.prediction_id, claim.attempt)
        flagged = self._nsfw.check_video(scratch)
        if flagged and self._settings.refuse_nsfw:
            scratch.unlink(missing_ok=True)
            self._fail(
                claim,
                "the output was flagged by the safety classifier and is not returned",
                FailureCode.UNSAFE_OUTPUT,
            )
            return False
        self._complete(claim, scratch, inference_ms, flagged)
        return False

    def _owned_row(self, session: Session, claim: Claim) -> Prediction | None:
        return session.scalars(select(Prediction).where(held_by(claim)).with_for_update()).first()

    def _complete(self, claim: Claim, video: Path, inference_ms: int, flagged: bool) -> None:
        blobs = self._services.blobs
        file_id = new_file_id()
        blob_key = f"outputs/{file_id}.mp4"
        size = video.stat().st_size
        blobs.put_file(blob_key, video)
        if not self._until_written(
            claim, lambda: self._record_completion(claim, file_id, blob_key, size, inference_ms, flagged)
        ):
            log.info("prediction %s ended elsewhere; discarding this output", claim.prediction_id)
            blobs.delete(blob_key)
            return
        log.info("prediction %s completed in %d ms", claim.prediction_id, inference_ms)

    def _record_completion(
        self, claim: Claim, file_id: str, blob_key: str, size: int, inference_ms: int, flagged: bool
    ) -> bool:
        blobs = self._services.blobs
        with self._services.sessions.begin() as session:
            row = self._owned_row(session, claim)
            if row is None:
                return False
            session.add(
                StoredFile(
                    id=file_id,
                    key_id=row.key_id,
                    kind="output",
                    blob_key=blob_key,
                    filename=OUTPUT_FILENAME,
                    content_type="video/mp4",
                    size=size,
                    complete=True,
                    prediction_id=row.id,
                    created_at=utcnow(),
                )
            )
            row.status = Status.COMPLETED
            row.outputs = [blob_key]
            row.output_file_ids = [file_id]
            row.nsfw = [flagged]
            row.progress = 1.0
            row.inference_ms = inference_ms
            row.finished_at = utcnow()
            row.lease_expires_at = None
            enqueue_final_event(session, row, self._settings.public_base, blobs)
        return True

    def _fail(self, claim: Claim, reason: str, code: FailureCode) -> None:
        if self._until_written(claim, lambda: self._record_failure(claim, reason, code)):
            log.warning("prediction %s failed: %s", claim.prediction_id, reason)

    def _record_failure(self, claim: Claim, reason: str, code: FailureCode) -> bool:
        with self._services.sessions.begin() as session:
            row = self._owned_row(session, claim)
            if row is None:
                return False
            row.status = Status.FAILED
            row.error = reason
            row.failure_code = code
            row.finished_at = utcnow()
            row.lease_expires_at = None
            enqueue_final_event(session, row, self._settings.public_base, self._services.blobs)
        return True
