"""A command-line client for Reel's public API: ``reel run`` and ``reel predictions``.

It talks HTTP to a server like any other client (it never opens the server's database), so it
works against any Reel, local or remote, and against WaveSpeed-compatible servers generally.
"""
