"""How one run of a claimed prediction ended, as a small typed value.

The runner computes exactly one of these per claim and records it in one place
(``Worker._record``); what each means for the prediction's status is
``reel.lifecycle.transitions``'.
"""

from __future__ import annotations

from dataclasses import dataclass

from reel.lifecycle.failures import FailureCode
from reel.lifecycle.transitions import OutputFile


@dataclass(frozen=True)
class Completed:
    """The video is in blob storage; the prediction is to be completed with it."""

    output: OutputFile
    inference_ms: int
    flagged: bool


@dataclass(frozen=True)
class Failed:
    """The prediction is to be failed with ``message`` (and ``code`` for the API dialects)."""

    code: FailureCode
    message: str


@dataclass(frozen=True)
class Cancelled:
    """The prediction was cancelled or deleted while it ran: nothing is left to record."""


@dataclass(frozen=True)
class Lost:
    """Another worker holds the prediction now (this one's lease ran out): record nothing."""


@dataclass(frozen=True)
class HandedBack:
    """The prediction goes back to waiting: the worker is stopping, or the database or the
    blob store is away (``outage``, which the worker loop then waits out)."""

    reason: str
    outage: Exception | None = None


Outcome = Completed | Failed | Cancelled | Lost | HandedBack
