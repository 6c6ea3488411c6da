"""The WaveSpeed v3 prediction object, as the API returns it and webhooks send it."""

from __future__ import annotations

import base64
from typing import Any

from reel.predictions.clock import iso_ms
from reel.storage.base import BlobStore
from reel.store.tables import Prediction

OUTPUT_FILENAME = "output.mp4"


def output_url(public_base: str, file_id: str) -> str:
    return f"{public_base}/files/{file_id}/{OUTPUT_FILENAME}"


def prediction_object(row: Prediction, public_base: str, blobs: BlobStore) -> dict[str, Any]:
    if row.status == "completed":
        if row.base64_output:
            outputs = [base64.b64encode(blobs.read_bytes(key)).decode() for key in row.outputs]
        else:
            outputs = [output_url(public_base, file_id) for file_id in row.output_file_ids]
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
