"""Real image-to-video generation with open-weight models through Hugging Face diffusers.

Nothing here imports torch at module import time except ``backend``, ``runtime``,
``components`` and ``tiny``, which are imported only when a model is actually served, built
or benchmarked; the registry, the weight checks and ``reel models list`` work without torch.
"""
