"""``reel models``: list the registry's models, pull their weights and LoRAs, make tiny test models.

Importing this module is cheap (no torch); the commands import what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from reel.catalog.diffusers_config import ConfigError
from reel.catalog.families import FAMILIES

models_app = typer.Typer(
    help="The model registry: list models, download weights, make tiny test models.", no_args_is_help=True
)
err = Console(stderr=True)


def _registry() -> dict[str, object]:
    from reel.catalog.registry import load_registry, registry_path

    path = registry_path()
    try:
        return dict(load_registry(path))
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@models_app.command("list")
def list_models() -> None:
    """Every model id in the registry, its weights and whether they are on this machine."""
    from reel.backends.diffusers.weights import fix_command, locate, lora_problem
    from reel.catalog.registry import ModelSpec, registry_path

    table = Table("model id", "family", "weights", "status")
    for spec in _registry().values():
        assert isinstance(spec, ModelSpec)
        if spec.diffusers is None:
            table.add_row(spec.id, "sandbox", "-", "[green]ready[/] (sandbox)")
            continue
        status = locate(spec.diffusers)
        problem = status.problem if not status.ready else lora_problem(spec.diffusers)
        state = (
            f"[red]unavailable[/]: {problem}; run `{fix_command(spec.id)}`"
            if problem
            else f"[green]ready[/] {status.path}"
        )
        weights = spec.diffusers.weights
        if spec.diffusers.distill_lora:
            weights += f" + LoRA {spec.diffusers.distill_lora}"
        table.add_row(spec.id, spec.diffusers.family, weights, state)
    Console(width=200).print(table)
    err.print(f"registry: {registry_path()}")


@models_app.command("pull")
def pull(
    model_id: Annotated[str, typer.Argument(help="An id from `reel models list`.")],
) -> None:
    """Download a model's weights into the Hugging Face cache (resumes an interrupted download).

    A model whose weights are a local directory is only checked: nothing is downloaded.
    """
    from reel.backends.diffusers.weights import PullError
    from reel.backends.diffusers.weights import pull as pull_weights
    from reel.catalog.registry import ModelSpec

    spec = _registry().get(model_id)
    if spec is None:
        err.print(f"[red]{model_id!r} is not in the registry; `reel models list` shows the ids[/]")
        raise typer.Exit(1)
    assert isinstance(spec, ModelSpec)
    if spec.diffusers is None:
        err.print(f"{model_id} is served by the sandbox: it has no weights")
        return
    err.print(f"{model_id}: fetching {spec.diffusers.weights} ...")
    try:
        path = pull_weights(spec.diffusers)
    except PullError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    err.print(f"[green]{model_id} is ready[/]: {path}")


@models_app.command("make-tiny")
def make_tiny(
    directory: Annotated[Path, typer.Argument(help="Where to write the model (absent or empty).")],
    family: Annotated[str, typer.Option(help=f"One of: {', '.join(FAMILIES)}.")],
    model_id: Annotated[
        str, typer.Option("--model-id", help="Model id used in the printed registry table.")
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    turbo: Annotated[
        bool,
        typer.Option(
            help="A distilled (turbo) model: FastWan-style for wan2.2-ti2v, or the model plus a "
            "tiny step-distillation LoRA for a 14B family."
        ),
    ] = False,
) -> None:
    """Write a complete diffusers model with tiny random weights (for tests and demos).

    Prints a registry table serving it; append that to a file named by REEL_MODELS_FILE.
    """
    from reel.backends.diffusers.device import missing_packages
    from reel.backends.diffusers.tiny import make_tiny as write_tiny
    from reel.backends.diffusers.tiny import registry_snippet

    if family not in FAMILIES:
        err.print(f"[red]--family {family!r} is unknown; use one of {', '.join(FAMILIES)}[/]")
        raise typer.Exit(2)
    missing = missing_packages()
    if missing:
        err.print(f"[red]{', '.join(missing)} not installed: pip install 'reel[models]'[/]")
        raise typer.Exit(1)
    try:
        write_tiny(directory, family, seed=seed, turbo=turbo)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    except FileExistsError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    err.print(f"wrote a tiny {'turbo ' if turbo else ''}{FAMILIES[family].title} model to {directory}")
    default_id = f"tiny/{family}{'-turbo' if turbo else ''}"
    print(registry_snippet(model_id or default_id, directory, family, turbo=turbo))


@models_app.command("make-tiny-lora")
def make_tiny_lora(
    directory: Annotated[Path, typer.Argument(help="Where to write the .safetensors file.")],
    family: Annotated[str, typer.Option(help="wan2.2-ti2v, wan2.1-i2v or wan2.2-i2v-a14b.")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights (another seed, another LoRA).")] = 0,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 4,
    name: Annotated[str, typer.Option(help="File name without .safetensors.")] = "",
) -> None:
    """Write a random LoRA for `reel models make-tiny`'s model of FAMILY; prints its path.

    Put it in REEL_LORA_DIR (then a request names it by file name) or serve it over https.
    """
    from reel.backends.diffusers.device import missing_packages
    from reel.backends.diffusers.tiny_lora import LORA_FAMILIES
    from reel.backends.diffusers.tiny_lora import make_tiny_lora as write_lora

    if family not in LORA_FAMILIES:
        err.print(f"[red]--family {family!r}: LoRAs are made for {', '.join(LORA_FAMILIES)}[/]")
        raise typer.Exit(2)
    missing = missing_packages()
    if missing:
        err.print(f"[red]{', '.join(missing)} not installed: pip install 'reel[models]'[/]")
        raise typer.Exit(1)
    print(write_lora(directory, family, seed=seed, rank=rank, name=name))


@models_app.command("pull-lora")
def pull_lora(
    repo: Annotated[str, typer.Argument(help="A Hugging Face repo id (owner/name) holding one LoRA.")],
) -> None:
    """Download a LoRA repo into the Hugging Face cache, where workers look for `loras[].path`
    repo ids (they never download by themselves)."""
    from reel.backends.base import GenerationError
    from reel.backends.diffusers.lora_files import pull_lora as pull

    err.print(f"fetching LoRA {repo} ...")
    try:
        path = pull(repo)
    except GenerationError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    except Exception as exc:
        err.print(f"[red]could not download {repo}: {type(exc).__name__}: {exc}[/]")
        raise typer.Exit(1) from exc
    err.print(f"[green]{repo} is ready[/]: {path}")
