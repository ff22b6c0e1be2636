"""What the results database holds for optuna-dashboard: trial attributes, placement
images, the front as the study's note.

The :class:`~se_search.engines.recorder.StudyRecorder` sets a trial's :func:`trial_attrs` (in
one write) and uploads its :func:`placement_image` before telling Optuna its result (a
finished trial's attributes are frozen), and saves :func:`front_note` when the front
changes; ``se-search dashboard`` (:mod:`se_search.outputs.dashboard_server`) serves the database
with the same artifact store.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna

from se_search.commands import command
from se_search.display import accuracy_cell, fmt, latency_cell, noise_line
from se_search.models.arch import Architecture
from se_search.models.variants import VARIANTS
from se_search.stats.objectives import Objectives
from se_search.storage.rows import Candidate

__all__ = [
    "VARIANT_COLOURS",
    "artifact_store",
    "cell_box",
    "front_note",
    "placement_image",
    "set_user_attrs",
    "trial_attrs",
    "upload_placement",
]

#: Cell colour of each variant in placement images (RGB).
VARIANT_COLOURS: dict[str, tuple[int, int, int]] = {
    "none": (224, 224, 224),
    "standard": (31, 119, 180),
    "pre": (255, 127, 14),
    "post": (44, 160, 44),
    "identity": (148, 103, 189),
    "inner": (214, 39, 40),
    "keep": (140, 86, 75),
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


@functools.cache
def _background(sites: tuple[str, ...]) -> Any:
    """The parts of a placement image that do not depend on the architecture."""
    from PIL import Image, ImageDraw

    stages = _stages(sites)
    width = LABEL_WIDTH + max(len(m) for m in stages.values()) * (CELL[0] + GAP) + GAP
    legend_top = GAP + len(stages) * (CELL[1] + GAP)
    legend_width = GAP + sum(28 + 8 * len(name) for name in VARIANT_COLOURS)
    image = Image.new("RGB", (max(width, legend_width), legend_top + 24), "white")
    draw = ImageDraw.Draw(image)
    for row, stage in enumerate(stages):
        draw.text((GAP, GAP + row * (CELL[1] + GAP) + CELL[1] // 3), stage, fill="black")
    x = GAP
    for name, colour in VARIANT_COLOURS.items():
        draw.rectangle((x, legend_top + 4, x + 12, legend_top + 16), fill=colour)
        draw.text((x + 16, legend_top + 4), name, fill="black")
        x += 16 + 8 * len(name) + 12
    return image


@functools.cache
def _cell_image(variant: str, reduction: int | None) -> Any:
    """One site's cell: coloured by variant, labelled with its letter and ratio."""
    from PIL import Image, ImageDraw

    cell = Image.new("RGB", (CELL[0] + 1, CELL[1] + 1), VARIANT_COLOURS[variant])
    none = variant == "none"
    label = "-" if none else f"{VARIANTS[variant].code}{reduction or ''}"
    ImageDraw.Draw(cell).text((6, CELL[1] // 3), label, fill="black" if none else "white")
    return cell


def placement_image(arch: Architecture, sites: Sequence[str], path: Path) -> Path:
    """A PNG of where ``arch`` puts SE: a row per stage, a cell per site, coloured by
    variant and labelled with the variant's letter and the ratio (``-``: no SE)."""
    image = _background(tuple(sites)).copy()
    for site in sites:
        choice = arch.choice(site)
        reduction = choice.reduction if choice.adds_block else None
        image.paste(_cell_image(choice.variant, reduction), cell_box(sites, site)[:2])
    image.save(path, format="PNG", compress_level=1)  # fast; the image is small anyway
    return path


def trial_attrs(
    arch: Architecture, metrics: dict[str, Any], *, sites: Sequence[str], strategy: str
) -> dict[str, Any]:
    """User attributes the dashboard lists for a finished trial: what it evaluated, how,
    and its costs (accuracy is one of its values)."""
    attrs = {"arch_hash": arch.hash, "placement": arch.placement(sites), "strategy": strategy}
    costs = ("params", "flops", "latency_ms")
    return attrs | {k: metrics[k] for k in costs if metrics.get(k) is not None}


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set ``attrs`` on a running trial, in one transaction where the storage allows it.

    ``Trial.set_user_attr`` is a transaction of three queries per attribute (about 1.5 ms
    each on SQLite here: most of a trial's own cost). On an RDB storage the attributes are
    written in one transaction instead: Optuna's own check that the trial is still running,
    then the rows replaced in its ``trial_user_attributes`` table. That table and the session
    are Optuna's private API, so any other storage, or an Optuna that lacks them, gets one
    public call per attribute.
    """
    if not attrs:
        return
    backend = getattr(trial.storage, "_backend", trial.storage)
    rdb = backend if isinstance(backend, optuna.storages.RDBStorage) else None
    if not (rdb and _write_rows(rdb, trial, attrs)):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def _write_rows(backend: optuna.storages.RDBStorage, trial: optuna.Trial, attrs: dict) -> bool:
    try:
        from optuna.storages._rdb.models import TrialModel
        from optuna.storages._rdb.models import TrialUserAttributeModel as Attr
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import delete, insert

        trial_id, cached = trial._trial_id, trial._cached_frozen_trial.user_attrs
        session_factory = backend.scoped_session
    except (ImportError, AttributeError):
        return False
    rows = [dict(trial_id=trial_id, key=k, value_json=json.dumps(v)) for k, v in attrs.items()]
    with _create_scoped_session(session_factory) as session:
        state = TrialModel.find_or_raise_by_id(trial_id, session).state
        backend.check_trial_is_updatable(trial_id, state)
        session.execute(delete(Attr).where(Attr.trial_id == trial_id, Attr.key.in_(list(attrs))))
        session.execute(insert(Attr), rows)
    cached.update(attrs)  # what Trial.set_user_attr does to the trial's own view
    return True


def upload_placement(
    trial: optuna.Trial,
    arch: Architecture,
    *,
    sites: Sequence[str],
    store: optuna.artifacts.FileSystemArtifactStore,
) -> None:
    """The trial's placement image, as an artifact the dashboard shows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = placement_image(arch, sites, Path(tmp) / f"placement-{arch.hash}.png")
        optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="image/png"
        )


def front_note(
    front: Sequence[Candidate],
    objectives: Objectives,
    study: str,
    storage: str,
    noise: dict[str, Any] | None = None,
) -> str:
    """The study's note: the current front as a markdown table (accuracy ± standard error,
    ties marked), the run's noise and budget warning, and the export command."""
    lines = [
        f"## Pareto front: {len(front)} member(s)",
        "",
        "objectives: " + ", ".join(f"{k} ({d})" for k, d in objectives.items()),
        "",
        noise_line(noise),
        "",
    ]
    if noise and noise.get("budget_warning"):
        lines += [f"**Warning:** {noise['budget_warning']}", ""]
    lines += [
        "| trial | accuracy | params (M) | GMACs | latency ms | placement |",
        "|---:|---:|---:|---:|---:|:---|",
    ]
    for row in sorted(front, key=lambda r: -(r.accuracy or 0)):
        placement = row.placement.replace("|", "\\|")  # a pipe would end the cell
        lines.append(
            f"| {row.trial_number} | {accuracy_cell(vars(row))} | "
            f"{fmt(row.params and row.params / 1e6, '.3f')} | "
            f"{fmt(row.flops and row.flops / 1e9, '.4f')} | "
            f"{latency_cell(vars(row))} | `{placement}` |"
        )
    lines += [
        "",
        "placement: a token per site, S standard P pre O post I identity M inner + ratio, "
        "K the backbone's own block, - none, "
        "| between stages. Export a member with",
        "",
        "    " + command("export", study=study, storage=storage, trial="N", output="model.pt"),
    ]
    return "\n".join(lines)
