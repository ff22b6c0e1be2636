"""Does the search beat random sampling and the hand designs, at equal budget?

1. Runs the space's search with each sampler (NSGA-II, TPE, random) under several seeds, the
   same number of trials each, every study in one results database (``<sampler>-seed<k>``),
   and compares their hypervolume after each trial on one normalisation (the comparison
   report's arithmetic, :mod:`se_search.outputs.compare`): median and IQR per sampler,
   and the differences between samplers paired by seed, with a Student t interval.
2. Retrains each sampler's best front (the seed whose final hypervolume is highest) at a
   higher budget (``verify --epochs N --seeds K``), and trains the hand designs at that
   budget under ``--hand-seeds`` seeds: ``none``; ``standard:16`` everywhere (the paper);
   ``standard:16`` in the last two stages only (MnasNet, MobileNetV3, EfficientNetV2);
   ``standard:16`` everywhere but the last stage (the paper's ~4%-parameter variant);
   ``standard:16`` in the last stage only (where the paper's Section 7 finds SE matters
   least). The hand designs' seeds give that budget's noise σ (pooled).
3. Reports whether any verified architecture dominates each hand design by more than noise:
   no costlier on FLOPs and latency, and more accurate by more than twice the combined
   standard error (σ/√seeds for a one-seed front member); and which cheaper members are
   within that noise of it. With ``--split test`` (a data set with a test split), the
   fronts are verified with ``verify --split test``, the hand designs are scored on the test
   split too, and the comparison is made there: validation chose, the test split judges.

Latency comes from the lookup table (``latency.mode: lut``), filled once in the shared
database, so every study sees the same figure for the same architecture. Everything is
resumable: a study continues where it stopped, verify skips what it trained, and the hand
designs' trainings are appended to ``--hands-out`` as each finishes.

    .venv/bin/python benchmarks/search_quality.py --trials 24 --seeds 0 1 2 \\
        --verify-epochs 32 --verify-seeds 1 --json benchmarks/results/search_quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from se_search.bench.views import train_views
from se_search.engines.local import LocalEngine
from se_search.evaluation.evaluator import Evaluator
from se_search.models.arch import Architecture
from se_search.outputs.compare import comparison_data, write_comparison
from se_search.outputs.verify import stand_alone, trained_elsewhere, verify
from se_search.space import SearchSpace, load_space
from se_search.stats.noise import pooled_sd, standard_error
from se_search.stats.spread import paired_difference
from se_search.storage.rows import Candidate
from se_search.storage.store import ResultsStore

SAMPLERS = ("nsga2", "tpe", "random")


def hand_designs(space: SearchSpace) -> dict[str, Architecture]:
    """The designs practitioners use, on the space's backbone (ResNet stages: layer1-4)."""
    sites = space.site_names
    stages = sorted({s.rpartition(".")[0] for s in sites})
    late, last = set(stages[-2:]), stages[-1]
    return {
        "none": Architecture(),
        "standard:16 everywhere": Architecture.uniform(sites, "standard:16"),
        "standard:16 in the last two stages": Architecture(
            {s: "standard:16" for s in sites if s.rpartition(".")[0] in late}
        ),
        "standard:16 but the last stage": Architecture(
            {s: "standard:16" for s in sites if s.rpartition(".")[0] != last}
        ),
        "standard:16 in the last stage only": Architecture(
            {s: "standard:16" for s in sites if s.rpartition(".")[0] == last}
        ),
    }


def study_space(args: argparse.Namespace, sampler: str, seed: int) -> SearchSpace:
    return load_space(
        args.space,
        [
            *args.set,
            f"storage={args.storage}",
            f"search.sampler={sampler}",
            f"search.seed={seed}",
            f"search.study={sampler}-seed{seed}",
            f"search.trials={args.trials}",
            "search.checkpoints=none",
            "latency.mode=lut",
            "evaluation.noise_seeds=0",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="search_spaces/resnet50.yaml")
    parser.add_argument("--set", action="append", default=[], help="override a YAML key")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--storage", default="sqlite:///benchmarks/results/search_quality.db")
    parser.add_argument("--verify-epochs", type=int, default=32)
    parser.add_argument("--verify-seeds", type=int, default=1)
    parser.add_argument(
        "--hand-seeds", type=int, default=3,
        help="seeds of each hand design at the higher budget; their spread is that budget's σ",
    )  # fmt: skip
    parser.add_argument(
        "--html", type=Path, default=Path("benchmarks/results/search_quality.html")
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--split", choices=("val", "test"), default="val",
        help="where verified fronts and hand designs are compared (test: verify --split test)",
    )  # fmt: skip
    parser.add_argument(
        "--hands-out", type=Path, default=Path("benchmarks/results/search_quality-hands.jsonl")
    )
    args = parser.parse_args()

    # Seed-major: an interrupted run leaves every sampler with the same seeds done.
    studies = []
    for seed in args.seeds:
        for sampler in args.samplers:
            space = study_space(args, sampler, seed)
            print(f"== {space.study_name}: {args.trials} trials", flush=True)
            summary = LocalEngine(space).run()
            print(f"   {summary.finished} finished, front of {len(summary.front)}", flush=True)
            studies.append(space.study_name)

    data = comparison_data(args.storage, studies)
    write_comparison(args.storage, studies, args.html)
    print(f"\nhypervolume after {args.trials} trials (one normalisation for all studies):")
    result: dict[str, Any] = {"trials": args.trials, "seeds": args.seeds, "split": args.split,
                              "samplers": {}}  # fmt: skip
    for name, group in data["groups"].items():
        q1, median, q3 = group["final"]
        finals = {s: data["curves"][s][-1] for s in group["studies"]}
        print(f"  {name:8s} median {median:.4f}  IQR {q1:.4f}-{q3:.4f}  runs {finals}")
        result["samplers"][name] = {"final": group["final"], "runs": finals,
                                    "median_curve": group["median"]}  # fmt: skip
    result["paired"] = paired_finals(data, args.samplers, args.seeds)

    # The higher budget: each sampler's best front, and the hand designs.
    base = study_space(args, args.samplers[0], args.seeds[0])
    designs = hand_designs(base)
    designed = {arch.hash: label for label, arch in designs.items()}
    verified: dict[str, list[Candidate]] = {}
    for name, group in data["groups"].items():
        best = max(group["studies"], key=lambda s: data["curves"][s][-1])
        front = len(data["fronts"][best])
        print(f"\nverifying {best}'s front ({front} members) at {args.verify_epochs} epochs "
              f"under {args.verify_seeds} seed(s)", flush=True)  # fmt: skip
        report = verify(args.storage, best, top=front, epochs=args.verify_epochs,
                        seeds=args.verify_seeds, split=args.split)  # fmt: skip
        verified[name] = [r for r in report.rows if r.trial_number in report.front]
        result["samplers"][name]["verified"] = [
            {"trial": r.trial_number, "accuracy": r.accuracy, "se": r.accuracy_se,
             "test_accuracy": r.test_accuracy, "hand_design": designed.get(r.arch_hash),
             "flops": r.flops, "latency_ms": r.latency_ms, "placement": r.placement}
            for r in report.rows
        ]  # fmt: skip
        result["samplers"][name]["verify_tau"] = [report.kendall_tau, *report.kendall_ci]

    evaluator = Evaluator(
        stand_alone(base, epochs=args.verify_epochs, seeds=args.verify_seeds),
        storage=args.storage,
    )
    seeds = [base.search.seed + i for i in range(args.hand_seeds)]
    done = _trained_hands(args.hands_out)  # resumable: one JSON line per training
    elsewhere = (  # only the validation path copies what verify trained
        trained_elsewhere(ResultsStore(args.storage), base, args.verify_epochs)
        if args.split == "val" else {}
    )  # fmt: skip
    key = "accuracy" if args.split == "val" else "test_accuracy"
    hands = {}
    for label, arch in designs.items():
        for seed in seeds:
            if (label, seed, args.verify_epochs) not in done:
                line = _train_hand(evaluator, arch, seed, elsewhere, test=args.split == "test")
                line = {"label": label, "seed": seed, "epochs": args.verify_epochs, **line}
                done[(label, seed, args.verify_epochs)] = line
                with args.hands_out.open("a") as out:
                    out.write(json.dumps(line) + "\n")
        accuracies = [done[(label, seed, args.verify_epochs)][key] for seed in seeds]
        costs = evaluator.costs(arch)
        hands[label] = {"accuracy": statistics.fmean(accuracies), "accuracies": accuracies,
                        "flops": costs["flops"], "latency_ms": costs["latency_ms"],
                        "params": costs["params"]}  # fmt: skip
        print(f"  hand design {label} ({args.split}): {hands[label]['accuracy']:.4f} "
              f"{accuracies}", flush=True)  # fmt: skip
    result["hand_designs"] = hands

    # Noise of the higher budget: pooled over the hand designs' seeds.
    sigma, dof = pooled_sd([h["accuracies"] for h in hands.values()])
    result["sigma"], result["sigma_dof"] = sigma, dof
    print(f"\nnoise at {args.verify_epochs} epochs: σ = {sigma} ({dof} degrees of freedom, "
          f"the hand designs' {args.hand_seeds} seeds)")  # fmt: skip
    if sigma is None:
        raise SystemExit("no noise estimate: pass --hand-seeds 2 or more")
    print("does a verified front member dominate each hand design beyond noise (no costlier")
    print("on FLOPs and latency, more accurate by over 2 combined standard errors)?")
    result["dominance"] = {}
    for label, hand in hands.items():
        hand_se = standard_error(hand["accuracies"], sigma, len(hand["accuracies"]))
        winners: list[str] = []
        within: list[str] = []
        for name, rows in verified.items():
            for r in rows:
                if r.flops > hand["flops"] or r.latency_ms > hand["latency_ms"]:
                    continue
                if r.arch_hash in designed:  # the search's seeded paper designs
                    continue
                if args.split == "test":  # the mean of its verified seeds on the test split
                    accuracy = r.test_accuracy  # None off the verified front: not tested
                    own_se = standard_error([], sigma, len(r.test_seeds or []))
                else:
                    accuracy, own = r.accuracy, r.seed_accuracies or []
                    own_se = standard_error(own, sigma, len(own) or 1)
                if accuracy is None:
                    continue
                se = math.hypot(own_se or 0.0, hand_se or 0.0)
                gap = accuracy - hand["accuracy"]
                member = f"{name} trial {r.trial_number} ({gap:+.4f} ± {2 * se:.4f})"
                (winners if gap > 2 * se else within if gap > -2 * se else []).append(member)
        result["dominance"][label] = {"dominated_by": winners, "cheaper_and_tied": within}
        print(
            f"  {label} ({hand['accuracy']:.4f}): "
            f"{'dominated by ' + ', '.join(winners) if winners else 'not dominated'}"
            f"{'; cheaper and within noise: ' + ', '.join(within) if within else ''}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"figures written to {args.json}; comparison report {args.html}")


def paired_finals(
    data: dict[str, Any], samplers: list[str], seeds: list[int]
) -> dict[str, dict[str, Any]]:
    """Final hypervolume differences between samplers, paired by seed.

    At one seed the samplers share their random phase (the same enqueued references, then
    the same random draws), so a seed's difference is what learning added; the Student t
    interval over seeds says whether it is beyond the seed-to-seed noise.
    """
    final = {s: data["curves"][s][-1] for s in data["curves"]}
    out: dict[str, dict[str, Any]] = {}
    print("\nfinal hypervolume, paired by seed (mean difference, 95% t interval):")
    for i, first in enumerate(samplers):
        for second in samplers[i + 1 :]:
            both = [
                k for k in seeds if f"{first}-seed{k}" in final and f"{second}-seed{k}" in final
            ]
            if len(both) < 2:
                continue
            a = [final[f"{first}-seed{k}"] for k in both]
            b = [final[f"{second}-seed{k}"] for k in both]
            mean, low, high = paired_difference(a, b)
            verdict = "within noise" if low <= 0 <= high else "beyond noise"
            key = f"{first} - {second}"
            diffs = [x - y for x, y in zip(a, b)]
            out[key] = {"seeds": both, "differences": diffs, "mean": mean, "ci": [low, high],
                        "verdict": verdict}  # fmt: skip
            shown = ", ".join(f"{d:+.4f}" for d in diffs)
            print(f"  {key:16s} {mean:+.4f} [{low:+.4f}, {high:+.4f}] {verdict} "
                  f"(seeds {both}: {shown})")  # fmt: skip
    return out


def _train_hand(
    evaluator: Evaluator, arch: Architecture, seed: int, elsewhere: dict, *, test: bool
) -> dict[str, Any]:
    """One hand-design training's scores: validation ``accuracy`` and, with ``test``, the
    test split's ``test_accuracy``. Without ``test``, a reference that ``verify`` trained at
    this seed is copied (``copied_from``) instead of trained again."""
    if test:
        raw = train_views(evaluator, arch, seed, test=True, views=())["views"]["raw"]
        return {"accuracy": raw["top1"], "test_accuracy": raw["test_top1"]}
    copy = elsewhere.get((arch.hash, seed))
    accuracy = copy.accuracy if copy else evaluator.train(arch, [seed]).accuracy
    return {"accuracy": accuracy, "copied_from": copy and copy.source}


def _trained_hands(path: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The hand-design trainings a previous run wrote to ``path``, by (label, seed, epochs)."""
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["label"], r["seed"], r["epochs"]): r for r in rows}


if __name__ == "__main__":
    main()
