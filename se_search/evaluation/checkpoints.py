"""What a study trains once and caches in its artifacts folder (the self-pretrained backbone,
the supernet, a few-shot split's copies): loaded when its file is there, otherwise trained
(by a process that may: the driver, not a Ray worker) and saved atomically, so that a killed
run leaves no half file. Each file is named by :func:`~se_search.space.keys.learned_key`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from se_search.errors import SESearchError

__all__ = ["load_or_train", "save_atomically"]

T = TypeVar("T")


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a ``.partial`` file renamed at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(obj, partial)
    partial.replace(path)


def load_or_train(
    path: Path,
    *,
    what: str,
    may_train: bool,
    load: Callable[[Path], T],
    train: Callable[[], T],
    save: Callable[[T, Path], None],
) -> tuple[T, bool]:
    """``load(path)`` when the file is there; else ``train()``, then ``save`` it to ``path``.
    The result, and whether it was trained here.

    Raises:
        SESearchError: when the file is missing and this process may not train ``what``.
    """
    if path.is_file():
        return load(path), False
    if not may_train:
        raise SESearchError(
            f"no {what} at {path}: the driver trains it before the trials; on a cluster, set "
            "search.artifacts to a folder every node shares"
        )
    result = train()
    save(result, path)
    return result, True
