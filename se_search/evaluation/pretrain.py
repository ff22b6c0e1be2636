"""``backbone.weights: self``: pretrain the plain backbone once on the data set itself, and
fine-tune every candidate from it.

"Pretrain once, fine-tune each" is a cheap screen: a candidate's SE blocks start as the
identity on a network that already classifies (the ``finetune`` strategy), so a short
budget measures what the blocks add rather than how fast a network starts to train. The
backbone trains for ``evaluation.pretrain_epochs`` in the search's own training setup (SGD,
the cosine schedule, zero-initialised residual branches) under ``search.seed``, and is saved
in the study's artifacts folder under its key (``backbone-<key>.pt``,
:func:`~se_search.space.keys.learned_key`), as the supernet is: a resume, a second run of
the same space and every Ray worker load it instead of training it again.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from se_search.evaluation.checkpoints import load_or_train, save_atomically
from se_search.evaluation.setup import TrainingSetup
from se_search.evaluation.train import train_in_lockstep
from se_search.events import Listener, PretrainReady, PretrainStarted, ignore
from se_search.models.surgery import build_backbone
from se_search.space import learned_key, zero_init_residual

__all__ = ["pretrained_backbone"]


def pretrained_backbone(
    setup: TrainingSetup, *, artifacts: Path, may_train: bool = True, listener: Listener = ignore
) -> Path:
    """The checkpoint of the space's backbone pretrained on its data set: loaded from
    ``artifacts`` when it is there, else (when ``may_train``) trained and saved first."""
    space = setup.space
    path = artifacts / f"backbone-{learned_key(space, 'backbone')}.pt"
    ev, seed = space.evaluation, space.search.seed
    start, accuracy = time.perf_counter(), []

    def train() -> dict[str, torch.Tensor]:
        listener(PretrainStarted(path=str(path), epochs=ev.pretrain_epochs))
        torch.manual_seed(seed)
        model = build_backbone(space.backbone.model_copy(update={"weights": None}))
        if ev.zero_init_residual:
            zero_init_residual(model, space)
        [result] = train_in_lockstep(
            [setup.epochs(model, epochs=ev.pretrain_epochs, seed=seed)], seeds=[seed]
        )
        accuracy.append(result.accuracy)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    _, trained = load_or_train(
        path, what="pretrained backbone", may_train=may_train, load=lambda p: None,
        train=train, save=save_atomically,
    )  # fmt: skip
    seconds = time.perf_counter() - start if trained else None
    listener(PretrainReady(path=str(path), trained=trained, accuracy=next(iter(accuracy), None),
                           seconds=seconds))  # fmt: skip
    return path
