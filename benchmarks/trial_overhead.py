"""se-search's own cost per trial beside plain Optuna's, on SQLite, in one run.

    python benchmarks/trial_overhead.py [--trials 60] [--block 10]

"Own cost" is everything a trial costs except training and latency measurement, which are
replaced by stand-ins that return at once: sampling, building the architecture, costs from
the cost table, constraint checks, se-search's tables, the front update and Optuna's own
bookkeeping. Plain Optuna runs a study with the same sampler (NSGA-II), the same number of
categorical parameters (ResNet-50's 16 sites x variant and reduction = 32) and objectives,
in the same SQLite file (so both get the same journal mode). The two alternate in blocks of
``--block`` trials so that both studies grow side by side; the figure is the mean per trial,
and the ratio of the two.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from se_search.engines.local import LocalEngine
from se_search.space import SearchSpace, load_space
from se_search.testing.standin import StandIn


def plain_objective(space: SearchSpace):
    sites = space.site_names

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        for site in sites:
            trial.suggest_categorical(f"{site}.variant", space.choices.variant)
            trial.suggest_categorical(f"{site}.reduction", space.choices.reduction)
        return trial.number % 7 / 7, float(trial.number % 5), float(trial.number % 3)

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "results.db"  # both studies in one file: the same storage
        space = load_space(
            "resnet50",
            {
                "storage": f"sqlite:///{db}",
                "search.checkpoints": "none",
                "search.seed_paper": False,
            },
        )
        setup = time.perf_counter()
        engine = LocalEngine(space, evaluator=StandIn())
        engine.evaluator.table  # noqa: B018  (one-off: one thop profile of the plain backbone)
        setup = time.perf_counter() - setup
        plain = optuna.create_study(
            study_name="plain-optuna",
            storage=f"sqlite:///{db}",
            sampler=optuna.samplers.NSGAIISampler(seed=0),
            directions=["maximize", "minimize", "minimize"],
        )
        objective = plain_objective(space)
        ours_times: list[float] = []
        plain_times: list[float] = []
        done = 0
        while done < args.trials:
            block = min(args.block, args.trials - done)
            start = time.perf_counter()
            plain.optimize(objective, n_trials=block)
            plain_times.append((time.perf_counter() - start) / block)
            start = time.perf_counter()
            engine.run(trials=done + block)
            ours_times.append((time.perf_counter() - start) / block)
            done += block

    params = 2 * len(space.site_names)
    ours, base = statistics.mean(ours_times), statistics.mean(plain_times)
    print(f"{args.trials} trials each, {params} categorical parameters, NSGA-II, SQLite")
    print(f"  one-off set-up of se-search (cost table: one thop profile): {setup * 1e3:.0f} ms")
    print(f"  plain Optuna        {base * 1e3:7.1f} ms per trial")
    print(f"  se-search (own)     {ours * 1e3:7.1f} ms per trial")
    print(f"  ratio se-search / plain Optuna: {ours / base:.2f} (target <= 1.5)")
    print(
        "  per block of trials (ms per trial, plain / se-search): "
        + ", ".join(f"{p * 1e3:.0f}/{o * 1e3:.0f}" for p, o in zip(plain_times, ours_times))
    )


if __name__ == "__main__":
    main()
