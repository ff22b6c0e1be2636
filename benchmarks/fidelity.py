"""Does a space's training budget rank architectures the way a longer one does?

Draws ``--candidates`` random architectures of the space spread over its cost range, from no
SE block to one at every site (plus its references, ``none`` and ``standard:16``), trains
each stand-alone at the space's budget under two seeds and at ``--factor`` times the epochs
under ``--long-seeds`` seeds, and reports, each with a bootstrap 95% interval over the
candidates:

- Kendall's tau between the two seeds at the space's budget (the ceiling of any ranking at
  that budget: how well it agrees with itself);
- tau between the space's budget (the mean of the two seeds, as ``evaluation.seeds: 2``
  scores it; and the first seed alone, as one seed does) and the longer budget;
- with 2 long seeds, their own seed-to-seed tau (the target's ceiling) and the mean of the
  short seeds against the mean of the long ones;
- the seed-to-seed noise σ at both budgets, and the references at both budgets.

Every training at the space's budget is scored several ways at once
(:mod:`se_search.bench.views`: the last weights and EMA/SWA averages of them, each on
validation top-1 and NLL; the target, the longer budget, by its last weights' top-1). The
taus are printed for each way of scoring the short budget against the target, and for the
pooled additive model (:mod:`se_search.stats.pooling`), cross-validated: fitted
on the short budget's scores of four fifths of the candidates, it predicts the fifth left
out, and the predictions of all are ranked against the target.

Every training is appended to ``--out`` (JSON lines) as soon as it is done, and a run with
the same ``--out`` skips what is there: a long measurement can be stopped and resumed. A
candidate's trainings all come before the next candidate's, and the candidates are drawn in
the same order whatever ``--candidates`` is, so ``--candidates K`` summarises the first K of
a longer, unfinished run.

    .venv/bin/python benchmarks/fidelity.py --space search_spaces/resnet50.yaml \\
        --candidates 38 --factor 4 --long-seeds 2 --out fidelity-resnet50.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path
from typing import Any

from se_search.bench.views import VIEWS, check_appendable, train_views
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture
from se_search.space import SearchSpace, load_space
from se_search.space.sampling import reference_architectures, spread_architectures
from se_search.stats.noise import pooled_sd
from se_search.stats.ranking import kendall_ci, rank_agreement

#: Every run draws its candidates from one pool of this many, so a run with more candidates
#: extends an earlier one (its trainings are reused) instead of starting again.
POOL = 64


def candidates(space: SearchSpace, count: int, seed: int) -> dict[str, Architecture]:
    """The references and ``count`` random architectures spread over the cost range, by a
    label: from a pool of :data:`POOL` whose i-th has an SE block at each site with
    probability i / (POOL - 1), taken in bit-reversed order, so that any first ``count`` of
    them run from no SE to SE everywhere."""
    found = {f"ref:{name}": arch for name, arch in reference_architectures(space).items()}
    references = set(found.values())
    pool = spread_architectures(space, POOL, random.Random(seed))
    bits = (POOL - 1).bit_length()
    order = sorted(range(POOL), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    picked = [i for i in order if pool[i] not in references][:count]
    found.update({f"random:{i}": pool[i] for i in picked})
    return found


def budget(space: SearchSpace, epochs: int) -> SearchSpace:
    evaluation = space.evaluation.model_copy(update={"epochs": epochs, "noise_seeds": 0})
    return space.model_copy(update={"evaluation": evaluation})


def load(out: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["label"], r["epochs"], r["seed"]): r for r in rows}


def tau_line(name: str, a: list[float], b: list[float]) -> dict[str, Any]:
    """Print and return Kendall's tau of ``a`` against ``b`` with its bootstrap 95% interval
    (and Spearman's rho); when ``a`` is one value throughout it ranks nothing, and says so."""
    if len(set(a)) == 1:  # tau is undefined
        print(f"  {name:44s} no ranking: every candidate scores {a[0]:.4f}", flush=True)
        return {"tau": None, "ci": [None, None], "rho": None, "n": len(a), "constant": a[0]}
    tau, rho = rank_agreement(a, b)
    low, high = kendall_ci(a, b)
    print(
        f"  {name:44s} tau {tau:+.3f}  95% CI [{low:+.3f}, {high:+.3f}]  rho {rho:+.3f}",
        flush=True,
    )
    return {"tau": tau, "ci": [low, high], "rho": rho, "n": len(a), "scores": list(a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/resnet50.yaml")
    parser.add_argument("--set", action="append", default=[], help="override a YAML key")
    parser.add_argument("--candidates", type=int, default=38)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="draws the random candidates")
    parser.add_argument(
        "--long-seeds", type=int, default=2, help="seeds at the longer budget (2: its ceiling)"
    )
    parser.add_argument("--out", type=Path, default=Path("fidelity.jsonl"))
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    space = load_space(args.space, args.set)
    short, long = space.evaluation.epochs, space.evaluation.epochs * args.factor
    first = space.search.seed
    archs = candidates(space, args.candidates, args.seed)
    runs = [
        (short, first),
        (short, first + 1),
        *((long, first + s) for s in range(args.long_seeds)),
    ]
    plan = [(label, epochs, seed) for label in archs for epochs, seed in runs]
    done = load(args.out)
    if any(k not in done for k in plan):
        check_appendable(done.values(), args.out)
    evaluators = {e: Evaluator(budget(space, e)) for e in (short, long)}
    print(
        f"{space.name}: {len(archs)} candidates ({args.candidates} random + references), "
        f"{short} epochs under seeds {first} and {first + 1}, {long} epochs under "
        f"{args.long_seeds} seed(s); "
        f"{sum(k not in done for k in plan)} of {len(plan)} trainings to go"
    )
    for i, key in enumerate(plan, 1):
        if key in done:
            continue
        label, epochs, seed = key
        # the target is the longer budget's final weights: its averaged views would cost
        # about a fifth of its time and answer nothing asked here
        trained = train_views(evaluators[epochs], archs[label], seed,
                              views=VIEWS if epochs == short else ())  # fmt: skip
        raw = trained["views"]["raw"]
        row = {
            "label": label, "epochs": epochs, "seed": seed, "accuracy": raw["top1"],
            "nll": raw["nll"], "history": trained["history"], "seconds": trained["seconds"],
            "views": trained["views"], "views_version": trained["views_version"],
            "threads": trained["threads"], "architecture": archs[label].to_dict(),
        }  # fmt: skip
        done[key] = row
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"  [{i}/{len(plan)}] {label:12s} {epochs:>3} epochs seed {seed}: "
            f"{row['accuracy']:.4f} ({row['seconds']:.0f} s)",
            flush=True,
        )

    labels = list(archs)

    def runs(epochs: int, seeds: int) -> list[list[float]]:
        """Per candidate, its accuracy under each seed at ``epochs``."""
        return [[done[(label, epochs, first + s)]["accuracy"] for s in range(seeds)]
                for label in labels]  # fmt: skip

    short_runs, long_runs = runs(short, 2), runs(long, args.long_seeds)
    a0, a1 = [r[0] for r in short_runs], [r[1] for r in short_runs]
    b = [r[0] for r in long_runs]
    mean = [statistics.fmean(r) for r in short_runs]
    at_long = [statistics.fmean(r) for r in long_runs]
    sigma, dof = pooled_sd(short_runs)
    seconds = {e: statistics.median(r["seconds"] for k, r in done.items() if k[1] == e)
               for e in (short, long)}  # fmt: skip
    print(f"\n{space.name}, {len(labels)} candidates:")
    summary: dict[str, Any] = {
        "space": space.name, "candidates": len(labels), "epochs": short, "long_epochs": long,
        "sigma": sigma, "dof": dof, "seconds_per_training": seconds,
    }  # fmt: skip
    summary["seed_vs_seed"] = tau_line(f"seed {first} vs seed {first + 1}, {short} epochs", a0, a1)
    summary["mean_vs_long"] = tau_line(f"mean of 2 seeds at {short} vs {long} epochs", mean, b)
    summary["one_vs_long"] = tau_line(f"seed {first} at {short} vs {long} epochs", a0, b)
    if args.long_seeds > 1:
        b1 = [r[1] for r in long_runs]
        summary["long_seed_vs_seed"] = tau_line(
            f"seed {first} vs {first + 1}, {long} epochs", b, b1
        )
        summary["mean_vs_long_mean"] = tau_line(
            f"mean of 2 at {short} vs mean of 2 at {long} epochs", mean, at_long
        )
        summary["long_sigma"], _ = pooled_sd(long_runs)
        print(f"  noise σ at {long} epochs ({args.long_seeds} seeds each): "
              f"{summary['long_sigma']:.4f}")  # fmt: skip
    print(f"  noise σ at {short} epochs (2 seeds each): {sigma:.4f} ({dof} degrees of freedom)")
    print(f"  median seconds per training: {short} epochs {seconds[short]:.0f}, "
          f"{long} epochs {seconds[long]:.0f}")  # fmt: skip
    refs = {label: {"short": short_runs[i], "long": long_runs[i]}
            for i, label in enumerate(labels) if label.startswith("ref:")}  # fmt: skip
    for label, ref in refs.items():
        short_acc, long_acc = (" / ".join(f"{a:.4f}" for a in ref[k]) for k in ("short", "long"))
        print(f"  {label:16s} {short} epochs {short_acc}, {long} epochs {long_acc}")
    summary["references"] = refs
    print(f"  accuracy spread at {long} epochs (mean of {args.long_seeds}): {min(at_long):.4f} "
          f"to {max(at_long):.4f}; at {short} epochs (mean of 2): {min(mean):.4f} to "
          f"{max(mean):.4f}")  # fmt: skip
    if all("views" in r for r in done.values()):  # (earlier results files scored top-1 only)
        summary["scorings"] = scorings(done, labels, short, long, first, args.long_seeds)
        summary["pooled"] = pooled_cv(done, labels, archs, space, short, long, first, sigma)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
        print(f"summary written to {args.json}")


def _view(row: dict[str, Any], view: str, metric: str) -> float:
    value = row["views"][view][metric]
    return -value if metric == "nll" else value  # higher is better for both


def scorings(
    done: dict, labels: list[str], short: int, long: int, first: int, long_seeds: int
) -> dict[str, Any]:
    """For each way of scoring a training (view and metric), the short budget's seed-to-seed
    tau and its tau against the target (the mean of the long seeds' raw top-1), each over
    the mean of 2 short seeds."""
    target = [statistics.fmean(done[(label, long, first + s)]["accuracy"]
                               for s in range(long_seeds)) for label in labels]  # fmt: skip
    views = list(done[(labels[0], short, first)]["views"])
    print(f"\n  each scoring of the {short}-epoch trainings, against the {long}-epoch target:")
    found = {}
    for view in views:
        for metric in ("top1", "nll"):
            per = [[_view(done[(label, short, first + s)], view, metric) for s in (0, 1)]
                   for label in labels]  # fmt: skip
            name = f"{view}/{metric}"
            found[name] = {
                "seed_vs_seed": tau_line(f"{name}: seed vs seed", [p[0] for p in per],
                                         [p[1] for p in per]),
                "mean_vs_target": tau_line(f"{name}: mean of 2 vs target",
                                           [statistics.fmean(p) for p in per], target),
            }  # fmt: skip
    return found


def pooled_cv(
    done: dict, labels: list[str], archs: dict[str, Architecture], space: SearchSpace,
    short: int, long: int, first: int, sigma: float | None, folds: int = 5,
) -> dict[str, Any]:  # fmt: skip
    """The pooled additive model's tau against the target, cross-validated over candidates:
    each fold's predictions come from a fit to the other folds' short-budget means."""
    import numpy as np

    from se_search.stats.pooling import additive_features, fit_additive

    longs = sorted({k[2] for k in done if k[1] == long})
    target = [statistics.fmean(done[(label, long, s)]["accuracy"] for s in longs)
              for label in labels]  # fmt: skip
    mean = [statistics.fmean(done[(label, short, first + s)]["accuracy"] for s in (0, 1))
            for label in labels]  # fmt: skip
    features = [additive_features(archs[label], space.site_names) for label in labels]
    predicted = np.zeros(len(labels))
    order = np.random.default_rng(0).permutation(len(labels))
    for fold in range(folds):
        held = order[fold::folds]
        kept = [i for i in order if i not in set(held)]
        fit = fit_additive([features[i] for i in kept], [mean[i] for i in kept],
                           sigma=sigma or 0.01, seeds=[2] * len(kept))  # fmt: skip
        predicted[held], _ = fit.predict([features[i] for i in held])
    print(f"\n  pooled additive model, {folds}-fold cross-validated over the candidates:")
    return {
        "folds": folds,
        "vs_target": tau_line("pooled prediction vs target", list(predicted), target),
        "mean_vs_target": tau_line("mean of 2 (raw) vs target", mean, target),
    }


if __name__ == "__main__":
    main()
