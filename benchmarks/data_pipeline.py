"""The data pipeline's share of a training step: ResNet-20 on Fashion-MNIST (28 px, batch 128).

Times, in one process and alternating rounds, (a) the training loader alone: indexing a batch
of the in-memory split, cropping and flipping it, normalising it to 3 channels
(:class:`~se_search.data.batches.BatchPipeline`), and (b) the whole training step the search
runs: the same batch, then forward, backward and the optimiser step. The share is (a) / (b),
median over rounds; the target is under 5%. Run it alone: another process on the cores
corrupts both timings.

    .venv/bin/python benchmarks/data_pipeline.py --space search_spaces/fashion_resnet20.yaml
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.train import cross_entropy_step, make_optimizer
from se_search.models.arch import Architecture
from se_search.space import build_model, load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/fashion_resnet20.yaml")
    parser.add_argument("--batches", type=int, default=30, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    space = load_space(args.space)
    setup = Evaluator(space).setup
    torch.manual_seed(0)
    model = build_model(space, Architecture()).to(setup.device)
    optimizer, _ = make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4, steps=10**6)
    loader = setup.loader(setup.data.train, shuffle=True, seed=0)

    def load_only() -> float:
        start = time.perf_counter()
        for _, batch in zip(range(args.batches), itertools.cycle(loader)):
            del batch
        return (time.perf_counter() - start) / args.batches

    def train_step() -> float:
        model.train()
        start = time.perf_counter()
        for _, (images, labels) in zip(range(args.batches), itertools.cycle(loader)):
            optimizer.zero_grad(set_to_none=True)
            cross_entropy_step(model, images, labels)
            optimizer.step()
        return (time.perf_counter() - start) / args.batches

    load_only(), train_step()  # warm-up
    loads, steps = [], []
    for _ in range(args.rounds):
        loads.append(load_only())
        steps.append(train_step())
    load, step = statistics.median(loads), statistics.median(steps)
    result = {
        "space": space.name,
        "batch_size": space.data.batch_size,
        "image_size": space.data.image_size,
        "threads": torch.get_num_threads(),
        "load_ms": load * 1000,
        "step_ms": step * 1000,
        "share": load / step,
        "images_per_second": space.data.batch_size / step,
    }
    print(
        f"{space.name}: batch {result['batch_size']} at {result['image_size']} px, "
        f"{result['threads']} threads; loader alone {result['load_ms']:.2f} ms, whole step "
        f"{result['step_ms']:.1f} ms ({result['images_per_second']:.0f} img/s): the data "
        f"pipeline is {100 * result['share']:.1f}% of a step (target < 5%)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
