"""How cheap one-shot scoring is, and how far its ranking can be trusted, in one run.

    python benchmarks/oneshot.py [--space resnet50] [--candidates 200] [--verify 10] [--reseed]

1. Trains the space's supernet (``evaluation.supernet``; printed per epoch).
2. Scores ``--candidates`` random architectures on it (activate, recalibrate BN on
   ``calibration_batches`` training batches, validation top-1) and prints candidates per
   minute: the figure that replaces training each one.
3. Trains ``--verify`` of them stand-alone with the space's own budget (the train strategy,
   ``evaluation.epochs``) and prints Kendall's tau-b and Spearman's rho between one-shot and
   stand-alone accuracy, with both columns, so the agreement can be judged by eye too.
4. With ``--reseed``, trains them once more under ``search.seed + 1`` and prints the same
   figures between the two stand-alone runs: no cheap score can agree with stand-alone
   training better than stand-alone training agrees with itself.

Everything runs in this process on ``evaluation.device``; the supernet's checkpoint goes to
a temporary folder unless ``--artifacts`` is given (then a second run reuses it).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from se_search.evaluation.evaluator import Evaluator
from se_search.events import Event, SupernetEpoch, SupernetReady
from se_search.outputs.verify import rank_agreement
from se_search.space import load_space
from se_search.space.sampling import random_architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="resnet50")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--verify", type=int, default=10)
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument(
        "--reseed", action="store_true",
        help="train the verified candidates again under search.seed + 1: the agreement of "
        "stand-alone training with itself, the ceiling for any cheap score",
    )  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    space = load_space(args.space, ["evaluation.strategy=oneshot", *args.overrides])
    folder = args.artifacts or Path(tempfile.mkdtemp(prefix="se-oneshot-"))
    cfg = space.evaluation.supernet
    print(
        f"{space.name}: {space.backbone.model}, {len(space.site_names)} sites, "
        f"{space.size:.3g} architectures; {space.data.dataset} at {space.data.image_size}px; "
        f"supernet {cfg.epochs} epochs, {cfg.sampling} sampling"
    )

    def show(event: Event) -> None:
        if isinstance(event, SupernetEpoch):
            print(
                f"  supernet epoch {event.epoch}/{event.epochs}: loss {event.loss:.3f}, "
                f"largest arch acc {event.accuracy:.4f} ({event.seconds:.0f} s)"
            )
        elif isinstance(event, SupernetReady):
            print(f"  supernet {'trained' if event.trained else 'loaded'}: {event.path}")

    oneshot = Evaluator(space, artifacts=folder)
    start = time.perf_counter()
    oneshot.prepare(show)
    print(f"supernet ready in {time.perf_counter() - start:.1f} s")

    rng = random.Random(space.search.seed)
    archs, seen = [], set()
    while len(archs) < args.candidates:
        arch = random_architecture(space, rng)
        if arch.hash not in seen:
            seen.add(arch.hash)
            archs.append(arch)
    start = time.perf_counter()
    scores = [oneshot.scorer.score(arch) for arch in archs]
    seconds = time.perf_counter() - start
    print(
        f"scored {len(archs)} candidates in {seconds:.1f} s: "
        f"{60 * len(archs) / seconds:.0f} candidates per minute "
        f"(one-shot accuracy {min(scores):.4f} .. {max(scores):.4f})"
    )

    if args.verify < 2:
        return
    alone = Evaluator(space.model_copy(update={"evaluation": space.evaluation.model_copy(
        update={"strategy": "train"})}))  # fmt: skip
    picked = list(range(args.verify))  # the first random candidates: no selection bias
    pairs = []
    print(f"training {len(picked)} of them stand-alone ({space.evaluation.epochs} epochs each):")
    print(f"  {'#':>3} {'one-shot':>9} {'stand-alone':>12} {'seconds':>8}  architecture")
    for i in picked:
        result = alone.train(archs[i])
        pairs.append((scores[i], result.accuracy))
        print(
            f"  {i:>3} {scores[i]:9.4f} {result.accuracy:12.4f} {result.train_seconds:8.1f}  "
            f"{archs[i].placement(space.site_names)}"
        )
    tau, rho = rank_agreement([a for a, _ in pairs], [b for _, b in pairs])
    print(f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f} over {len(pairs)} candidates")
    if args.reseed:
        # The ceiling: how well stand-alone training agrees with itself under another seed
        # (another initialisation, batch order and train/val split).
        seed = space.search.seed + 1
        again = Evaluator(alone.space.model_copy(update={"search": space.search.model_copy(
            update={"seed": seed})}))  # fmt: skip
        print(f"training them again stand-alone with search.seed {seed}:")
        second = []
        for i in picked:
            result = again.train(archs[i])
            second.append(result.accuracy)
            print(f"  {i:>3} {pairs[picked.index(i)][1]:12.4f} {result.accuracy:12.4f}")
        tau, rho = rank_agreement([b for _, b in pairs], second)
        print(f"stand-alone vs stand-alone: Kendall tau {tau:.3f}, Spearman rho {rho:.3f}")
        tau, rho = rank_agreement([a for a, _ in pairs], second)
        print(f"one-shot vs the second stand-alone run: Kendall tau {tau:.3f}, rho {rho:.3f}")


if __name__ == "__main__":
    main()
