"""The order in which waiting predictions start: fair between keys, and within each key's
``max_concurrent``. Both dispatchers claim in this order, and the API reports a waiting
prediction's place in it (``queue_position``) and whether its key's cap holds it back
(Runway's ``THROTTLED``).

Each waiting prediction gets a *turn*: how many predictions its key has generating now,
plus its rank among the key's waiting predictions for the same models (1 for the oldest).
Predictions start in turn order; on equal turns, the key whose last prediction started
longest ago (or never) goes first, then the older prediction. So a key with hundreds waiting
does not get its next turn before another key's first: round robin by key, oldest first
within a key; another key's prediction waits for at most one generation per worker. A prediction
whose turn is past its key's ``max_concurrent`` is not eligible to start: it waits until one
of its key's running predictions ends.

This is plain SQL over the predictions and keys tables (window functions: SQLite 3.25+ and
PostgreSQL), so every worker and API replica computes the same order from the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session

from reel.lifecycle.states import Status
from reel.store.tables import ApiKey, Prediction

CANDIDATES = 16
"""Waiting predictions a claim considers at once: the first one that another worker is not
taking at the same moment (PostgreSQL) is taken."""


def key_cap(default_max_concurrent: int | None) -> ColumnElement[int | None]:
    """A key's effective ``max_concurrent`` (NULL: unlimited)."""
    if default_max_concurrent is None:
        return ApiKey.max_concurrent.expression
    return func.coalesce(ApiKey.max_concurrent, literal(default_max_concurrent))


def fair_order(models: Collection[str], default_max_concurrent: int | None, *, eligible_only: bool) -> Select:
    """The waiting (``created``) predictions for ``models``, in the order they start: columns
    ``id``, ``key_id``, ``model``, ``job_id``, ``turn`` and ``cap``. With ``eligible_only``,
    only those their key's cap lets start now."""
    query, order = _fair(tuple(models), default_max_concurrent)
    if eligible_only:
        turn, cap = query.selected_columns.turn, query.selected_columns.cap
        query = query.where(or_(cap.is_(None), turn <= cap))
    return query.order_by(*order)


@functools.lru_cache(maxsize=256)
def _fair(models: tuple[str, ...], default_max_concurrent: int | None) -> tuple[Select, tuple[Any, ...]]:
    """:func:`fair_order`'s query, unordered, and the order it starts in. Built once per
    argument: a statement built afresh is compiled afresh, which cost more than running it."""
    rank = func.row_number().over(
        partition_by=Prediction.key_id, order_by=(Prediction.created_at, Prediction.id)
    )
    waiting = (
        select(
            Prediction.id,
            Prediction.key_id,
            Prediction.model,
            Prediction.job_id,
            Prediction.created_at,
            rank.label("rank"),
        )
        .where(
            Prediction.status == Status.CREATED,
            Prediction.deleted_at.is_(None),
            Prediction.model.in_(list(models)),
        )
        .subquery("waiting")
    )
    running = (
        select(Prediction.key_id, func.count().label("n"))
        .where(Prediction.status == Status.PROCESSING)
        .group_by(Prediction.key_id)
        .subquery("running")
    )
    turn = (waiting.c.rank + func.coalesce(running.c.n, 0)).label("turn")
    cap = key_cap(default_max_concurrent).label("cap")
    query = (
        select(waiting.c.id, waiting.c.key_id, waiting.c.model, waiting.c.job_id, turn, cap)
        .join(ApiKey, ApiKey.id == waiting.c.key_id)
        .outerjoin(running, running.c.key_id == waiting.c.key_id)
    )
    order = (turn, ApiKey.last_started_at.nulls_first(), waiting.c.created_at, waiting.c.id)
    return query, order


def running_count(session: Session, key_id: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(Prediction.key_id == key_id, Prediction.status == Status.PROCESSING)
        )
        or 0
    )


def lock_key_and_check_cap(session: Session, key_id: str, default_max_concurrent: int | None) -> bool:
    """Whether ``key_id`` may start one more prediction now, decided under a lock on the key's
    row: two workers claiming for one key at once (PostgreSQL) count one after the other, so
    its cap holds. Keys without a cap take no lock."""
    cap = session.scalar(select(key_cap(default_max_concurrent)).where(ApiKey.id == key_id))
    if cap is None:
        return True
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
    return running_count(session, key_id) < cap


@dataclass(frozen=True)
class Waiting:
    """Where a waiting prediction stands."""

    queue_position: int
    """How many predictions for its model start before it (0: it is next)."""
    throttled: bool
    """Its key's ``max_concurrent`` holds it back until one of the key's predictions ends."""


@functools.lru_cache(maxsize=256)
def _positions(model: str, default_max_concurrent: int | None) -> Select:
    """The fair order of ``model``'s waiting predictions, numbered from 1, of the ids in the
    ``wanted`` parameter."""
    query, order = _fair((model,), default_max_concurrent)
    numbered = query.add_columns(func.row_number().over(order_by=order).label("position")).subquery()
    return select(numbered.c.id, numbered.c.position, numbered.c.turn, numbered.c.cap).where(
        numbered.c.id.in_(bindparam("wanted", expanding=True))
    )


def waiting_states(
    session: Session, rows: Collection[tuple[str, str]], default_max_concurrent: int | None
) -> dict[str, Waiting]:
    """Where each of ``rows`` ((prediction id, model) of waiting predictions) stands; ids no
    longer waiting are left out. The database numbers the whole queue and returns only the
    rows asked for: fetching the queue to count in Python made every submission and poll
    slower the longer the queue (30 % of a submission's time with 500 waiting, measured)."""
    states: dict[str, Waiting] = {}
    wanted_by_model: dict[str, set[str]] = {}
    for prediction_id, model in rows:
        wanted_by_model.setdefault(model, set()).add(prediction_id)
    for model, wanted in wanted_by_model.items():
        found = session.execute(_positions(model, default_max_concurrent), {"wanted": list(wanted)}).all()
        for entry in found:
            throttled = entry.cap is not None and entry.turn > entry.cap
            states[entry.id] = Waiting(entry.position - 1, throttled)
    return states
