"""DenseNet: one plain site per dense block, the SE block on its concatenated output.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models import get_model
from torchvision.models.densenet import _DenseBlock

from se_search.costs.flops import CostTable, count_flops, count_params
from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.backbones.densenet import DenseBlockSE
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.space import load_space

DENSENET = get_backbone("densenet121")
BLOCKS = [f"features.denseblock{i}" for i in range(1, 5)]
# Per model: (input, output) channels of each dense block, from growth rate, initial width
# and block config: DenseNet-121 k=32, 64, (6, 12, 24, 16); -161 k=48, 96, (6, 12, 36, 24);
# -169 k=32, 64, (6, 12, 32, 32); -201 k=32, 64, (6, 12, 48, 32). Transitions halve.
WIDTHS = {
    "densenet121": [(64, 256), (128, 512), (256, 1024), (512, 1024)],
    "densenet161": [(96, 384), (192, 768), (384, 2112), (1056, 2208)],
    "densenet169": [(64, 256), (128, 512), (256, 1280), (640, 1664)],
    "densenet201": [(64, 256), (128, 512), (256, 1792), (896, 1920)],
}
LAYERS = {
    "densenet121": [6, 12, 24, 16],
    "densenet161": [6, 12, 36, 24],
    "densenet169": [6, 12, 32, 32],
    "densenet201": [6, 12, 48, 32],
}


@pytest.fixture(scope="module")
def densenet121() -> nn.Module:
    """torchvision's DenseNet-121 (10 classes) under seed 0, in eval mode; never modified."""
    torch.manual_seed(0)
    return get_model("densenet121", weights=None, num_classes=10).eval()


def _randomise_norms(module: nn.Module) -> nn.Module:
    """Non-trivial BN statistics (in place), so that misplacements show."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("model", DENSENET.models)
def test_sites_are_the_dense_blocks(model: str) -> None:
    assert model in list_backbones() and get_backbone(model) is DENSENET
    with torch.device("meta"):
        net = DENSENET.build(model, num_classes=10)
    sites = DENSENET.list_sites(net)
    assert [s.name for s in sites] == BLOCKS
    assert [(s.in_channels, s.out_channels) for s in sites] == WIDTHS[model]
    assert [s.block_type for s in sites] == [f"dense block x{n}" for n in LAYERS[model]]
    f = net.features
    following = [f.transition1.norm, f.transition2.norm, f.transition3.norm, f.norm5]
    for site, norm in zip(sites, following, strict=True):
        block = net.get_submodule(site.name)
        assert type(block) is _DenseBlock and len(block) == LAYERS[model][BLOCKS.index(site.name)]
        assert site.in_channels == block.denselayer1.norm1.num_features
        assert site.out_channels == norm.num_features  # what the next module reads
        assert site.variants == ("none", "standard")
        assert site.channels("standard") == site.out_channels


def test_bundled_space() -> None:
    space = load_space("densenet121")
    assert space.site_names == BLOCKS
    assert space.choices.variant == ["none", "standard"]
    assert space.size == (1 + len(space.choices.reduction)) ** 4


def _record(net: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, Any]:
    """Per module of ``names``: its input (``name:in``, cloned; a dense layer's is a list)
    and its output, for each call; and the output of ``net``."""
    seen: dict[str, Any] = {}
    handles = []
    for name in names:

        def pre(m: nn.Module, args: Any, name: str = name) -> None:
            arg = args[0]
            seen.setdefault(f"{name}:in", []).append(
                [a.clone() for a in arg] if isinstance(arg, list) else arg.clone()
            )

        def hook(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
            seen.setdefault(name, []).append(out.clone())

        module = net.get_submodule(name)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(hook)]
    try:
        with torch.no_grad():
            seen["y"] = net(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("site", [1, 2])
def test_standard_scales_the_concatenated_block_output(densenet121: nn.Module, site: int) -> None:
    plain = _randomise_norms(
        copy.deepcopy(densenet121.features.get_submodule(f"denseblock{site}"))
    )
    in_channels, out_channels = WIDTHS["densenet121"][site - 1]
    se = SqueezeExcite(out_channels, reduction=4)
    nn.init.normal_(se.fc2.bias)  # a gate far from 0.5, so misplacements show
    block = DENSENET.wrap(copy.deepcopy(plain), se, "standard").eval()
    assert type(block) is DenseBlockSE and isinstance(block, _DenseBlock)
    layers = [n for n in block if n != "se"]
    assert len(layers) == LAYERS["densenet121"][site - 1] and list(block)[-1] == "se"
    x = torch.randn(2, in_channels, 32 // 2 ** (site + 1), 32 // 2 ** (site + 1))
    seen = _record(block, ["se", *layers], x)
    # Each dense layer reads the block input and the maps of the layers before it, never the
    # SE block's; the SE block runs once, on everything the block made.
    for i, layer in enumerate(layers):
        [inputs] = seen[f"{layer}:in"]
        assert len(inputs) == i + 1 and torch.equal(inputs[0], x)
    [last_in], [last_out] = seen[f"{layers[-1]}:in"], seen[layers[-1]]
    [se_in], [se_out] = seen["se:in"], seen["se"]
    assert torch.equal(se_in, torch.cat([*last_in, last_out], 1))
    assert se_in.shape[1] == out_channels
    with torch.no_grad():
        torch.testing.assert_close(se_in, plain.eval()(x))  # the plain block's output
        gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(se_in.mean(dim=(2, 3), keepdim=True)))))
    torch.testing.assert_close(se_out, se_in * gate)
    assert torch.equal(seen["y"], se_out)  # the block's output is the SE block's


@pytest.fixture(scope="module")
def uniform(densenet121: nn.Module) -> nn.Module:
    """DenseNet-121 with ``standard:8`` on all four blocks."""
    arch = Architecture.uniform(BLOCKS, "standard:8")
    return insert_se(densenet121, arch, backbone="densenet121").eval()


def test_the_next_module_reads_the_se_output(uniform: nn.Module) -> None:
    names = [*BLOCKS, *(f"{b}.se" for b in BLOCKS), *(f"{b}.denselayer1" for b in BLOCKS)]
    following = ["features.transition1", "features.transition2", "features.transition3"]
    seen = _record(uniform, [*names, *following, "features.norm5"], torch.randn(1, 3, 32, 32))
    for block, after in zip(BLOCKS, [*following, "features.norm5"], strict=True):
        [out], [se_out] = seen[block], seen[f"{block}.se"]
        assert torch.equal(out, se_out) and torch.equal(seen[f"{after}:in"][0], se_out)
    assert all(len(seen[f"{b}.denselayer1:in"]) == 1 for b in BLOCKS)  # each ran once
    assert seen["y"].shape == (1, 10) and torch.isfinite(seen["y"]).all()


def test_each_block_sits_on_its_dense_block(densenet121: nn.Module, uniform: nn.Module) -> None:
    blocks = {n for n, m in uniform.named_modules() if isinstance(m, SqueezeExcite)}
    assert blocks == {f"{b}.se" for b in BLOCKS}
    assert [uniform.get_submodule(b).se.channels for b in BLOCKS] == [256, 512, 1024, 1024]
    assert DENSENET.list_sites(uniform) == DENSENET.list_sites(densenet121)


@pytest.mark.parametrize("variant", ["pre:4", "post:4", "identity:4", "inner:4", "keep"])
def test_other_variants_are_refused(densenet121: nn.Module, variant: str) -> None:
    name = variant.split(":")[0]
    with pytest.raises(ArchitectureError, match=f"denseblock2 .*does not take variant '{name}'"):
        insert_se(
            densenet121, Architecture({"features.denseblock2": variant}), backbone="densenet121"
        )
    block = densenet121.features.denseblock2
    with pytest.raises(ValueError, match="only variant 'standard'"):
        DENSENET.wrap(block, SqueezeExcite(512, reduction=4), name)
    assert type(block) is _DenseBlock and "se" not in block  # the refusal changed nothing


@pytest.mark.parametrize("variant", ["pre", "post", "identity"])
def test_space_with_a_residual_variant_is_refused(variant: str) -> None:
    with pytest.raises(SpaceError, match=rf"choices\.variant.*'{variant}'.*fits no selected site"):
        load_space("densenet121", {"choices.variant": ["none", "standard", variant]})


def test_images_smaller_than_29_are_refused(densenet121: nn.Module) -> None:
    assert DENSENET.min_image_size == 29
    with pytest.raises(SpaceError, match=r"data\.image_size.*at least 29x29"):
        load_space("densenet121", {"data.image_size": 28})
    assert load_space("densenet121", {"data.image_size": 29}).data.image_size == 29
    with torch.no_grad():
        assert densenet121(torch.zeros(1, 3, 29, 29)).shape == (1, 10)
        with pytest.raises(RuntimeError, match="too small"):
            densenet121(torch.zeros(1, 3, 28, 28))


def test_uniform_costs_by_hand(densenet121: nn.Module, uniform: nn.Module) -> None:
    table = CostTable.build(densenet121, family=DENSENET, image_size=32)
    flops = table.base_flops  # count_flops(densenet121): the none architecture is a copy
    assert table.costs(Architecture()) == (count_params(densenet121), flops)
    # The uniform architecture, by hand too: widths 256..1024 at 8, 4, 2, 1 pixels a side.
    costs = count_params(uniform), count_flops(uniform, image_size=32)
    assert table.costs(Architecture.uniform(BLOCKS, "standard:8")) == costs
    widths, sides = [256, 512, 1024, 1024], [8, 4, 2, 1]
    added = (
        sum(2 * c * (c // 8) + c // 8 + c for c in widths),
        sum(2 * c * s * s + 2 * c * (c // 8) + c for c, s in zip(widths, sides, strict=True)),
    )
    assert (costs[0] - table.base_params, costs[1] - flops) == added


@pytest.mark.parametrize("model", DENSENET.models)  # under a second each
def test_forward_none_and_random(model: str) -> None:
    net = DENSENET.build(model, num_classes=10).eval()
    rng = random.Random(model)  # a str seed: the same in every process
    arch = {s: rng.choice(["none", "standard:4", "standard:16:max:hardsigmoid"]) for s in BLOCKS}
    arch[BLOCKS[rng.randrange(4)]] = "standard:8"  # at least one block
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = insert_se(net, Architecture(), backbone=model).eval()(x)
        assert torch.equal(plain, net(x))
        y = insert_se(net, Architecture(arch), backbone=model).eval()(x)
    assert y.shape == plain.shape == (1, 10)
    assert torch.isfinite(y).all() and not torch.allclose(y, plain)
