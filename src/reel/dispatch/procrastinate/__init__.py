"""Dispatch through procrastinate's job queue on PostgreSQL: the scale-out mode.

Every prediction is one procrastinate job in the queue of its model (:func:`queue_for`),
deferred in the transaction that inserts the prediction: a prediction never exists without
its job, nor a job without its prediction. A worker fetches only from the queues of the
models it has loaded. The prediction row stays the single source of truth; the job only
says who should run what. Every write that ends a prediction is fenced on the row
(``reel.worker.runner``), so a job delivered twice can never produce two results.

What procrastinate provides, and how it is used:

- **Defer in the same transaction.** ``procrastinate_defer_jobs_v1`` runs on the SQLAlchemy
  session's own connection, like procrastinate's Django integration does with Django's.
  Each job carries ``lock`` and ``queueing_lock`` = the prediction id, so the database
  itself refuses a second waiting job for one prediction and never runs two at once.
- **Fetch.** Not ``procrastinate_fetch_job_v2`` (priority, then age): a worker takes the
  first job, in Reel's fair order between keys and within each key's cap
  (``reel.dispatch.fair``), that it can lock (``FOR UPDATE SKIP LOCKED``), with the same
  update procrastinate's fetch makes (``queries.take_job``), in the transaction that marks
  the prediction ``processing``. Jobs whose prediction is not waiting (queued again by a
  sweep) go first.
- **LISTEN/NOTIFY.** procrastinate's insert trigger notifies ``procrastinate_queue_v1#<queue>``.
  An idle worker sleeps on its queues' channels and starts a new prediction within
  milliseconds of its submission; a poll every ``poll_interval_s`` covers a lost
  notification (a PostgreSQL restart drops them).
- **Abort.** Cancelling or deleting a prediction calls ``procrastinate_cancel_job_v1`` with
  ``abort``: a waiting job is deleted, a running one is flagged, and the trigger's
  notification sets the claim's ``cancelled`` event, which the backend's cancel check reads
  at its next step. The worker's heartbeat also reads the flag, should a notification be lost.
- **Stalled jobs.** Each worker registers in ``procrastinate_workers`` and heartbeats there
  while it polls and while it generates. Whenever a worker asks for work it first retries
  the jobs of workers silent for longer than ``lease_s`` (``select_stalled_jobs_by_heartbeat``
  then ``procrastinate_retry_job_v2``), under an advisory lock so one worker sweeps at a
  time. This is procrastinate's documented "retry stalled jobs" periodic task, run by the
  worker loop at the moment it matters: when a worker is free to take the job. Liveness is
  judged on the database's clock, so clock skew between machines does not matter, and a
  worker that was itself cut off from the database (a PostgreSQL restart cuts off everyone)
  does not judge others until it has been connected for a full ``lease_s`` again.

The package: ``queries`` (procrastinate's SQL on SQLAlchemy connections, and the queue names),
``dispatcher`` (defer and abort, fetch, heartbeat, hand-back and finish), ``sweeper`` (stalled
jobs and predictions without a job) and ``listener`` (the LISTEN thread).

Why not procrastinate's own ``Worker``: it runs coroutines, and sync tasks in a thread,
with its own shutdown and retry policies. Reel's worker loop (``reel.worker.runner``) is
shared by both dispatch modes: it fences every write on the prediction row, heartbeats
progress, and hands its job back on SIGTERM; keeping it means the same runner tests cover
both modes. procrastinate's SQL (``procrastinate.sql.queries``) is run on SQLAlchemy
connections rather than through procrastinate's connectors, so that a connection broken by
a PostgreSQL restart is seen and replaced by SQLAlchemy's pool like any other.
"""

from reel.dispatch.procrastinate.dispatcher import ProcrastinateDispatcher
from reel.dispatch.procrastinate.queries import MAX_QUEUE_BYTES, queue_for

__all__ = ["MAX_QUEUE_BYTES", "ProcrastinateDispatcher", "queue_for"]
