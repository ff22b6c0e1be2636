"""Measured latency: a whole network timed in eval mode, with the conditions it was timed
under (:class:`Latency`)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from se_search.costs.timing import device_name, interleaved, resolve_device, torch_threads
from se_search.stats.spread import quartiles

__all__ = ["DISTURBED_IQR", "Latency", "measure_latency"]

#: A measurement whose interquartile range exceeds this share of its median is disturbed.
DISTURBED_IQR = 0.2


@dataclass(frozen=True)
class Latency:
    """One latency measurement and the conditions it was taken under."""

    median_ms: float
    iqr_ms: float
    device: str
    device_name: str
    torch_version: str
    threads: int
    batch_size: int
    input_size: tuple[int, int, int]
    warmup: int
    repeats: int
    #: ``measured``: timed on the whole model; ``lut``: predicted by the lookup table.
    source: str = "measured"
    #: Taken a second time because the first was disturbed (see :attr:`disturbed`).
    remeasured: bool = False

    @property
    def disturbed(self) -> bool:
        """Whether the passes spread so widely (an interquartile range over
        :data:`DISTURBED_IQR` of the median) that another process must have shared the
        device: a figure not to keep as an objective without taking it again."""
        return self.iqr_ms > DISTURBED_IQR * self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "disturbed": self.disturbed}


def measure_latency(
    model: nn.Module,
    *,
    image_size: int,
    batch_size: int = 1,
    device: str = "auto",
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
    in_channels: int = 3,
) -> Latency:
    """Median and interquartile range of ``repeats`` timed forward passes in eval mode, after
    ``warmup`` untimed ones (:func:`~se_search.costs.timing.interleaved` with one runner).

    ``threads`` sets torch's intra-op threads for the measurement only.
    """
    dev = resolve_device(device)
    with torch_threads(threads) as used_threads:
        net = copy.deepcopy(model).to(dev).eval()
        x = torch.randn(batch_size, in_channels, image_size, image_size, device=dev)
        times = interleaved({"net": lambda: net(x)}, device=dev, rounds=repeats, warmup=warmup)
    q1, median, q3 = quartiles(times["net"])
    return Latency(
        median_ms=median,
        iqr_ms=q3 - q1,
        device=str(dev),
        device_name=device_name(dev),
        torch_version=torch.__version__,
        threads=used_threads,
        batch_size=batch_size,
        input_size=(in_channels, image_size, image_size),
        warmup=warmup,
        repeats=repeats,
    )
