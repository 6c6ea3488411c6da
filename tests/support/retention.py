"""What the retention tests share: a webhook receiver on loopback and the rows retention deletes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from reel.store.tables import IdempotencyRecord, Prediction, StoredFile, WebhookDelivery

RETAINED_TABLES = {
    "predictions": Prediction,
    "files": StoredFile,
    "idempotency_keys": IdempotencyRecord,
    "webhook_deliveries": WebhookDelivery,
}
"""Every table whose rows retention deletes."""


def count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in RETAINED_TABLES.items()
        }


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A receiver on loopback answering 204 to every POST; yields its URL and the bodies."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()
