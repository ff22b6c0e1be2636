"""Measuring the latency lookup table's entries: a site's module timed alone, as the base
network has it and with each choice, and the base network whole.

See :mod:`se_search.costs.lut` for why deltas are measured this way.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.costs.latency import measure_latency
from se_search.costs.timing import device_name, interleaved, resolve_device
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.surgery import se_block
from se_search.space import SearchSpace, build_model
from se_search.stats.spread import iqr, quartiles
from se_search.storage.tables import LatencyEntryModel

__all__ = [
    "Conditions",
    "DeltaTimer",
    "last_level_cache_bytes",
    "site_inputs",
    "tensor_bytes",
]

#: The fewest interleaved rounds a delta (and timed passes the base) is measured over,
#: whatever ``latency.repeats`` says.
MIN_DELTA_ROUNDS = 40
#: The fewest untimed passes before each of the base's measurements (a cold process is slow).
MIN_BASE_WARMUP = 5
#: The most replicas of one module a delta cycles through (see ``LatencyLUT._replicas``).
MAX_REPLICAS = 64


@dataclass(frozen=True)
class Conditions:
    """What a measurement depends on; rows are shared only between equal conditions."""

    backbone: str
    num_classes: int
    device: str
    device_name: str
    torch_version: str
    threads: int
    batch_size: int
    image_size: int

    @classmethod
    def of(cls, space: SearchSpace) -> Conditions:
        """The conditions ``space.latency`` asks for, on this machine and this torch."""
        cfg = space.latency
        dev = resolve_device(cfg.device)
        return cls(
            backbone=space.backbone.model,
            num_classes=space.backbone.num_classes,
            device=str(dev),
            device_name=device_name(dev),
            torch_version=torch.__version__,
            threads=cfg.threads or torch.get_num_threads(),
            batch_size=cfg.batch_size,
            image_size=cfg.image_size or space.data.image_size,
        )

    def where(self) -> list[Any]:
        """SQL conditions that select the rows of these conditions."""
        return [getattr(LatencyEntryModel, key) == value for key, value in asdict(self).items()]


def site_inputs(
    model: nn.Module, names: Sequence[str], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The tensor each site's module receives in one forward pass of ``model`` on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def record(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            seen[name] = args[0].detach().clone()

        handles.append(model.get_submodule(name).register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (Linux sysfs), or 32 MiB where it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes, default=32 * 2**20)


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers: what each forward pass reads."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class DeltaTimer:
    """Times one space's sites under ``conditions``: the base network (``base``, built under
    ``search.seed``) whole, and each site's module on its real input in that network."""

    def __init__(self, *, space: SearchSpace, conditions: Conditions, base: Architecture) -> None:
        self.space, self.conditions, self.base_arch = space, conditions, base

    def base(self) -> tuple[float, float]:
        """``(median, iqr)`` of one whole-network measurement of the base, with the space's
        settings, as a search measures a candidate, but at least :data:`MIN_BASE_WARMUP`
        untimed and :data:`MIN_DELTA_ROUNDS` timed passes: every prediction builds on it.
        The table's base entry is the fastest of several of them: other processes only ever
        slow a run down."""
        cfg = self.space.latency
        lat = measure_latency(
            self.model,
            image_size=self.conditions.image_size,
            batch_size=self.conditions.batch_size,
            device=self.conditions.device,
            warmup=max(cfg.warmup, MIN_BASE_WARMUP),
            repeats=max(cfg.repeats, MIN_DELTA_ROUNDS),
            threads=self.conditions.threads,
        )
        return lat.median_ms, lat.iqr_ms

    def site(self, site: Site, choices: list[SEChoice]) -> list[tuple[float, float]]:
        """``(delta, iqr of the choice's passes)`` of each of ``choices`` at ``site``: the
        site's module timed with each choice and as the base has it, interleaved.

        A delta is the difference of lower quartiles: another process taking the CPU
        mid-pass only ever lengthens a pass, so the fast side of each distribution is the
        part that measures the module (on a quiet machine it is within noise of the median).
        """
        plain, x = self.model.get_submodule(site.name), self.inputs[site.name]
        one_each = [plain, *(self._with_choice(plain, site, c) for c in choices)]
        copies = self._replicas(sum(tensor_bytes(m) for m in one_each))
        variants = [[plain, *(copy.deepcopy(plain) for _ in range(copies - 1))]] + [
            [first, *(self._with_choice(plain, site, c) for _ in range(copies - 1))]
            for first, c in zip(one_each[1:], choices)
        ]
        cfg = self.space.latency
        with torch.inference_mode():
            for replicas in variants:  # one pass of every replica allocates and picks kernels
                for module in replicas:
                    module(x)
        runners = {i: _cycling(replicas, x) for i, replicas in enumerate(variants)}
        times = interleaved(
            runners,
            device=self._device,
            rounds=max(cfg.repeats, MIN_DELTA_ROUNDS),
            warmup=cfg.warmup,
        )
        reference = quartiles(times[0])[0]
        return [
            (quartiles(times[i])[0] - reference, iqr(times[i])) for i in range(1, len(variants))
        ]

    def _replicas(self, round_bytes: int) -> int:
        """How many replicas of each module a round cycles through: enough that one round
        reads twice the CPU's last-level cache, when the network's weights overflow it.

        In the network, the rest of a forward pass evicts a block's weights before its next
        pass, so every pass reads them from memory; a block timed alone would run from cache
        (and a large SE block's 1x1 convs look several times cheaper). Cycling through
        replicas evicts the weights in the same way while the input, the code and the
        framework's own data stay hot, as they do in the network. (Sweeping a buffer between
        passes instead evicts those too, and charges a small SE block three times its cost.)
        """
        if self._device.type != "cpu":
            return 1
        cache = last_level_cache_bytes()
        if tensor_bytes(self.model) <= cache:
            return 1  # the whole network runs from cache
        return max(1, min(-(-2 * cache // max(round_bytes, 1)), MAX_REPLICAS))

    def _with_choice(self, block: nn.Module, site: Site, choice: SEChoice) -> nn.Module:
        """A copy of the site's ``block`` with ``choice`` applied, as ``insert_se`` does."""
        se = se_block(site, choice)
        wrapped = self.space.family.wrap(copy.deepcopy(block), se, choice.variant)
        return wrapped.to(self._device).eval()

    @property
    def _device(self) -> torch.device:
        return torch.device(self.conditions.device)

    @functools.cached_property
    def model(self) -> nn.Module:
        torch.manual_seed(self.space.search.seed)
        return build_model(self.space, self.base_arch, weights=False).to(self._device).eval()

    @functools.cached_property
    def inputs(self) -> dict[str, torch.Tensor]:
        """Each site's input in one forward pass of the base network on a random batch."""
        size = self.conditions.image_size
        x = torch.randn(self.conditions.batch_size, 3, size, size, device=self._device)
        return site_inputs(self.model, self.space.site_names, x)


def _cycling(replicas: Sequence[nn.Module], x: torch.Tensor) -> Callable[[], Any]:
    """A runner whose every pass runs the next of ``replicas`` on ``x``."""
    turn = itertools.cycle(replicas)
    return lambda: next(turn)(x)
