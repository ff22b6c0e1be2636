"""``onnx``: an ONNX model, input ``images`` and output ``logits`` with a dynamic batch axis,
metadata in ``metadata_props["se_search"]``; run it with onnxruntime."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.outputs.export.base import METADATA_KEY, Exporter, require

__all__ = ["ONNX"]

# The torch.export-based ("dynamo") exporter is used: it is torch's default since 2.9 and
# exports these ResNets (every SE variant, squeeze and gate) exactly, while the
# TorchScript-based one (dynamo=False) warns that it is deprecated and will be removed. It
# needs onnxscript; the batch axis is made dynamic with torch.export's dynamic_shapes.


def _save_onnx(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    onnx = require("onnx", pip="onnx onnxscript", purpose="exporting to ONNX")
    require("onnxscript", pip="onnxscript", purpose="torch's ONNX exporter")
    size = meta["image_size"]
    example = torch.randn(2, 3, size, size)  # batch 2: torch.export specialises sizes 0 and 1
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    assert program is not None  # the dynamo exporter always returns its program
    proto = program.model_proto
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    onnx.save_model(proto, str(path))


def _detect_onnx(path: Path) -> bool:
    # An ONNX file is a serialised ModelProto, and protobuf writes fields in number order, so
    # it opens with field 1 (ir_version, a varint): the byte 0x08. The parse in _read_onnx and
    # the se_search metadata decide the rest.
    with path.open("rb") as f:
        return f.read(1) == b"\x08" and not zipfile.is_zipfile(path)


def _read_onnx(path: Path) -> Any:
    onnx = require("onnx", pip="onnx", purpose="reading an ONNX export's metadata")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not a protobuf at all
        return None
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        return json.loads(props[METADATA_KEY])
    except (KeyError, ValueError):
        return None


def _load_onnx(path: Path, meta: dict[str, Any], map_location: str) -> nn.Module:
    raise SESearchError(
        f"{path} is an ONNX model, which PyTorch cannot load; run it with onnxruntime: "
        f"`onnxruntime.InferenceSession({str(path)!r}).run(None, {{'images': x}})` "
        "(pip install onnxruntime), or export the model as state_dict or torchscript"
    )


ONNX = Exporter(
    name="onnx", save=_save_onnx, detect=_detect_onnx, read=_read_onnx, load=_load_onnx
)
