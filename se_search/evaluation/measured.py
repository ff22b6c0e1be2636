"""What the benchmarks measured about how well a strategy ranks candidates, so that ``run``
can say so where it applies: Kendall's tau of the strategy's scores against 4x longer
training, next to the best trivial ranker (params, FLOPs, latency, number of SE blocks).

The figures are ``benchmarks/results/screens.json`` and, for the supernet's other settings,
``screens-oneshot-*.json`` (``benchmarks/screens.py`` on 40 candidates of
``search_spaces/resnet50.yaml``, digits at 32 px, target: 32-epoch training, mean of 2 seeds);
``tests/evaluation/test_measured.py`` keeps them equal to those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from se_search.commands import command
from se_search.space import SearchSpace
from se_search.space.specs import SupernetSpec
from se_search.storage.database import redact

__all__ = ["MEASURED", "Measured", "rank_caveat"]

_DIGITS = "digits at 32 px, 40 ResNet-50 placements, against the mean of two 32-epoch trainings"
#: The best trivial ranker's tau in every results file: they share candidates and target.
_SE_BLOCKS_TAU = 0.3502
_TRIVIAL = {"params": "the parameter count", "flops": "FLOPs", "latency_ms": "latency",
            "SE blocks": "the number of SE blocks"}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Measured:
    """One strategy's measured rank agreement, and the conditions it was measured under."""

    screen: str  # its key in screens.json
    what: str  # the strategy's score, in words
    tau: float | None  # None: every candidate scored the same
    ci: tuple[float, float] | None
    trivial: str  # the best trivial ranker: its key in screens.json
    trivial_tau: float
    verdict: str  # against it: "beats it", "within noise" or "loses" (paired bootstrap)
    dataset: str = "digits"
    max_epochs: int | None = None  # applies to runs of at most this many epochs
    weights: str | None = None  # applies to this backbone.weights only
    #: oneshot: applies to the supernet set so (every other key at its default) only
    supernet: dict[str, Any] | None = None
    results: str = "screens.json"  # the file in benchmarks/results it comes from
    where: str = _DIGITS  # the data, candidates and target it was measured on, in words
    command: str = "benchmarks/screens.py"  # the script that measured it

    def applies(self, space: SearchSpace) -> bool:
        ev = space.evaluation
        return (
            space.data.dataset == self.dataset
            and (self.max_epochs is None or ev.epochs <= self.max_epochs)
            and (self.weights is None or space.backbone.weights == self.weights)
            and (self.supernet is None or ev.supernet == SupernetSpec(**self.supernet))
        )

    def caveat(self, verify: str) -> str | None:
        """The warning, ending with the ``verify`` command to run; None when the strategy
        ranks better than every trivial ranker."""
        if self.verdict == "beats it":
            return None
        if self.tau is None or self.ci is None:
            agreement = "gave every candidate the same accuracy: it ranks nothing"
        else:
            agreement = (
                f"ranks candidates with Kendall tau {self.tau:+.2f} "
                f"(95% CI {self.ci[0]:+.2f} to {self.ci[1]:+.2f}); {_TRIVIAL[self.trivial]} alone "
                f"ranks them at {self.trivial_tau:+.2f}, so it "
                + ("does worse" if self.verdict == "loses" else "does no better beyond noise")
            )
        return (
            f"note: measured on {self.where} ({self.command}), {self.what} {agreement}. Treat the "
            f"front's accuracies as a coarse screen, and retrain it before trusting its "
            f"order: {verify}"
        )


def _oneshot(results: str, setting: str, tau: float, ci: tuple[float, float], verdict: str,
             **supernet: Any) -> Measured:  # fmt: skip
    return Measured(
        screen="oneshot top1", what=f"the one-shot supernet's validation top-1{setting}",
        tau=tau, ci=ci, trivial="SE blocks", trivial_tau=_SE_BLOCKS_TAU, verdict=verdict,
        supernet=supernet, results=results,
    )  # fmt: skip


#: ``evaluation.strategy`` -> what the benchmarks measured of it, under each setting measured.
MEASURED: dict[str, tuple[Measured, ...]] = {
    "train": (
        Measured(
            screen="8 epochs, one seed", what="8-epoch training (one seed)", tau=0.3929,
            ci=(0.1607, 0.5956), trivial="SE blocks", trivial_tau=_SE_BLOCKS_TAU,
            verdict="within noise", max_epochs=8,
        ),
    ),
    "oneshot": (
        _oneshot("screens.json", "", 0.1324, (-0.085, 0.3454), "within noise"),
        _oneshot("screens-oneshot-epochs18.json", " (supernet epochs: 18)", 0.1184,
                 (-0.1404, 0.3676), "within noise", epochs=18),
        _oneshot("screens-oneshot-calib16.json", " (16 calibration batches)", 0.3126,
                 (0.0572, 0.5445), "within noise", calibration_batches=16),
        _oneshot("screens-oneshot-per-ratio.json", " (per-ratio SE weights)", -0.1116,
                 (-0.3587, 0.1491), "loses", se_weights="per_ratio"),
        _oneshot("screens-oneshot-distill.json", " (in-place distillation)", 0.0485,
                 (-0.2154, 0.2968), "loses", distill=True),
        _oneshot("screens-oneshot-split.json", " (a few-shot split by variant)", 0.299,
                 (0.0728, 0.5085), "within noise", split="variant"),
    ),
    "finetune": (
        Measured(
            screen="self finetune", what="fine-tuning from self-pretrained weights (2 epochs)",
            tau=None, ci=None, trivial="SE blocks", trivial_tau=_SE_BLOCKS_TAU,
            verdict="loses", max_epochs=2, weights="self",
        ),
    ),
}  # fmt: skip


def rank_caveat(space: SearchSpace) -> str | None:
    """What ``run`` says when its strategy was measured not to beat the trivial rankers; its
    hint retrains the front at 4x the budget (the measurement's target) under 2 seeds."""
    ours = MEASURED.get(space.evaluation.strategy, ())
    measured = next((m for m in ours if m.applies(space)), None)
    if measured is None:
        return None
    verify = command(
        "verify", study=space.study_name, storage=redact(space.storage),
        epochs=4 * space.evaluation.epochs, seeds=2,
    )  # fmt: skip
    return measured.caveat(verify)
