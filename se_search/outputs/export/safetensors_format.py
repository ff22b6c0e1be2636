"""``safetensors``: the weights as a safetensors file (``safetensors.torch.save_file``), the
metadata JSON under the header's ``__metadata__["se_search"]`` (safetensors metadata maps str
to str). On load the network is rebuilt from the metadata and the tensors are read with
``safetensors.torch.load_file``: a header of JSON and raw tensor bytes, so nothing is ever
unpickled, and any tool that reads safetensors (Hugging Face's among them) reads the
weights.

(Named ``safetensors_format`` so as not to shadow the ``safetensors`` package.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.outputs.export.base import METADATA_KEY, Exporter, rebuild_with, require

__all__ = ["SAFETENSORS"]

_PIP = "safetensors"


def _save_safetensors(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    st = require("safetensors.torch", pip=_PIP, purpose="exporting to safetensors")
    # The whole state_dict, as the state_dict format saves it: a fine-tuned SE block's
    # ``gain`` buffer included, which loading sets back (see se_search.models.blocks).
    state = _independent(model.state_dict())
    st.save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def _independent(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tensor contiguous and owning its storage.

    save_file refuses tensors that share storage (tied weights, views of one buffer: it
    would write the bytes twice and could not restore the sharing) and non-contiguous ones.
    Such tensors are cloned, so each key holds its own bytes; load_state_dict copies each
    value into the rebuilt model, which ties its own weights again if it has any. The others
    are written as they are: no copy of the whole model.
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        storage = value.untyped_storage().data_ptr()
        if storage in seen or not value.is_contiguous():
            value = value.clone(memory_format=torch.contiguous_format)
        else:
            seen.add(storage)
        out[key] = value
    return out


def _detect_safetensors(path: Path) -> bool:
    # A safetensors file opens with the length N of its JSON header (8 bytes, little-endian),
    # then the header, which starts with "{". A zip opens with "PK\3\4" and an ONNX protobuf
    # with 0x08 and a varint, both far larger than the file as a length. The parse in
    # _read_safetensors and the se_search metadata decide the rest.
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= path.stat().st_size - 8 and head[8:] == b"{"


def _read_safetensors(path: Path) -> Any:
    safetensors = require("safetensors", pip=_PIP, purpose="reading a safetensors export")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:  # a header that is not valid safetensors
        return None
    try:
        return json.loads(header[METADATA_KEY])
    except (KeyError, ValueError):
        return None


def _load_safetensors(path: Path, meta: dict[str, Any], map_location: str) -> nn.Module:
    st = require("safetensors.torch", pip=_PIP, purpose="loading a safetensors export")
    try:
        # On the CPU, into the CPU model, which then moves once: no second copy of the
        # weights on map_location.
        state = st.load_file(str(path), device="cpu")
    except Exception as err:  # a truncated file, a bad offset...
        raise SESearchError(
            f"{path} cannot be read as an se-search safetensors export ({err}); expected a "
            "file written by se_search.outputs.export.export_model"
        ) from None
    return rebuild_with(state, meta, path=path, map_location=map_location)


SAFETENSORS = Exporter(
    name="safetensors",
    save=_save_safetensors,
    detect=_detect_safetensors,
    read=_read_safetensors,
    load=_load_safetensors,
)
