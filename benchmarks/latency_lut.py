"""How well the latency lookup table predicts measured latency, on the paper's space.

    python benchmarks/latency_lut.py [--candidates 20] [--seed 0] [--rounds 5]
                                     [--storage URL] [--set latency.threads=1 ...]

Fills the table for ``search_spaces/resnet50.yaml`` (ResNet-50, 16 sites, digits at 32x32:
the base network and 320 per-site deltas) and prints how long that took; draws random
candidates (each site a variant drawn uniformly from those it takes, then a ratio, as the
search's sampler sees the axes); predicts each from the table; and measures each as the
search does: ``measure_latency`` of the whole model built under
``torch.manual_seed(search.seed)`` with the space's latency settings.

Each candidate (and the base network) is measured ``--rounds`` times, the rounds
interleaved, and "measured" is the fastest of those runs: other processes only ever slow a
run down, so on a shared machine the fastest run is the one that measures the network (the
table's base is taken the same way). The spread between runs is printed too, as is the error
against the median run: that spread is the floor of any prediction's error. The table goes
to a temporary SQLite file unless ``--storage`` is given (run again with the same storage
and the fill measures nothing).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from se_search.costs.latency import Latency, measure_latency
from se_search.costs.lut import LatencyLUT, base_architecture
from se_search.models.arch import Architecture, SEChoice
from se_search.models.variants import VARIANTS
from se_search.space import SearchSpace, load_space
from se_search.space.build import build_model


def random_candidate(space: SearchSpace, rng: random.Random) -> Architecture:
    """One random choice per site: a variant the site takes, then a ratio, squeeze, gate."""
    c = space.choices
    choices = {}
    for site in space.selected_sites:
        variant = rng.choice(space.variants_at(site))
        if VARIANTS[variant].adds_block:
            choices[site.name] = SEChoice(
                variant, rng.choice(c.reduction), rng.choice(c.squeeze), rng.choice(c.gate)
            )
        else:
            choices[site.name] = SEChoice(variant)
    return Architecture(choices)


def measure(space: SearchSpace, arch: Architecture) -> Latency:
    """The whole model's latency, exactly as the search's Evaluator measures it."""
    cfg = space.latency
    torch.manual_seed(space.search.seed)
    return measure_latency(
        build_model(space, arch),
        image_size=cfg.image_size or space.data.image_size,
        batch_size=cfg.batch_size,
        device=cfg.device,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        threads=cfg.threads,
    )


def measure_rounds(
    space: SearchSpace, archs: list[Architecture], rounds: int
) -> list[list[float]]:
    """``rounds`` measurements (medians, ms) of each architecture, the rounds interleaved and
    the order rotating, so that a busy stretch of the machine does not fall on one alone."""
    runs: list[list[float]] = [[] for _ in archs]
    for r in range(rounds):
        for i in [(r + k) % len(archs) for k in range(len(archs))]:
            runs[i].append(measure(space, archs[i]).median_ms)
    return runs


def summary(errors: list[float]) -> str:
    return f"median {statistics.median(errors):.2%}, max {max(errors):.2%}"


def run(space: SearchSpace, *, candidates: int, seed: int, rounds: int) -> None:
    lut = LatencyLUT(space=space)
    start = time.perf_counter()
    filled = lut.fill()
    fill_s = time.perf_counter() - start
    c = lut.conditions
    print(
        f"{space.backbone.model}, {len(space.site_names)} sites, {c.device} ({c.device_name}), "
        f"{c.threads} thread(s), batch {c.batch_size}, {c.image_size}x{c.image_size}, "
        f"torch {c.torch_version}"
    )
    print(f"fill: {filled} entries measured in {fill_s:.1f} s")

    rng = random.Random(seed)
    archs = [random_candidate(space, rng) for _ in range(candidates)]
    start = time.perf_counter()
    predicted = [lut.predict(arch).median_ms for arch in archs]
    predict_ms = (time.perf_counter() - start) / candidates * 1e3
    base_arch = base_architecture(space)
    *runs, base_runs = measure_rounds(space, [*archs, base_arch], rounds)

    print(f"\n{'#':>3}  {'predicted':>9}  {'measured':>9}  {'error':>7}  {'runs':>6}  placement")
    errors, against_median, spreads = [], [], []
    for i, (arch, p, m) in enumerate(zip(archs, predicted, runs)):
        fastest = min(m)
        errors.append(abs(p - fastest) / fastest)
        against_median.append(abs(p - statistics.median(m)) / statistics.median(m))
        spreads.append((max(m) - fastest) / fastest)
        print(
            f"{i:>3}  {p:9.3f}  {fastest:9.3f}  {(p - fastest) / fastest:+7.2%}  "
            f"{spreads[-1]:+6.1%}  {arch.placement(space.site_names)}"
        )
    print(f"(runs: how much slower the slowest of {rounds} runs was than the fastest)")
    print(f"\n|predicted - measured| / measured over {candidates} candidates:")
    print(f"  against the fastest of {rounds} runs: {summary(errors)} (target: median <= 5%)")
    print(f"  against the median of {rounds} runs:  {summary(against_median)}")
    print(f"  run-to-run spread of the measurements: {summary(spreads)}")
    base = lut.predict(base_arch).median_ms
    print(
        f"base network: {base:.3f} ms in the table, fastest of {rounds} runs now "
        f"{min(base_runs):.3f} ms ({(base - min(base_runs)) / min(base_runs):+.2%})"
    )
    print(f"a prediction takes {predict_ms:.3f} ms once the table is filled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="measurements per candidate")
    parser.add_argument("--storage", help="keep the table here (default: a temporary file)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override the space, e.g. --set latency.threads=1",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or f"sqlite:///{Path(tmp) / 'lut.db'}"
        space = load_space("resnet50", [f"storage={storage}", *args.overrides])
        run(space, candidates=args.candidates, seed=args.seed, rounds=args.rounds)


if __name__ == "__main__":
    main()
