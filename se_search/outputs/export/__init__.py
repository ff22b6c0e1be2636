"""Export a trained SE architecture to a file that says what it is, and load it back.

One registry of formats (:data:`EXPORT_FORMATS`), one module per format; adding one is one
:class:`~se_search.outputs.export.base.Exporter`: ``state_dict``
(:mod:`~se_search.outputs.export.state_dict`), ``torchscript``
(:mod:`~se_search.outputs.export.torchscript`), ``pt2``, a ``torch.export`` program
(:mod:`~se_search.outputs.export.pt2`), ``safetensors``
(:mod:`~se_search.outputs.export.safetensors_format`) and ``onnx``
(:mod:`~se_search.outputs.export.onnx`). PyTorch points new work to ``torch.export``
(``pt2``); TorchScript stays for the runtimes that still take it.

Every file carries one JSON metadata dict (:func:`read_metadata`): the format version, the
se-search version, the backbone, ``num_classes``, ``image_size``, the architecture and its
hash, plus whatever the caller adds (study, trial, accuracy, costs...). Files are recognised by
their content, never by their extension.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.errors import SESearchError
from se_search.models.arch import Architecture
from se_search.outputs.export.base import FORMAT_VERSION, Exporter, rebuild
from se_search.outputs.export.onnx import ONNX
from se_search.outputs.export.pt2 import PT2
from se_search.outputs.export.safetensors_format import SAFETENSORS
from se_search.outputs.export.state_dict import STATE_DICT
from se_search.outputs.export.torchscript import TORCHSCRIPT
from se_search.storage.results import Results
from se_search.storage.rows import Candidate

__all__ = [
    "EXPORT_FORMATS",
    "FORMAT_VERSION",
    "Exporter",
    "export_model",
    "export_trial",
    "load_model",
    "read_metadata",
]

#: Every export format by name. Detection tries them in this order, which matters once: the
#: zips are told apart by their entries (torch.save's ``<root>/data.pkl``; TorchScript's
#: ``code/`` and ``constants.pkl`` beside it; a pt2 archive's ``<root>/archive_format``
#: and no ``data.pkl``), and a safetensors file by its 8-byte header length and ``{``, but
#: ONNX's test is one first byte (0x08), which a safetensors header length can share: ONNX
#: goes last.
EXPORT_FORMATS: dict[str, Exporter] = {
    e.name: e for e in (STATE_DICT, TORCHSCRIPT, PT2, SAFETENSORS, ONNX)
}

_RESERVED = (
    "format_version",
    "se_search_version",
    "backbone",
    "num_classes",
    "image_size",
    "architecture",
    "arch_hash",
)


def export_model(
    model: nn.Module,
    *,
    backbone: str,
    num_classes: int,
    arch: Architecture,
    image_size: int,
    metadata: Mapping[str, Any],
    format: str,
    path: str | Path,
) -> Path:
    """Write ``model`` to ``path`` in ``format``, with its metadata; returns the path.

    ``model`` must be ``insert_se(<backbone with num_classes>, arch, backbone=backbone)`` (its
    parameter names and shapes are checked against that). It is not changed: an eval-mode CPU
    copy is exported. ``metadata`` holds JSON values (str, int, float, bool, None, lists,
    dicts) and is stored beside the keys se-search writes itself. Parent folders are created.
    """
    exporter = _get_format(format)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise SESearchError(f"image_size must be a positive integer, got {image_size!r}")
    meta = _metadata(
        backbone=backbone,
        num_classes=num_classes,
        arch=arch,
        image_size=image_size,
        extra=metadata,
    )
    _check_matches(model, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exported = copy.deepcopy(model).cpu().eval()
    partial = path.with_name(f".{path.name}.partial")  # no half-written file at ``path``
    try:
        exporter.save(exported, meta, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load_model(path: str | Path, *, map_location: str = "cpu") -> nn.Module:
    """The model in an exported file, in eval mode on ``map_location``.

    A ``state_dict`` or ``safetensors`` file gives the rebuilt ``nn.Module``, a
    ``torchscript`` file a ``torch.jit.ScriptModule``, a ``pt2`` file the
    ``torch.export.load(path).module()`` graph module (moved to ``map_location`` with
    ``torch.export.passes.move_to_device_pass``; the eval-mode program for good, whose
    ``train()``/``eval()`` raise); an ``onnx`` file is refused (run it with onnxruntime).
    """
    path = Path(path)
    exporter = _detect(path)
    meta = _checked_metadata(path, exporter)
    model = exporter.load(path, meta, map_location)
    # A pt2 module is already the eval-mode program and refuses eval() (see pt2.py).
    return model.eval() if model.training else model


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict embedded in an exported file of any format."""
    path = Path(path)
    return _checked_metadata(path, _detect(path))


def _get_format(name: str) -> Exporter:
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        raise SESearchError(
            f"unknown export format {name!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        ) from None


def _metadata(
    *,
    backbone: str,
    num_classes: int,
    arch: Architecture,
    image_size: int,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    from se_search import __version__

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "se_search_version": __version__,
        "backbone": backbone,
        "num_classes": num_classes,
        "image_size": image_size,
        "architecture": arch.to_dict(),
        "arch_hash": arch.hash,
    }
    clashes = [k for k in _RESERVED if k in extra and extra[k] != meta[k]]
    if clashes:
        raise SESearchError(
            f"metadata key(s) {', '.join(clashes)} are written by se-search itself and differ "
            "from the export's own values; rename them in the metadata you pass"
        )
    meta.update({str(k): v for k, v in extra.items()})
    try:
        # A JSON round trip: tuples become lists, and what survives is exactly what JSON and
        # torch.load(weights_only=True) both accept.
        return json.loads(json.dumps(meta))
    except (TypeError, ValueError) as err:
        raise SESearchError(
            f"export metadata is not JSON-serialisable ({err}); pass only str, int, float, "
            "bool, None, lists and dicts (e.g. float(x) for a numpy or tensor value)"
        ) from None


def _check_matches(model: nn.Module, meta: dict[str, Any]) -> None:
    """Refuse to export a model whose metadata would not rebuild it."""
    with torch.device("meta"):  # shapes only: nothing allocated, no RNG drawn
        reference = rebuild(meta)
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _is_gain(k, want)}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} != {want[k]}" for k in want if k in have and have[k] != want[k]]
    if missing or unexpected or shapes:
        arch = Architecture(meta["architecture"])
        raise SESearchError(
            f"the model is not {meta['backbone']} (num_classes={meta['num_classes']}) with "
            f"architecture {arch.summary()}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shapes {shapes[:3]}; pass the backbone, num_classes and "
            "architecture the model was built with"
        )


def _is_gain(key: str, reference: Mapping[str, Any]) -> bool:
    """Whether ``key`` is the ``gain`` of an SE block of ``reference``: blocks that started as
    the identity (the finetune strategy) carry one, and the gain comes back on load with the
    weights (see :mod:`se_search.models.blocks`), so the metadata need not say so."""
    block, _, name = key.rpartition(".")
    return name == "gain" and f"{block}.fc2.weight" in reference


def _detect(path: Path) -> Exporter:
    if not path.is_file():
        raise SESearchError(f"{path}: no such file; check the path of the exported model")
    for exporter in EXPORT_FORMATS.values():
        if exporter.detect(path):
            return exporter
    raise SESearchError(
        f"{path} is not an se-search export; expected a file written by export_model "
        f"(formats {', '.join(EXPORT_FORMATS)}: a torch.save checkpoint, a TorchScript "
        "archive, a torch.export archive, a safetensors file or an ONNX model)"
    )


def _checked_metadata(path: Path, exporter: Exporter) -> dict[str, Any]:
    meta = exporter.read(path)
    if not isinstance(meta, dict) or not all(k in meta for k in _RESERVED):
        raise SESearchError(
            f"{path} is a {exporter.name} file without se-search metadata; expected a file "
            "written by se_search.outputs.export.export_model"
        )
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SESearchError(
            f"{path} has export format_version {version!r}, newer than this se-search reads "
            f"({FORMAT_VERSION}); upgrade se-search"
        )
    return meta


def export_trial(
    results: Results, record: Candidate, *, fmt: str, path: Path, seed: int | None = None
) -> Path:
    """Write trial ``record`` of ``results`` (trained weights, or ``verify``'s; those of
    ``seed``, by default its first seed's) in ``fmt``, with the study, trial, seed and
    figures as metadata (``accuracy`` is the mean over seeds, ``seed_accuracy`` this
    seed's)."""
    backbone = results.space["backbone"]
    seeds = record.seeds or []
    chosen = seed if seed is not None else (seeds[0] if seeds else None)
    own = dict(zip(seeds, record.seed_accuracies or []))
    metadata = {
        "study": results.study,
        "trial": record.trial_number,
        "accuracy": record.accuracy,
        "params": record.params,
        "flops": record.flops,
        "latency_ms": record.latency_ms,
        "accuracy_se": record.accuracy_se,
        "seed": chosen,
        "seeds": seeds,
        "seed_accuracy": None if chosen is None else own.get(chosen),
    }
    return export_model(
        results.trained_model(record, seed=seed),
        backbone=backbone["model"],
        num_classes=backbone["num_classes"],
        arch=Architecture(record.architecture),
        image_size=results.space["data"]["image_size"],
        metadata=metadata,
        format=fmt,
        path=path,
    )
