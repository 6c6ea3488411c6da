"""Sends queued webhook deliveries, with retries and exponential backoff.

Runs on the worker side. Each delivery is claimed with a short lease so that several
workers sharing a database never send the same attempt twice; the ``webhook-id`` header
stays the same across retries so receivers can de-duplicate.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from reel.lifecycle.clock import utcnow
from reel.logs import prediction_context
from reel.media.fetch import FetchError, post_safely
from reel.predictions.webhooks import sign
from reel.settings import Settings
from reel.store.tables import Prediction, WebhookDelivery
from reel.worker.periodic import UNAVAILABLE

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 1800.0


def backoff_s(base_s: float, attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 4×base, 16×base, ... capped."""
    return min(base_s * 4 ** (attempt - 1), MAX_BACKOFF_S)


class WebhookSender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        worker_id: str,
        *,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._worker_id = worker_id
        self._poll_interval_s = poll_interval_s

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.send_due()
            except UNAVAILABLE as exc:
                log.warning("webhook sender: %s; retrying", exc)
                sent = 0
            except Exception:
                log.exception("webhook sender: unexpected error; continuing")
                sent = 0
            if not sent:
                stop.wait(self._poll_interval_s)

    def send_due(self) -> int:
        """Attempt every delivery that is due now; returns how many were attempted."""
        count = 0
        while (delivery := self._claim()) is not None:
            with self._about(delivery):
                self._attempt(delivery)
            count += 1
        return count

    def _claim(self) -> WebhookDelivery | None:
        now = utcnow()
        with self._sessions.begin() as session:
            row = session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                    or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(1)
            ).first()
            if row is None:
                return None
            row.worker_id = self._worker_id
            row.lease_expires_at = now + timedelta(seconds=self._settings.webhook_timeout_s * 3)
            session.expunge(row)
            return row

    def _about(self, delivery: WebhookDelivery) -> AbstractContextManager[None]:
        """The log context of the delivery's prediction (its key and model, for JSON logs)."""
        try:
            with self._sessions() as session:
                found = session.execute(
                    select(Prediction.key_id, Prediction.model).where(Prediction.id == delivery.prediction_id)
                ).first()
        except UNAVAILABLE:
            found = None  # the attempt goes ahead; its lines lack the key and the model
        key_id, model = (found[0], found[1]) if found else (None, None)
        return prediction_context(delivery.prediction_id, key_id=key_id, model=model)

    def _attempt(self, delivery: WebhookDelivery) -> None:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(delivery.secret, delivery.id, timestamp, delivery.body),
            "user-agent": "Reel-Webhooks/1",
        }
        error = ""
        try:
            status = post_safely(
                delivery.url,
                body=delivery.body.encode(),
                headers=headers,
                timeout_s=self._settings.webhook_timeout_s,
                allow_private=self._settings.allow_private_urls,
            )
            if not 200 <= status < 300:
                error = f"receiver answered status {status}"
        except FetchError as exc:
            error = exc.message
        with self._sessions.begin() as session:
            row = session.get(WebhookDelivery, delivery.id)
            if row is None:
                return
            row.attempts += 1
            row.lease_expires_at = None
            row.worker_id = None
            if not error:
                row.status = "delivered"
                row.ended_at = utcnow()
                row.last_error = ""
                log.info("webhook %s for %s delivered", row.id, row.prediction_id)
            elif row.attempts >= self._settings.webhook_max_attempts:
                row.status = "failed"
                row.ended_at = utcnow()
                row.last_error = error
                log.warning("webhook %s for %s gave up: %s", row.id, row.prediction_id, error)
            else:
                row.last_error = error
                row.next_attempt_at = utcnow() + timedelta(
                    seconds=backoff_s(self._settings.webhook_backoff_s, row.attempts)
                )
                log.info("webhook %s attempt %d failed (%s); retrying", row.id, row.attempts, error)
