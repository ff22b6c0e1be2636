"""What every export format shares: the :class:`Exporter` record, the metadata key and
version, and the helpers that recognise a file by its content."""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import insert_se

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "Exporter", "rebuild", "rebuild_with"]

#: Version of the metadata layout; files of a newer layout are refused with an upgrade hint.
FORMAT_VERSION = 1
METADATA_KEY = "se_search"  # the key of the metadata in every format


@dataclass(frozen=True, kw_only=True)
class Exporter:
    """One file format: how to write it, recognise it, read its metadata and load it.

    ``save(model, meta, path)`` gets an eval-mode CPU copy of the model and the metadata dict;
    ``detect(path)`` says from the content whether a file is of this format; ``read(path)``
    returns the raw metadata (``None`` when the file carries none); ``load(path, meta,
    map_location)`` returns the model.
    """

    name: str
    save: Callable[[nn.Module, dict[str, Any], Path], None]
    detect: Callable[[Path], bool]
    read: Callable[[Path], Any]
    load: Callable[[Path, dict[str, Any], str], nn.Module]


def rebuild_with(
    state: Mapping[str, torch.Tensor], meta: dict[str, Any], *, path: Path, map_location: str
) -> nn.Module:
    """The network the metadata describes holding ``state`` (read from ``path``), on
    ``map_location``; weights that do not fit are refused naming the file."""
    backbone, arch = meta["backbone"], Architecture(meta["architecture"])
    model = rebuild(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SESearchError(
            f"{path}: the weights do not fit {backbone} with architecture {arch.summary()} "
            f"({err}); export the model again with this se-search version"
        ) from None
    return model.to(torch.device(map_location))


def rebuild(meta: dict[str, Any]) -> nn.Module:
    """The network the metadata describes, freshly initialised (the caller's RNG is kept;
    under ``torch.device("meta")`` nothing is allocated)."""
    backbone = meta["backbone"]
    with torch.random.fork_rng(devices=[]):
        plain = get_backbone(backbone).build(backbone, num_classes=meta["num_classes"])
        return insert_se(plain, Architecture(meta["architecture"]), backbone=backbone)


def zip_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return []


def is_torchscript_zip(names: list[str]) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def require(module: str, *, pip: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SESearchError(
            f"{purpose} needs the {module!r} package; install it with `pip install {pip}`"
        ) from None
