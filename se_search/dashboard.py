"""What optuna-dashboard shows of a search: trial attributes, placement images, the front.

Engines call :func:`annotate_trial` before telling Optuna a trial's result (a finished
trial's attributes are frozen), and :func:`front_note` after the front changes; the
``se-search dashboard`` command serves the database with the same artifact store.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from se_search.arch import Architecture
from se_search.blocks import VARIANTS
from se_search.errors import SESearchError

__all__ = [
    "VARIANT_COLOURS",
    "annotate_trial",
    "artifact_store",
    "dashboard_process",
    "front_note",
    "placement_image",
    "serve",
]

#: Cell colour of each variant in placement images (RGB).
VARIANT_COLOURS: dict[str, tuple[int, int, int]] = {
    "none": (224, 224, 224),
    "standard": (31, 119, 180),
    "pre": (255, 127, 14),
    "post": (44, 160, 44),
    "identity": (148, 103, 189),
}
CELL, GAP, LABEL_WIDTH = (56, 34), 4, 70


def artifact_store(folder: Path) -> optuna.artifacts.FileSystemArtifactStore:
    """Optuna's file-system artifact store in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(folder))


def _stages(sites: Iterable[str]) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    for site in sites:
        stages.setdefault(site.rpartition(".")[0], []).append(site)
    return stages


def cell_box(sites: Sequence[str], site: str) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of ``site``'s cell in a placement image."""
    for row, members in enumerate(_stages(sites).values()):
        if site in members:
            col = members.index(site)
            left = LABEL_WIDTH + col * (CELL[0] + GAP)
            top = GAP + row * (CELL[1] + GAP)
            return left, top, left + CELL[0], top + CELL[1]
    raise KeyError(site)


def placement_image(arch: Architecture, sites: Sequence[str], path: Path) -> Path:
    """A PNG of where ``arch`` puts SE: a row per stage, a cell per site, coloured by
    variant and labelled with the variant's letter and the ratio."""
    from PIL import Image, ImageDraw

    stages = _stages(sites)
    width = LABEL_WIDTH + max(len(m) for m in stages.values()) * (CELL[0] + GAP) + GAP
    legend_top = GAP + len(stages) * (CELL[1] + GAP)
    image = Image.new("RGB", (max(width, 420), legend_top + 24), "white")
    draw = ImageDraw.Draw(image)
    for row, (stage, members) in enumerate(stages.items()):
        draw.text((GAP, GAP + row * (CELL[1] + GAP) + CELL[1] // 3), stage, fill="black")
        for site in members:
            choice = arch.choice(site)
            box = cell_box(sites, site)
            draw.rectangle(box, fill=VARIANT_COLOURS[choice.variant])
            label = "-" if choice.is_none else f"{VARIANTS[choice.variant].code}{choice.reduction}"
            colour = "black" if choice.is_none else "white"
            draw.text((box[0] + 6, box[1] + CELL[1] // 3), label, fill=colour)
    x = GAP
    for name, colour in VARIANT_COLOURS.items():
        draw.rectangle((x, legend_top + 4, x + 12, legend_top + 16), fill=colour)
        draw.text((x + 16, legend_top + 4), name, fill="black")
        x += 16 + 8 * len(name) + 12
    image.save(path, format="PNG")
    return path


def annotate_trial(
    trial: optuna.Trial,
    arch: Architecture,
    metrics: dict[str, Any],
    *,
    sites: Sequence[str],
    strategy: str,
    store: optuna.artifacts.FileSystemArtifactStore | None,
) -> None:
    """User attributes the dashboard lists, and the placement image as an artifact."""
    attrs = {
        "placement": arch.placement(sites),
        "params": metrics.get("params"),
        "flops": metrics.get("flops"),
        "latency_ms": metrics.get("latency_ms"),
        "strategy": strategy,
    }
    for key, value in attrs.items():
        if value is not None:
            trial.set_user_attr(key, value)
    if store is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = placement_image(arch, sites, Path(tmp) / f"placement-{arch.hash}.png")
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial,
                mimetype="image/png",
            )  # fmt: skip


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def front_note(front: Sequence[dict], objectives: dict[str, str], study: str, storage: str) -> str:
    """The study's note: the current front as a markdown table, with export commands."""
    lines = [
        f"## Pareto front: {len(front)} member(s)",
        "",
        "objectives: " + ", ".join(f"{k} ({d})" for k, d in objectives.items()),
        "",
        "| trial | accuracy | params (M) | GMACs | latency ms | placement |",
        "|---:|---:|---:|---:|---:|:---|",
    ]
    for row in sorted(front, key=lambda r: -(r.get("accuracy") or 0)):
        placement = row["placement"].replace("|", "\\|")  # a pipe would end the cell
        lines.append(
            f"| {row['trial_number']} | {_cell(row['accuracy'], '.4f')} | "
            f"{_cell(row['params'] and row['params'] / 1e6, '.3f')} | "
            f"{_cell(row['flops'] and row['flops'] / 1e9, '.4f')} | "
            f"{_cell(row['latency_ms'], '.3f')} | `{placement}` |"
        )
    lines += [
        "",
        "placement: a token per site, S standard P pre O post I identity + ratio, - none, "
        "| between stages. Export a member with",
        "",
        f"    se-search export --study {study} --storage {storage} --trial N -o model.pt",
    ]
    return "\n".join(lines)


@dataclass
class DashboardProcess:
    url: str  # http://127.0.0.1:PORT
    studies: list[dict]  # what /api/studies answered first
    stderr: list[str] = field(default_factory=list)  # its output, once it has stopped


@contextmanager
def dashboard_process(storage: str, *, host: str = "127.0.0.1") -> Iterator[DashboardProcess]:
    """``se-search dashboard`` in a child process on a free port, once its API answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).with_name("se-search"))
    proc = subprocess.Popen(
        [exe, "dashboard", "--storage", storage, "--host", host, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/api/studies", timeout=2) as answer:
                    body = json.loads(answer.read())
            except OSError:
                time.sleep(0.3)
        if body is None:
            raise SESearchError(f"se-search dashboard on {url} did not answer within 60 s")
        server = DashboardProcess(url, body["study_summaries"])
        yield server
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    server.stderr.append(err)


def serve(storage: str, *, host: str, port: int, artifacts: Path | None) -> None:
    """Run optuna-dashboard on ``storage`` until interrupted."""
    import optuna_dashboard

    store = artifact_store(artifacts) if artifacts is not None else None
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
