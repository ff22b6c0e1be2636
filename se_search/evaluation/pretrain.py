"""``backbone.weights: self``: pretrain the plain backbone once on the data set itself, and
fine-tune every candidate from it.

"Pretrain once, fine-tune each" is a cheap screen: a candidate's SE blocks start as the
identity on a network that already classifies (the ``finetune`` strategy), so a short
budget measures what the blocks add rather than how fast a network starts to train. The
backbone trains for ``evaluation.pretrain_epochs`` with the search's own recipe (SGD, the
cosine schedule, zero-initialised residual branches) under ``search.seed``, and is saved in
the study's artifacts folder under a key of everything that shapes it
(``backbone-<key>.pt``), as the supernet is: a resume, a second run of the same space and
every Ray worker load it instead of training it again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from se_search.errors import SESearchError
from se_search.evaluation.strategies import zero_init_residual
from se_search.evaluation.train import train_and_evaluate
from se_search.events import Listener, PretrainReady, PretrainStarted, ignore
from se_search.models.surgery import build_backbone
from se_search.space import SearchSpace, digest

__all__ = ["pretrain_key", "pretrained_backbone"]


def pretrain_key(space: SearchSpace) -> str:
    """What the pretrained weights depend on, hashed: the checkpoint's name."""
    shape = space.model_dump(
        mode="json",
        include={"backbone", "data", "evaluation"},
        exclude={"backbone": {"weights"}},
    )
    ev = shape["evaluation"]
    shape["evaluation"] = {
        k: ev[k]
        for k in ("pretrain_epochs", "lr", "momentum", "weight_decay", "zero_init_residual")
    }
    shape["seed"] = space.search.seed
    return digest(shape)


def pretrained_backbone(
    space: SearchSpace,
    *,
    data: Any,
    device: torch.device,
    artifacts: Path,
    may_train: bool = True,
    listener: Listener = ignore,
) -> Path:
    """The checkpoint of the space's backbone pretrained on its data set: loaded from
    ``artifacts`` when it is there, else (when ``may_train``) trained and saved first."""
    from se_search.evaluation.data import make_loader

    path = artifacts / f"backbone-{pretrain_key(space)}.pt"
    if path.is_file():
        listener(PretrainReady(path=str(path), trained=False))
        return path
    if not may_train:
        raise SESearchError(
            f"no pretrained backbone at {path}: the driver trains it before the trials; on a "
            "cluster, set search.artifacts to a folder every node shares"
        )
    ev, seed = space.evaluation, space.search.seed
    listener(PretrainStarted(path=str(path), epochs=ev.pretrain_epochs))
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_backbone(space.backbone.model_copy(update={"weights": None}))
    if ev.zero_init_residual:
        zero_init_residual(model, space)

    def loader(dataset: Any, shuffle: bool) -> Any:
        return make_loader(dataset, batch_size=space.data.batch_size, shuffle=shuffle,
                           seed=seed, device=device)  # fmt: skip

    result = train_and_evaluate(
        model, train_loader=loader(data.train, True), val_loader=loader(data.val, False),
        epochs=ev.pretrain_epochs, lr=ev.lr, momentum=ev.momentum,
        weight_decay=ev.weight_decay, device=device,
    )  # fmt: skip
    artifacts.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")  # a killed run leaves no half file
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, partial)
    partial.replace(path)
    listener(
        PretrainReady(
            path=str(path), trained=True, accuracy=result.accuracy,
            seconds=time.perf_counter() - start,
        )
    )  # fmt: skip
    return path
