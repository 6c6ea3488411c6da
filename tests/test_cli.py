"""The ``reel`` command line, run as a real subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from support.server import create_key

REEL = [sys.executable, "-m", "reel.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REEL, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_keys_create_prints_the_key_alone_and_stores_only_its_hash(data_dir: Path) -> None:
    key = create_key(data_dir, "alice")
    assert key.startswith("rk_")
    with sqlite3.connect(data_dir / "reel.db") as db:
        rows = db.execute("SELECT id, name, secret_hash FROM api_keys").fetchall()
    assert len(rows) == 1
    key_id, name, secret_hash = rows[0]
    assert name == "alice" and key_id in key
    assert key not in secret_hash and len(secret_hash) == 64
    listing = _run("keys", "list", "--data-dir", str(data_dir)).stdout
    assert key_id in listing and "alice" in listing
    assert key.split("_", 2)[2] not in listing


def test_data_dir_comes_from_the_environment(tmp_path: Path) -> None:
    target = tmp_path / "from-env"
    out = _run("keys", "create", env={"REEL_DATA_DIR": str(target)})
    assert out.returncode == 0, out.stderr
    assert (target / "reel.db").exists()


def test_revoke(data_dir: Path) -> None:
    key = create_key(data_dir)
    key_id = key.split("_")[1]
    assert _run("keys", "revoke", key_id, "--data-dir", str(data_dir)).returncode == 0
    again = _run("keys", "revoke", key_id, "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "no active key" in again.stderr


def test_help_lists_the_commands() -> None:
    out = _run("--help").stdout
    for command in ("serve", "worker", "keys"):
        assert command in out
