"""Model backends: turn a validated request into video frames. They know nothing of HTTP or SQL."""
