"""``reel run`` and ``reel predictions list|get|cancel``: the API from a terminal.

Progress and messages go to stderr; stdout carries only the result (the MP4's path, a table,
JSON), so the commands compose in scripts: ``mpv "$(reel run cat.png -p 'a slow push-in')"``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from reel.client.api import TERMINAL, ClientError, ReelClient

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_MODEL = "runwayml/gen4-turbo"
DEFAULT_TEXT_MODEL = "wavespeed-ai/wan-2.2/t2v-5b-720p"
"""What ``reel run`` without an image uses: text-to-video on the same Wan 2.2 TI2V-5B."""
INTERRUPTED = 130  # the shell's code for "ended by Ctrl-C"

err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages are never wrapped mid-way
predictions_app = typer.Typer(help="List, inspect and cancel your predictions.", no_args_is_help=True)

ServerOpt = Annotated[str, typer.Option("--server", envvar="REEL_SERVER", help="Reel's base URL.")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="REEL_API_KEY", help="API key (rk_…).", show_default=False),
]


def _client(server: str, key: str | None) -> ReelClient:
    if not key:
        err.print("[red]No API key: pass --key or set REEL_API_KEY (create one with `reel keys create`).[/]")
        raise typer.Exit(2)
    return ReelClient(server, key)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/]")
    return typer.Exit(code)


class ProgressView(Protocol):
    def update(self, prediction: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def queue_note(prediction: dict[str, Any]) -> str:
    """The "3 ahead of you" of a waiting prediction that reports its ``queue_position``."""
    position = prediction.get("queue_position")
    if prediction["status"] != "created" or not isinstance(position, int):
        return ""
    return "next to start" if position == 0 else f"{position} ahead of you"


class BarView:
    """A live rich progress bar, for terminals."""

    def __init__(self, prediction_id: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[status]:<10}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.description}"),
            TextColumn(f"[dim]{prediction_id}"),
            console=err,
        )
        self._task = self._progress.add_task("", total=1.0, status="created")
        self._progress.start()

    def update(self, prediction: dict[str, Any]) -> None:
        done = 1.0 if prediction["status"] == "completed" else float(prediction.get("progress") or 0.0)
        self._progress.update(
            self._task, completed=done, status=prediction["status"], description=queue_note(prediction)
        )

    def close(self) -> None:
        self._progress.stop()


class LineView:
    """One line per change of status or whole ten percent, for logs and pipes."""

    def __init__(self) -> None:
        self._last = ""

    def update(self, prediction: dict[str, Any]) -> None:
        percent = 100 if prediction["status"] == "completed" else int(100 * (prediction.get("progress") or 0))
        line = f"{prediction['status']} {percent // 10 * 10}%"
        if note := queue_note(prediction):
            line += f" ({note})"
        if line != self._last:
            err.print(line)
            self._last = line

    def close(self) -> None:
        pass


def _watch(client: ReelClient, prediction: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Poll until the prediction ends, showing its progress."""
    view: ProgressView = BarView(prediction["id"]) if err.is_terminal else LineView()
    try:
        view.update(prediction)
        while prediction["status"] not in TERMINAL:
            time.sleep(poll_s)
            prediction = client.result(prediction["id"])
            view.update(prediction)
    finally:
        view.close()
    return prediction


def _cancel_after_interrupt(client: ReelClient, prediction_id: str) -> typer.Exit:
    """Ctrl-C while a prediction runs: cancel it on the server rather than leave it running."""
    err.print(f"Interrupted: cancelling {prediction_id}…")
    try:
        client.cancel(prediction_id)
    except ClientError as exc:
        return _fail(f"could not cancel {prediction_id}: {exc.message}", INTERRUPTED)
    return _fail(f"prediction {prediction_id} cancelled", INTERRUPTED)


def _image_argument(client: ReelClient, image: str) -> str:
    if image.startswith(("http://", "https://", "data:")):
        return image
    path = Path(image).expanduser()
    if not path.is_file():
        raise _fail(f"image: {image} is neither an http(s) URL nor a file")
    err.print(f"Uploading {path.name} ({path.stat().st_size:,} bytes)…")
    return client.upload(path)


def run(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What should happen in the video.")],
    image: Annotated[
        str | None,
        typer.Argument(
            help="A local PNG, JPEG or WebP file (uploaded first), or a URL; without one, the "
            "video is made from the prompt alone (text-to-video).",
            show_default=False,
        ),
    ] = None,
    aspect_ratio: Annotated[
        str | None,
        typer.Option(
            help="16:9, 9:16, 4:3, 3:4 or 1:1 (default: the closest to the image; 16:9 without one).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Model id, as in GET /api/v3/models (default: {DEFAULT_MODEL}, or {DEFAULT_TEXT_MODEL} "
            "without an image).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where to save the MP4 (default: <prediction id>.mp4).", show_default=False
        ),
    ] = None,
    duration: Annotated[int | None, typer.Option(help="Seconds, e.g. 5 or 10.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, for repeatable output.", show_default=False)] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between status checks.", min=0.05)] = 0.5,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
) -> None:
    """Generate a video from IMAGE (or from the prompt alone) and save it as an MP4; prints the
    file's path.

    Ctrl-C cancels the prediction on the server.
    """
    model = model or (DEFAULT_MODEL if image is not None else DEFAULT_TEXT_MODEL)
    with _client(server, key) as client:
        try:
            payload: dict[str, Any] = {"prompt": prompt}
            if image is not None:
                payload["image"] = _image_argument(client, image)
            for name, value in (("aspect_ratio", aspect_ratio), ("duration", duration), ("seed", seed)):
                if value is not None:
                    payload[name] = value
            prediction = client.submit(model, payload)
            try:
                err.print(f"Submitted {prediction['id']} to {model}")
                prediction = _watch(client, prediction, poll_interval)
            except KeyboardInterrupt:
                raise _cancel_after_interrupt(client, prediction["id"]) from None
            if prediction["status"] != "completed":
                reason = prediction.get("error") or "no reason given"
                raise _fail(f"prediction {prediction['id']} {prediction['status']}: {reason}")
            if not prediction.get("outputs"):
                raise _fail(f"prediction {prediction['id']} completed without outputs")
            dest = out or Path(f"{prediction['id']}.mp4")
            client.download(prediction["outputs"][0], dest)
        except ClientError as exc:
            raise _fail(exc.message) from exc
        except KeyboardInterrupt:
            raise _fail("interrupted", INTERRUPTED) from None
    seconds = (prediction.get("timings") or {}).get("inference", 0) / 1000
    err.print(f"[green]Done[/] in {seconds:.1f} s of generation; saved {escape(str(dest))}")
    print(dest)


@predictions_app.command("list")
def predictions_list(
    status: Annotated[
        str | None,
        typer.Option(help="created, processing, completed, failed or cancelled.", show_default=False),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model id.", show_default=False)] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=100)] = 20,
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
) -> None:
    """Your predictions, newest first."""
    with _client(server, key) as client:
        try:
            data = client.history(page=page, page_size=page_size, model=model, status=status)
        except ClientError as exc:
            raise _fail(exc.message) from exc
    table = Table()
    for column in ("id", "model", "status", "progress", "created"):
        table.add_column(column, no_wrap=True)
    table.add_column("output or error", overflow="fold")
    for item in data["items"]:
        detail = item["error"] or (item["outputs"][0] if item["outputs"] else "")
        table.add_row(
            item["id"],
            item["model"],
            item["status"],
            f"{round(100 * (item.get('progress') or 0))}%",
            item["created_at"],
            escape(detail),
        )
    out = Console()
    if not out.is_terminal:  # piped: don't squeeze the table into 80 columns
        out = Console(width=240)
    out.print(table)
    pages = max(1, -(-int(data["total"]) // page_size))
    err.print(f"page {data['page']} of {pages}; {data['total']} predictions in all")


@predictions_app.command("get")
def predictions_get(
    prediction_id: Annotated[str, typer.Argument(metavar="ID")],
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
) -> None:
    """One prediction, as the API's JSON."""
    with _client(server, key) as client:
        try:
            data = client.result(prediction_id)
        except ClientError as exc:
            raise _fail(exc.message) from exc
    print(json.dumps(data, indent=2))


@predictions_app.command("cancel")
def predictions_cancel(
    prediction_id: Annotated[str, typer.Argument(metavar="ID")],
    server: ServerOpt = DEFAULT_SERVER,
    key: KeyOpt = None,
) -> None:
    """Cancel a waiting or running prediction."""
    with _client(server, key) as client:
        try:
            data = client.cancel(prediction_id)
        except ClientError as exc:
            raise _fail(exc.message) from exc
    print(f"{data['id']} {data['status']}")
