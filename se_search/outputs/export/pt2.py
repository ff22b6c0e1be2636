"""``pt2``: a ``torch.export`` program (``torch.export.save``), the format PyTorch points new
work to, metadata in ``extra/se_search.json``. It loads without se-search:
``torch.export.load(path).module()``.

The program is the eval-mode forward with a dynamic batch axis (any batch size; the image
size is fixed to the exported one, and the module's guards refuse another). Like every
module of ``ExportedProgram.module()``, the loaded one is that program for good: it reports
``training == False`` here, and its ``train()`` and ``eval()`` raise (torch.export's own
refusal), since switching modes could not change the recorded graph. It runs under
autograd too.

``torch.export.load`` reads parts of the archive with pickle (its documentation says so):
load only files you trust; the ``state_dict`` and ``safetensors`` formats never unpickle
code.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.models.variants import set_fused
from se_search.outputs.export.base import METADATA_KEY, Exporter, is_torchscript_zip, zip_names

__all__ = ["PT2"]

_EXTRA = f"{METADATA_KEY}.json"
# torch >= 2.8 writes a "PT2 archive": every entry under one root folder, the root holding
# ``archive_format`` (the text "pt2"), the program in ``models/``, the weights in ``data/``
# and extra files in ``extra/``. torch 2.4-2.7 (pyproject allows them) wrote a flat zip:
# ``serialized_exported_program.json``, ``version`` and ``extra_files/<name>``; torch still
# loads those. Neither layout has the ``<root>/data.pkl`` of a torch.save zip (the state_dict
# format) nor TorchScript's ``code/`` and ``constants.pkl``, so detection is unambiguous.
_FORMAT_ENTRY = "archive_format"
_LEGACY_PROGRAM = "serialized_exported_program.json"


def _save_pt2(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    size = meta["image_size"]
    example = torch.randn(2, 3, size, size)  # batch 2: torch.export specialises sizes 0 and 1
    # The reference forward, not the fused one: the fused SE scale writes in place (``out=``)
    # when autograd needs none of its inputs, a Python test that torch.export evaluates once,
    # at trace time. Traced under no_grad (or with frozen weights) it would record
    # ``mul.out``/``addcmul.out``, and the program would then fail under autograd, as the
    # TorchScript file does. The reference forward records only out-of-place ops whatever
    # the grad mode; it is the same function (tests hold it within 1e-5), and fusing the
    # elementwise scale into the residual add is what a compiler of the program (AOTInductor,
    # torch.compile) does anyway. A copy, so the caller's model keeps its fused forward.
    reference = copy.deepcopy(model)
    set_fused(reference, False)
    program = torch.export.export(
        reference, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    # A file object, not the path: torch logs a warning for a path that does not end in
    # ``.pt2``, and export_model writes to a ``.partial`` file first.
    with path.open("wb") as f:
        torch.export.save(program, f, extra_files={_EXTRA: json.dumps(meta)})


def _root_entry(names: list[str], name: str) -> str | None:
    """The entry ``<root>/<name>`` of a PT2 archive, if there is one."""
    return next((n for n in names if n.count("/") == 1 and n.endswith(f"/{name}")), None)


def _detect_pt2(path: Path) -> bool:
    names = zip_names(path)
    if is_torchscript_zip(names):
        return False
    if _LEGACY_PROGRAM in names:
        return True
    entry = _root_entry(names, _FORMAT_ENTRY)
    if entry is None:
        return False
    with zipfile.ZipFile(path) as archive:
        return archive.read(entry).strip() == b"pt2"


def _read_pt2(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        wanted = [n for n in names if n.count("/") == 2 and n.endswith(f"/extra/{_EXTRA}")]
        wanted += [n for n in names if n == f"extra_files/{_EXTRA}"]  # torch 2.4-2.7
        if not wanted:
            return None
        text = archive.read(wanted[0])
    try:
        return json.loads(text)
    except ValueError:
        return None


def _load_pt2(path: Path, meta: dict[str, Any], map_location: str) -> nn.Module:
    try:
        with path.open("rb") as f:  # a file object: see _save_pt2
            program = torch.export.load(f)
    except Exception as err:  # a truncated archive, a program of a newer torch...
        raise SESearchError(
            f"{path} cannot be loaded as a pt2 export ({err}); export the model again with "
            "this torch, or as state_dict or safetensors"
        ) from None
    # torch.export.load has no map_location: the weights come back on the device they were
    # saved from, which is always the CPU (export_model exports a CPU copy). Elsewhere,
    # move_to_device_pass moves the weights and rewrites the device arguments recorded in
    # the graph, as torch.load's map_location would place the tensors.
    if torch.device(map_location).type != "cpu":
        try:
            from torch.export.passes import move_to_device_pass
        except ImportError:
            raise SESearchError(
                f"loading {path} onto {map_location} needs torch.export.passes."
                "move_to_device_pass, which this torch lacks; upgrade torch, or load it with "
                "map_location='cpu'"
            ) from None
        program = move_to_device_pass(program, map_location)
    module = program.module()
    # The program was exported from an eval-mode model, but module() reports training=True
    # (and refuses train()/eval()): set the flags to what the graph does.
    for submodule in module.modules():
        submodule.training = False
    return module


PT2 = Exporter(name="pt2", save=_save_pt2, detect=_detect_pt2, read=_read_pt2, load=_load_pt2)
