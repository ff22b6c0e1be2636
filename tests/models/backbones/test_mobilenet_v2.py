"""MobileNetV2: its 17 inverted residual blocks as sites, and where each variant puts SE.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.models.variants import ResidualSE
from se_search.space import load_space
from tests.models.backbones.archs import random_arch

FAMILY = get_backbone("mobilenet_v2")
MODELS = ("mobilenet_v2",)
# torchvision's setting (expand ratio t, width c, repeats n, stride s) spelled out per block.
IN = [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160]
OUT = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
EXPAND = [1] + [6] * 16
SKIP = {3, 5, 6, 8, 9, 10, 12, 13, 15, 16}  # stride 1 and as wide out as in


def _skeleton() -> nn.Module:
    with torch.device("meta"):
        return FAMILY.build("mobilenet_v2", num_classes=10)


def test_sites_are_the_inverted_residual_blocks() -> None:
    assert set(MODELS) <= set(list_backbones()) and FAMILY.family == "mobilenet_v2"
    net = _skeleton()
    sites = FAMILY.list_sites(net)
    assert [s.name for s in sites] == [f"features.{i}" for i in range(1, 18)]
    assert [s.in_channels for s in sites] == IN
    assert [s.out_channels for s in sites] == OUT
    for i, site in enumerate(sites, start=1):
        block = net.get_submodule(site.name)
        hidden = IN[i - 1] * EXPAND[i - 1]
        assert site.channels("inner") == hidden == block.conv[-3][0].out_channels
        assert site.channels("standard") == site.out_channels
        assert block.use_res_connect == (i in SKIP)
        if i in SKIP:
            assert set(site.variants) == {"none", "standard", "pre", "post", "identity", "inner"}
            assert site.channels("pre") == site.channels("identity") == site.in_channels
        else:
            assert site.variants == ("none", "standard", "inner")
        assert not site.existing and site.act == "relu"


@pytest.fixture(scope="module")
def blocks() -> nn.Module:
    """A MobileNetV2 in eval mode with non-trivial BN statistics, so misplacements show."""
    torch.manual_seed(0)
    net = get_model("mobilenet_v2", weights=None, num_classes=10).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return net


def _case(net: nn.Module, name: str, variant: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(plain block, wrapped copy, input) for ``variant`` at block ``name``."""
    block = net.get_submodule(name)
    site = {s.name: s for s in FAMILY.list_sites(net)}[name]
    se = SqueezeExcite(site.channels(variant), reduction=4)
    nn.init.normal_(se.fc2.bias)  # gates far from 0.5 everywhere
    wrapped = FAMILY.wrap(copy.deepcopy(block), se, variant).eval()
    x = torch.randn(2, site.in_channels, 8, 8)
    return block, wrapped, x


# variant -> the wrapped block's output, by hand from its (adopted) submodules.
RESIDUAL_FORMULAS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "standard": lambda m, x: x + m.se(m.conv(x)),
    "pre": lambda m, x: x + m.conv(m.se(x)),
    "post": lambda m, x: m.se(x + m.conv(x)),
    "identity": lambda m, x: m.se(x) + m.conv(x),
}


@pytest.mark.parametrize("variant", RESIDUAL_FORMULAS)
def test_residual_variants_at_a_block_with_a_skip(blocks: nn.Module, variant: str) -> None:
    block, wrapped, x = _case(blocks, "features.5", variant)
    assert isinstance(wrapped, ResidualSE) and wrapped.conv is not block.conv
    with torch.no_grad():
        fused = wrapped(x)
        wrapped.fused = False
        y = wrapped(x)
        assert torch.equal(y, RESIDUAL_FORMULAS[variant](wrapped, x))
        torch.testing.assert_close(fused, y, rtol=0, atol=1e-5)
        assert not torch.allclose(y, block(x), atol=1e-3)  # the SE block changes something
        others = [f(wrapped, x) for v, f in RESIDUAL_FORMULAS.items() if v != variant]
        assert not any(torch.allclose(y, o, atol=1e-3) for o in others)


def test_standard_without_a_skip_scales_the_blocks_output(blocks: nn.Module) -> None:
    block, wrapped, x = _case(blocks, "features.4", "standard")
    assert isinstance(wrapped, type(block)) and "se" in dict(wrapped.named_children())
    with torch.no_grad():
        y = wrapped(x)
        assert torch.equal(y, wrapped.se(wrapped.conv(x)))
        torch.testing.assert_close(wrapped.conv(x), block(x))
        assert not torch.allclose(y, block(x), atol=1e-3)


@pytest.mark.parametrize("name", ["features.1", "features.4", "features.5"])
def test_inner_scales_the_expanded_map_after_the_depthwise_conv(
    blocks: nn.Module, name: str
) -> None:
    block, wrapped, x = _case(blocks, name, "inner")
    assert type(wrapped) is type(block)  # still torchvision's block, one child more inside
    depthwise = wrapped.conv[-3]
    assert depthwise[0].groups == depthwise[0].in_channels  # the depthwise conv
    assert list(dict(depthwise.named_children())) == ["0", "1", "2", "se"]
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        depthwise[2].register_forward_hook(lambda m, a, out: seen.update(act=out.clone())),
        wrapped.conv[-3].se.register_forward_hook(lambda m, a, out: seen.update(se=out.clone())),
        wrapped.conv[-2].register_forward_pre_hook(lambda m, a: seen.update(proj=a[0].clone())),
    ]
    with torch.no_grad():
        y = wrapped(x)
        for h in hooks:
            h.remove()
        assert torch.equal(seen["se"], depthwise.se(seen["act"]))  # right after ReLU6
        assert torch.equal(seen["proj"], seen["se"])  # and what the projection reads
        assert seen["se"].shape[1] == wrapped.conv[-2].in_channels  # the expanded width
        assert seen["se"].shape[-2:] == y.shape[-2:]  # the output's spatial size
        branch = wrapped.conv[-1](wrapped.conv[-2](seen["se"]))
        torch.testing.assert_close(y, x + branch if block.use_res_connect else branch)
        assert not torch.allclose(y, block(x), atol=1e-3)


def test_refusals() -> None:
    net = get_model("mobilenet_v2", weights=None, num_classes=10)
    with pytest.raises(ArchitectureError, match=r"features\.4 .*'identity'"):
        insert_se(net, Architecture({"features.4": "identity:4"}), backbone="mobilenet_v2")
    with pytest.raises(ArchitectureError, match=r"features\.3 .*'keep'"):
        insert_se(net, Architecture({"features.3": "keep"}), backbone="mobilenet_v2")
    with pytest.raises(ValueError, match="needs a block with a skip"):
        FAMILY.wrap(net.features[2], SqueezeExcite(16), "pre")
    with pytest.raises(ValueError, match="not one of MobileNetV2's placements"):
        FAMILY.wrap(net.features[3], SqueezeExcite(24), "none")


@pytest.mark.parametrize(
    ("text", "index", "variant"),
    [
        ("choices: {variant: [none, keep]}", 1, "keep"),  # no site holds an SE block
        ("sites: [features.1, features.2]\nchoices: {variant: [none, inner, pre]}", 2, "pre"),
    ],
)
def test_a_space_listing_a_variant_no_site_takes_fails_to_load(
    write_space: Callable[..., Path], text: str, index: int, variant: str
) -> None:
    path = write_space(f"backbone: {{model: mobilenet_v2}}\n{text}\n")
    with pytest.raises(SpaceError, match=rf"choices\.variant\[{index}\].*'{variant}'"):
        load_space(path)


def test_last_norm_is_the_projection_bn_of_blocks_with_a_skip() -> None:
    net = get_model("mobilenet_v2", weights=None, num_classes=10).eval()
    assert FAMILY.last_norm(net.features[2]) is None  # zeroing it would cut the network
    arch = Architecture({"features.3": "pre:4", "features.4": "standard:4"})
    built = insert_se(net, arch, backbone="mobilenet_v2").eval()
    assert FAMILY.last_norm(built.features[4]) is None
    for block in (net.features[5], built.features[3]):  # plain, and wrapped in a ResidualSE
        norm = FAMILY.last_norm(block)
        assert norm is block.conv[-1] and isinstance(norm, nn.BatchNorm2d)
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.zero_()
            x = torch.randn(1, norm.num_features, 8, 8)
            assert torch.equal(block(x), x)  # zero-init makes the block the identity


@pytest.mark.parametrize("model", MODELS)
def test_forward_of_none_and_a_random_architecture(model: str) -> None:
    net = FAMILY.build(model, num_classes=10)  # train mode: BN on batch statistics
    arch = random_arch(FAMILY.list_sites(net), random.Random(3))
    assert len(arch) > 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = insert_se(net, Architecture(), backbone=model)(x)
        with_se = insert_se(net, arch, backbone=model)(x)
    assert plain.shape == with_se.shape == (2, 10)
    assert torch.isfinite(with_se).all()
    assert not torch.allclose(plain, with_se, rtol=1e-3, atol=0)
