"""Common random numbers: at one seed every candidate starts from the same backbone weights and
sees the same batches, in the same order, with the same augmentation draws; only its SE
blocks' own initial weights differ, drawn from a stream of their own."""

from __future__ import annotations

import torch

from se_search.data.loaders import make_loader
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture
from se_search.space import build_model, load_space
from tests.conftest import ASSETS

A = Architecture({"layer1.0": "standard:4", "layer3.1": "pre:16", "layer4.0": "identity:4"})
B = Architecture({"layer2.1": "post:4", "layer4.0": "standard:16"})


def _space(**overrides: object):
    return load_space(ASSETS / "e2e.yaml", {"data.augment": {"crop_padding": 2, "flip": True},
                                            **overrides})  # fmt: skip


def test_two_candidates_at_one_seed_share_every_backbone_tensor() -> None:
    space = _space()
    plain = build_model(space, Architecture(), seed=3).state_dict()
    a, b = (build_model(space, arch, seed=3).state_dict() for arch in (A, B))
    assert all(torch.equal(a[k], v) and torch.equal(b[k], v) for k, v in plain.items())
    assert set(a) - set(plain) and set(b) - set(plain)  # the SE blocks, their own tensors
    other = build_model(space, A, seed=4).state_dict()
    assert not torch.equal(other["conv1.weight"], a["conv1.weight"])  # another seed


def test_se_blocks_draw_from_their_own_stream_and_leave_the_global_one_alone() -> None:
    space = _space()
    states = []
    for arch in (Architecture(), A, B):
        build_model(space, arch, seed=3)
        states.append(torch.get_rng_state())
    assert all(torch.equal(states[0], s) for s in states[1:])  # whatever the blocks
    # a block's initial weights depend on the seed, not on the blocks built before it
    lone = Architecture({"layer4.0": "standard:16"})
    key = next(k for k in build_model(space, lone, seed=3).state_dict() if ".se." in k)
    assert torch.equal(
        build_model(space, lone, seed=3).state_dict()[key],
        build_model(space, lone, seed=3).state_dict()[key],
    )
    assert not torch.equal(
        build_model(space, lone, seed=3).state_dict()[key],
        build_model(space, lone, seed=5).state_dict()[key],
    )


def test_two_candidates_at_one_seed_see_the_same_batches_and_augmentation() -> None:
    setup = Evaluator(_space()).setup

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(setup.loader(setup.data.train, shuffle=True, seed=seed))

    first = epoch(0)  # one candidate's first epoch ...
    assert all(torch.equal(x, y) and torch.equal(a, b)
               for (x, a), (y, b) in zip(first, epoch(0), strict=True))  # fmt: skip
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(first, epoch(1)))
    # ... and the batches are augmented: the same order without augmentation differs
    plain = make_loader(setup.data.train, batch_size=setup.space.data.batch_size,
                        shuffle=True, seed=0, pipeline=setup.data.pipeline)  # fmt: skip
    pairs = list(zip(first, plain, strict=True))
    assert all(torch.equal(a, b) for (_, a), (_, b) in pairs)
    assert not any(torch.equal(x, y) for (x, _), (y, _) in pairs)
