"""The WaveSpeed v3 prediction object, as the API returns it and webhooks send it.

With ``enable_base64_output`` a completed prediction's outputs are inlined as base64 in the
answers about that one prediction (submit in sync mode, result, cancel), as WaveSpeed does,
up to ``REEL_MAX_INLINE_BYTES`` per answer; history pages carry URLs (a page of 100 inlined
videos would be gigabytes). Rendering may read whole blobs and sign URLs, which on S3 is
network I/O: callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reel.dispatch.fair import Waiting
from reel.errors import NotFound, TooLarge
from reel.lifecycle.clock import iso_ms
from reel.lifecycle.states import Status
from reel.storage.base import BlobStore
from reel.store.tables import Prediction

__all__ = ["PredictionRow", "PredictionViews", "Waiting"]

PredictionRow = Prediction
"""A stored prediction as the prediction service returns it: the name the API layer uses, so
that it never imports the store."""

OUTPUT_FILENAME = "output.mp4"


def output_url(public_base: str, file_id: str) -> str:
    """The output's URL on this server's ``/files`` route (it works in every storage mode)."""
    return f"{public_base}/files/{file_id}/{OUTPUT_FILENAME}"


def output_urls(row: Prediction, public_base: str, blobs: BlobStore) -> list[str]:
    """The URLs a completed prediction hands out: presigned storage URLs when the store makes
    them (``REEL_FILE_URLS=presigned``), otherwise this server's ``/files`` route."""
    urls = []
    for file_id, key in zip(row.output_file_ids, row.outputs, strict=True):
        direct = blobs.direct_url(key, filename=OUTPUT_FILENAME, content_type="video/mp4")
        urls.append(direct or output_url(public_base, file_id))
    return urls


def base64_length(size: int) -> int:
    """Characters of padded base64 for ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def inlined_outputs(
    row: Prediction, public_base: str, blobs: BlobStore, max_inline_bytes: int | None
) -> list[str]:
    """The outputs as base64; over ``max_inline_bytes`` of base64 in all (None: no cap) a
    :class:`TooLarge` names the setting and the URLs, decided from the sizes before reading."""
    try:
        return _inlined(row, public_base, blobs, max_inline_bytes)
    except FileNotFoundError as exc:
        # Deleted between reading its row and reading its video: it is gone, as a GET now says.
        raise NotFound(f"prediction {row.id!r} not found") from exc


def _inlined(row: Prediction, public_base: str, blobs: BlobStore, max_inline_bytes: int | None) -> list[str]:
    if max_inline_bytes is not None:
        total = sum(base64_length(blobs.size(key)) for key in row.outputs)
        if total > max_inline_bytes:
            raise TooLarge(
                "enable_base64_output",
                f"prediction {row.id} completed, but its output is {total} bytes as base64, over the "
                f"{max_inline_bytes} bytes this server inlines in one answer (REEL_MAX_INLINE_BYTES); "
                f"download it from {' '.join(output_urls(row, public_base, blobs))}",
            )
    return [base64.b64encode(blobs.read_bytes(key)).decode() for key in row.outputs]


def prediction_object(
    row: Prediction,
    public_base: str,
    blobs: BlobStore,
    *,
    max_inline_bytes: int | None = None,
    waiting: Waiting | None = None,
) -> dict[str, Any]:
    """The prediction, its outputs as the submit asked for them (base64 or URLs); ``waiting``
    says where a ``created`` one stands (the ``queue_position`` extension field)."""
    if row.status != Status.COMPLETED:
        outputs: list[str] = []
    elif row.base64_output:
        outputs = inlined_outputs(row, public_base, blobs, max_inline_bytes)
    else:
        outputs = output_urls(row, public_base, blobs)
    return _with_outputs(row, public_base, outputs, waiting)


def history_item(
    row: Prediction, public_base: str, blobs: BlobStore, waiting: Waiting | None = None
) -> dict[str, Any]:
    """The prediction as a history page lists it: outputs are URLs, also for base64 ones."""
    outputs = output_urls(row, public_base, blobs) if row.status == Status.COMPLETED else []
    return _with_outputs(row, public_base, outputs, waiting)


def _with_outputs(
    row: Prediction, public_base: str, outputs: list[str], waiting: Waiting | None
) -> dict[str, Any]:
    extension: dict[str, Any] = {}
    if row.status == Status.CREATED and waiting is not None:
        # 0: next to start for its model (reel.dispatch.fair); a documented extension field.
        extension["queue_position"] = waiting.queue_position
    return {
        "id": row.id,
        "model": row.model,
        "outputs": outputs,
        "urls": {"get": f"{public_base}/api/v3/predictions/{row.id}/result"},
        "has_nsfw_contents": list(row.nsfw) if row.status == Status.COMPLETED else [],
        "status": row.status,
        "created_at": iso_ms(row.created_at),
        "error": row.error or "",
        "timings": {"inference": row.inference_ms},
        "progress": round(row.progress, 4),
        **extension,
    }


@dataclass(frozen=True)
class PredictionViews:
    """How this server renders predictions: its public base URL, its blob store and the cap on
    inlined base64 (None: no cap)."""

    public_base: str
    blobs: BlobStore
    max_inline_bytes: int | None = None
    waiting: Callable[[Prediction], Waiting | None] = lambda row: None
    """Where a waiting prediction stands (a database read; None for one that is not waiting)."""

    def reads_blobs(self, row: Prediction) -> bool:
        """Whether rendering ``row`` calls the blob store (reads its video for base64, or signs
        its URLs): I/O, which must not run on an event loop."""
        return row.status == Status.COMPLETED and (row.base64_output or self.blobs.signs_urls)

    def one(self, row: Prediction) -> dict[str, Any]:
        """:func:`prediction_object`, for the answers about this one prediction."""
        return prediction_object(
            row,
            self.public_base,
            self.blobs,
            max_inline_bytes=self.max_inline_bytes,
            waiting=self.waiting(row),
        )

    def listed(self, row: Prediction) -> dict[str, Any]:
        """:func:`history_item`, for a history page."""
        return history_item(row, self.public_base, self.blobs, self.waiting(row))
