"""The wire types of both dialects: what every route answers, as pydantic models.

Routes render their answers through these models (:func:`wire`), so ``/openapi.json``, which
FastAPI builds from the same models, cannot drift from what is sent. Field order and presence
follow the wire exactly: a field a route does not set stays absent (``exclude_unset``).

WaveSpeed answers are an envelope ``{"code", "message", "data"}``; Runway's are bare objects,
its errors ``{"error": "..."}``. A Runway task is one schema per status, discriminated on
``status``, as Runway's own SDKs model it.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

DataT = TypeVar("DataT")


class Wire(BaseModel):
    """A reply object: extension fields a newer server adds are allowed through."""

    model_config = ConfigDict(extra="allow")


def wire(model: Any, data: Any) -> Any:
    """``data`` checked against ``model`` (a pydantic model or a type) and dumped back as JSON
    values with only the fields that were given: the one way a route renders a typed answer."""
    adapter: TypeAdapter[Any] = _adapter(model)
    return adapter.dump_python(adapter.validate_python(data), mode="json", exclude_unset=True)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


# --- WaveSpeed v3 -------------------------------------------------------------------------------


class Envelope(Wire, Generic[DataT]):
    """WaveSpeed's envelope around every successful answer."""

    code: Literal[200] = Field(description="200 on success")
    message: Literal["success"]
    data: DataT


class ErrorEnvelope(Wire):
    """WaveSpeed's envelope around an error: the HTTP status as ``code``, ``data: null``."""

    code: int = Field(description="the HTTP status", examples=[400])
    message: str = Field(description="what went wrong, naming the field", examples=["prompt: is required"])
    data: None


class PredictionUrls(Wire):
    get: str = Field(description="absolute URL of this prediction's result route")


class Timings(Wire):
    inference: int = Field(description="milliseconds of model time; 0 until known")


PredictionStatus = Literal["created", "processing", "completed", "failed", "cancelled"]


class Prediction(Wire):
    """The WaveSpeed prediction object (also the body of a webhook, plus ``input``)."""

    id: str = Field(description="opaque, unguessable")
    model: str = Field(description="the model id as submitted", examples=["runwayml/gen4-turbo"])
    outputs: list[str] = Field(
        description="MP4 URLs once completed (bare base64 with enable_base64_output); [] until then"
    )
    urls: PredictionUrls
    has_nsfw_contents: list[bool] = Field(description="one flag per output")
    status: PredictionStatus
    created_at: str = Field(
        description="ISO-8601 UTC with milliseconds and Z", examples=["2026-01-01T00:00:00.000Z"]
    )
    error: str = Field(description='"" unless failed')
    timings: Timings
    progress: float = Field(ge=0, le=1, description="extension: fraction done, 0..1")
    queue_position: int | None = Field(
        default=None, ge=0, description="extension: place in its model's queue while created (0 = next)"
    )
    code: Literal[5004] | None = Field(
        default=None,
        description=(
            "sync mode only: 5004 when REEL_SYNC_WAIT_S passed before the prediction ended; "
            "status is then 'processing' and error begins 'Sync mode timed out'"
        ),
    )


class HistoryPage(Wire):
    page: int = Field(ge=1)
    total: int = Field(ge=0, description="predictions matching the filters")
    items: list[Prediction] = Field(description="newest first; outputs are URLs, also for base64 predictions")


class Deleted(Wire):
    id: str
    status: Literal["deleted"]


class DeletedCount(Wire):
    deleted_count: int = Field(ge=0)


class WebhookSecret(Wire):
    secret: str = Field(pattern="^whsec_", description="HMAC key of webhook-signature, without its prefix")


class UploadInstructions(Wire):
    method: Literal["PUT"]
    url: str = Field(description="where to PUT the bytes, without Authorization: it carries a one-time token")
    headers: dict[str, str]


class UploadedFile(Wire):
    type: str = Field(description="the media type's first part, e.g. image", examples=["image"])
    filename: str
    size: int = Field(ge=0)
    download_url: str = Field(description="usable as a prediction's image")


class UploadTicket(UploadedFile):
    upload: UploadInstructions


class ServedModel(Wire):
    id: str
    title: str
    backend: str = Field(description="'sandbox' is a CPU stand-in, not AI generation")
    sandbox: bool
    ready: bool
    reason: str | None = None
    workers: int = Field(ge=0)
    durations: list[int]
    parameters: list[str]


class Health(Wire):
    status: Literal["ok"]


class Ready(Wire):
    status: Literal["ready"]
    workers: int = Field(ge=0)


class NotReady(Wire):
    status: Literal["unavailable"]
    reason: str


# --- Runway /v1 -----------------------------------------------------------------------------------


class RunwayError(Wire):
    """Runway's error body; the status is on the HTTP status line."""

    error: str = Field(description="what went wrong, naming the field", examples=["ratio: is required"])


class Credits(Wire):
    credits: int = Field(ge=0, description="Reel charges nothing: always 0")


class CreatedTask(Wire):
    id: str = Field(description="the task id, a UUID")
    estimatedCost: Credits


class _Task(Wire):
    id: str = Field(description="a UUID")
    createdAt: str = Field(description="ISO-8601 UTC")


class PendingTask(_Task):
    status: Literal["PENDING"]
    estimatedCost: Credits


class ThrottledTask(_Task):
    status: Literal["THROTTLED"]
    estimatedCost: Credits


class RunningTask(_Task):
    status: Literal["RUNNING"]
    estimatedCost: Credits
    progress: float = Field(ge=0, le=1)


class SucceededTask(_Task):
    status: Literal["SUCCEEDED"]
    cost: Credits
    output: list[str] = Field(description="MP4 URLs")


class FailedTask(_Task):
    status: Literal["FAILED"]
    cost: Credits
    failure: str
    failureCode: str = Field(examples=["INTERNAL", "SAFETY.OUTPUT.VIDEO", "ASSET.INVALID"])


class CancelledTask(_Task):
    status: Literal["CANCELLED"]
    cost: Credits


Task = Annotated[
    PendingTask | ThrottledTask | RunningTask | SucceededTask | FailedTask | CancelledTask,
    Field(discriminator="status"),
]


class RunwayUploadTicket(Wire):
    uploadUrl: str = Field(
        description="POST the multipart form here (the fields, then part 'file'), without auth"
    )
    fields: dict[str, str]
    runwayUri: str = Field(description="usable as promptImage", examples=["runway://…"])


# --- Runway's /v1/organization ----------------------------------------------------------------


class ModelTier(Wire):
    maxConcurrentGenerations: int | None = Field(
        description="the key's max_concurrent (null: unlimited); Reel's limits are per key, across models"
    )
    maxDailyGenerations: int | None = Field(description="the key's per_day (null: unlimited)")


class Tier(Wire):
    maxMonthlyCreditSpend: int = Field(description="always 0: Reel charges nothing")
    models: dict[str, ModelTier]


class ModelUsage(Wire):
    dailyGenerations: int = Field(description="predictions the key created since 00:00 UTC")


class Usage(Wire):
    models: dict[str, ModelUsage]


class Organization(Wire):
    """The calling key's limits and today's usage, per served model (its Runway name where it
    has one)."""

    creditBalance: int = Field(description="always 0: Reel charges nothing")
    tier: Tier
    usage: Usage


class UsedCredits(Wire):
    model: str
    amount: int = Field(description="credits: always 0")
    generations: int = Field(description="predictions created that day (Reel's extension)")


class UsageDay(Wire):
    date: str = Field(description="a UTC day, YYYY-MM-DD")
    usedCredits: list[UsedCredits]


class UsageReport(Wire):
    models: list[str]
    results: list[UsageDay]


class UsageQuery(BaseModel):
    """``POST /v1/organization/usage``: a UTC date range, ``startDate`` included,
    ``beforeDate`` not (default: the last 30 days; at most 90)."""

    model_config = ConfigDict(extra="allow")
    startDate: str | None = Field(None, description="YYYY-MM-DD", examples=["2026-12-01"])
    beforeDate: str | None = Field(None, description="YYYY-MM-DD", examples=["2026-12-07"])
