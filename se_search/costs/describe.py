"""One architecture of a space, described: sites, parameters, FLOPs and latency."""

from __future__ import annotations

from typing import Any

from torchvision.ops import SqueezeExcitation

from se_search.costs.flops import count_flops, count_params
from se_search.costs.latency import measure_latency
from se_search.models.arch import Architecture
from se_search.models.blocks import SqueezeExcite
from se_search.space import SearchSpace, build_model

__all__ = ["describe"]

SE_BLOCKS = (SqueezeExcite, SqueezeExcitation)  # ours, and torchvision's own


def describe(
    space: SearchSpace, arch: Architecture, *, latency: bool = True, device: str | None = None
) -> dict[str, Any]:
    """A JSON-ready description of ``arch`` built on ``space``'s backbone.

    FLOPs are multiply-adds at batch 1 and ``data.image_size``; latency follows the space's
    ``latency`` section (``device`` overrides its device) and is left out when ``latency`` is
    False.
    """
    model = build_model(space, arch, weights=False)  # shapes and costs only
    image_size = space.data.image_size
    sites = []
    for site in space.all_sites:
        choice = arch.choice(site.name)
        blocks = model.get_submodule(site.name).modules()
        se_params = sum(count_params(m) for m in blocks if isinstance(m, SE_BLOCKS))
        sites.append(
            {
                "site": site.name,
                "block": site.block_type,
                "in_channels": site.in_channels,
                "out_channels": site.out_channels,
                "variants": list(site.variants),
                "searched": site.name in space.site_names,
                "choice": str(choice),
                "se_params": se_params,
            }
        )
    out: dict[str, Any] = {
        "space": space.name,
        "backbone": space.backbone.model,
        "num_classes": space.backbone.num_classes,
        "image_size": image_size,
        "architecture": arch.to_dict(),
        "arch_hash": arch.hash,
        "summary": arch.summary(),
        "params": count_params(model),
        "flops": count_flops(model, image_size=image_size),
        "sites": sites,
        "latency_ms": None,
        "latency_iqr_ms": None,
        "latency": None,
    }
    if latency:
        cfg = space.latency
        result = measure_latency(
            model,
            image_size=cfg.image_size or image_size,
            batch_size=cfg.batch_size,
            device=device or cfg.device,
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            threads=cfg.threads,
        )
        out.update(latency_ms=result.median_ms, latency_iqr_ms=result.iqr_ms)
        out["latency"] = result.to_dict()
    return out
