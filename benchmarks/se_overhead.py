"""Latency overhead of SE-ResNet-50 over ResNet-50, beside timm's seresnet50, in one run.

    python benchmarks/se_overhead.py [--batch 1 8] [--image-size 224] [--repeats 30]

Models are timed interleaved: one forward of each model per round, the order rotating from
round to round, so a slow moment of the machine hits every model alike. Each ratio is the
median over rounds of the ratio within a round (paired, so slow drifts cancel), with its
interquartile range. Ratios: this project's ``standard:16`` over torchvision's ResNet-50;
timm's ``seresnet50`` over timm's own ``resnet50`` and over torchvision's; and the same
SE-ResNet-50 as ours with timm's ``SEModule`` in each block (when timm is installed:
``pip install timm``).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torchvision.models import get_model

from se_search.arch import Architecture
from se_search.backbones import get_backbone
from se_search.costs import count_flops, device_name, resolve_device, time_forward
from se_search.surgery import insert_se


def build_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    resnet50 = get_model("resnet50", num_classes=1000)
    sites = [s.name for s in get_backbone("resnet50").list_sites(resnet50)]
    models = {
        "torchvision resnet50": resnet50,
        "se-search standard:16": insert_se(
            resnet50, Architecture.uniform(sites, "standard:16"), backbone="resnet50"
        ),
    }
    try:
        import timm
    except ImportError:
        print("timm is not installed: its seresnet50 is left out (pip install timm)")
    else:
        from timm.layers import SEModule

        models["timm resnet50"] = timm.create_model("resnet50", pretrained=False)
        models["timm seresnet50"] = timm.create_model("seresnet50", pretrained=False)
        # The same SE-ResNet-50 with timm's SE module in place of ours: compares the two
        # SE implementations on one backbone (timm's resnet50 initialises differently).
        with_timm_se = copy.deepcopy(models["se-search standard:16"])
        for site in sites:
            block = with_timm_se.get_submodule(site)
            block.se = SEModule(block.se.channels, rd_ratio=1 / 16)
        models["tv + timm SEModule"] = with_timm_se
    return {name: m.eval() for name, m in models.items()}


def interleaved_times(
    models: dict[str, torch.nn.Module], x: torch.Tensor, *, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Milliseconds per model per round; round i of every model ran back to back."""
    for net in models.values():
        time_forward(net, x, warmup=warmup, repeats=1)
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for i in range(repeats):
        for name in order[i % len(order) :] + order[: i % len(order)]:  # rotate: no model
            times[name] += time_forward(models[name], x, warmup=0, repeats=1)  # always first
    return times


RATIOS = {  # label -> (numerator, denominator)
    "se-search standard:16 / torchvision resnet50": (
        "se-search standard:16",
        "torchvision resnet50",
    ),
    "timm seresnet50 / timm resnet50": ("timm seresnet50", "timm resnet50"),
    "timm seresnet50 / torchvision resnet50": ("timm seresnet50", "torchvision resnet50"),
    "tv + timm SEModule / torchvision resnet50": ("tv + timm SEModule", "torchvision resnet50"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    models = {name: m.to(device) for name, m in build_models().items()}
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.image_size}x{args.image_size}, "
        f"{args.repeats} interleaved rounds"
    )
    for name, model in models.items():
        print(f"  {name:24s} {count_flops(model, image_size=args.image_size) / 1e9:.3f} GMACs")
    for batch in args.batch:
        x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
        times = interleaved_times(models, x, warmup=args.warmup, repeats=args.repeats)
        print(f"\nbatch {batch}: median latency")
        for name, ms in times.items():
            print(f"  {name:24s} {statistics.median(ms):9.2f} ms")
        print("  overhead ratio (median over rounds of the per-round ratio; IQR):")
        for label, (num, den) in RATIOS.items():
            if num in times and den in times:
                ratios = [a / b for a, b in zip(times[num], times[den])]
                q1, med, q3 = statistics.quantiles(ratios, n=4)
                print(f"    {label:46s} {med:.3f}  ({q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
