"""Reel: a self-hosted image-to-video service that speaks WaveSpeedAI's v3 API."""

__version__ = "0.1.0"
