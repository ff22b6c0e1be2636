"""Where a study's files go: checkpoints (a folder per study), Optuna's artifact store
(placement images), the supernet and the ``self``-pretrained backbone; all under one
artifacts folder beside the SQLite file unless ``search.artifacts`` says otherwise.

A stored checkpoint path is absolute (Ray workers elsewhere must agree on it). When a
results database moves together with its artifacts folder, :func:`find_checkpoint` finds
a checkpoint in the folder beside its new place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.models.arch import Architecture
from se_search.space import SearchSpace

__all__ = [
    "OPTUNA_ARTIFACTS",
    "artifacts_root",
    "checkpoint_dir",
    "default_artifacts_dir",
    "find_checkpoint",
    "optuna_artifacts_dir",
    "save_checkpoint",
    "save_checkpoints",
]

#: Optuna's artifact store, under the artifacts folder.
OPTUNA_ARTIFACTS = "optuna_artifacts"


def default_artifacts_dir(storage: str) -> Path:
    """Beside a SQLite file (``x.db`` -> ``x_artifacts/``), else ``./se_search_artifacts``."""
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        db = Path(storage.removeprefix("sqlite:///"))
        return db.with_name(f"{db.stem}_artifacts")
    return Path("se_search_artifacts")


def artifacts_root(space: SearchSpace, storage: str) -> Path:
    """The folder of checkpoints (a subfolder per study) and Optuna's artifact store."""
    return Path(space.search.artifacts or default_artifacts_dir(storage)).resolve()


def checkpoint_dir(space: SearchSpace, storage: str) -> Path:
    """Where the study's trained weights go (absolute, so workers elsewhere agree)."""
    return artifacts_root(space, storage) / space.study_name


def optuna_artifacts_dir(space: SearchSpace, storage: str) -> Path:
    """Optuna's artifact store (placement images), which ``se-search dashboard`` serves."""
    return artifacts_root(space, storage) / OPTUNA_ARTIFACTS


def save_checkpoint(
    model: nn.Module, folder: Path, number: int, arch: Architecture, *, suffix: str = ""
) -> str:
    """Save ``model``'s weights (on the CPU) as trial ``number``'s checkpoint; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"trial-{number:05d}-{arch.hash}{suffix}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return str(path)


def save_checkpoints(
    models: Sequence[nn.Module | None],
    seed_results: Sequence[dict[str, Any]],
    folder: Path,
    number: int,
    arch: Architecture,
    *,
    keep: int,
) -> str | None:
    """Save the trained weights of the first ``keep`` seeds (``evaluation.seeds``: a
    reference's extra noise seeds measure the noise, and their weights are not kept) as trial
    ``number``'s checkpoints: one seed's as ``trial-NNNNN-HASH.pt``, several as
    ``...-seedS.pt``; each path goes into its seed's result (``checkpoint``). The first
    seed's path, or None when nothing was trained."""
    kept = [(m, r) for m, r in zip(models, seed_results) if m is not None][:keep]
    saved = []
    for model, result in kept:
        suffix = f"-seed{result['seed']}" if len(kept) > 1 else ""
        result["checkpoint"] = save_checkpoint(model, folder, number, arch, suffix=suffix)
        saved.append(result["checkpoint"])
    return saved[0] if saved else None


def find_checkpoint(path: str | None, *, storage: str, study: str) -> Path | None:
    """The checkpoint stored as ``path``, or the file of that name in the study's folder of
    the artifacts beside ``storage`` (a database moved with its artifacts); None if neither
    exists."""
    if not path:
        return None
    stored = Path(path)
    if stored.is_file():
        return stored
    folder = default_artifacts_dir(storage) / study
    for candidate in (folder / stored.name, folder / stored.parent.name / stored.name):
        if candidate.is_file():
            return candidate
    return None
