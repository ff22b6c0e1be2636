"""Cost model: parameters, FLOPs (multiply-adds) and measured latency.

FLOPs follow the SENet paper's convention, multiply-adds, counted by thop. thop charges
nothing for a bare ``x * s`` or for activations, so the SE block's own steps have rules here,
one operation per element: the squeeze (one add or compare per input element), the gate (one
per channel) and the channel-wise scale (one multiply per element). The model is profiled
as a deep copy, because thop leaves hooks and ``total_ops`` state on what it profiles.

Convolutions and linear layers are multiply-adds without bias; thop also charges 2 per
element for batch norm and the final average pooling, which is why plain ResNet-50 comes to
4.134 G rather than torchvision's published 4.089 G (convolutions and the FC only).
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from se_search.arch import Architecture, SEChoice
from se_search.backbones import BackboneFamily, Site
from se_search.blocks import VARIANTS, ChannelScale, PointwiseConv, Squeeze, squeeze_width

__all__ = [
    "FLOP_RULES",
    "CostTable",
    "Latency",
    "count_flops",
    "count_params",
    "measure_latency",
    "se_costs",
]


def _per_input_element(m: nn.Module, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    m.total_ops += x[0].numel()


def _per_output_element(m: nn.Module, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    m.total_ops += y.numel()


def _as_conv(m: nn.Module, x: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    from thop.vision.basic_hooks import count_convNd  # thop matches exact types only

    count_convNd(m, x, y)


#: thop rules for what thop itself counts as free. torchvision's own SE block (in
#: MobileNetV3, EfficientNet, RegNetY) is charged its scale here; thop counts its children.
FLOP_RULES: dict[type[nn.Module], Any] = {
    Squeeze: _per_input_element,
    ChannelScale: _per_input_element,
    PointwiseConv: _as_conv,
    nn.Sigmoid: _per_output_element,
    nn.Hardsigmoid: _per_output_element,
    SqueezeExcitation: _per_input_element,
}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, *, image_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass at batch 1 and ``image_size`` x ``image_size``."""
    return count_module_flops(model, (in_channels, image_size, image_size))


def count_module_flops(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of ``module`` on one input of ``shape`` (no batch)."""
    import thop  # heavy-ish and only needed here

    probe = copy.deepcopy(module).cpu().float().eval()
    x = torch.zeros(1, *shape)
    macs, _ = thop.profile(probe, inputs=(x,), custom_ops=FLOP_RULES, verbose=False)
    return int(macs)


def se_costs(channels: int, height: int, width: int, reduction: int) -> tuple[int, int]:
    """``(params, flops)`` of one SE block on a ``channels x height x width`` map, at batch 1.

    The same count as :func:`count_params` and :func:`count_flops` give for the block:
    squeeze ``C·H·W``, the two 1×1 convs ``2·C·h``, gate ``C``, scale ``C·H·W``.
    """
    hidden = squeeze_width(channels, reduction)
    params = 2 * channels * hidden + hidden + channels
    flops = 2 * channels * height * width + 2 * channels * hidden + channels
    return params, flops


@dataclass(frozen=True)
class CostTable:
    """Parameters and FLOPs of any architecture of one backbone, without building it.

    SE blocks only add to a backbone (nothing else changes shape), so an architecture's cost
    is the plain backbone's, counted once with thop, plus a closed-form sum over its blocks;
    at a site that holds the backbone's own SE block, less that block's cost (counted once)
    when the choice removes or replaces it. This keeps the search's per-trial overhead at
    microseconds instead of a model build and a profile; tests check it equals
    :func:`count_params`/:func:`count_flops` exactly.
    """

    base_params: int
    base_flops: int
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # site -> (in, out) map shapes
    sites: dict[str, Site]
    existing: dict[str, tuple[int, int]]  # site -> (params, flops) of the backbone's own block

    @classmethod
    def build(cls, model: nn.Module, *, family: BackboneFamily, image_size: int) -> CostTable:
        """Profile the plain ``model`` once and record each site's input and output shape."""
        shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        probe = copy.deepcopy(model).to("meta").eval()
        sites = {site.name: site for site in family.list_sites(probe)}
        handles = []
        for name in sites:

            def record(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
                shapes[name] = (tuple(args[0].shape[1:]), tuple(out.shape[1:]))

            handles.append(probe.get_submodule(name).register_forward_hook(record))
        with torch.no_grad():
            probe(torch.empty(1, 3, image_size, image_size, device="meta"))
        for handle in handles:
            handle.remove()
        existing = {
            name: (
                count_params(model.get_submodule(name)),
                count_module_flops(model.get_submodule(name), shapes[name][0]),
            )
            for name, site in sites.items()
            if site.existing
        }
        base = count_params(model), count_flops(model, image_size=image_size)
        return cls(*base, shapes, sites, existing)

    def site_costs(self, site: str, choice: SEChoice) -> tuple[int, int]:
        """``(params, flops)`` that ``choice`` adds at ``site`` (negative: it removes)."""
        if choice.variant == "keep":
            return 0, 0
        params, flops = self.existing.get(site, (0, 0))
        if not choice.adds_block:
            return -params, -flops
        seen_in, seen_out = self.shapes[site]
        _, height, width = seen_in if VARIANTS[choice.variant].sees == "in" else seen_out
        channels = self.sites[site].channels(choice.variant)
        block_params, block_flops = se_costs(channels, height, width, choice.reduction)
        return block_params - params, block_flops - flops

    def costs(self, arch: Architecture) -> tuple[int, int]:
        """``(params, flops)`` of the backbone with ``arch``'s blocks."""
        params, flops = self.base_params, self.base_flops
        for site in self.existing.keys() | arch.keys():
            p, f = self.site_costs(site, arch.choice(site))
            params, flops = params + p, flops + f
        return params, flops


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        from se_search.errors import SESearchError

        raise SESearchError(
            f"latency device {device!r} asked for, but CUDA is not available here; "
            "use latency.device: auto or cpu"
        )
    return resolved


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
    """Median and interquartile range of ``repeats`` timed forward passes in eval mode.

    On CUDA each pass is bracketed by ``torch.cuda.synchronize`` so the time is the kernels',
    not the launch's. ``threads`` sets torch's intra-op threads for the measurement only.
    """
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        net = copy.deepcopy(model).to(dev).eval()
        x = torch.randn(batch_size, in_channels, image_size, image_size, device=dev)
        times = time_forward(net, x, warmup=warmup, repeats=repeats)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    q1, _, q3 = statistics.quantiles(times, n=4)
    return Latency(
        median_ms=statistics.median(times),
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


@torch.inference_mode()
def time_forward(net: nn.Module, x: torch.Tensor, *, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` forward passes after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        net(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(x)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()
