"""The WaveSpeed v3 prediction object, as the API returns it and webhooks send it."""

from __future__ import annotations

import base64
from typing import Any

from reel.lifecycle.clock import iso_ms
from reel.storage.base import BlobStore
from reel.store.tables import Prediction

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


def prediction_object(row: Prediction, public_base: str, blobs: BlobStore) -> dict[str, Any]:
    if row.status == "completed":
        if row.base64_output:
            outputs = [base64.b64encode(blobs.read_bytes(key)).decode() for key in row.outputs]
        else:
            outputs = output_urls(row, public_base, blobs)
    else:
        outputs = []
    return {
        "id": row.id,
        "model": row.model,
        "outputs": outputs,
        "urls": {"get": f"{public_base}/api/v3/predictions/{row.id}/result"},
        "has_nsfw_contents": list(row.nsfw) if row.status == "completed" else [],
        "status": row.status,
        "created_at": iso_ms(row.created_at),
        "error": row.error or "",
        "timings": {"inference": row.inference_ms},
        "progress": round(row.progress, 4),
    }
