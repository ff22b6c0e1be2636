"""Per-trial cost of the ray engine beside the local engine, on trivial trials, in one run.

    python benchmarks/engine_overhead.py [--trials 20] [--rounds 2]

Both engines search the bundled ResNet-50 space with the stand-in evaluator (training and
latency replaced by arithmetic), so what is timed is the engine: Optuna's sampling and
bookkeeping, se-search's tables and front, and for Ray, Tune's scheduling, the round trips
to its workers and the results coming back. Each engine runs ``--trials`` trials on a fresh
database; the per-trial figure is the time between the first and the last trial's end over
the trials in between, which leaves out the one-off start-up (printed apart: the time to
the first trial's end, which for Ray includes Tune's start and its first worker). Ray runs
two trials at a time on a local instance of 2 CPUs, started once before the clock. The
engines alternate, ``--rounds`` times; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import optuna
import ray

from se_search.engines.local import LocalEngine
from se_search.engines.ray_tune import RayEngine
from se_search.space import load_space
from se_search.testing.standin import StandIn


def timed_run(engine: str, trials: int, folder: Path) -> tuple[float, float]:
    """(start-up, seconds per trial) of a fresh study of ``trials`` trivial trials."""
    space = load_space(
        "resnet50",
        {
            "storage": f"sqlite:///{folder / f'{engine}.db'}",
            "search.checkpoints": "none",
            "search.trials": trials,
            "search.ray.max_concurrent_trials": 2,
            "evaluation.epochs": 1,
        },
    )
    ends: list[float] = []

    def listen(event: str, info: object) -> None:
        if event == "trial_done":
            ends.append(time.perf_counter())

    start = time.perf_counter()
    if engine == "local":
        LocalEngine(space, evaluator=StandIn(), listener=listen).run()
    else:
        RayEngine(space, evaluator=StandIn(), listener=listen).run()
    return ends[0] - start, (ends[-1] - ends[0]) / (len(ends) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = args.trials

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_init = time.perf_counter() - start
    per_trial: dict[str, list[float]] = {"local": [], "ray": []}
    fixed: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for engine in ("local", "ray"):
                    folder = Path(tmp) / f"{engine}{r}"
                    folder.mkdir()
                    startup, each = timed_run(engine, n, folder)
                    per_trial[engine].append(each)
                    fixed[engine].append(startup)
    finally:
        ray.shutdown()

    local, remote = (statistics.median(per_trial[e]) for e in ("local", "ray"))
    print(f"{n} trivial trials per run, ResNet-50 space (32 parameters), NSGA-II, SQLite")
    print(f"  ray.init(num_cpus=2), once: {ray_init:.1f} s")
    print(f"  {'engine':<8}{'per trial':>12}{'to 1st trial':>14}")
    for engine, value in (("local", local), ("ray", remote)):
        print(f"  {engine:<8}{value * 1e3:>9.0f} ms{statistics.median(fixed[engine]):>12.1f} s")
    print(f"  ratio ray / local per trial: {remote / local:.2f}")
    verdict = "met" if remote < 0.3 else "missed"
    print(f"  ray per-trial overhead {remote:.3f} s: target < 0.3 s {verdict}")
    print(
        "  per round (ms per trial, local / ray): "
        + ", ".join(f"{a * 1e3:.0f}/{b * 1e3:.0f}" for a, b in zip(*per_trial.values()))
    )


if __name__ == "__main__":
    main()
