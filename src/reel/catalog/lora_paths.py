"""The three spellings of a LoRA adapter's ``path`` in a request, told apart without I/O.

Shared by the API's validation (``reel.predictions.lora_inputs``) and the worker that turns a
path into a file (``reel.backends.diffusers.lora_files``), which must agree on them.
"""

from __future__ import annotations

import re

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}$")


def lora_kind(path: str) -> str | None:
    """``url`` (http/https), ``repo`` (a Hugging Face ``owner/name``), ``file`` (a plain name in
    the operator's LoRA directory: no folders, no ``..``), or None when it is none of them."""
    if path.startswith(("https://", "http://")):
        return "url"
    if ".." in path:
        return None
    if _REPO_ID.match(path):
        return "repo"
    if _FILE_NAME.match(path):
        return "file"
    return None
