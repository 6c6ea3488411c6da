"""`make serve` and `make key` honour both documented spellings: the REEL_* environment, and
make variables (`make serve PORT=9000`), which win over it. Real make, real server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.server import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0  # generous: a loaded 2-core machine; only "never answered" fails it
STOP_TIMEOUT_S = 30.0
# The venv this test runs from is installed: make must not reinstall it because pyproject.toml
# is newer (-o: assume it up to date). These tests are about flags, not installation.
MAKE = ["make", "--no-print-directory", "-o", ".venv/.installed"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment without anything that would choose for make or reel behind our back:
    REEL_* settings, the make variables themselves, an outer make's flags (under `make test`),
    and a GPU (a stand-in nvidia-smi that finds none, so make installs no models extra)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nvidia_smi = bin_dir / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\nexit 9\n")
    nvidia_smi.chmod(0o755)
    dropped = {"HOST", "PORT", "DATA_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    clean = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("REEL_")}
    clean["PATH"] = f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}"
    clean["REEL_SANDBOX"] = "1"
    return clean


def run_make_serve(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [*MAKE, "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make, reel serve and its worker: one process group to stop
        )


def wait_until_serving(make: subprocess.Popen[bytes], port: int, data_dir: Path, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if make.poll() is not None:
            raise AssertionError(f"make serve exited with {make.returncode}:\n{log_path.read_text()}")
        try:
            answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered and (data_dir / "reel.db").is_file():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"make serve did not serve on port {port} with its data in {data_dir} within "
        f"{START_TIMEOUT_S:.0f} s:\n{log_path.read_text()}"
    )


def stop(make: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole group, as Ctrl-C in a terminal would signal it; nothing may be left."""
    group = make.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        make.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError(f"processes of make serve were still running {STOP_TIMEOUT_S:.0f} s after SIGTERM")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """make serve processes started by a test, stopped (and checked stopped) afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for make in started:
        stop(make)
        make.wait(timeout=5)


def test_make_serve_follows_the_reel_environment(
    env: dict[str, str], tmp_path: Path, served: list[subprocess.Popen[bytes]]
) -> None:
    port, data_dir = free_port(), tmp_path / "from-env"
    log_path = tmp_path / "serve.log"
    make = run_make_serve([], {**env, "REEL_PORT": str(port), "REEL_DATA_DIR": str(data_dir)}, log_path)
    served.append(make)
    wait_until_serving(make, port, data_dir, log_path)
    stop(make)


def test_make_serve_variables_win_over_the_environment(
    env: dict[str, str], tmp_path: Path, served: list[subprocess.Popen[bytes]]
) -> None:
    port, data_dir = free_port(), tmp_path / "from-make"
    ignored_dir = tmp_path / "from-env"
    log_path = tmp_path / "serve.log"
    make = run_make_serve(
        [f"PORT={port}", f"DATA_DIR={data_dir}"],
        {**env, "REEL_PORT": str(free_port()), "REEL_DATA_DIR": str(ignored_dir)},
        log_path,
    )
    served.append(make)
    wait_until_serving(make, port, data_dir, log_path)
    assert not ignored_dir.exists()
    stop(make)


@pytest.mark.parametrize("spelling", ["environment", "make variable"])
def test_make_key_creates_the_key_in_the_chosen_data_dir(
    spelling: str, env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    if spelling == "environment":
        args, env = [], {**env, "REEL_DATA_DIR": str(data_dir)}
    else:
        args, env = [f"DATA_DIR={data_dir}"], {**env, "REEL_DATA_DIR": str(tmp_path / "ignored")}
    out = subprocess.run(
        [*MAKE, "-s", "key", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"rk_\w+_[\w-]+\n", out.stdout), out.stdout
    assert (data_dir / "reel.db").is_file()
    assert not (tmp_path / "ignored").exists()
