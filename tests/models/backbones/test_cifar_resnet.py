"""CIFAR-style ResNets: the published sizes, a stem that keeps 32x32, ResNet sites and costs.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from se_search.costs.flops import CostTable, count_flops, count_params
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.backbones.resnet import ResNetFamily
from se_search.models.surgery import insert_se
from se_search.models.variants import ResidualSE

FAMILY = get_backbone("resnet20")
# Published parameter counts (10 classes): He et al. 2016 Table 6 (ResNet-20..110) and the
# pre-activation paper (ResNet-164); Zagoruyko & Komodakis 2016 Table 3 (WRN-16-8).
PUBLISHED = {
    "resnet20": 0.27e6,
    "resnet32": 0.46e6,
    "resnet44": 0.66e6,
    "resnet56": 0.85e6,
    "resnet110": 1.7e6,
    "resnet164": 1.7e6,
    "wrn16_8": 11.0e6,
}
# Per model: block class, blocks per stage, each stage's planes (before expansion).
SHAPES = {
    "resnet20": (BasicBlock, 3, (16, 32, 64)),
    "resnet32": (BasicBlock, 5, (16, 32, 64)),
    "resnet44": (BasicBlock, 7, (16, 32, 64)),
    "resnet56": (BasicBlock, 9, (16, 32, 64)),
    "resnet110": (BasicBlock, 18, (16, 32, 64)),
    "resnet164": (Bottleneck, 18, (16, 32, 64)),
    "wrn16_8": (BasicBlock, 2, (128, 256, 512)),
}
VARIANTS = ("standard", "pre", "post", "identity")


def _meta(model: str, num_classes: int = 10) -> nn.Module:
    with torch.device("meta"):  # shapes and counts need no weights
        return FAMILY.build(model, num_classes=num_classes)


def _expected_sites(model: str) -> list[tuple[str, int, int]]:
    """(name, in, out channels) of every block, from the papers' description."""
    block, n, widths = SHAPES[model]
    sites, inplanes = [], 16
    for stage, planes in enumerate(widths, start=1):
        out = planes * block.expansion
        for i in range(n):
            sites.append((f"layer{stage}.{i}", inplanes, out))
            inplanes = out
    return sites


def _expected_params(model: str, num_classes: int = 10) -> int:
    """Parameters in closed form: 3x3 stem + BN, the blocks (1x1-conv + BN shortcut where
    the shape changes), the FC. A BN has 2 parameters per channel."""
    block, _, _ = SHAPES[model]
    total = 27 * 16 + 2 * 16
    for _, cin, out in _expected_sites(model):
        if block is BasicBlock:
            total += 9 * cin * out + 9 * out * out + 2 * 2 * out
        else:
            p = out // 4
            total += cin * p + 9 * p * p + p * out + 2 * (p + p + out)
        if cin != out:
            total += cin * out + 2 * out
    return total + out * num_classes + num_classes


@pytest.mark.parametrize("model", PUBLISHED)
def test_parameter_counts_match_the_published_ones(model: str) -> None:
    params = count_params(_meta(model))
    assert params == _expected_params(model)
    assert abs(params / PUBLISHED[model] - 1) < 0.03, params


def test_registered_as_a_resnet_family() -> None:
    assert set(PUBLISHED) <= set(list_backbones())
    assert all(get_backbone(m) is FAMILY for m in PUBLISHED)
    assert isinstance(FAMILY, ResNetFamily) and FAMILY.family == "cifar_resnet"
    assert FAMILY.models == tuple(PUBLISHED)


@pytest.mark.parametrize(
    ("model", "count"), [("resnet20", 9), ("resnet110", 54), ("resnet164", 54), ("wrn16_8", 6)]
)
def test_sites_are_the_residual_blocks(model: str, count: int) -> None:
    net = _meta(model)
    sites = FAMILY.list_sites(net)
    assert len(sites) == count
    assert [(s.name, s.in_channels, s.out_channels) for s in sites] == _expected_sites(model)
    block = SHAPES[model][0]
    for site in sites:
        assert type(net.get_submodule(site.name)) is block
        assert site.block_type == block.__name__
        assert site.variants == ("none", *VARIANTS)
        assert site.channels("pre") == site.in_channels
        assert site.channels("standard") == site.out_channels


def test_resnet20_sites_by_name() -> None:
    sites = [s.name for s in FAMILY.list_sites(_meta("resnet20"))]
    assert sites == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]


@pytest.mark.parametrize("side", [32, 28])
def test_the_stem_keeps_the_input_size(side: int) -> None:
    net = FAMILY.build("resnet20", num_classes=7).eval()
    names = ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert [n for n, _ in net.named_children()] == names
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    stem = net.conv1
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((3, 3), (1, 1), 16)
    sides: dict[str, tuple[int, ...]] = {}
    for name in ("layer1", "layer2", "layer3"):

        def record(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
            sides[name] = tuple(out.shape[1:])

        net.get_submodule(name).register_forward_hook(record)
    with torch.no_grad():
        y = net(torch.randn(2, 3, side, side))
    assert y.shape == (2, 7)
    half, quarter = (side + 1) // 2, (side + 3) // 4
    assert sides == {
        "layer1": (16, side, side),
        "layer2": (32, half, half),
        "layer3": (64, quarter, quarter),
    }


def test_initialised_like_torchvision() -> None:
    net = FAMILY.build("resnet20", num_classes=10)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    conv = net.layer3[1].conv2  # kaiming normal, fan_out: std sqrt(2 / (64 * 9))
    assert abs(conv.weight.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05


def test_cost_table_of_the_bottleneck_model() -> None:
    """ResNet-164's bottlenecks at 28x28 (28, 14 and 7 pixels a side); the contract test
    checks the family's representative, ResNet-20, of basic blocks."""
    model, image_size = "resnet164", 28
    base = FAMILY.build(model, num_classes=10)
    table = CostTable.build(base, family=FAMILY, image_size=image_size)
    names = [s.name for s in FAMILY.list_sites(base)]
    mixed = Architecture({n: f"{VARIANTS[i % 4]}:{(4, 16)[i % 2]}" for i, n in enumerate(names)})
    assert {c.variant for c in mixed.values()} == set(VARIANTS)
    for arch in (Architecture.uniform(names, "standard:16"), mixed):
        net = insert_se(base, arch, backbone=model)
        assert table.costs(arch) == (count_params(net), count_flops(net, image_size=image_size))


@pytest.mark.parametrize("variant", ["none", *VARIANTS])
def test_every_variant_wraps_each_block_and_runs(variant: str) -> None:
    net = FAMILY.build("resnet20", num_classes=10).eval()
    names = [s.name for s in FAMILY.list_sites(net)]
    choice = variant if variant == "none" else f"{variant}:4"
    built = insert_se(net, Architecture.uniform(names, choice), backbone="resnet20").eval()
    for name in names:
        block = built.get_submodule(name)
        if variant == "none":
            assert type(block) is BasicBlock
        else:
            assert isinstance(block, ResidualSE) and block.variant == variant
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        y, plain = built(x), net(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert torch.equal(y, plain) == (variant == "none")


@pytest.mark.parametrize("site", ["layer1.1", "layer2.0"])  # without and with a shortcut conv
def test_last_norm_zeroed_makes_the_branch_vanish(site: str) -> None:
    net = FAMILY.build("resnet20", num_classes=10).eval()
    arch = Architecture({site: "standard:4"})
    for model in (net, insert_se(net, arch, backbone="resnet20").eval()):
        block = model.get_submodule(site)
        norm = FAMILY.last_norm(block)
        assert norm is block.bn2
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.zero_()
            x = torch.randn(1, block.conv1.in_channels, 8, 8)
            shortcut = x if block.downsample is None else block.downsample(x)
            assert torch.equal(block(x), torch.relu(shortcut))
