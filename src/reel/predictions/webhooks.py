"""Webhook events: what is sent when a prediction ends, and how it is signed.

Deliveries are queued in the database in the transaction that ends the prediction; the
worker side sends them (``reel.worker.webhooks``), never a request handler.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from sqlalchemy.orm import Session

from reel.lifecycle.clock import utcnow
from reel.predictions.views import prediction_object
from reel.storage.base import BlobStore
from reel.store.tables import ApiKey, Prediction, WebhookDelivery


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """``v3,<hex HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the secret minus ``whsec_``."""
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"v3,{digest}"


def enqueue_final_event(session: Session, row: Prediction, public_base: str, blobs: BlobStore) -> None:
    """Queue the one webhook for a prediction that just completed or failed."""
    if not row.webhook_url:
        return
    key = session.get(ApiKey, row.key_id)
    if key is None:
        return
    payload = prediction_object(row, public_base, blobs)
    payload["input"] = row.input
    now = utcnow()
    session.add(
        WebhookDelivery(
            id="msg_" + secrets.token_hex(16),
            prediction_id=row.id,
            url=row.webhook_url,
            body=json.dumps(payload, separators=(",", ":")),
            secret=key.webhook_secret,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            last_error="",
            created_at=now,
        )
    )
