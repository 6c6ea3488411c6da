"""The README's architecture map is the import contract `make lint` checks, and the check bites."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _readme_layers() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layers: begin -->\n```\n(.*?)```\n<!-- layers: end -->", readme, re.S)
    assert block, "README.md has no layers block"
    # Each line: the layer's packages ("a | b"), then two or more spaces, then what they are.
    return [re.split(r"\s{2,}", line.strip())[0] for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_map_is_the_checked_layer_contract() -> None:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    assert _readme_layers() == layers["layers"]


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "reel", tmp_path / "src" / "reel", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contract_holds_today(tmp_path: Path) -> None:
    result = _lint(_copy_of_the_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_against_the_layers_breaks_the_check(tmp_path: Path) -> None:
    tree = _copy_of_the_package(tmp_path)
    lifecycle = tree / "src" / "reel" / "lifecycle" / "states.py"
    lifecycle.write_text(lifecycle.read_text() + "\nfrom reel.dispatch import base  # noqa: E402,F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "reel.lifecycle.states -> reel.dispatch.base" in result.stdout


def test_a_route_reaching_for_sql_breaks_the_check(tmp_path: Path) -> None:
    tree = _copy_of_the_package(tmp_path)
    system = tree / "src" / "reel" / "api" / "routes" / "system.py"
    system.write_text(system.read_text() + "\nfrom reel.store import tables  # noqa: E402,F401\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "reel.api is not allowed to import reel.store" in result.stdout
