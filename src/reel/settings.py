"""All configuration, read from ``REEL_*`` environment variables (pydantic-settings).

CLI flags override the environment; see ``reel.cli``. Every setting is documented in README.md.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REEL_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Database, uploads and outputs live here.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file reel.db in the data dir."
    )
    public_url: str | None = Field(
        None, description="Base of every absolute URL the API returns; default http://HOST:PORT."
    )
    host: str = Field("127.0.0.1", description="Address `reel serve` listens on.")
    port: int = Field(8000, description="Port `reel serve` listens on.")
    sync_wait_s: float = Field(90.0, description="How long enable_sync_mode holds a POST open.")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="Largest JSON request body.")
    max_upload_bytes: int = Field(20 * 1024 * 1024, description="Largest uploaded or fetched image.")
    max_inline_bytes: int = Field(
        32 * 1024 * 1024,
        ge=0,
        description="Most base64 (enable_base64_output) one answer inlines; over it the answer is a 413.",
    )
    max_image_pixels: int = Field(40_000_000, description="Largest decoded image, width × height.")
    allow_private_urls: bool = Field(
        False, description="Let image and webhook URLs reach private addresses. Local development only."
    )
    fetch_timeout_s: float = Field(15.0, description="Total time allowed for fetching one image URL.")
    sandbox: bool = Field(False, description="Serve every model id with the CPU sandbox backend.")
    models_file: Path | None = Field(
        None, description="The model registry TOML file; default: reel/catalog/models.toml."
    )
    device: str = Field(
        "auto", description="Where diffusers models run: auto (a CUDA GPU if any), cuda, cuda:N or cpu."
    )
    refuse_nsfw: bool = Field(False, description="Fail predictions whose output the classifier flags.")
    lease_s: float = Field(
        30.0, description="A worker that has not heartbeated for this long loses its prediction."
    )
    max_attempts: int = Field(3, description="Times a prediction is started before it is failed.")
    dispatch: Literal["auto", "table", "procrastinate"] = Field(
        "auto",
        description="How predictions reach workers: table (leases in the predictions table) or "
        "procrastinate (PostgreSQL job queue); auto: procrastinate on PostgreSQL, table on SQLite.",
    )
    worker_models: str = Field(
        "", description="Comma-separated model ids a `reel worker` serves; empty: every model."
    )
    webhook_timeout_s: float = Field(10.0, description="Time allowed for one webhook POST.")
    webhook_max_attempts: int = Field(6, description="Webhook attempts before giving up.")
    webhook_backoff_s: float = Field(
        2.0, description="First webhook retry delay; each next one is 4× longer."
    )
    storage_url: str | None = Field(
        None,
        description="Where blobs live: s3://bucket/prefix (endpoint, region and credentials from "
        "the standard AWS_* variables) or file:///path; default: the blobs dir in the data dir.",
    )
    file_urls: Literal["proxy", "presigned"] = Field(
        "proxy",
        description="How outputs are handed out: proxy (Reel's /files route streams them) or "
        "presigned (S3 presigned GET URLs, S3 storage only).",
    )
    file_url_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, le=7 * 24 * 3600, description="Lifetime of a presigned URL (S3's cap: 7 days)."
    )
    s3_multipart_threshold_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Files at least this big go to S3 in parts (of at least 5 MiB)."
    )
    key_max_concurrent: int = Field(
        0, ge=0, description="Default per-key limit: predictions generating at once (0: unlimited)."
    )
    key_per_minute: int = Field(
        0, ge=0, description="Default per-key limit: submissions per rolling minute (0: unlimited)."
    )
    key_per_day: int = Field(
        0, ge=0, description="Default per-key limit: predictions created per UTC day (0: unlimited)."
    )
    key_cache_s: float = Field(
        2.0,
        ge=0,
        description="How long a verified API key is trusted without a database read (0: never). "
        "A revoke applies at once on the processes sharing its data dir, within this on others.",
    )
    api_threads: int = Field(
        8,
        ge=1,
        description="Threads an API process runs blocking work in (database reads, blob I/O).",
    )
    retention_s: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        description="Ended predictions (with their files, idempotency keys and webhooks) and uploads are "
        "deleted this long after they ended; 0 keeps everything.",
    )
    min_free_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="New predictions and uploads are refused (503) while the data dir (or the S3 "
        "scratch dir) has less free space than this; 0 disables the check.",
    )
    housekeeping_interval_s: float = Field(
        600.0, gt=0, description="How often each worker sweeps expired uploads and predictions."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or one JSON object per line (with prediction_id, key_id and "
        "model on lines about a prediction). Read from the environment by every process.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that lets a non-loopback client read /metrics; unset: loopback only.",
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="`reel worker` serves its own /metrics on this port; unset: none."
    )
    metrics_host: str = Field("127.0.0.1", description="Address `reel worker`'s metrics port listens on.")
    max_lora_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest LoRA file a worker downloads from a URL."
    )
    lora_dir: Path | None = Field(
        None, description="The operator's LoRA files: a request's loras[].path may name one of them."
    )
    lora_cache: int = Field(
        8, ge=1, description="LoRA adapters a worker keeps loaded per model (least recently used go)."
    )
    lora_hotswap_rank: int = Field(
        128,
        ge=1,
        description="With torch.compile on, every LoRA is padded to this rank so swapping "
        "adapters never recompiles; a LoRA of a higher rank fails its prediction.",
    )

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'reel.db').resolve()}"

    @property
    def public_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
