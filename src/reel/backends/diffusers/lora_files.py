"""Where a request's LoRA file comes from: a URL, a Hugging Face repo, or the operator's folder.

``loras[].path`` (validated by ``reel.predictions.lora_inputs``) becomes a local
``.safetensors`` file here, on the worker, before any denoising:

* an http(s) URL is fetched through Reel's SSRF-safe fetcher (every address and redirect
  checked again here: DNS may have changed since the submit), at most ``REEL_MAX_LORA_BYTES``,
  and stored content-addressed in the data dir (``loras/sha256/<hex>.safetensors``); the URL
  is remembered, so a repeat costs nothing;
* a repo id ``owner/name`` is read from the Hugging Face cache only (workers may be offline):
  ``reel models pull-lora owner/name`` puts it there;
* a plain file name is looked up in ``REEL_LORA_DIR``.

Every failure is a :class:`GenerationError` naming the field and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reel.backends.base import GenerationError
from reel.catalog.lora_paths import lora_kind
from reel.media.fetch import BlockedAddress, FetchError, fetch_url_safely
from reel.settings import Settings

log = logging.getLogger(__name__)

LORA_FETCH_TIMEOUT_S = 600.0
"""LoRA files run to hundreds of MB: the image fetch timeout would cut them off."""
LORA_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.md"]


@dataclass(frozen=True)
class LoraStore:
    """The settings a worker resolves LoRA paths with."""

    cache_dir: Path
    """Content-addressed downloads: ``sha256/`` files and the ``urls/`` index."""
    lora_dir: Path | None
    max_bytes: int
    allow_private_urls: bool
    fetch_timeout_s: float = LORA_FETCH_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> LoraStore:
        return cls(
            cache_dir=settings.data_dir / "loras",
            lora_dir=settings.lora_dir,
            max_bytes=settings.max_lora_bytes,
            allow_private_urls=settings.allow_private_urls,
            fetch_timeout_s=max(settings.fetch_timeout_s, LORA_FETCH_TIMEOUT_S),
        )

    def resolve(self, path: str, field: str) -> Path:
        """The local file ``path`` names; GenerationError naming ``field`` when there is none."""
        kind = lora_kind(path)
        if kind == "url":
            return self._from_url(path, field)
        if kind == "repo":
            return _from_hub(path, field)
        if kind == "file":
            return self._from_dir(path, field)
        raise GenerationError(f"{field}: {path[:100]!r} is not a URL, a repo id or a file name")

    # --- URLs ---------------------------------------------------------------------------------

    def _from_url(self, url: str, field: str) -> Path:
        index = self.cache_dir / "urls" / hashlib.sha256(url.encode()).hexdigest()
        if index.is_file():
            stored = self._blob(index.read_text().strip())
            if stored.is_file():
                return stored
        try:
            fetched = fetch_url_safely(
                url,
                max_bytes=self.max_bytes,
                timeout_s=self.fetch_timeout_s,
                allow_private=self.allow_private_urls,
            )
        except BlockedAddress as exc:
            raise GenerationError(f"{field}: URL refused: {exc.message}") from None
        except FetchError as exc:
            message = exc.message
            if "larger than" in message:
                message += " (REEL_MAX_LORA_BYTES)"
            raise GenerationError(f"{field}: could not fetch the LoRA: {message}") from None
        digest = hashlib.sha256(fetched.content).hexdigest()
        stored = self._blob(digest)
        if not stored.is_file():
            _write_atomically(stored, fetched.content)
        _write_atomically(index, digest.encode())
        log.info("LoRA %s stored as %s (%d bytes)", url, stored.name, len(fetched.content))
        return stored

    def _blob(self, digest: str) -> Path:
        return self.cache_dir / "sha256" / f"{digest}.safetensors"

    # --- the operator's folder ----------------------------------------------------------------

    def _from_dir(self, name: str, field: str) -> Path:
        if self.lora_dir is None:
            raise GenerationError(
                f"{field}: {name!r} would be a file in the server's LoRA directory, and it has none "
                "(REEL_LORA_DIR); use an https URL or a Hugging Face repo id"
            )
        for candidate in (name, f"{name}.safetensors"):
            path = self.lora_dir / candidate
            # lora_kind allows no separators or "..": the name cannot leave the folder.
            if path.is_file():
                return path
        raise GenerationError(f"{field}: no LoRA file {name!r} in the server's LoRA directory")


def _from_hub(repo: str, field: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, allow_patterns=LORA_ALLOW_PATTERNS, local_files_only=True))
    except Exception:  # not in the cache: workers never download models on their own
        raise GenerationError(
            f"{field}: the LoRA {repo} is not on this worker; ask the operator to run "
            f"`reel models pull-lora {repo}`"
        ) from None
    return pick_lora_file(folder, repo, field)


def pick_lora_file(folder: Path, repo: str, field: str) -> Path:
    """The one ``.safetensors`` file of a LoRA repo (one named like a LoRA when there are several)."""
    files = sorted(folder.rglob("*.safetensors"))
    if len(files) > 1:
        files = [f for f in files if "lora" in f.name.lower()] or files
    if len(files) != 1:
        names = ", ".join(f.name for f in files) or "none"
        raise GenerationError(
            f"{field}: the repo {repo} must hold exactly one .safetensors LoRA file; it has {names}"
        )
    return files[0]


def pull_lora(repo: str) -> Path:
    """Download a LoRA repo into the Hugging Face cache (``reel models pull-lora``)."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo, allow_patterns=LORA_ALLOW_PATTERNS))
    return pick_lora_file(folder, repo, "repo")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
