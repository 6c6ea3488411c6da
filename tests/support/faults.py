"""Fault injection into real Reel processes, and the checks that follow a fault.

Used by ``tests/test_faults.py`` and ``bench/submit_delete_storm.py``. The faults:

- :func:`tmpfs`: a small tmpfs mounted over a directory of the data dir (``blobs/.scratch``,
  where the worker encodes, or ``blobs/outputs``, where the finished video is moved), so
  writing there fails with ENOSPC; ``resize`` frees space again. Needs root (or ``sudo -n``).
- :class:`ConnectionKiller`: from a side connection, terminates every other connection to one
  PostgreSQL database over and over (``pg_terminate_backend``), as a flaky network or a
  failover would; other databases on the server are left alone.

:func:`short_clip_registry` writes the bundled model registry with one model id making 1 s
clips by default, for servers (``REEL_MODELS_FILE``) whose tests need a clip but not a long one.

The checks, all read from outside the processes: :func:`worker_exits` (the supervisor's
``worker process … exited with code`` lines), :func:`generations` (the worker's ``generation
finished`` lines, one per generation that ran to its end), :func:`blob_files` /
:func:`scratch_files` (what is on disk), :func:`expected_blobs` (what the surviving
predictions own: their input, and their output when completed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from reel.catalog.registry import BUNDLED_REGISTRY
from support.cluster import FINISHED
from support.server import REEL, LiveServer

T = TypeVar("T")

WORKER_EXIT = re.compile(r"worker process \S+ exited with code \S+")
OUTPUT_URL = re.compile(r"/files/([^/?]+)/output\.mp4")
RUNWAY_VERSION = "2024-11-06"


# --- what the logs say ----------------------------------------------------------------------


def worker_exits(log: str) -> list[str]:
    """The supervisor's lines for worker processes that died (``reel serve``'s log)."""
    return [line for line in log.splitlines() if WORKER_EXIT.search(line)]


def generations(log: str) -> Counter[str]:
    """Prediction id → how many generations of it ran to their end (kept or not)."""
    return Counter(match.group(1) for match in FINISHED.finditer(log))


def tracebacks(log: str) -> int:
    return log.count("Traceback (most recent call last)")


def wait_for_log(read_log: Callable[[], str], needle: str, timeout_s: float = 90.0, count: int = 1) -> None:
    """Poll a log until it contains ``needle`` (``count`` times), checked every 10 ms to catch
    short windows."""
    deadline = time.monotonic() + timeout_s
    while read_log().count(needle) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not logged {count} time(s) in {timeout_s} s")
        time.sleep(0.01)


def finished_line(prediction_id: str) -> str:
    """The worker's log line for a generation of ``prediction_id`` that ran to its end."""
    return f"prediction {prediction_id}: generation finished"


# --- what is on disk or in the bucket -------------------------------------------------------


def _files_under(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def blob_files(data_dir: Path) -> set[str]:
    """Blob keys stored under the data dir's ``blobs/`` (local storage), scratch excluded.

    Every other file counts, a store's half-written ``.tmp-*`` files included."""
    root = data_dir / "blobs"
    return {name for name in _files_under(root) if not name.startswith(".scratch/")}


def scratch_files(data_dir: Path) -> set[str]:
    """Files in the worker's scratch dirs: ``blobs/.scratch`` (local storage) and ``scratch``
    (S3 storage). Between predictions there should be none."""
    found = {f"blobs/.scratch/{name}" for name in _files_under(data_dir / "blobs" / ".scratch")}
    return found | {f"scratch/{name}" for name in _files_under(data_dir / "scratch")}


def bucket_blobs(list_keys: Callable[[str], list[str]], prefix: str) -> set[str]:
    """Blob keys stored in a bucket under ``prefix`` (``S3Gateway.list_keys``)."""
    start = prefix.strip("/") + "/"
    return {key[len(start) :] for key in list_keys(start)}


def expected_blobs(predictions: Iterable[dict[str, Any]]) -> set[str]:
    """Blob keys the given (not deleted) predictions own: the stored input of each, and the
    output of a completed one (its ``/files/ID/output.mp4`` URL names the file)."""
    keys: set[str] = set()
    for prediction in predictions:
        keys.add(f"inputs/{prediction['id']}.png")
        for url in prediction.get("outputs") or []:
            match = OUTPUT_URL.search(url)
            assert match, f"not a Reel output URL: {url}"
            keys.add(f"outputs/{match.group(1)}.mp4")
    return keys


def settle(check: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 15.0) -> T:
    """``check()`` until ``done`` holds for its value, or the time is up; the last value.

    A worker tidies up moments after a prediction's status changes (it sees a cancel at its
    next step, discards an output the fence refused): the files are judged once it had time."""
    deadline = time.monotonic() + timeout_s
    value = check()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = check()
    return value


# --- talking to a server that may be having a bad moment ------------------------------------


def get_prediction(
    base_url: str, key: str, prediction_id: str, timeout_s: float = 60.0
) -> dict[str, Any] | None:
    """The prediction's state, or None once it is deleted (404). Retries 503s and connection
    errors (the database being cut off) until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = httpx.get(
                f"{base_url}/api/v3/predictions/{prediction_id}/result",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            if reply.status_code == 404:
                return None
            if reply.status_code == 200:
                data: dict[str, Any] = reply.json()["data"]
                return data
            if reply.status_code != 503:
                raise AssertionError(f"GET {prediction_id}: {reply.status_code} {reply.text}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {prediction_id} kept failing for {timeout_s} s")
        time.sleep(0.1)


def wait_until_ended(base_url: str, key: str, prediction_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll (through 503s) until the prediction is completed, failed or cancelled."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = get_prediction(base_url, key, prediction_id, timeout_s)
        assert data is not None, f"prediction {prediction_id} was deleted"
        if data["status"] in {"completed", "failed", "cancelled"}:
            return data
        assert time.monotonic() < deadline, f"not ended in {timeout_s} s; last state {data}"
        time.sleep(0.1)


def cancel(base_url: str, key: str, prediction_id: str, timeout_s: float = 30.0) -> int:
    """POST …/cancel, retrying 503s and connection errors; the final HTTP status (200 or 409)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = httpx.post(
                f"{base_url}/api/v3/predictions/{prediction_id}/cancel",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            if reply.status_code in (200, 409):
                return reply.status_code
            if reply.status_code != 503:
                raise AssertionError(f"cancel {prediction_id}: {reply.status_code} {reply.text}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"cancel {prediction_id} kept failing for {timeout_s} s")
        time.sleep(0.05)


def delete(base_url: str, key: str, prediction_id: str) -> int:
    reply = httpx.delete(
        f"{base_url}/api/v3/predictions/{prediction_id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    return reply.status_code


def runway_failure_code(base_url: str, key: str, prediction_id: str) -> str | None:
    """The ``failureCode`` Runway's view gives the prediction (``INTERNAL``, ``SAFETY…``)."""
    reply = httpx.get(
        f"{base_url}/v1/tasks/{uuid.UUID(hex=prediction_id)}",
        headers={"Authorization": f"Bearer {key}", "X-Runway-Version": RUNWAY_VERSION},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    code: str | None = reply.json().get("failureCode")
    return code


def serving_http(server: LiveServer, timeout_s: float = 60.0) -> None:
    """Wait until ``reel serve`` answers HTTP at all (``/readyz``, 503 included): its
    migrations have run then, though its worker may still be starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            httpx.get(f"{server.url}/readyz", timeout=2)
            return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not answering after {timeout_s} s:\n{server.log()}")
        time.sleep(0.05)


def create_key(data_dir: Path, name: str, env: dict[str, str]) -> str:
    """``reel keys create`` with a server's environment (on PostgreSQL the key must go to the
    server's database, which ``support.server.create_key`` does not know of)."""
    out = subprocess.run(
        [*REEL, "keys", "create", "--name", name, "--data-dir", str(data_dir)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


# --- a registry with short clips -------------------------------------------------------------


def short_clip_registry(path: Path, model_id: str, seconds: int = 1) -> Path:
    """Write a model registry (for ``REEL_MODELS_FILE``) to ``path``: the bundled one, with
    ``model_id`` (and the ids ``like`` it) also accepting clips of ``seconds`` and making them
    by default. The sandbox renders the API's size for the ratio whatever the registry says,
    so the clip's length is what makes its generation short. Derived from the bundled file at
    each use, so it never drifts from it."""
    document = tomllib.loads(BUNDLED_REGISTRY.read_text())
    for entry in document["models"].values():
        # Local weights relative to the bundled file stay where they are.
        if str(entry.get("weights", "")).startswith(("./", "../")):
            entry["weights"] = str((BUNDLED_REGISTRY.parent / entry["weights"]).resolve())
    model = document["models"][model_id]
    model["durations"] = sorted({seconds, *model.get("durations", [5, 10])})
    model["default_duration"] = seconds
    lines: list[str] = []
    for name, table in [("defaults", document.get("defaults", {}))] + [
        (f"models.{json.dumps(id_)}", entry) for id_, entry in document["models"].items()
    ]:
        lines.append(f"[{name}]")
        lines.extend(f"{json.dumps(key)} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml_value(value: object) -> str:
    """A TOML value for what ``tomllib`` gives for a registry (JSON's escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


# --- faults ---------------------------------------------------------------------------------


def _as_root(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo"):
        return ["sudo", "-n", *command]
    raise RuntimeError(f"{command[0]} needs root (or passwordless sudo) to mount a small tmpfs")


class Tmpfs:
    """A tmpfs mounted at ``path``; see :func:`tmpfs`."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size

    def resize(self, size: str) -> None:
        """Grow (or shrink) it in place: the files in it stay."""
        subprocess.run(
            _as_root(["mount", "-o", f"remount,size={size}", str(self.path)]),
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.size = size

    def files(self) -> set[str]:
        return _files_under(self.path)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Tmpfs]:
    """Mount a tmpfs of ``size`` (``"128k"``, ``"64m"``) over ``path`` (created if missing) for
    the duration: writing past its size fails with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        _as_root(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"could not mount a tmpfs at {path}: {result.stderr.strip()}")
    try:
        yield Tmpfs(path, size)
    finally:
        # Lazy: a process that still has a file open there must not leave the mount behind.
        subprocess.run(_as_root(["umount", "-l", str(path)]), check=True, capture_output=True, timeout=30)


TERMINATE_OTHERS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


class ConnectionKiller:
    """Terminates every other connection to the database at ``url``, every ``interval_s``,
    from a thread, between :meth:`start` and :meth:`stop` (or as a context manager).

    ``killed`` counts the connections terminated. Only this database's connections are
    touched: other databases on the same server (other test modules, other people) are not.
    """

    def __init__(self, url: str, interval_s: float = 0.01) -> None:
        self._conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-killer", daemon=True)
        self.killed = 0
        self.rounds = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                while not self._stop.is_set():
                    row = conn.execute(TERMINATE_OTHERS).fetchone()
                    self.killed += int(row[0]) if row else 0
                    self.rounds += 1
                    self._stop.wait(self._interval_s)
        except BaseException as exc:  # reported by stop(): a killer that died proves nothing
            self.error = exc

    def start(self) -> ConnectionKiller:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"the connection killer failed: {self.error}") from self.error
        return self.killed

    def __enter__(self) -> ConnectionKiller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
