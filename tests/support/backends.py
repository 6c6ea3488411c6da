"""Backends named by how they behave, for the worker tests: a function is the generation."""

from __future__ import annotations

from collections.abc import Callable

from reel.backends.base import CancelCheck, FrameSink, GenerationRequest, ProgressCallback

Generation = Callable[[GenerationRequest, FrameSink, ProgressCallback, CancelCheck], None]


class ScriptedBackend:
    """A ready backend whose ``generate`` is ``generation``; ``kind`` names it in messages."""

    def __init__(self, kind: str, generation: Generation) -> None:
        self.kind = kind
        self._generation = generation

    def readiness(self) -> tuple[bool, str]:
        return True, ""

    def generate(
        self,
        request: GenerationRequest,
        sink: FrameSink,
        progress: ProgressCallback,
        is_cancelled: CancelCheck,
    ) -> None:
        self._generation(request, sink, progress, is_cancelled)
