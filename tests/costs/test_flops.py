"""The cost model against the SENet paper's figures (exact arithmetic) and torchvision's."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import get_model

from se_search.costs.flops import count_flops, count_params
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.blocks import GATES, SQUEEZES
from se_search.models.surgery import insert_se

RESNET = get_backbone("resnet50")
# Output widths and spatial sizes (at 224x224) of ResNet-50's 16 blocks.
WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
SIDES = [56] * 3 + [28] * 4 + [14] * 6 + [7] * 3
RESNET50_PARAMS = 25_557_032
TORCHVISION_GMACS = 4.089  # torchvision's published _ops for resnet50 (convs and the FC)


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("resnet50", num_classes=1000)


@pytest.fixture(scope="module")
def sites(resnet50: torch.nn.Module) -> list[str]:
    return [s.name for s in RESNET.list_sites(resnet50)]


def _with(model: torch.nn.Module, sites: list[str], choice: str) -> torch.nn.Module:
    return insert_se(model, Architecture.uniform(sites, choice), backbone="resnet50")


def test_plain_resnet50_params(resnet50: torch.nn.Module) -> None:
    assert count_params(resnet50) == RESNET50_PARAMS  # 25.557 M


# Paper Table 10: reduction ratio r -> params as printed (M), and the exact count (M).
TABLE_10 = {
    2: (45.7, 45.699),
    4: (35.7, 35.636),
    8: (30.7, 30.604),
    16: (28.1, 28.088),
    32: (26.9, 26.830),
}


@pytest.mark.parametrize("r", TABLE_10)
def test_paper_table_10_parameter_counts(
    resnet50: torch.nn.Module, sites: list[str], r: int
) -> None:
    printed, exact = TABLE_10[r]
    params = count_params(_with(resnet50, sites, f"standard:{r}"))
    # 2·ΣC²/r for the FC weights plus C/r + C biases per block, computed from the widths.
    expected = RESNET50_PARAMS + sum(2 * c * (c // r) + c // r + c for c in WIDTHS)
    assert params == expected
    assert abs(params / 1e6 - exact) < 0.005
    assert abs(params / 1e6 - printed) < 0.1


def test_flops_of_plain_resnet50_match_torchvision(resnet50: torch.nn.Module) -> None:
    gmacs = count_flops(resnet50, image_size=224) / 1e9
    assert abs(gmacs - TORCHVISION_GMACS) / TORCHVISION_GMACS < 0.02


def test_se_flops_count_pooling_gate_and_scale(
    resnet50: torch.nn.Module, sites: list[str]
) -> None:
    base = count_flops(resnet50, image_size=224)
    added = count_flops(_with(resnet50, sites, "standard:16"), image_size=224) - base
    fcs = sum(2 * c * (c // 16) for c in WIDTHS)
    pooling = scale = sum(c * s * s for c, s in zip(WIDTHS, SIDES))
    gate = sum(WIDTHS)
    assert added == fcs + pooling + gate + scale  # exactly, one op per element
    assert added > fcs  # what thop alone would have charged
    assert 0.002 < added / base < 0.005  # paper: 3.86 -> 3.87 GFLOPs (+0.26%)


# Paper Table 16 (Section 7.1, "Effect of Squeeze"): ResNet-50 / NoSqueeze / SE at 3.86 / 4.27 /
# 3.87 GFLOPs and 25.6 / 28.1 / 28.1 M parameters.
PAPER_GFLOPS = {"none": 3.86, "standard:16:none": 4.27, "standard:16": 3.87}


def test_nosqueeze_flops_are_a_per_pixel_mlp_as_in_the_papers_table_16(
    resnet50: torch.nn.Module, sites: list[str]
) -> None:
    base = count_flops(resnet50, image_size=224)
    nosqueeze = _with(resnet50, sites, "standard:16:none")
    added = count_flops(nosqueeze, image_size=224) - base
    convs = sum(2 * c * (c // 16) * s * s for c, s in zip(WIDTHS, SIDES))  # 2·C·h per pixel
    gate = scale = sum(c * s * s for c, s in zip(WIDTHS, SIDES))  # per pixel, no pooling
    assert convs == 16 * 25_690_112 == 411_041_792  # every block: 2·C²/16·H·W, the same
    assert added == convs + gate + scale == 422_080_512
    # The paper adds 0.41 G (3.86 -> 4.27): the convs alone, as its 3.87 for SE is the FCs
    # and pooling without the gate and scale; its 3.86 base rounded to 2 digits as printed.
    paper = PAPER_GFLOPS["standard:16:none"] - PAPER_GFLOPS["none"]
    assert abs(convs / 1e9 - paper) < 0.005
    assert round(PAPER_GFLOPS["none"] + convs / 1e9, 2) == PAPER_GFLOPS["standard:16:none"]
    # the squeeze and the gate change no parameter: 28.088 M (the paper: 28.1 M for both)
    standard = _with(resnet50, sites, "standard:16")
    assert count_params(nosqueeze) == count_params(standard) == 28_088_024
    # and every gate costs the same, as docs/backbones.md's table of the ablations says
    flops = count_flops(standard, image_size=224)
    assert base == 4_133_742_592 and flops == 4_147_311_360
    for gate in GATES:
        assert (
            count_flops(_with(resnet50, sites, f"standard:16:avg:{gate}"), image_size=224) == flops
        )


def test_pre_variant_squeezes_the_narrower_input(
    resnet50: torch.nn.Module, sites: list[str]
) -> None:
    standard = count_params(_with(resnet50, sites, "standard:16"))
    pre = count_params(_with(resnet50, sites, "pre:16"))
    assert pre < standard  # bottleneck inputs are 4x narrower at each stage's first block
    assert count_params(_with(resnet50, sites, "identity:16")) == standard


def test_profiling_leaves_the_model_untouched(small_model: torch.nn.Module) -> None:
    keys = set(small_model.state_dict())
    first = count_flops(small_model, image_size=32)
    assert count_flops(small_model, image_size=32) == first
    assert set(small_model.state_dict()) == keys
    assert not any(hasattr(m, "total_ops") for m in small_model.modules())
    assert small_model.training  # mode restored (it was in train mode)


@pytest.fixture
def small_model() -> torch.nn.Module:
    model = get_model("resnet18", num_classes=10)
    sites = [s.name for s in get_backbone("resnet18").list_sites(model)]
    return insert_se(model, Architecture.uniform(sites, "standard:4"), backbone="resnet18")


@pytest.mark.parametrize(("model", "image_size"), [("resnet18", 32), ("resnet50", 64)])
def test_cost_table_equals_profiling_the_built_model(model: str, image_size: int) -> None:
    import random

    from se_search.costs.flops import CostTable
    from se_search.models.arch import SEChoice

    family = get_backbone(model)
    base = get_model(model, num_classes=10)
    table = CostTable.build(base, family=family, image_size=image_size)
    sites = [s.name for s in family.list_sites(base)]
    rng = random.Random(0)
    choices = [
        SEChoice(v, r, sq, g)
        for v in ("none", "standard", "pre", "post", "identity")
        for r in (2, 16)
        for sq in SQUEEZES
        for g in GATES
    ]
    archs = [Architecture(), Architecture.uniform(sites, "pre:2")]
    # NoSqueeze (a per-pixel MLP) at every site, in both variants' widths, and the new gates
    archs += [Architecture.uniform(sites, c) for c in ("pre:4:none:relu", "identity:16:none:tanh")]
    archs += [Architecture({s: rng.choice(choices) for s in sites}) for _ in range(3)]
    for arch in archs:
        net = insert_se(base, arch, backbone=model)
        assert table.costs(arch) == (count_params(net), count_flops(net, image_size=image_size))


# Deeper SE-ResNets and SE-ResNeXt at r=16: blocks per stage, and the totals of the models the
# paper's authors released (SE-ResNet-101/152, SE-ResNeXt-50 32x4d, with 1000 classes; as
# ported to timm as legacy_seresnet101/152 and legacy_seresnext50_32x4d).
STAGE_WIDTHS = (256, 512, 1024, 2048)
DEEPER = {
    "resnet101": ((3, 4, 23, 3), 44_549_160, 49_326_872),
    "resnet152": ((3, 8, 36, 3), 60_192_808, 66_821_848),
    "resnext50_32x4d": ((3, 4, 6, 3), 25_028_904, 27_559_896),
}


def _added_by_se(blocks: tuple[int, ...], r: int = 16, stages: int = 4) -> int:
    """Parameters SE adds at every block of the first ``stages`` stages: 2·C·(C/r) + C/r + C."""
    pairs = list(zip(blocks, STAGE_WIDTHS))[:stages]
    return sum(n * (2 * c * (c // r) + c // r + c) for n, c in pairs)


@pytest.mark.parametrize("model", DEEPER)
def test_deeper_se_resnets_and_se_resnext_add_what_the_widths_imply(model: str) -> None:
    blocks, plain, released = DEEPER[model]
    family = get_backbone(model)
    with torch.device("meta"):  # parameter counts need no data
        base = get_model(model, num_classes=1000)
    sites = [s.name for s in family.list_sites(base)]
    assert len(sites) == sum(blocks)
    se = insert_se(base, Architecture.uniform(sites, "standard:16"), backbone=model)
    assert count_params(base) == plain
    assert count_params(se) == plain + _added_by_se(blocks) == released


def test_released_se_models_in_timm_have_the_same_counts() -> None:
    timm = pytest.importorskip("timm")
    names = {
        "resnet101": "legacy_seresnet101",
        "resnet152": "legacy_seresnet152",
        "resnext50_32x4d": "legacy_seresnext50_32x4d",
    }
    for model, (_, _, released) in DEEPER.items():
        with torch.device("meta"):
            assert count_params(timm.create_model(names[model], pretrained=False)) == released


def test_se_resnet50_without_its_last_stage_adds_about_4_instead_of_10_percent(
    resnet50: torch.nn.Module, sites: list[str]
) -> None:
    """Paper, section 6: SE in the last stage holds most of the added parameters; dropping it
    there costs ~0.1% top-1 and cuts the relative parameter increase from ~10% to ~4%."""
    blocks = (3, 4, 6, 3)
    everywhere = _with(resnet50, sites, "standard:16")
    arch = Architecture({s: "standard:16" for s in sites if not s.startswith("layer4")})
    without_last = insert_se(resnet50, arch, backbone="resnet50")
    full = count_params(everywhere) - RESNET50_PARAMS
    partial = count_params(without_last) - RESNET50_PARAMS
    assert full == _added_by_se(blocks) and partial == _added_by_se(blocks, stages=3)
    assert round(full / RESNET50_PARAMS, 3) == 0.099  # ~10%
    assert round(partial / RESNET50_PARAMS, 3) == 0.037  # ~4%
