"""The worker: claims predictions, runs their backend, stores the video, ends the prediction.

One claim, one run, one outcome: :meth:`Worker._execute` turns whatever happens (the video
made, a backend error, a cancel, an outage, a bug anywhere — the input blob gone, the safety
check, the encoder) into exactly one :mod:`reel.worker.outcomes` value and never raises;
:meth:`Worker._record` records it, once, through ``reel.lifecycle.transitions``. Nothing a
client does and no fault outside the model takes the worker loop down.

While a prediction runs, a heartbeat thread extends the claim and writes progress; when
the heartbeat is refused (cancelled, deleted, taken over) the backend's cancel check turns
true and generation stops at its next step (so does an abort the dispatcher is notified
of). Every write that ends a prediction is fenced on the claim, so a worker that lost it
can never overwrite the result of the one that took over.

Overlap: a backend with a ``denoise`` method (the diffusers backend) can stop before its last
VAE decode and hand that back; the decode, the rest of the H.264 encoding, the safety check,
the upload and the recording then run on a post-processing thread while the loop claims the
next prediction and denoises it, so the GPU does not idle during one prediction's tail. One
post-processing runs at a time (the next hand-off waits for it); each claim keeps its own
heartbeat until its outcome is recorded, and the outcome is still computed and recorded once,
by the same code.

The database or the blob store may go away for a while (a PostgreSQL restart, an S3 blip):
the loop waits and retries, the heartbeat keeps trying, a finished video's upload is retried
for as long as the lease may still be alive and its record waits for the database, and a
prediction the worker cannot start is handed back.
"""

from __future__ import annotations

import contextvars
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, cast

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from reel.backends.base import Backend, FrameSink, GenerationCancelled, GenerationError, GenerationRequest
from reel.dispatch.base import Dispatcher
from reel.errors import StorageUnavailable
from reel.lifecycle import transitions
from reel.lifecycle.clock import new_file_id
from reel.lifecycle.failures import FailureCode
from reel.lifecycle.states import Status
from reel.lifecycle.transitions import Claim, OutputFile
from reel.logs import prediction_context
from reel.media.safety import NsfwClassifier
from reel.media.video import H264Writer
from reel.predictions.views import OUTPUT_FILENAME
from reel.predictions.webhooks import enqueue_final_event
from reel.settings import Settings
from reel.storage.base import BlobStore
from reel.store.tables import Prediction
from reel.worker.outcomes import Cancelled, Completed, Failed, HandedBack, Lost, Outcome
from reel.worker.periodic import UNAVAILABLE

log = logging.getLogger(__name__)

GENERATION_PARAMS = (
    "negative_prompt",
    "duration",
    "num_inference_steps",
    "guidance_scale",
    "loras",
    "high_noise_loras",
    "low_noise_loras",
)
"""The stored params a backend receives as ``GenerationRequest.params``."""
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0

T = TypeVar("T")


class WorkerServices(Protocol):
    """What a worker needs of the object graph (``reel.wiring.Services`` has it all)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def dispatcher(self) -> Dispatcher: ...


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def public_reason(exc: BaseException) -> str:
    """An unexpected error as a prediction's ``error`` shows it to its key holder: its type and
    first line, without the server's file paths an ``OSError`` names (the log has them)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    return f"{type(exc).__name__}: {first_line(exc)}"


@dataclass
class _Running:
    claim: Claim
    progress: float = 0.0
    lost: threading.Event = field(default_factory=threading.Event)
    """Set when the heartbeat is refused: cancelled, deleted or taken over."""
    done: threading.Event = field(default_factory=threading.Event)
    last_beat: float = field(default_factory=time.monotonic)
    """When the lease was last extended (monotonic): it lives ``lease_s`` beyond that."""

    def stopped(self) -> bool:
        """Cancelled, deleted or taken over: nothing this worker does for it counts any more."""
        return self.lost.is_set() or self.claim.cancelled.is_set()


class _WatchedSink:
    """The encoder as the backend sees it, remembering an error the encoder itself raised
    (a full disk, say), so that it is not blamed on the model."""

    def __init__(self, inner: FrameSink) -> None:
        self._inner = inner
        self.error: Exception | None = None

    def write(self, frame: np.ndarray) -> None:
        try:
            self._inner.write(frame)
        except Exception as exc:
            self.error = exc
            raise


@dataclass
class _Pending:
    """A generation whose backend deferred its last decode: what is left of it, and the open
    encoder it writes into."""

    finish: Callable[[], None]
    writer: H264Writer
    encoder: _WatchedSink
    started: float


GenerationBody = Callable[[FrameSink], Callable[[], None] | None]
"""Runs (part of) a generation into the sink; returns what the backend deferred, if anything."""


class Worker:
    def __init__(
        self,
        services: WorkerServices,
        backends: dict[str, Backend],
        worker_id: str,
        *,
        nsfw: NsfwClassifier | None = None,
        overlap: bool = True,
    ) -> None:
        self._settings = services.settings
        self._sessions = services.sessions
        self._blobs = services.blobs
        self._dispatcher = services.dispatcher
        self._backends = backends
        self.worker_id = worker_id
        self._nsfw = nsfw or NsfwClassifier()
        self._heartbeat_s = max(0.1, min(1.0, self._settings.lease_s / 4))
        self.shutting_down = threading.Event()
        self._overlap = overlap
        """Post-process on a thread while the next prediction denoises (backends that can)."""
        self._post: threading.Thread | None = None
        self._post_error: BaseException | None = None

    # --- the loop -------------------------------------------------------------------------

    def run_forever(self) -> None:
        log.info("worker %s serving %s", self.worker_id, ", ".join(sorted(self._backends)))
        try:
            self._loop()
        finally:
            try:
                self.drain()
            except Exception as exc:  # its prediction is handed back or retried by lease; log only
                log.warning("worker %s: the last post-processing ended with %s", self.worker_id, exc)

    def _loop(self) -> None:
        delay = FIRST_RETRY_S
        while not self.shutting_down.is_set():
            try:
                worked = self.run_once()
            except UNAVAILABLE as exc:
                log.warning("worker %s: %s; retrying in %.1f s", self.worker_id, first_line(exc), delay)
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            except Exception:
                # A bug in claiming or recording: the prediction involved is retried when its
                # lease runs out (or failed after max_attempts); the worker lives on.
                log.exception("worker %s: unexpected error; retrying in %.1f s", self.worker_id, delay)
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            delay = FIRST_RETRY_S
            if not worked:
                # Returns when a prediction may be waiting (a notification), or after a poll interval.
                self._dispatcher.wait_for_work(list(self._backends), self.shutting_down)

    def run_once(self) -> bool:
        """Run the next waiting prediction, if any. Returns whether there was one (or a deferred
        post-processing was waited for instead); raises the outage after handing a prediction
        back because of one (the loop waits it out).

        When the backend defers its last decode, this returns once the post-processing thread
        has it (see the module docstring); :meth:`drain` waits for that thread."""
        claim = self._dispatcher.claim(self.worker_id, list(self._backends))
        if claim is None:
            return self.drain()  # nothing to overlap with: finish the last one now
        with prediction_context(claim.prediction_id, key_id=claim.key_id, model=claim.model):
            return self._run_claimed(claim)

    def _run_claimed(self, claim: Claim) -> bool:
        running = _Running(claim)
        # The heartbeat logs about this prediction too: it runs in a copy of this log context.
        beat = threading.Thread(
            target=contextvars.copy_context().run, args=(self._heartbeat, running), daemon=True
        )
        beat.start()
        scratch = self._blobs.scratch_dir() / f"{claim.prediction_id}-{claim.attempt}.mp4"
        handed_over = False
        try:
            outcome = self._execute(running, scratch)
            if isinstance(outcome, _Pending):
                try:
                    self.drain()  # one post-processing at a time
                finally:
                    # In a copy of this log context, like the heartbeat.
                    self._post = threading.Thread(
                        target=contextvars.copy_context().run,
                        args=(self._post_process, running, beat, scratch, outcome),
                        name=f"post-{claim.prediction_id}",
                        daemon=True,
                    )
                    self._post.start()
                    handed_over = True
                return True
            self._record(running, outcome)
        finally:
            if not handed_over:
                self._release(running, beat, scratch)
        if isinstance(outcome, HandedBack) and outcome.outage is not None:
            raise outcome.outage
        return True

    def drain(self) -> bool:
        """Wait for the post-processing thread, if one runs; raises what ended it badly (an
        outage the loop then waits out). Returns whether there was one."""
        post = self._post
        if post is None:
            return False
        post.join()
        self._post = None
        error, self._post_error = self._post_error, None
        if error is not None:
            raise error
        return True

    def _release(self, running: _Running, beat: threading.Thread, scratch: Path) -> None:
        scratch.unlink(missing_ok=True)  # stored, failed or abandoned: never left behind
        running.done.set()
        beat.join()

    def _post_process(
        self, running: _Running, beat: threading.Thread, scratch: Path, pending: _Pending
    ) -> None:
        """The deferred rest of a prediction, on the post-processing thread: finish the video,
        check, store and record it, exactly as :meth:`run_once` would have."""
        try:
            outcome = self._finish(running, scratch, pending)
            self._record(running, outcome)
            if isinstance(outcome, HandedBack) and outcome.outage is not None:
                self._post_error = outcome.outage
        except BaseException as exc:  # kept for drain(): the loop treats it as run_once's
            self._post_error = exc
        finally:
            self._release(running, beat, scratch)

    # --- one prediction -------------------------------------------------------------------

    def _execute(self, running: _Running, scratch: Path) -> Outcome | _Pending:
        """Everything from reading the claimed prediction to its video in blob storage, as one
        outcome (or, when the backend deferred its last decode, what is left). Never raises."""
        claim = running.claim
        stage = "reading the prediction"
        where = [""]
        try:
            with self._sessions() as session:
                row = session.get(Prediction, claim.prediction_id)
                if row is None or row.deleted_at is not None:
                    return Cancelled()
                params = dict(row.params)
                input_blob = row.input_blob
            image = None  # text-to-video
            if input_blob is not None:
                stage = "reading the input image"
                try:
                    data = self._blobs.read_bytes(input_blob)
                except FileNotFoundError:
                    if running.stopped() or self._was_cancelled(claim):
                        return Cancelled()  # deleted meanwhile, and its input with it
                    return Failed(FailureCode.INTERNAL, "the input image is no longer in storage")
                image = Image.open(io.BytesIO(data)).convert("RGB")
            stage = "generating"
            generated = self._generate(running, self._request(claim, params, image), scratch)
            if isinstance(generated, _Pending):
                return generated
            if not isinstance(generated, int):
                return generated
            return self._deliver(running, scratch, generated, where)
        except UNAVAILABLE as exc:
            return HandedBack(f"{first_line(exc)} while {where[0] or stage}", outage=exc)
        except Exception as exc:
            stage = where[0] or stage
            log.exception("prediction %s: unexpected error while %s", claim.prediction_id, stage)
            return Failed(FailureCode.INTERNAL, f"internal error while {stage}: {public_reason(exc)}")

    def _finish(self, running: _Running, scratch: Path, pending: _Pending) -> Outcome:
        """The deferred end of a generation, then its delivery, as one outcome. Never raises."""
        where = ["generating"]
        try:
            backend = self._backends[running.claim.model]
            generated = self._encoding(
                running, backend, pending.writer, pending.encoder, pending.started, lambda _: pending.finish()
            )
            if isinstance(generated, _Pending):  # the finish returns nothing to defer
                raise RuntimeError("a deferred decode deferred again")
            if not isinstance(generated, int):
                return generated
            return self._deliver(running, scratch, generated, where)
        except UNAVAILABLE as exc:
            return HandedBack(f"{first_line(exc)} while {where[0]}", outage=exc)
        except Exception as exc:
            log.exception("prediction %s: unexpected error while %s", running.claim.prediction_id, where[0])
            return Failed(FailureCode.INTERNAL, f"internal error while {where[0]}: {public_reason(exc)}")

    def _deliver(self, running: _Running, scratch: Path, generated: int, where: list[str]) -> Outcome:
        """A finished video at ``scratch``: check it, store it; ``where[0]`` names the stage for
        an error the caller turns into the outcome."""
        if running.stopped():
            return self._stopped(running)
        where[0] = "checking the output with the safety classifier"
        flagged = self._nsfw.check_video(scratch)
        if flagged and self._settings.refuse_nsfw:
            return Failed(
                FailureCode.UNSAFE_OUTPUT,
                "the output was flagged by the safety classifier and is not returned",
            )
        where[0] = "storing the output"
        output = self._store_output(running, scratch)
        if output is None:
            return self._stopped(running)
        return Completed(output, generated, flagged)

    @staticmethod
    def _request(claim: Claim, params: dict[str, object], image: Image.Image | None) -> GenerationRequest:
        return GenerationRequest(
            prediction_id=claim.prediction_id,
            model=claim.model,
            prompt=str(params["prompt"]),
            image=image,
            width=int(params["width"]),  # type: ignore[call-overload]
            height=int(params["height"]),  # type: ignore[call-overload]
            fps=int(params["fps"]),  # type: ignore[call-overload]
            num_frames=int(params["num_frames"]),  # type: ignore[call-overload]
            seed=params.get("seed"),  # type: ignore[arg-type]
            params={k: v for k, v in params.items() if k in GENERATION_PARAMS},
        )

    def _generate(
        self, running: _Running, request: GenerationRequest, scratch: Path
    ) -> int | Outcome | _Pending:
        """Run the backend into an H.264 file at ``scratch``: the milliseconds it took, the
        outcome when it did not finish, or what the backend deferred (the file still open)."""
        claim = running.claim
        backend = self._backends[claim.model]
        log.info(
            "prediction %s: generating with %s backend (attempt %d)",
            claim.prediction_id,
            backend.kind,
            claim.attempt,
        )

        def on_progress(fraction: float) -> None:
            running.progress = max(running.progress, min(0.99, max(0.0, fraction)))

        def is_cancelled() -> bool:
            return running.stopped() or self.shutting_down.is_set()

        denoise = getattr(backend, "denoise", None) if self._overlap else None

        def body(sink: FrameSink) -> Callable[[], None] | None:
            if denoise is not None:
                return cast(Callable[[], None] | None, denoise(request, sink, on_progress, is_cancelled))
            backend.generate(request, sink, on_progress, is_cancelled)
            return None

        started = time.monotonic()
        try:
            writer = H264Writer(scratch, width=request.width, height=request.height, fps=request.fps)
        except UNAVAILABLE:
            raise
        except Exception as exc:  # opening the file: not the model's fault
            log.warning("prediction %s: encoding the video failed: %s", claim.prediction_id, exc)
            return Failed(
                FailureCode.INTERNAL, f"internal error while encoding the video: {public_reason(exc)}"
            )
        return self._encoding(running, backend, writer, _WatchedSink(writer), started, body)

    def _encoding(
        self,
        running: _Running,
        backend: Backend,
        writer: H264Writer,
        encoder: _WatchedSink,
        started: float,
        body: GenerationBody,
    ) -> int | Outcome | _Pending:
        """Run ``body`` into the open ``writer`` and close it: the milliseconds since ``started``,
        the outcome when the generation did not finish, or what the backend deferred."""
        claim = running.claim
        returned = False
        try:
            deferred = body(encoder)
            if deferred is not None:
                return _Pending(deferred, writer, encoder, started)
            returned = True
            writer.close()
        except BaseException as exc:
            writer.abort()
            if not isinstance(exc, Exception) or isinstance(exc, UNAVAILABLE):
                raise
            if encoder.error is not None or returned:
                # The encoder failed (taking a frame however the backend then reported it, or
                # finishing the file): not the model's fault.
                error = encoder.error or exc
                log.warning("prediction %s: encoding the video failed: %s", claim.prediction_id, error)
                return Failed(
                    FailureCode.INTERNAL,
                    f"internal error while encoding the video: {public_reason(error)}",
                )
            if isinstance(exc, GenerationCancelled):
                if self.shutting_down.is_set() and not running.stopped():
                    return HandedBack("the worker is shutting down")
                return self._stopped(running)
            if isinstance(exc, GenerationError):
                return Failed(FailureCode.GENERATION, str(exc))
            log.exception("prediction %s: %s backend crashed", claim.prediction_id, backend.kind)
            return Failed(
                FailureCode.INTERNAL,
                f"internal error in the {backend.kind} backend: {public_reason(exc)}",
            )
        # Counted by bench/fault_drill.py: a generation that ran to its end, kept or not.
        log.info("prediction %s: generation finished (attempt %d)", claim.prediction_id, claim.attempt)
        return int((time.monotonic() - started) * 1000)

    def _store_output(self, running: _Running, video: Path) -> OutputFile | None:
        """Put the finished video in blob storage, retrying a store that is away for as long as
        this worker's lease may still be alive (the heartbeat goes on meanwhile). None when the
        prediction was cancelled or taken over meanwhile; raises the outage when the lease ran
        out or the worker is stopping (then the prediction is handed back)."""
        file_id = new_file_id()
        output = OutputFile(file_id, f"outputs/{file_id}.mp4", OUTPUT_FILENAME, video.stat().st_size)
        delay = FIRST_RETRY_S
        while True:
            try:
                self._blobs.put_file(output.blob_key, video)
                return output
            except StorageUnavailable as exc:
                if running.stopped():
                    return None
                lease_left = self._settings.lease_s - (time.monotonic() - running.last_beat)
                if self.shutting_down.is_set() or lease_left <= delay:
                    raise
                log.warning(
                    "prediction %s: cannot store its video yet (%s); retrying in %.1f s",
                    running.claim.prediction_id,
                    first_line(exc),
                    delay,
                )
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)

    def _stopped(self, running: _Running) -> Outcome:
        """Why generation stopped though the worker goes on: cancelled/deleted, or taken over."""
        if running.claim.cancelled.is_set() or self._was_cancelled(running.claim):
            log.info("prediction %s: generation stopped (cancelled or deleted)", running.claim.prediction_id)
            return Cancelled()
        log.info(
            "prediction %s: generation stopped (another worker holds it now)", running.claim.prediction_id
        )
        return Lost()

    def _was_cancelled(self, claim: Claim) -> bool:
        try:
            with self._sessions() as session:
                row = session.get(Prediction, claim.prediction_id)
        except UNAVAILABLE:
            return False
        return row is None or row.deleted_at is not None or row.status == Status.CANCELLED

    # --- recording the outcome ------------------------------------------------------------

    def _record(self, running: _Running, outcome: Outcome) -> None:
        """The one place an outcome is written: through the lifecycle's fenced transitions,
        then the dispatcher is told the claim is over (or the prediction handed back)."""
        claim = running.claim
        ended = self._ended_hook
        if isinstance(outcome, HandedBack):
            log.info("prediction %s handed back: %s", claim.prediction_id, outcome.reason)
            self._hand_back(claim)
            return
        if isinstance(outcome, Completed):
            self._record_completion(claim, outcome)
        elif isinstance(outcome, Failed):

            def fail(session: Session) -> bool:
                return transitions.fail(session, claim, outcome.message, outcome.code, on_ended=ended)

            if self._until_written(claim, fail):
                log.warning("prediction %s failed: %s", claim.prediction_id, outcome.message)
        self._dispatcher.finished(claim)

    def _record_completion(self, claim: Claim, outcome: Completed) -> None:
        def complete(session: Session) -> bool:
            return transitions.complete(
                session,
                claim,
                outcome.output,
                inference_ms=outcome.inference_ms,
                flagged=outcome.flagged,
                on_ended=self._ended_hook,
            )

        try:
            recorded = self._until_written(claim, complete)
        except BaseException:
            self._delete_output(outcome.output, "its completion could not be recorded")
            raise
        if recorded:
            log.info("prediction %s completed in %d ms", claim.prediction_id, outcome.inference_ms)
        else:
            self._delete_output(outcome.output, "the prediction ended elsewhere")

    def _ended_hook(self, session: Session, row: Prediction) -> None:
        enqueue_final_event(session, row, self._settings.public_base, self._blobs)

    def _delete_output(self, output: OutputFile, why: str) -> None:
        log.info("discarding output %s: %s", output.blob_key, why)
        try:
            self._blobs.delete(output.blob_key)
        except StorageUnavailable as exc:
            log.error("output %s left behind: %s", output.blob_key, exc.message)

    def _hand_back(self, claim: Claim) -> None:
        try:
            self._dispatcher.release(claim)
        except UNAVAILABLE as exc:
            # The claim's lease runs out and the dispatcher gives the prediction to a worker then.
            log.warning("prediction %s: could not hand it back either (%s)", claim.prediction_id, exc)

    def _until_written(self, claim: Claim, write: Callable[[Session], T]) -> T:
        """``write(session)`` in a write transaction, retried while the database is away; it is
        fenced, so a retry that comes after the claim was lost writes nothing. Gives up only
        when the worker stops."""
        delay = FIRST_RETRY_S
        while True:
            try:
                with self._sessions.begin() as session:
                    return write(session)
            except UNAVAILABLE as exc:
                if self.shutting_down.is_set():
                    raise
                log.warning(
                    "prediction %s: cannot record its end yet (%s); retrying in %.1f s",
                    claim.prediction_id,
                    first_line(exc),
                    delay,
                )
                self.shutting_down.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)

    def _heartbeat(self, running: _Running) -> None:
        while not running.done.wait(self._heartbeat_s):
            try:
                alive = self._dispatcher.heartbeat(running.claim, running.progress)
            except UNAVAILABLE as exc:  # the generation goes on; its end waits for the database
                log.warning(
                    "heartbeat for %s failed (%s); retrying", running.claim.prediction_id, first_line(exc)
                )
                continue
            except Exception:  # nor must a bug here kill it
                log.exception("heartbeat for %s failed; retrying", running.claim.prediction_id)
                continue
            if not alive and not running.done.is_set():
                log.info("prediction %s was cancelled or taken over; stopping", running.claim.prediction_id)
                running.lost.set()
                return
            running.last_beat = time.monotonic()
