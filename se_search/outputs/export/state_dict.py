"""``state_dict``: ``torch.save({"se_search": meta, "state_dict": ...})``, rebuilt from the
metadata on load and read with ``weights_only=True`` (no code is ever unpickled)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.outputs.export.base import (
    METADATA_KEY,
    Exporter,
    is_torchscript_zip,
    rebuild_with,
    zip_names,
)

__all__ = ["STATE_DICT"]


def _save_state_dict(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    torch.save({METADATA_KEY: meta, "state_dict": model.state_dict()}, path)


def _detect_state_dict(path: Path) -> bool:
    names = zip_names(path)
    return any(n.endswith("/data.pkl") for n in names) and not is_torchscript_zip(names)


def _torch_load(path: Path, *, map_location: str, mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # an unsafe pickle, a truncated archive...
        raise SESearchError(
            f"{path} cannot be read as an se-search state_dict export ({err}); expected a file "
            "written by se_search.outputs.export.export_model"
        ) from None


def _read_state_dict(path: Path) -> Any:
    obj = _torch_load(path, map_location="cpu", mmap=True)
    return obj.get(METADATA_KEY) if isinstance(obj, dict) else None


def _load_state_dict(path: Path, meta: dict[str, Any], map_location: str) -> nn.Module:
    obj = _torch_load(path, map_location=map_location)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, Mapping):
        raise SESearchError(
            f"{path} holds se-search metadata but no 'state_dict'; export the model again"
        )
    return rebuild_with(state, meta, path=path, map_location=map_location)


STATE_DICT = Exporter(
    name="state_dict",
    save=_save_state_dict,
    detect=_detect_state_dict,
    read=_read_state_dict,
    load=_load_state_dict,
)
