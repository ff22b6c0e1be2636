"""Export a trained SE architecture to a file that says what it is, and load it back.

Three formats, one registry (:data:`EXPORT_FORMATS`); adding one is one :class:`Exporter`:

=========== ================================================================================
format      what the file is
=========== ================================================================================
state_dict  ``torch.save({"se_search": meta, "state_dict": ...})``; :func:`load_model`
            rebuilds the network from the metadata and loads it with ``weights_only=True``
            (no code is ever unpickled)
torchscript a traced module (``torch.jit.trace``; the SE wrapper dispatches through Python
            functions, so it cannot be scripted), metadata in ``extra/se_search.json``
onnx        an ONNX model, input ``images`` and output ``logits`` with a dynamic batch axis,
            metadata in ``metadata_props["se_search"]``; run it with onnxruntime
=========== ================================================================================

Every file carries one JSON metadata dict (:func:`read_metadata`): the format version, the
se-search version, the backbone, ``num_classes``, ``image_size``, the architecture and its
hash, plus whatever the caller adds (study, trial, accuracy, costs...). Files are recognised by
their content, never by their extension.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from se_search.arch import Architecture
from se_search.backbones import get_backbone
from se_search.errors import SESearchError
from se_search.surgery import insert_se

__all__ = [
    "EXPORT_FORMATS",
    "FORMAT_VERSION",
    "Exporter",
    "export_model",
    "load_model",
    "read_metadata",
]

#: Version of the metadata layout; files of a newer layout are refused with an upgrade hint.
FORMAT_VERSION = 1
METADATA_KEY = "se_search"  # the key of the metadata in every format
_TS_EXTRA = "se_search.json"  # TorchScript stores it as <archive>/extra/se_search.json
_RESERVED = (
    "format_version",
    "se_search_version",
    "backbone",
    "num_classes",
    "image_size",
    "architecture",
    "arch_hash",
)


@dataclass(frozen=True)
class Exporter:
    """One file format: how to write it, recognise it, read its metadata and load it.

    ``save(model, meta, path)`` gets an eval-mode CPU copy of the model and the metadata dict;
    ``detect(path)`` says from the content whether a file is of this format; ``read(path)``
    returns the raw metadata (``None`` when the file carries none); ``load(path, meta,
    map_location)`` returns the model.
    """

    name: str
    description: str
    suffix: str  # a conventional file suffix, for callers that pick a default name
    save: Callable[[nn.Module, dict[str, Any], Path], None]
    detect: Callable[[Path], bool]
    read: Callable[[Path], Any]
    load: Callable[[Path, dict[str, Any], str], nn.Module]


# --------------------------------------------------------------------------------- public API


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
    _check_matches(model, backbone=backbone, num_classes=num_classes, arch=arch)
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

    A ``state_dict`` file gives the rebuilt ``nn.Module``, a ``torchscript`` file a
    ``torch.jit.ScriptModule``; an ``onnx`` file is refused (run it with onnxruntime).
    """
    path = Path(path)
    exporter = _detect(path)
    meta = _checked_metadata(path, exporter)
    return exporter.load(path, meta, map_location).eval()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict embedded in an exported file of any format."""
    path = Path(path)
    return _checked_metadata(path, _detect(path))


# ------------------------------------------------------------------------------------ helpers


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


def _check_matches(
    model: nn.Module, *, backbone: str, num_classes: int, arch: Architecture
) -> None:
    """Refuse to export a model whose metadata would not rebuild it."""
    family = get_backbone(backbone)
    with torch.device("meta"):  # shapes only: nothing allocated, no RNG drawn
        reference = insert_se(
            family.build(backbone, num_classes=num_classes), arch, backbone=backbone
        )
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _is_gain(k, want)}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} != {want[k]}" for k in want if k in have and have[k] != want[k]]
    if missing or unexpected or shapes:
        raise SESearchError(
            f"the model is not {backbone} (num_classes={num_classes}) with architecture "
            f"{arch.summary()}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {shapes[:3]}; pass the backbone, num_classes and architecture the "
            "model was built with"
        )


def _is_gain(key: str, reference: Mapping[str, Any]) -> bool:
    """Whether ``key`` is the ``gain`` of an SE block of ``reference``: blocks that started as
    the identity (the finetune strategy) carry one, and the gain comes back on load with the
    weights (see :mod:`se_search.blocks`), so the metadata need not say so."""
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
        "archive or an ONNX model)"
    )


def _checked_metadata(path: Path, exporter: Exporter) -> dict[str, Any]:
    meta = exporter.read(path)
    if not isinstance(meta, dict) or not all(k in meta for k in _RESERVED):
        raise SESearchError(
            f"{path} is a {exporter.name} file without se-search metadata; expected a file "
            "written by se_search.export.export_model"
        )
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SESearchError(
            f"{path} has export format_version {version!r}, newer than this se-search reads "
            f"({FORMAT_VERSION}); upgrade se-search"
        )
    return meta


def _zip_names(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return []


def _is_torchscript_zip(names: list[str]) -> bool:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _require(module: str, *, pip: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SESearchError(
            f"{purpose} needs the {module!r} package; install it with `pip install {pip}`"
        ) from None


# --------------------------------------------------------------------------------- state_dict


def _save_state_dict(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    torch.save({METADATA_KEY: meta, "state_dict": model.state_dict()}, path)


def _detect_state_dict(path: Path) -> bool:
    names = _zip_names(path)
    return any(n.endswith("/data.pkl") for n in names) and not _is_torchscript_zip(names)


def _torch_load(path: Path, *, map_location: str, mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # an unsafe pickle, a truncated archive...
        raise SESearchError(
            f"{path} cannot be read as an se-search state_dict export ({err}); expected a file "
            "written by se_search.export.export_model"
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
    backbone = meta["backbone"]
    arch = Architecture(meta["architecture"])
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep caller's RNG
        base = get_backbone(backbone).build(backbone, num_classes=meta["num_classes"])
        model = insert_se(base, arch, backbone=backbone)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SESearchError(
            f"{path}: the weights do not fit {backbone} with architecture {arch.summary()} "
            f"({err}); export the model again with this se-search version"
        ) from None
    return model.to(torch.device(map_location))


# -------------------------------------------------------------------------------- torchscript


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """Silence only TorchScript's own deprecation notices (torch 2.10+): it still works."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        yield


def _save_torchscript(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    size = meta["image_size"]
    example = torch.randn(1, 3, size, size)
    with _quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={_TS_EXTRA: json.dumps(meta)})


def _detect_torchscript(path: Path) -> bool:
    return _is_torchscript_zip(_zip_names(path))


def _read_torchscript(path: Path) -> Any:
    wanted = f"/extra/{_TS_EXTRA}"
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(wanted)]
        if not names:
            return None
        text = archive.read(names[0])
    try:
        return json.loads(text)
    except ValueError:
        return None


def _load_torchscript(path: Path, meta: dict[str, Any], map_location: str) -> nn.Module:
    with _quiet_torchscript():
        return torch.jit.load(str(path), map_location=map_location)


# --------------------------------------------------------------------------------------- onnx
# The torch.export-based ("dynamo") exporter is used: it is torch's default since 2.9 and
# exports these ResNets (every SE variant, max/avg squeeze, both gates) exactly, while the
# TorchScript-based one (dynamo=False) warns that it is deprecated and will be removed. It
# needs onnxscript; the batch axis is made dynamic with torch.export's dynamic_shapes.


def _save_onnx(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    onnx = _require("onnx", pip="onnx onnxscript", purpose="exporting to ONNX")
    _require("onnxscript", pip="onnxscript", purpose="torch's ONNX exporter")
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
    onnx = _require("onnx", pip="onnx", purpose="reading an ONNX export's metadata")
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


#: Every export format by name. Detection tries them in this order.
EXPORT_FORMATS: dict[str, Exporter] = {
    e.name: e
    for e in (
        Exporter(
            "state_dict",
            "torch.save checkpoint of the weights; rebuilt from the metadata on load",
            ".pt",
            _save_state_dict,
            _detect_state_dict,
            _read_state_dict,
            _load_state_dict,
        ),
        Exporter(
            "torchscript",
            "traced TorchScript module; loads without se-search",
            ".torchscript",
            _save_torchscript,
            _detect_torchscript,
            _read_torchscript,
            _load_torchscript,
        ),
        Exporter(
            "onnx",
            "ONNX model (input 'images', output 'logits', dynamic batch) for onnxruntime",
            ".onnx",
            _save_onnx,
            _detect_onnx,
            _read_onnx,
            _load_onnx,
        ),
    )
}
