"""The ``reel`` command line: serve, worker, keys."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from reel.backends.diffusers.cli import models_app
from reel.client import commands as client_commands
from reel.errors import NotFound
from reel.settings import Settings

app = typer.Typer(
    help="Reel: self-hosted image-to-video generation with WaveSpeed's v3 API.", no_args_is_help=True
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
# The API client: talks HTTP to a server like any other client.
app.command("run")(client_commands.run)
app.add_typer(client_commands.predictions_app, name="predictions")
err = Console(stderr=True)
log = logging.getLogger("reel")

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Database and files. [env: REEL_DATA_DIR]", show_default=False),
]


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def _announce_backends(settings: Settings) -> None:
    from reel.backends.build import build_backends

    kinds = {model_id: backend.kind for model_id, backend in build_backends(sandbox=settings.sandbox).items()}
    for model_id, kind in kinds.items():
        log.info("model %s -> %s backend", model_id, kind)
    if all(kind == "sandbox" for kind in kinds.values()):
        log.warning(
            "SANDBOX MODE: every model id is served by the CPU sandbox backend, which animates the "
            "input image with a camera move. It is NOT AI video generation."
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="[env: REEL_HOST]", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="[env: REEL_PORT]", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base of returned URLs. [env: REEL_PUBLIC_URL]", show_default=False)
    ] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", envvar="REEL_NO_WORKER", help="Run only the API, no worker.")
    ] = False,
    sandbox: Annotated[
        bool | None, typer.Option("--sandbox", help="Serve every model with the sandbox. [env: REEL_SANDBOX]")
    ] = None,
) -> None:
    """Run the HTTP API, with a supervised worker process unless --no-worker."""
    from reel import metrics
    from reel.logs import setup_logging

    setup_logging()
    settings = _settings(host=host, port=port, data_dir=data_dir, public_url=public_url, sandbox=sandbox)
    # Before the app and the worker exist: both (the worker inherits the environment) keep their
    # metrics in files there, which /metrics adds up.
    metrics.use_multiprocess_dir(metrics.serve_dir(settings.data_dir))

    import uvicorn

    from reel.api.app import create_app
    from reel.supervisor import WorkerSupervisor
    from reel.wiring import build_services

    services = build_services(settings)
    log.info("data in %s; database %s", settings.data_dir.resolve(), services.engine.url.render_as_string())
    log.info("public URL %s", settings.public_base)
    _announce_backends(settings)
    supervisor = None if no_worker else WorkerSupervisor(settings)
    if supervisor is None:
        log.info("--no-worker: predictions wait for a `reel worker` process")
    uvicorn.run(
        create_app(services, companion=supervisor),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=5,
        # asyncio's own loop, not uvloop: a saturated uvloop server left some connections
        # unserved for seconds (p99 7.8 s against 0.15 s at the same rate, docs/benchmarks.md).
        loop="asyncio",
    )


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    sandbox: Annotated[bool | None, typer.Option("--sandbox", help="[env: REEL_SANDBOX]")] = None,
    gpu: Annotated[
        int | None,
        typer.Option("--gpu", help="Use only this GPU (sets CUDA_VISIBLE_DEVICES).", show_default=False),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated model ids to serve; default all. [env: REEL_WORKER_MODELS]",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve this worker's Prometheus metrics on this port. [env: REEL_METRICS_PORT]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a worker that generates predictions (stop with SIGTERM: it hands back its job)."""
    if gpu is not None:  # before anything imports torch, which reads it once
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from reel.catalog.registry import MODELS
    from reel.logs import setup_logging
    from reel.worker.process import requested_models, run_worker_process

    setup_logging()
    settings = _settings(data_dir=data_dir, sandbox=sandbox, worker_models=models, metrics_port=metrics_port)
    unknown = [model for model in requested_models(settings) if model not in MODELS]
    if unknown:
        err.print(f"[red]--models: not in the model registry: {', '.join(unknown)}[/]")
        err.print(f"known: {', '.join(sorted(MODELS))}")
        raise typer.Exit(2)
    _announce_backends(settings)
    run_worker_process(settings)


@app.command()
def migrate(data_dir: DataDirOpt = None) -> None:
    """Bring the database schema (and, on PostgreSQL, procrastinate's job queue) up to date.

    `reel serve` and `reel worker` do this at start-up too; replicas starting together wait
    for each other."""
    from reel.logs import setup_logging
    from reel.store.db import current_revision, make_engine
    from reel.store.db import migrate as apply_migrations

    setup_logging()
    settings = _settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    before = current_revision(engine)
    apply_migrations(engine, settings.data_dir)
    after = current_revision(engine)
    where = engine.url.render_as_string()
    err.print(f"{where}: schema at revision {after}" + (f" (was {before})" if before != after else ""))


def _key_service(data_dir: Path | None) -> Any:
    from reel.wiring import build_services

    return build_services(_settings(data_dir=data_dir)).keys


MaxConcurrentOpt = Annotated[
    int | None,
    typer.Option("--max-concurrent", min=0, help="Predictions generating at once; more wait (0: default)."),
]
PerMinuteOpt = Annotated[
    int | None,
    typer.Option("--per-minute", min=0, help="Submissions per rolling minute; more get 429 (0: default)."),
]
PerDayOpt = Annotated[
    int | None,
    typer.Option("--per-day", min=0, help="Predictions per UTC day; more get 429 (0: default)."),
]


def _own_limit(value: int | None) -> int | None:
    """A limit as given on the command line: 0 clears the key's own, so the default applies."""
    return value or None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    max_concurrent: MaxConcurrentOpt = None,
    per_minute: PerMinuteOpt = None,
    per_day: PerDayOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a key. It is printed once, alone on stdout; only its hash is stored.

    Limits not given follow the server-wide defaults (REEL_KEY_MAX_CONCURRENT,
    REEL_KEY_PER_MINUTE, REEL_KEY_PER_DAY)."""
    from reel.predictions.limits import Limits

    limits = Limits(_own_limit(max_concurrent), _own_limit(per_minute), _own_limit(per_day))
    plaintext, info = _key_service(data_dir).create(name, limits)
    err.print(f"Created key [bold]{info.id}[/] {name!r}. Store it now: it cannot be shown again.")
    print(plaintext)


@keys_app.command("limits")
def keys_limits(
    key_id: Annotated[str, typer.Argument(help="The id shown by `reel keys list`.")],
    max_concurrent: MaxConcurrentOpt = None,
    per_minute: PerMinuteOpt = None,
    per_day: PerDayOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Change a key's limits; an option not given is left as it is, 0 clears it (the
    server-wide default applies again). Running servers apply the change at once."""
    given = {"max_concurrent": max_concurrent, "per_minute": per_minute, "per_day": per_day}
    changes = {name: _own_limit(value) for name, value in given.items() if value is not None}
    try:
        info = _key_service(data_dir).set_limits(key_id, **changes)
    except NotFound as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from exc
    own = info.limits
    err.print(
        f"Key {key_id}: max concurrent {_shown(own.max_concurrent)}, per minute "
        f"{_shown(own.per_minute)}, per day {_shown(own.per_day)}."
    )


def _shown(own: int | None, default: int = 0) -> str:
    if own is not None:
        return str(own)
    return f"default ({default})" if default else "default (unlimited)"


@keys_app.command("list")
def keys_list(data_dir: DataDirOpt = None) -> None:
    """List keys (ids and names; secrets are never stored), their limits and today's usage."""
    settings = _settings(data_dir=data_dir)
    table = Table(
        "id", "name", "created", "last used", "revoked", "max concurrent", "per minute", "per day", "today"
    )
    for info in _key_service(data_dir).list():
        table.add_row(
            info.id,
            info.name,
            info.created_at.isoformat(timespec="seconds"),
            info.last_used_at.isoformat(timespec="seconds") if info.last_used_at else "",
            info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "",
            _shown(info.limits.max_concurrent, settings.key_max_concurrent),
            _shown(info.limits.per_minute, settings.key_per_minute),
            _shown(info.limits.per_day, settings.key_per_day),
            str(info.created_today),
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The id shown by `reel keys list`.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key: it stops working at once."""
    try:
        _key_service(data_dir).revoke(key_id)
    except NotFound as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from exc
    err.print(f"Revoked key {key_id}.")


if __name__ == "__main__":
    app()
