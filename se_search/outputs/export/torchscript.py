"""``torchscript``: a traced module (``torch.jit.trace``; the SE wrapper dispatches through
Python functions, so it cannot be scripted), metadata in ``extra/se_search.json``. It loads
without se-search. PyTorch points new work to ``torch.export`` (the ``pt2`` format);
TorchScript stays for the runtimes that still take it.

A traced file is inference-only: it was traced under ``no_grad``, so its SE blocks write in
place, and running it under autograd fails.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.outputs.export.base import Exporter, is_torchscript_zip, zip_names

__all__ = ["TORCHSCRIPT"]

_TS_EXTRA = "se_search.json"  # TorchScript stores it as <archive>/extra/se_search.json


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
    return is_torchscript_zip(zip_names(path))


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


TORCHSCRIPT = Exporter(
    name="torchscript",
    save=_save_torchscript,
    detect=_detect_torchscript,
    read=_read_torchscript,
    load=_load_torchscript,
)
