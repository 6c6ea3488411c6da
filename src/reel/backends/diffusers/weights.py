"""Finding, checking and downloading model weights. No torch; never touches the network
except in :func:`pull`.

``weights`` in the registry is either a local model directory or a Hugging Face repo id. A
repo is looked up in the local Hugging Face cache only (``HF_HOME``, ``HF_HUB_CACHE``), so a
machine that is offline, or has not pulled a model yet, answers at once: the model is listed
as unavailable with the command that fixes it.

A model directory is complete when its ``model_index.json`` names components whose folders
exist with their config, and every weight-bearing component has its weight files (all shards
of a sharded checkpoint).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from reel.catalog.diffusers_config import DiffusersConfig

_CONFIG_FILES = ("config.json", "scheduler_config.json", "preprocessor_config.json", "tokenizer_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")


@dataclass(frozen=True)
class WeightsStatus:
    ready: bool
    path: Path | None
    """The complete local model directory, when ready."""
    problem: str = ""
    """What is missing, when not ready (without the fix: see :func:`fix_command`)."""


def is_local(weights: str) -> bool:
    """Local directories are absolute paths (the registry resolves ./ and ~ against its file)."""
    return weights.startswith("/")


def fix_command(model_id: str) -> str:
    return f"reel models pull {model_id}"


def locate(engine: DiffusersConfig) -> WeightsStatus:
    """Where the model's complete weights are on this machine, without any network access."""
    if is_local(engine.weights):
        path = Path(engine.weights)
        if not path.is_dir():
            return WeightsStatus(False, None, f"local model directory {path} does not exist")
        problems = check_model_dir(path)
        if problems:
            return WeightsStatus(False, None, f"local model directory {path} is incomplete: {problems[0]}")
        return WeightsStatus(True, path)
    snapshot = cached_snapshot(engine.weights, engine.revision)
    if snapshot is None:
        return WeightsStatus(
            False, None, f"{engine.weights} is not downloaded (not in the Hugging Face cache)"
        )
    problems = check_model_dir(snapshot)
    if problems:
        return WeightsStatus(False, None, f"the download of {engine.weights} is incomplete: {problems[0]}")
    return WeightsStatus(True, snapshot)


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        # local_files_only: the cache alone answers, with no network request at all.
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def check_model_dir(path: Path) -> list[str]:
    """What keeps ``path`` from being a complete diffusers model directory (empty when complete)."""
    index_path = path / "model_index.json"
    if not index_path.is_file():
        return [f"{index_path.name} is missing"]
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"model_index.json is unreadable: {exc}"]
    problems: list[str] = []
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        folder = path / name
        if not folder.is_dir():
            problems.append(f"component folder {name}/ is missing")
            continue
        if not any((folder / cfg).is_file() for cfg in (*_CONFIG_FILES, "tokenizer.json")):
            problems.append(f"{name}/ has no config file")
        elif (folder / "config.json").is_file():  # a model (schedulers, tokenizers have other configs)
            problems.extend(_weight_problems(name, folder))
    return problems


def _weight_problems(name: str, folder: Path) -> list[str]:
    indexes = [p for p in folder.iterdir() if p.name.endswith(_INDEX_SUFFIXES)]
    if indexes:
        try:
            shards = set(json.loads(indexes[0].read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as exc:
            return [f"{name}/{indexes[0].name} is unreadable: {exc}"]
        missing = sorted(s for s in shards if not (folder / s).is_file())
        return [f"{name}/ lacks shard {missing[0]} ({len(missing)} missing)"] if missing else []
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        return [f"{name}/ has no weight file"]
    return []


def parameter_bytes(path: Path, bytes_per_param: float) -> dict[str, int]:
    """Per component: its parameter count (read from safetensors headers) x ``bytes_per_param``.

    Reads only the small JSON headers, never the tensors: cheap enough for memory planning.
    """
    sizes: dict[str, int] = {}
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        count = 0
        for file in folder.glob("*.safetensors"):
            count += _safetensors_params(file)
        if count:
            sizes[folder.name] = int(count * bytes_per_param)
    return sizes


def _safetensors_params(file: Path) -> int:
    try:
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error):
        return 0
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= dim
        total += count
    return total


def lora_files(engine: DiffusersConfig) -> list[str]:
    """The distillation LoRA's weight files inside its repo or folder (none without a LoRA)."""
    if not engine.distill_lora:
        return []
    return [f for f in (engine.distill_lora_file, engine.distill_lora_2_file) if f]


def lora_problem(engine: DiffusersConfig) -> str:
    """What is missing of the model's distillation LoRA ("" when nothing is, or it has none)."""
    source = engine.distill_lora
    if not source:
        return ""
    if is_local(source):
        path = Path(source)
        if path.is_file():
            return ""
        if not path.is_dir():
            return f"distillation LoRA {path} does not exist"
        for file in lora_files(engine):
            if not (path / file).is_file():
                return f"distillation LoRA file {path / file} does not exist"
        return ""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return "huggingface_hub is not installed"
    for file in lora_files(engine) or ["pytorch_lora_weights.safetensors"]:
        try:
            hf_hub_download(source, file, revision=None, local_files_only=True)
        except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
            return f"distillation LoRA {source}/{file} is not downloaded"
    return ""


def pull_lora(engine: DiffusersConfig) -> None:
    """Download the model's distillation LoRA files into the Hugging Face cache (if it has one)."""
    if not engine.distill_lora or is_local(engine.distill_lora):
        problem = lora_problem(engine)
        if problem:
            raise PullError(problem)
        return
    from huggingface_hub import hf_hub_download

    for file in lora_files(engine) or ["pytorch_lora_weights.safetensors"]:
        try:
            hf_hub_download(engine.distill_lora, file)
        except Exception as exc:
            raise PullError(
                f"could not download {engine.distill_lora}/{file}: {type(exc).__name__}: {exc}"
            ) from exc


def pull(engine: DiffusersConfig) -> Path:
    """Download the model's weights into the Hugging Face cache (or check a local directory).

    Shows huggingface_hub's progress bars; an interrupted download resumes where it stopped.
    Only ``model_index.json`` and the component folders it names are fetched, never the
    single-file checkpoints some repos (LTX-Video) also keep at their root.
    """
    if is_local(engine.weights):
        path = Path(engine.weights)
        problems = check_model_dir(path) if path.is_dir() else [f"{path} does not exist"]
        if problems:
            raise PullError(
                f"{path} is a local model directory (nothing to download) and it is not usable: "
                + "; ".join(problems)
            )
        pull_lora(engine)
        return path
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as exc:
        raise PullError(
            "huggingface_hub is not installed: pip install 'reel[models]' (the models extra)"
        ) from exc
    try:
        index_file = hf_hub_download(engine.weights, "model_index.json", revision=engine.revision)
        index = json.loads(Path(index_file).read_text())
        folders = [
            name for name, entry in index.items() if not name.startswith("_") and isinstance(entry, list)
        ]
        path = Path(
            snapshot_download(
                engine.weights,
                revision=engine.revision,
                allow_patterns=["model_index.json", *(f"{name}/*" for name in folders)],
            )
        )
    except Exception as exc:  # network, auth, missing repo: all end the command the same way
        raise PullError(f"could not download {engine.weights}: {type(exc).__name__}: {exc}") from exc
    problems = check_model_dir(path)
    if problems:
        raise PullError(f"downloaded {engine.weights} but it is incomplete: {'; '.join(problems)}")
    pull_lora(engine)
    return path


class PullError(Exception):
    """Weights could not be downloaded or are unusable; the message says why."""
