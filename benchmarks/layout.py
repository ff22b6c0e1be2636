"""Does training in channels_last pay on this machine? Training steps of each backbone, plain
and with SE everywhere, in the default (contiguous) layout and in channels_last, timed side by
side in one run; prints each pair's milliseconds per step and their ratio (above 1:
channels_last is faster). With ``--epochs``, whole one-epoch trainings of the Fashion-MNIST
ResNet-20 (plain and SE everywhere) through se-search's own loop, each layout twice,
alternating. ``se_search.evaluation.train.LAYOUT`` follows what it shows.

    .venv/bin/python benchmarks/layout.py
    .venv/bin/python benchmarks/layout.py --epochs   # needs dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from se_search.models.arch import Architecture
from se_search.space import build_model, load_space

#: (space, batch size): the project's CPU-sized spaces at their own image size.
CASES = (("fashion_resnet20", 128), ("resnet18", 64), ("resnet50", 64), ("mobilenet_v2", 64))


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[int], float]:
    """A function that runs ``n`` SGD training steps on one batch and returns their mean
    milliseconds (after 3 warm-up steps, taken here)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def timed(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - start) / n * 1000

    timed(3)
    return timed


def epochs(rounds: int = 2) -> None:
    """One-epoch trainings through :func:`~se_search.bench.views.train_views` in each layout,
    alternating; prints their seconds and accuracies."""
    import se_search.evaluation.train as loop
    from se_search.bench.views import train_views
    from se_search.evaluation.evaluator import Evaluator

    space = load_space("fashion_resnet20", {"evaluation.epochs": 1})
    evaluator = Evaluator(space)
    archs = {"plain": Architecture(),
             "SE everywhere": Architecture.uniform(space.site_names, "standard:4")}  # fmt: skip
    print(f"{space.name}: one epoch on {space.data.train_size} images, seed 0")
    found: dict[tuple[str, str], list[float]] = {}
    original = loop.LAYOUT
    try:
        for _ in range(rounds):
            for layout, name in ((torch.contiguous_format, "contiguous"),
                                 (torch.channels_last, "channels_last")):  # fmt: skip
                loop.LAYOUT = layout  # the loop reads it at every call
                for label, arch in archs.items():
                    trained = train_views(evaluator, arch, 0, views=())
                    found.setdefault((label, name), []).append(trained["seconds"])
                    print(f"  {label:14s} {name:14s} {trained['seconds']:5.1f} s  top-1 "
                          f"{trained['views']['raw']['top1']:.4f}", flush=True)  # fmt: skip
    finally:
        loop.LAYOUT = original
    for label in archs:
        a, b = (statistics.fmean(found[(label, n)]) for n in ("contiguous", "channels_last"))
        print(f"  {label:14s} mean seconds: contiguous {a:.1f}, channels_last {b:.1f}, "
              f"ratio {a / b:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternations of the layouts")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--epochs", action="store_true", help="time whole trainings instead")
    args = parser.parse_args()
    if args.epochs:
        return epochs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median ms per "
          f"training step over {args.rounds} alternating rounds")  # fmt: skip
    for name, batch in CASES:
        space = load_space(name)
        size = space.data.image_size
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
        plain = Architecture()
        uniform = Architecture.uniform(space.site_names, "standard:16")
        for label, arch in (("plain", plain), ("SE everywhere", uniform)):
            steppers = [
                stepper(build_model(space, arch, seed=0).to(memory_format=layout),
                        x.contiguous(memory_format=layout), y)
                for layout in (torch.contiguous_format, torch.channels_last)
            ]  # fmt: skip
            timings: list[list[float]] = [[], []]
            for _ in range(args.rounds):  # alternating, so a slow spell hits both layouts
                for found, timed in zip(timings, steppers, strict=True):
                    found.append(timed(args.steps))
            contiguous, channels_last = (statistics.median(t) for t in timings)
            print(f"  {name:16s} {label:14s} batch {batch:3d} at {size}px: contiguous "
                  f"{contiguous:6.0f}  channels_last {channels_last:6.0f}  "
                  f"ratio {contiguous / channels_last:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
