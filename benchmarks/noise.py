"""How noisy is the difference between two candidates' accuracies, and what cuts it?

A search compares candidates, so the noise that matters is the spread of an accuracy
*difference* between two of them from one seed to the next. Draws ``--pairs`` pairs of
architectures of the space (half of them two random architectures, half a random one and
the same with one site changed: the neighbours a search's mutations compare), trains each
candidate at the space's budget under two seeds, and scores every training several ways
at once (the averages are tracked alongside the same run, so they cost no extra training):

- ``raw``: the final weights, as ``evaluation.average: none`` scores them;
- ``ema``/``swa`` at spans 0.25 and 0.5 (:mod:`se_search.bench.views`);

each on validation top-1 and NLL. For a pair (A, B) under seeds 0 and 1:

- *independent seeds* (each candidate under a seed of its own): the difference's variance
  is var A + var B, each from the candidate's two seeds;
- *common random numbers* (the same backbone weights, batches and augmentation draws:
  se-search's default since ``build_model(seed=...)``): the difference A0 - B0 against
  A1 - B1;

each pooled over the pairs (:func:`se_search.stats.noise.difference_spreads`).
Printed as ratios against independent seeds scored raw on the same metric, with a bootstrap
95% interval over the pairs, and with what each view adds to a training's cost.

Every training is appended to ``--out`` (JSON lines) when done; a rerun skips what is there.
Pairs are trained one after another and drawn in the same order whatever ``--pairs`` is, so
``--pairs K`` summarises the first K pairs of a longer, unfinished run.

    .venv/bin/python benchmarks/noise.py --space search_spaces/fashion_resnet20.yaml \\
        --pairs 20 --out benchmarks/results/noise-fashion-resnet20.jsonl \\
        --json benchmarks/results/noise-fashion-resnet20.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from se_search.bench.views import check_appendable, train_views
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture, SEChoice
from se_search.space import SearchSpace, load_space
from se_search.space.sampling import block_options, random_architecture
from se_search.stats.noise import difference_spreads

SEEDS = (0, 1)


def pairs(space: SearchSpace, count: int, seed: int) -> list[tuple[Architecture, Architecture]]:
    """``count`` pairs: even ones two random architectures, odd ones a random architecture and
    the same with one selected site given another choice."""
    rng, found = random.Random(seed), []
    for i in range(count):
        a = random_architecture(space, rng)
        if i % 2 == 0:
            b = random_architecture(space, rng)
        else:
            site = rng.choice(space.selected_sites)
            here = a.choice(site.name)
            options = [SEChoice("none")] + [
                c for v in space.variants_at(site) if v != "none" for c in block_options(space, v)
            ]
            other = rng.choice([c for c in options if c != here])
            b = Architecture({**a, site.name: other})
        found.append((a, b))
    return found


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def summarise(rows: dict[tuple[int, str, int], dict], count: int) -> dict[str, Any]:
    """Every view's spread of a paired difference under independent seeds and under common
    random numbers, on top-1 and NLL, with ratios against independent raw scores and their
    bootstrap 95% intervals over the pairs (each metric against its own raw spread)."""
    names = list(next(iter(rows.values()))["views"])
    table: dict[str, Any] = {}

    def score(pair: int, side: str, seed: int, view: str, metric: str) -> float:
        value = rows[(pair, side, seed)]["views"][view][metric]
        return -value if metric == "nll" else value  # higher is better for both

    def scores(view: str, metric: str) -> list[tuple[float, float, float, float]]:
        """Each pair's ``(a0, a1, b0, b1)``."""
        out = []
        for p in range(count):
            a0, a1, b0, b1 = (score(p, side, s, view, metric) for side in "ab" for s in SEEDS)
            out.append((a0, a1, b0, b1))
        return out

    def spread(found: list[tuple[float, float, float, float]], common: bool) -> float:
        return difference_spreads(found)[common]

    rng = np.random.default_rng(0)
    resamples = [rng.integers(0, count, count) for _ in range(2000)]
    for metric in ("top1", "nll"):
        base = scores("raw", metric)  # each metric against its own raw spread
        for view in names:
            found = scores(view, metric)
            for common in (False, True):
                key = f"{metric}/{view}/{'crn' if common else 'independent'}"
                boots = [
                    _ratio(spread([found[j] for j in i], common),
                           spread([base[j] for j in i], False))
                    for i in resamples
                ]  # fmt: skip
                extra = np.mean([r["views"][view]["extra_seconds"] for r in rows.values()])
                table[key] = {
                    "sd": spread(found, common),
                    "ratio": _ratio(spread(found, common), spread(base, False)),
                    "ratio_ci": [float(np.nanpercentile(boots, 2.5)),
                                 float(np.nanpercentile(boots, 97.5))],
                    "extra_seconds": float(extra),
                }  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/fashion_resnet20.yaml")
    parser.add_argument("--set", action="append", default=[], help="override a YAML key")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="draws the pairs")
    parser.add_argument("--out", type=Path, default=Path("noise.jsonl"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    space = load_space(args.space, [*args.set, "evaluation.average=none"])
    evaluator = Evaluator(space)
    drawn = pairs(space, args.pairs, args.seed)
    done: dict[tuple[int, str, int], dict] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done[(row["pair"], row["side"], row["seed"])] = row
    plan = [(p, side, seed) for p in range(args.pairs) for seed in SEEDS for side in "ab"]
    todo = sum(k not in done for k in plan)
    if todo:
        check_appendable(done.values(), args.out)
    print(f"{space.name}: {args.pairs} pairs x 2 candidates x seeds {SEEDS}, "
          f"{todo} of {len(plan)} trainings to go", flush=True)  # fmt: skip
    for i, key in enumerate(plan, 1):
        if key in done:
            continue
        pair, side, seed = key
        arch = drawn[pair][0 if side == "a" else 1]
        row = {"pair": pair, "side": side, "seed": seed, "architecture": arch.to_dict(),
               **train_views(evaluator, arch, seed)}  # fmt: skip
        done[key] = row
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        raw = row["views"]["raw"]
        print(f"  [{i}/{len(plan)}] pair {pair} {side} seed {seed}: top1 {raw['top1']:.4f} "
              f"nll {raw['nll']:.4f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip

    table = summarise(done, args.pairs)
    base = table["top1/raw/independent"]["sd"]
    seconds = np.mean([r["seconds"] for r in done.values()])
    print(f"\nspread of a paired accuracy difference across seeds ({args.pairs} pairs); "
          f"independent seeds, raw top-1: {base:.4f}; a training {seconds:.0f} s")  # fmt: skip
    for key, row in table.items():
        low, high = row["ratio_ci"]
        print(f"  {key:28s} sd {row['sd']:.4f}  ratio {row['ratio']:.2f} "
              f"[{low:.2f}, {high:.2f}]  +{row['extra_seconds']:.1f} s")  # fmt: skip
    if args.json:
        summary = {"space": space.name, "pairs": args.pairs, "seeds": list(SEEDS),
                   "train_seconds": float(seconds), "threads": torch.get_num_threads(),
                   "table": table}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
