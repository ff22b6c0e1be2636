"""The SE blocks' latency overhead, side by side in one run.

Every model is timed interleaved (:func:`~se_search.costs.timing.interleaved`): one forward
pass of each per round, the order rotating from round to round, so a slow moment of the
machine hits every model alike. A ratio is the median over rounds of the ratio *within* a
round (paired, so slow drifts cancel), with its interquartile range. Each form of this
project's SE-ResNet-50 is divided by plain ResNet-50 in the same form, and the references
likewise (:mod:`se_search.bench.forms`). The targets (:data:`LATENCY_TARGETS`) are the
project's: at batch 8, at most this overhead, and never worse than timm's in the same run.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table
from torch import nn

from se_search.bench.forms import (
    FORMS,
    REFERENCE_FORMS,
    REFERENCES,
    Runner,
    Unavailable,
    se_resnet50_pair,
)
from se_search.costs.timing import interleaved
from se_search.errors import SESearchError
from se_search.stats.spread import quartiles

__all__ = ["LATENCY_TARGETS", "TARGET_BATCH", "Ratio", "latency_ratios", "ratio_tables"]

#: The most overhead an SE-ResNet-50 may add at :data:`TARGET_BATCH`, by device type.
LATENCY_TARGETS = {"cpu": 1.05, "cuda": 1.03}
TARGET_BATCH = 8


@dataclass(frozen=True)
class Ratio:
    """SE model over plain model, one form, one batch size: per-round ratios summarised."""

    label: str  # what is compared: "se-search" or a REFERENCES key
    form: str
    batch: int
    median: float
    q1: float
    q3: float
    se_ms: float  # median latency of the SE model
    plain_ms: float


def latency_ratios(
    *,
    device: torch.device,
    batches: Iterable[int] = (1, 8),
    image_size: int = 224,
    rounds: int = 20,
    warmup: int = 3,
    forms: Iterable[str] = tuple(FORMS),
    references: Iterable[str] = tuple(REFERENCES),
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[list[Ratio], dict[str, str]]:
    """Time every (pair, form) interleaved at each batch size; return the ratios and, per
    form or reference that could not run, why."""
    forms, references = list(forms), list(references)
    unknown = sorted(set(forms) - set(FORMS)) + sorted(set(references) - set(REFERENCES))
    if unknown:
        raise SESearchError(
            f"unknown bench form or reference {unknown}; forms: {', '.join(FORMS)}; "
            f"references: {', '.join(REFERENCES)}"
        )
    pairs: dict[str, tuple[nn.Module, nn.Module]] = {"se-search": se_resnet50_pair()}
    skipped: dict[str, str] = {}
    for key in references:
        try:
            pairs[key] = REFERENCES[key][1]()
        except Unavailable as why:
            skipped[key] = str(why)
    ratios: list[Ratio] = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            x = torch.randn(batch, 3, image_size, image_size, device=device)
            runners: dict[tuple[str, str, int], Runner] = {}
            for label, pair in pairs.items():
                for form in [f for f in forms if label == "se-search" or f in REFERENCE_FORMS]:
                    progress(f"batch {batch}: preparing {label} {form}")
                    try:
                        for side, model in enumerate(pair):
                            run = FORMS[form].prepare(copy.deepcopy(model), x, Path(tmp))
                            runners[(label, form, side)] = run
                    except Unavailable as why:
                        skipped[form] = str(why)
                        runners.pop((label, form, 0), None)
            progress(f"batch {batch}: warming up {len(runners)} models")
            times = interleaved(
                runners,
                device=device,
                rounds=rounds,
                warmup=warmup,
                progress=lambda r, n: progress(f"round {r}/{n}"),
            )
            ratios += _ratios(times, batch)
    return ratios, skipped


def _ratios(times: dict[tuple[str, str, int], list[float]], batch: int) -> list[Ratio]:
    out = []
    for (label, form, side), se_times in times.items():
        if side != 1 or (label, form, 0) not in times:
            continue
        plain_times = times[(label, form, 0)]
        per_round = [a / b for a, b in zip(se_times, plain_times)]
        q1, median, q3 = quartiles(per_round)
        out.append(
            Ratio(
                label=label,
                form=form,
                batch=batch,
                median=median,
                q1=q1,
                q3=q3,
                se_ms=quartiles(se_times)[1],
                plain_ms=quartiles(plain_times)[1],
            )
        )
    return out


def ratio_tables(ratios: list[Ratio], device: torch.device) -> list[object]:
    """The ratios as one table per batch size, marked against the target and timm's, and
    a legend: what ``se-search bench`` prints."""
    target = LATENCY_TARGETS.get(device.type, LATENCY_TARGETS["cpu"])
    out: list[object] = []
    for batch in sorted({r.batch for r in ratios}):
        table = Table(title=f"batch {batch}: SE model / plain model, median of per-round ratios")
        for column in ("SE-ResNet-50", "form", "plain ms", "SE ms", "ratio", "IQR", "vs timm"):
            table.add_column(
                column, justify="left" if column in {"SE-ResNet-50", "form"} else "right"
            )
        rows = [r for r in ratios if r.batch == batch]
        timm = {r.form: r.median for r in rows if r.label == "timm"}
        for r in rows:
            versus = ""
            if r.label == "se-search" and r.form in timm:
                versus = "better" if r.median <= timm[r.form] else "worse"
            meets = r.label == "se-search" and batch == TARGET_BATCH and r.median <= target
            table.add_row(
                r.label,
                r.form,
                f"{r.plain_ms:.2f}",
                f"{r.se_ms:.2f}",
                f"{r.median:.3f}{' *' if meets else ''}",
                f"{r.q1:.3f}-{r.q3:.3f}",
                versus,
            )
        out.append(table)
    out.append(
        f"  * at batch {TARGET_BATCH}: within the target overhead of {target} on {device.type}\n"
        "  se-search: standard:16 at all 16 blocks, over torchvision's resnet50; "
        + "; ".join(f"{key}: {description}" for key, (description, _) in REFERENCES.items())
    )
    return out
