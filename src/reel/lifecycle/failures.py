"""Why a prediction failed, in the domain's words (each API dialect maps these to its own).

Stored in ``predictions.failure_code`` next to the human-readable ``error``; None for
predictions that failed before the code was recorded or for a reason not classified here.
"""

from __future__ import annotations

from enum import StrEnum


class FailureCode(StrEnum):
    GENERATION = "generation"
    """The backend reported a failure the user should see (``GenerationError``)."""
    INTERNAL = "internal"
    """The backend crashed, or the worker running the prediction kept dying."""
    UNSAFE_OUTPUT = "unsafe_output"
    """The safety classifier flagged the output and ``REEL_REFUSE_NSFW`` is on."""
