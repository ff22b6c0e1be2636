"""VGG: one plain site per conv unit, the SE block on the ReLU's output; SE-VGG-16's costs.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from se_search.costs.flops import CostTable, count_flops, count_params
from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.space import load_space

VGG = get_backbone("vgg16")
CONVS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}
# VGG-16's sites (the ReLU's index in ``features``) and the channels of the conv before each.
VGG16_SITES = {
    1: 64, 3: 64,
    6: 128, 8: 128,
    11: 256, 13: 256, 15: 256,
    18: 512, 20: 512, 22: 512,
    25: 512, 27: 512, 29: 512,
}  # fmt: skip
# SE-VGG-16 at 224x224: each site's channels and the side of its map (the pools come after).
PAPER_WIDTHS = [64] * 2 + [128] * 2 + [256] * 3 + [512] * 3 + [512] * 3
PAPER_SIDES = [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
VGG16_PARAMS = 138_357_544  # torchvision's vgg16, 1000 classes
VGG16_MACS = 15_470_314_496  # convs and FCs (15.470 G, the paper's 15.47) + adaptive pool


def _build(model: str, *, num_classes: int = 10) -> nn.Module:
    return VGG.build(model, num_classes=num_classes)


def _sites(model: nn.Module) -> list[str]:
    return [s.name for s in VGG.list_sites(model)]


@pytest.fixture(scope="module")
def vgg11() -> nn.Module:
    """torchvision's VGG-11 (10 classes) under seed 0, in eval mode; never modified."""
    torch.manual_seed(0)
    return get_model("vgg11", weights=None, num_classes=10).eval()


@pytest.mark.parametrize("model", VGG.models)
def test_sites_are_the_relus_after_each_conv(model: str) -> None:
    assert model in list_backbones() and get_backbone(model) is VGG
    with torch.device("meta"):
        net = _build(model)
    sites = VGG.list_sites(net)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(sites) == len(convs) == CONVS[model.removesuffix("_bn")]
    bn = model.endswith("_bn")
    for site, conv in zip(sites, convs, strict=True):
        index = int(site.name.removeprefix("features."))
        assert type(net.features[index]) is nn.ReLU
        assert net.features[index - (2 if bn else 1)] is conv
        assert isinstance(net.features[index - 1], nn.BatchNorm2d) == bn
        assert (site.in_channels, site.out_channels) == (conv.in_channels, conv.out_channels)
        assert site.variants == ("none", "standard")
        assert site.channels("standard") == conv.out_channels
        assert site.block_type == ("conv3x3+bn+relu" if bn else "conv3x3+relu")


def test_vgg16_site_names_and_widths() -> None:
    with torch.device("meta"):
        net = _build("vgg16")
    assert {int(s.name.split(".")[1]): s.out_channels for s in VGG.list_sites(net)} == (
        VGG16_SITES
    )


def test_bundled_space() -> None:
    space = load_space("vgg16")
    assert space.backbone.model == "vgg16_bn"  # plain vgg16 does not learn in 2 epochs
    bn_sites = [2, 5, 9, 12, 16, 19, 22, 26, 29, 32, 36, 39, 42]  # conv, BN, ReLU (, pool)
    assert space.site_names == [f"features.{i}" for i in bn_sites]
    assert [s.out_channels for s in space.selected_sites] == list(VGG16_SITES.values())
    assert space.choices.variant == ["none", "standard"]
    assert space.size == (1 + len(space.choices.reduction)) ** 13


def _record(net: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, Any]:
    """Inputs and outputs of the modules ``names``, cloned as they happen (in-place ReLUs
    rewrite their input afterwards); and the model's output."""
    seen: dict[str, Any] = {}
    handles = []
    for name in names:

        def hook(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
            seen[name] = out.clone()

        def pre(m: nn.Module, args: Any, name: str = name) -> None:
            seen[f"{name}:in"] = args[0].clone()

        module = net.get_submodule(name)
        handles += [module.register_forward_hook(hook), module.register_forward_pre_hook(pre)]
    try:
        with torch.no_grad():
            seen["y"] = net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _se_by_hand(se: SqueezeExcite, u: torch.Tensor) -> torch.Tensor:
    z = u.mean(dim=(2, 3), keepdim=True)
    return u * torch.sigmoid(se.fc2(torch.relu(se.fc1(z))))


@pytest.mark.parametrize("site", ["features.1", "features.4", "features.17"])
def test_standard_scales_the_relu_output(vgg11: nn.Module, site: str) -> None:
    net = insert_se(vgg11, Architecture({site: "standard:4"}), backbone="vgg11").eval()
    index = int(site.split(".")[1])
    conv, after = f"features.{index - 1}", f"features.{index + 1}"
    x = torch.randn(2, 3, 32, 32)
    seen = _record(net, [conv, site, after], x)
    se = net.get_submodule(site).se
    expected = _se_by_hand(se, torch.relu(seen[conv]))
    torch.testing.assert_close(seen[site], expected)  # SE on relu(conv(x)), not on conv(x)
    assert torch.equal(seen[f"{after}:in"], seen[site])  # the next layer reads the SE output
    assert not torch.allclose(seen[site], torch.relu(seen[conv]))
    plain = _record(vgg11, [conv], x)
    torch.testing.assert_close(plain[conv], seen[conv])  # nothing before the site changed
    assert not torch.allclose(plain["y"], seen["y"])


def test_every_chosen_site_gets_one_block_and_nothing_else_changes(vgg11: nn.Module) -> None:
    sites = _sites(vgg11)
    net = insert_se(vgg11, Architecture.uniform(sites, "standard:8"), backbone="vgg11")
    blocks = {n for n, m in net.named_modules() if isinstance(m, SqueezeExcite)}
    assert blocks == {f"{s}.se" for s in sites}
    for name in sites:
        relu = net.get_submodule(name)
        assert isinstance(relu, nn.ReLU) and relu.inplace
        assert relu.se.channels == VGG.list_sites(vgg11)[sites.index(name)].out_channels
    plain = dict(vgg11.named_modules())
    for name, module in net.named_modules():
        if name in plain and name not in sites:
            assert type(module) is type(plain[name])
    assert VGG.list_sites(net) == VGG.list_sites(vgg11)  # sites read the same after insertion


def test_a_saved_model_loads_in_a_process_that_never_built_one(
    vgg11: nn.Module, tmp_path: Path
) -> None:
    net = insert_se(vgg11, Architecture({"features.4": "standard:4"}), backbone="vgg11").eval()
    x = torch.randn(1, 3, 32, 32)
    torch.save({"model": net, "x": x, "y": net(x)}, tmp_path / "whole.pt")
    check = (
        "import sys, torch; d = torch.load(sys.argv[1], weights_only=False); "
        "assert type(d['model'].features[4]).__name__ == 'ReLUWithSE'; "
        "assert torch.equal(d['model'].eval()(d['x']), d['y'])"
    )
    done = subprocess.run([sys.executable, "-c", check, str(tmp_path / "whole.pt")])
    assert done.returncode == 0


@pytest.mark.parametrize("variant", ["pre:4", "post:4", "identity:4", "inner:4", "keep"])
def test_other_variants_are_refused(vgg11: nn.Module, variant: str) -> None:
    name = variant.split(":")[0]
    with pytest.raises(ArchitectureError, match=f"features.4 .*does not take variant '{name}'"):
        insert_se(vgg11, Architecture({"features.4": variant}), backbone="vgg11")
    if name in ("pre", "post", "identity"):
        se = SqueezeExcite(64, reduction=4)
        with pytest.raises(ValueError, match="only variant 'standard'"):
            VGG.wrap(nn.ReLU(inplace=True), se, name)


@pytest.mark.parametrize("variant", ["pre", "post", "identity"])
def test_space_with_a_residual_variant_is_refused(variant: str) -> None:
    with pytest.raises(SpaceError, match=rf"choices\.variant.*'{variant}'.*fits no selected site"):
        load_space("vgg16", {"choices.variant": ["none", "standard", variant]})


def test_images_smaller_than_32_are_refused(vgg11: nn.Module) -> None:
    assert VGG.min_image_size == 32
    with pytest.raises(SpaceError, match=r"data\.image_size.*at least 32x32"):
        load_space("vgg16", {"data.image_size": 31})
    with torch.no_grad():
        assert vgg11(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        with pytest.raises(RuntimeError, match="too small"):
            vgg11(torch.zeros(1, 3, 31, 31))


def test_se_vgg16_paper_figures() -> None:
    """SE-VGG-16 (``standard:16`` after all 13 convs) at 224x224, in exact arithmetic."""
    with torch.device("meta"):
        plain = _build("vgg16", num_classes=1000)
    plain.to_empty(device="cpu")  # no random init of 138 M weights: counting needs none
    with torch.no_grad():
        for tensor in plain.state_dict().values():
            tensor.zero_()
    sites = _sites(plain)
    assert len(sites) == len(PAPER_WIDTHS) == 13
    assert [s.out_channels for s in VGG.list_sites(plain)] == PAPER_WIDTHS
    table = CostTable.build(plain, family=VGG, image_size=224)
    assert [table.shapes[s][1] for s in sites] == [
        (c, s, s) for c, s in zip(PAPER_WIDTHS, PAPER_SIDES, strict=True)
    ]
    assert (table.base_params, table.base_flops) == (VGG16_PARAMS, VGG16_MACS)

    fcs = sum(2 * c * (c // 16) for c in PAPER_WIDTHS)
    squeeze = scale = sum(c * s * s for c, s in zip(PAPER_WIDTHS, PAPER_SIDES, strict=True))
    gate = sum(PAPER_WIDTHS)
    added_flops = squeeze + fcs + gate + scale
    added_params = sum(2 * c * (c // 16) + c // 16 + c for c in PAPER_WIDTHS)
    assert (fcs, squeeze, gate, added_params) == (226_304, 13_547_520, 4_224, 230_792)

    arch = Architecture.uniform(sites, "standard:16")
    expected = (VGG16_PARAMS + added_params, VGG16_MACS + added_flops)
    assert table.costs(arch) == expected
    net = insert_se(plain, arch, backbone="vgg16")
    assert (count_params(net), count_flops(net, image_size=224)) == expected

    # The paper: VGG-16 15.47 -> SE-VGG-16 15.48 GFLOPs. Our full count gives 15.50; the
    # paper's figure fits the FCs plus ONE of the two C*H*W steps (the pooling counted as a
    # layer, the channel-wise multiply left free); the FCs alone would leave 15.47.
    assert round(VGG16_MACS / 1e9, 2) == 15.47
    assert round((VGG16_MACS + added_flops) / 1e9, 2) == 15.50
    assert round((VGG16_MACS + fcs + gate + squeeze) / 1e9, 2) == 15.48
    assert round((VGG16_MACS + fcs + gate) / 1e9, 2) == 15.47


def _random_arch(model: nn.Module, seed: str) -> Architecture:
    rng = random.Random(seed)
    sites = _sites(model)
    arch = {s: rng.choice(["none", "standard:4", "standard:16:max:hardsigmoid"]) for s in sites}
    arch[sites[rng.randrange(len(sites))]] = "standard:8"  # at least one block
    return Architecture(arch)


HEAVY = {m for m in VGG.models if m != "vgg11_bn"}  # ~130 M parameters each to initialise


@pytest.mark.parametrize(
    "model", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in VGG.models]
)
def test_forward_none_and_random(model: str) -> None:
    net = _build(model).eval()
    x = torch.randn(2, 3, 32, 32)
    arch = _random_arch(net, seed=model)
    with torch.no_grad():
        plain = insert_se(net, Architecture(), backbone=model).eval()(x)
        assert torch.equal(plain, net(x))
        y = insert_se(net, arch, backbone=model).eval()(x)
    assert y.shape == plain.shape == (2, 10)
    assert torch.isfinite(y).all() and not torch.allclose(y, plain)
