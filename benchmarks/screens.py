"""Cheap screens measured against the real ceiling: how well does each cheap score rank the
candidates of ``benchmarks/fidelity.py`` the way long training does?

The target is each candidate's accuracy at the longer budget of ``fidelity.py`` (the mean
over its seeds there: two with ``--long-seeds 2``). The ceiling is how well training agrees
with itself: the seed-to-seed Kendall tau of ``fidelity.py``. Each screen is reported as
Kendall's tau with its bootstrap 95% interval, over the same candidates:

- trivial rankers: parameters, FLOPs, number of SE blocks, latency (the lookup table's);
- zero-cost proxies on the untrained network (``se_search.evaluation.proxies``): synflow,
  grad_norm, snip, naswot, on one batch of 64 training images;
- the one-shot supernet (``evaluation.strategy: oneshot``, trained once), scored on
  validation top-1 and on validation NLL (negated);
- "pretrain once, fine-tune each": ``backbone.weights: self`` with the ``finetune``
  strategy, each candidate fine-tuned for ``--finetune-epochs``.

    .venv/bin/python benchmarks/screens.py --fidelity benchmarks/results/fidelity-resnet50.jsonl \\
        --json benchmarks/results/screens.json

Each screen is also compared with the best trivial ranker: the paired bootstrap interval of
the difference of their taus. ``--screens oneshot --oneshot-set KEY=VALUE`` measures one
supernet setting against the same target (the trivial rankers always run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from fidelity import load, tau_line  # beside this script

from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.proxies import PROXIES
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, build_model, load_space
from se_search.stats.ranking import kendall_difference_ci

SECTIONS = ("proxies", "oneshot", "finetune")
TRIVIAL = ("params", "flops", "latency_ms", "SE blocks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/resnet50.yaml")
    parser.add_argument(
        "--fidelity", type=Path, default=Path("benchmarks/results/fidelity-resnet50.jsonl")
    )
    parser.add_argument("--storage", default="sqlite:///benchmarks/results/screens.db")
    parser.add_argument("--artifacts", default="benchmarks/results/screens_artifacts")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--screens", nargs="+", choices=SECTIONS, default=list(SECTIONS),
        help="which screens besides the trivial rankers (always: the comparison needs them)",
    )  # fmt: skip
    parser.add_argument(
        "--oneshot-set", action="append", default=[], metavar="KEY=VALUE",
        help="override a YAML key for the supernet, e.g. evaluation.supernet.epochs=24",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows = list(load(args.fidelity).values())
    short = min(r["epochs"] for r in rows)
    long = max(r["epochs"] for r in rows)
    labels = sorted({r["label"] for r in rows if r["epochs"] == long})
    archs = {r["label"]: Architecture(r["architecture"]) for r in rows}
    target = [
        statistics.fmean(
            r["accuracy"] for r in rows if r["label"] == label and r["epochs"] == long
        )
        for label in labels
    ]
    long_seeds = sorted({r["seed"] for r in rows if r["epochs"] == long})
    print(
        f"{len(labels)} candidates; target: accuracy after {long} epochs, mean over seeds "
        f"{long_seeds}"
    )
    base = load_space(args.space, [*common(args), "latency.mode=lut"])
    result: dict[str, Any] = {
        "candidates": len(labels),
        "target_epochs": long,
        "target_seeds": long_seeds,
        "screens": {},
    }
    screens = result["screens"]

    # the ceiling: training against itself
    def at(epochs: int, seed: int) -> list[float] | None:
        found = {
            r["label"]: r["accuracy"] for r in rows if r["epochs"] == epochs and r["seed"] == seed
        }
        return (
            [found[label] for label in labels] if all(label in found for label in labels) else None
        )

    seeds_short = sorted({r["seed"] for r in rows if r["epochs"] == short})
    a, b = at(short, seeds_short[0]), at(short, seeds_short[-1])
    print("ceiling:")
    if a and b and len(seeds_short) > 1:
        screens["ceiling: seed vs seed, default budget"] = tau_line(
            f"seed vs seed at {short} epochs", a, b
        )
    if len(long_seeds) > 1:
        screens["ceiling: seed vs seed, long budget"] = tau_line(
            f"seed vs seed at {long} epochs", at(long, long_seeds[0]), at(long, long_seeds[1])
        )
    if a:
        screens[f"{short} epochs, one seed"] = tau_line(
            f"training {short} epochs, seed {seeds_short[0]}", a, target
        )

    print("trivial rankers:")
    evaluator = Evaluator(base, storage=args.storage)
    evaluator.prepare()  # the latency lookup table
    costs = {label: evaluator.costs(archs[label]) for label in labels}
    for key in ("params", "flops", "latency_ms"):
        screens[key] = tau_line(key, [costs[label][key] for label in labels], target)
    screens["SE blocks"] = tau_line(
        "number of SE blocks", [len(archs[label]) for label in labels], target
    )

    candidates = [archs[label] for label in labels]
    if "proxies" in args.screens:
        proxies(screens, base, evaluator, candidates, target)
    if "oneshot" in args.screens:
        oneshot(screens, args, candidates, target)
    if "finetune" in args.screens:
        finetune(screens, args, base, candidates, target)
    result["versus_trivial"] = versus_trivial(screens, target)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")


def proxies(
    screens: dict, base: SearchSpace, evaluator: Evaluator, archs: list, target: list
) -> None:
    """The zero-cost proxies on each untrained candidate, one batch of training images."""
    print("zero-cost proxies (one batch of 64 training images, untrained networks):")
    images, labels = next(iter(torch.utils.data.DataLoader(evaluator.data.train, batch_size=64)))
    for name, proxy in PROXIES.items():
        start, scores = time.perf_counter(), []
        for arch in archs:
            torch.manual_seed(base.search.seed)
            scores.append(proxy(build_model(base, arch), images, labels))
        screens[name] = tau_line(name, scores, target)
        screens[name]["seconds_per_candidate"] = (time.perf_counter() - start) / len(archs)


def oneshot(screens: dict, args: argparse.Namespace, archs: list, target: list) -> None:
    """The supernet (trained once, or loaded from the artifacts), scored on validation top-1
    and NLL; ``--oneshot-set`` changes how it is built and trained."""
    print(f"one-shot supernet ({', '.join(args.oneshot_set) or 'as the space sets it'}):")
    evaluator = Evaluator(
        load_space(args.space, [*common(args), "evaluation.strategy=oneshot", *args.oneshot_set]),
        artifacts=Path(args.artifacts),
    )
    start = time.perf_counter()
    scorer = evaluator.scorer  # trains the supernet once (or loads it)
    trained_in = time.perf_counter() - start
    start = time.perf_counter()
    scored = [scorer.scores(arch) for arch in archs]
    per = (time.perf_counter() - start) / len(archs)
    for metric in ("top1", "nll"):
        screen = screens[f"oneshot {metric}"] = tau_line(
            f"oneshot, validation {metric}", [s[metric] for s in scored], target
        )
        screen.update(
            seconds_per_candidate=per, supernet_seconds=trained_in, settings=args.oneshot_set
        )


def finetune(
    screens: dict, args: argparse.Namespace, base: SearchSpace, archs: list, target: list
) -> None:
    """Each candidate fine-tuned from a backbone pretrained once on the data (``self``)."""
    print(f"pretrain once, fine-tune each ({args.finetune_epochs} epochs):")
    evaluator = Evaluator(
        load_space(
            args.space,
            [*common(args), "backbone.weights=self", "evaluation.strategy=finetune",
             f"evaluation.epochs={args.finetune_epochs}", "evaluation.noise_seeds=0"],
        ),
        artifacts=Path(args.artifacts),
    )  # fmt: skip
    start = time.perf_counter()
    evaluator.prepare()
    pretrained_in = time.perf_counter() - start
    start = time.perf_counter()
    tuned = [evaluator.train(arch, [base.search.seed]).accuracy for arch in archs]
    screens["self finetune"] = tau_line("self-pretrained, fine-tuned", tuned, target)
    screens["self finetune"].update(
        seconds_per_candidate=(time.perf_counter() - start) / len(archs),
        pretrain_seconds=pretrained_in,
    )


def common(args: argparse.Namespace) -> list[str]:
    """The overrides every screen's space gets: the results database and artifacts."""
    return [f"storage={args.storage}", f"search.artifacts={args.artifacts}"]


def versus_trivial(screens: dict[str, dict[str, Any]], target: list[float]) -> dict[str, Any]:
    """Does each screen rank better than the best trivial ranker, beyond the noise of which
    candidates were drawn? The paired bootstrap interval of the difference of the two taus
    (:func:`~se_search.stats.ranking.kendall_difference_ci`): it wins when the interval is
    above 0."""
    ranked = [k for k in TRIVIAL if screens[k]["tau"] is not None]
    best = max(ranked, key=lambda k: screens[k]["tau"])
    print(f"against the best trivial ranker ({best}, tau {screens[best]['tau']:+.3f}):")
    verdicts: dict[str, Any] = {"best": best, "screens": {}}
    for name, screen in screens.items():
        if name in TRIVIAL or name.startswith("ceiling") or screen["tau"] is None:
            continue
        low, high = kendall_difference_ci(screen["scores"], screens[best]["scores"], target)
        delta = screen["tau"] - screens[best]["tau"]
        verdict = "beats it" if low > 0 else "loses" if high < 0 else "within noise"
        print(f"  {name:44s} Δtau {delta:+.3f}  95% CI [{low:+.3f}, {high:+.3f}]  {verdict}")
        verdicts["screens"][name] = {"delta": delta, "ci": [low, high], "verdict": verdict}
    return verdicts


if __name__ == "__main__":
    main()
