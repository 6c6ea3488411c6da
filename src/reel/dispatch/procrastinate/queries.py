"""procrastinate's SQL, run on SQLAlchemy connections inside Reel's own transactions, and the
queue of each model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from procrastinate import sql as procrastinate_sql
from procrastinate.manager import get_channel_for_queues
from procrastinate.types import JobToDefer
from psycopg.types.json import Jsonb
from sqlalchemy import text, update
from sqlalchemy.engine import Connection, CursorResult, Row
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from reel.errors import DatabaseUnavailable
from reel.lifecycle.clock import utcnow
from reel.store.tables import Prediction

QUERIES = procrastinate_sql.queries
TASK_NAME = "reel.generate"
MAX_QUEUE_BYTES = 40
"""pg_notify channel names are at most 63 bytes, and procrastinate's are
``procrastinate_queue_v1#`` (23 bytes) + the queue name."""

OUTAGES = (DatabaseUnavailable, OperationalError)


def queue_for(model: str) -> str:
    """The procrastinate queue of ``model``: its id, shortened with a hash when too long."""
    raw = model.encode()
    if len(raw) <= MAX_QUEUE_BYTES:
        return model
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"{raw[: MAX_QUEUE_BYTES - 13].decode(errors='ignore')}~{digest}"


def _adapt(value: Any) -> Any:
    """Parameters as procrastinate's psycopg connector passes them (dicts as JSONB)."""
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, list):
        return [_adapt(item) for item in value]
    if isinstance(value, tuple):
        return type(value)(*(_adapt(item) for item in value))
    return value


def run(conn: Connection, query: str, **params: Any) -> CursorResult[Any]:
    """Run one of procrastinate's named queries on ``conn`` (inside its transaction)."""
    return conn.exec_driver_sql(QUERIES[query], {name: _adapt(v) for name, v in params.items()})


def defer(session: Session, prediction_id: str, model: str) -> int:
    """Queue the job of ``prediction_id`` in its model's queue, in ``session``'s transaction,
    and record its id on the prediction. The queueing lock refuses a second waiting job."""
    job = JobToDefer(
        queue_name=queue_for(model),
        task_name=TASK_NAME,
        priority=0,
        lock=prediction_id,
        queueing_lock=prediction_id,
        args={"prediction_id": prediction_id},
        scheduled_at=None,
    )
    job_id: int = run(session.connection(), "defer_jobs", jobs=[job]).scalar_one()
    session.execute(update(Prediction).where(Prediction.id == prediction_id).values(job_id=job_id))
    return job_id


def prediction_of(job: Any) -> str:
    """The prediction id a job's ``args`` name ("" if none)."""
    args = job["args"] if isinstance(job["args"], dict) else json.loads(job["args"])
    return str(args.get("prediction_id", ""))


def job_state(conn: Connection, job_id: int | None, *, lock: bool = False) -> Row[Any] | None:
    """The job's ``status``, ``worker_id`` and ``abort_requested`` (None: gone); ``lock``
    takes its row lock, which a fetch takes before the prediction's."""
    query = "SELECT status, worker_id, abort_requested FROM procrastinate_jobs WHERE id = :id"
    return conn.execute(text(query + (" FOR UPDATE" if lock else "")), {"id": job_id}).first()


def retry_now(conn: Connection, job_id: int, queue: str) -> None:
    """Put a running job back to ``todo`` and tell idle workers. procrastinate's retry does not
    notify (its insert trigger does): without this, they would wait for their poll."""
    run(
        conn,
        "retry_job",
        job_id=job_id,
        retry_at=utcnow(),
        new_priority=None,
        new_queue_name=None,
        new_lock=None,
    )
    payload = json.dumps({"type": "job_inserted", "job_id": job_id})
    for channel in get_channel_for_queues([queue]):
        conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


# A fetch of our own instead of ``procrastinate_fetch_job_v2`` (priority, then age): Reel starts
# waiting predictions in its fair order between keys, within each key's cap
# (``reel.dispatch.fair``), which procrastinate's queue cannot express. The update is the one
# procrastinate's fetch makes (its triggers record the job's events as usual); the locks that
# fetch checks are moot here, each job's lock being its own prediction's id.
_TAKE_JOB = """
UPDATE procrastinate_jobs SET status = 'doing', worker_id = :worker
WHERE id = (
    SELECT id FROM procrastinate_jobs
    WHERE id = :job AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
    FOR UPDATE SKIP LOCKED
)
RETURNING *
"""

# Jobs whose prediction is not waiting (a stalled job the sweeper queued again while its
# prediction is still ``processing``; one whose prediction ended or went): not in the fair
# order, and taken first, the way a lapsed lease is.
_TAKE_STRAY_JOB = """
UPDATE procrastinate_jobs SET status = 'doing', worker_id = :worker
WHERE id = (
    SELECT j.id FROM procrastinate_jobs j LEFT JOIN predictions p ON p.job_id = j.id
    WHERE j.status = 'todo' AND j.queue_name = ANY(:queues)
      AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
      AND (p.id IS NULL OR p.status <> 'created' OR p.deleted_at IS NOT NULL)
    ORDER BY j.id LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
)
RETURNING *
"""


def take_job(conn: Connection, job_id: int, worker: int) -> Any:
    """Mark waiting job ``job_id`` as run by procrastinate worker ``worker``; None if it is
    not waiting or another worker is taking it."""
    return conn.execute(text(_TAKE_JOB), {"job": job_id, "worker": worker}).mappings().first()


def take_stray_job(conn: Connection, queues: list[str], worker: int) -> Any:
    """The oldest waiting job in ``queues`` whose prediction is not waiting, now run by
    ``worker``; None if there is none."""
    return conn.execute(text(_TAKE_STRAY_JOB), {"queues": queues, "worker": worker}).mappings().first()
