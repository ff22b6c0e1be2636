"""The SENet paper's direction at a longer budget: does SE help, and where?

Trains, at ``--factor`` times the space's epochs under ``--seeds`` seeds, the paper's designs
(the space's SE ratio choices permitting):

- ``plain``: no SE block;
- ``standard:R`` at every site, for every ratio R of the space (the paper's R = 16 among them);
  the best R is chosen by its mean *validation* accuracy, never by the test split;
- ``early``: ``standard:16`` in every stage but the last; ``last``: in the last stage only
  (the paper's Section 7: late-stage SE matters least).

Every training is scored on validation and, since the designs are fixed beforehand, on the
official test split; both are printed as mean ± sd over seeds, and each gap to ``plain`` and
``last`` vs ``early`` as a mean difference paired by seed (common random numbers: the same
backbone weights and batches at a seed) with its Student t 95% interval, said to be beyond
noise when the interval excludes 0. Every training is appended to ``--out`` (JSON lines)
when done; a rerun skips what is there.

    .venv/bin/python benchmarks/direction.py --space search_spaces/fashion_resnet20.yaml \\
        --factor 4 --seeds 3 --out benchmarks/results/direction-fashion-resnet20.jsonl \\
        --json benchmarks/results/direction-fashion-resnet20.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from scipy import stats as scipy_stats

from se_search.bench.views import check_appendable, train_views
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, load_space


def designs(space: SearchSpace) -> dict[str, Architecture]:
    """The hand designs by label (see the module docstring)."""
    sites = space.site_names
    stages: dict[str, list[str]] = {}
    for site in sites:
        stages.setdefault(site.rpartition(".")[0], []).append(site)
    *early, last = stages.values()
    found = {"plain": Architecture()}
    for r in sorted(space.choices.reduction):
        found[f"standard:{r}"] = Architecture(dict.fromkeys(sites, f"standard:{r}"))
    found["early"] = Architecture({s: "standard:16" for stage in early for s in stage})
    found["last"] = Architecture(dict.fromkeys(last, "standard:16"))
    return found


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean of ``a - b`` paired by seed, its Student t 95% interval, and whether it is beyond
    noise (the interval excludes 0)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(d)
    if len(d) < 2:
        return {"mean": mean, "ci": [math.nan, math.nan], "beyond_noise": False}
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"mean": mean, "ci": [mean - half, mean + half], "beyond_noise": bool(abs(mean) > half)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/fashion_resnet20.yaml")
    parser.add_argument("--set", action="append", default=[], help="override a YAML key")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--view", default="raw", help="the scoring reported (bench.views)")
    parser.add_argument("--out", type=Path, default=Path("direction.jsonl"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    base = load_space(args.space, args.set)
    epochs = base.evaluation.epochs * args.factor
    space = load_space(args.space, [*args.set, f"evaluation.epochs={epochs}",
                                    "evaluation.average=none"])  # fmt: skip
    evaluator = Evaluator(space)
    found = designs(space)
    seeds = [space.search.seed + i for i in range(args.seeds)]
    done: dict[tuple[str, int], dict] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done[(row["label"], row["seed"])] = row
    plan = [(label, seed) for seed in seeds for label in found]
    to_go = sum(k not in done for k in plan)
    if to_go:
        check_appendable(done.values(), args.out)
    print(f"{space.name}: {len(found)} designs x seeds {seeds} at {epochs} epochs; "
          f"{to_go} of {len(plan)} trainings to go", flush=True)  # fmt: skip
    for i, (label, seed) in enumerate(plan, 1):
        if (label, seed) in done:
            continue
        trained = train_views(evaluator, found[label], seed, test=True)
        row = {"label": label, "seed": seed, "epochs": epochs,
               "architecture": found[label].to_dict(), **trained}  # fmt: skip
        done[(label, seed)] = row
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        raw = row["views"]["raw"]
        print(f"  [{i}/{len(plan)}] {label:12s} seed {seed}: val {raw['top1']:.4f} test "
              f"{raw['test_top1']:.4f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip

    def scores(label: str, split: str) -> list[float]:
        key = "top1" if split == "val" else "test_top1"
        return [done[(label, s)]["views"][args.view][key] for s in seeds]

    ratios = [label for label in found if label.startswith("standard:")]
    best = max(ratios, key=lambda label: statistics.fmean(scores(label, "val")))
    summary: dict[str, Any] = {
        "space": space.name, "epochs": epochs, "seeds": seeds, "view": args.view,
        "best_ratio_by_val": best, "designs": {},
    }  # fmt: skip
    print(f"\n{args.view} scoring, mean ± sd over {len(seeds)} seeds; the best ratio by "
          f"validation: {best}")  # fmt: skip
    for label in found:
        row = {}
        for split in ("val", "test"):
            values = scores(label, split)
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            row[split] = {"mean": statistics.fmean(values), "sd": sd, "values": values}
        summary["designs"][label] = row
        print(f"  {label:12s} val {row['val']['mean']:.4f} ± {row['val']['sd']:.4f}   "
              f"test {row['test']['mean']:.4f} ± {row['test']['sd']:.4f}")  # fmt: skip
    comparisons = {f"{label} - plain": (label, "plain") for label in found if label != "plain"}
    comparisons["last - early"] = ("last", "early")
    summary["comparisons"] = {}
    print("\npaired by seed, test split (val in brackets), 95% t interval:")
    for name, (a, b) in comparisons.items():
        test = paired(scores(a, "test"), scores(b, "test"))
        val = paired(scores(a, "val"), scores(b, "val"))
        summary["comparisons"][name] = {"test": test, "val": val}
        verdict = "beyond noise" if test["beyond_noise"] else "within noise"
        print(f"  {name:22s} {test['mean']:+.4f} [{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}] "
              f"{verdict}  (val {val['mean']:+.4f})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
