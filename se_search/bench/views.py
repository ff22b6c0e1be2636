"""One training scored several ways at once, for benchmarks of what cuts a score's noise:
the final weights (``raw``) and averages of them (EMA, SWA at several spans), each on
validation top-1 and NLL. The averages are tracked beside the same run (their cost is one
weight update per step, and a BatchNorm pass for SWA), so comparing them costs no extra
training; ``evaluation.average`` is the same arithmetic
(:class:`~se_search.evaluation.averaging.WeightAverage`) inside the loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.evaluation.averaging import WeightAverage
from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.train import scores, train_in_lockstep
from se_search.models.arch import Architecture
from se_search.space import build_model, zero_init_residual

__all__ = ["VIEWS", "VIEWS_VERSION", "check_appendable", "train_views"]

#: The averaged views tracked beside the raw weights: (kind, span).
VIEWS = (("ema", 0.25), ("ema", 0.5), ("swa", 0.25), ("swa", 0.5))

#: What a view's numbers mean, stamped on every row ``train_views`` returns: 2 since the EMA
#: became a warmed-up average of the window with BatchNorm recomputed (rows without a stamp
#: are version 1, whose EMA started at the first step; see
#: :mod:`se_search.evaluation.averaging`).
VIEWS_VERSION = 2


def check_appendable(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Refuse to add rows to a results file measured under another :data:`VIEWS_VERSION`,
    whose views would mean something else; summarising its finished rows is fine."""
    found = {row.get("views_version", 1) for row in rows} - {VIEWS_VERSION}
    if found:
        raise SystemExit(
            f"{path}: its rows were measured under views version {min(found)}, whose EMA "
            f"views differ from this version's ({VIEWS_VERSION}); summarise only its finished "
            "part, or write new trainings to a new --out file"
        )


def train_views(
    evaluator: Evaluator,
    arch: Architecture,
    seed: int,
    *,
    test: bool = False,
    views: Sequence[tuple[str, float]] = VIEWS,
) -> dict[str, Any]:
    """Train ``arch`` under ``seed`` as the evaluator's space says (its own averaging off),
    tracking each of ``views`` (by default every one of :data:`VIEWS`; ``()`` for the final
    weights alone): ``{"views": {name: {"top1", "nll", "extra_seconds"}}, "seconds",
    "tracking_seconds", "threads"}``, ``raw`` among the views; with ``test``, each view also
    scored on the test split (``test_top1``, ``test_nll``), for a design chosen beforehand."""
    space, setup = evaluator.space, evaluator.setup
    ev = space.evaluation
    model = build_model(space, arch, seed=seed)
    if ev.zero_init_residual and not ev.traits.from_weights:
        zero_init_residual(model, space)
    steps = ev.epochs * len(setup.loader(setup.data.train, shuffle=True, seed=seed))
    averages = {f"{k}{s}": WeightAverage(model, kind=k, steps=steps, span=s) for k, s in views}
    tracking = [0.0]

    def on_step(net: nn.Module) -> None:
        start = time.perf_counter()
        for average in averages.values():
            average.update(net)
        tracking[0] += time.perf_counter() - start

    start = time.perf_counter()
    [run] = train_in_lockstep(
        [setup.epochs(model, epochs=ev.epochs, seed=seed, average=False, on_step=on_step)],
        seeds=[seed],
    )
    seconds = time.perf_counter() - start
    val = setup.loader(setup.data.val, shuffle=False, seed=seed)
    held_out = setup.data.test
    if test and held_out is None:
        raise ValueError(f"data.dataset {space.data.dataset!r} has no test split")

    def on_test(net: nn.Module) -> dict[str, float]:
        if not test or held_out is None:
            return {}
        top1, nll = scores(net, setup.loader(held_out, shuffle=False, seed=seed),
                           device=setup.device)  # fmt: skip
        return {"test_top1": top1, "test_nll": nll}

    scored = {"raw": {"top1": run.accuracy, "nll": run.nll, "extra_seconds": 0.0,
                      **on_test(model)}}  # fmt: skip
    for name, average in averages.items():
        begin = time.perf_counter()
        # the averaged network, its BN recomputed on the training split, as the loop scores it
        train = setup.loader(setup.data.train, shuffle=True, seed=seed)
        net = average.scored(model, last=True, train_loader=train, device=setup.device)
        bn = time.perf_counter() - begin  # scoring costs what the raw view's does: not counted
        found = scores(net, val, device=setup.device)
        scored[name] = {"top1": found.top1, "nll": found.nll,
                        "extra_seconds": tracking[0] / len(averages) + bn,
                        **on_test(net)}  # fmt: skip
    return {"views": scored, "views_version": VIEWS_VERSION, "seconds": seconds,
            "tracking_seconds": tracking[0], "threads": torch.get_num_threads(),
            "history": run.history}  # fmt: skip
