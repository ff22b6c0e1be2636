"""SE-Inception: an SE block on each Inception module's concatenated output, in GoogLeNet and
Inception-v3, and nothing else changed.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models.googlenet import Inception
from torchvision.models.inception import (
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.space import load_space
from tests.models.backbones.archs import GATE_NAMES, SQUEEZE_NAMES

GOOGLENET = get_backbone("googlenet")
INCEPTION_V3 = get_backbone("inception_v3")
MODELS = (*GOOGLENET.models, *INCEPTION_V3.models)
#: Each model's smallest input side, the size its tests run at.
MIN_SIZE = {"googlenet": 15, "inception_v3": 75}
# (site, block class, in channels, out channels), from torchvision's constructor arguments.
SITES = {
    "googlenet": [
        ("inception3a", "Inception", 192, 64 + 128 + 32 + 32),
        ("inception3b", "Inception", 256, 128 + 192 + 96 + 64),
        ("inception4a", "Inception", 480, 192 + 208 + 48 + 64),
        ("inception4b", "Inception", 512, 160 + 224 + 64 + 64),
        ("inception4c", "Inception", 512, 128 + 256 + 64 + 64),
        ("inception4d", "Inception", 512, 112 + 288 + 64 + 64),
        ("inception4e", "Inception", 528, 256 + 320 + 128 + 128),
        ("inception5a", "Inception", 832, 256 + 320 + 128 + 128),
        ("inception5b", "Inception", 832, 384 + 384 + 128 + 128),
    ],
    "inception_v3": [
        ("Mixed_5b", "InceptionA", 192, 64 + 64 + 96 + 32),
        ("Mixed_5c", "InceptionA", 256, 64 + 64 + 96 + 64),
        ("Mixed_5d", "InceptionA", 288, 64 + 64 + 96 + 64),
        ("Mixed_6a", "InceptionB", 288, 384 + 96 + 288),  # max-pool branch: the input's
        ("Mixed_6b", "InceptionC", 768, 4 * 192),
        ("Mixed_6c", "InceptionC", 768, 4 * 192),
        ("Mixed_6d", "InceptionC", 768, 4 * 192),
        ("Mixed_6e", "InceptionC", 768, 4 * 192),
        ("Mixed_7a", "InceptionD", 768, 320 + 192 + 768),  # max-pool branch: the input's
        ("Mixed_7b", "InceptionE", 1280, 320 + 2 * 384 + 2 * 384 + 192),
        ("Mixed_7c", "InceptionE", 2048, 320 + 2 * 384 + 2 * 384 + 192),
    ],
}


@pytest.fixture(scope="module")
def googlenet() -> nn.Module:
    torch.manual_seed(0)
    return GOOGLENET.build("googlenet", num_classes=10)


@pytest.fixture(scope="module")
def inception_v3() -> nn.Module:
    torch.manual_seed(0)
    return INCEPTION_V3.build("inception_v3", num_classes=10)


@pytest.fixture
def built(request: pytest.FixtureRequest) -> Callable[[str], nn.Module]:
    """The module-scoped plain model of a name (each built once, only when asked for)."""
    return lambda name: request.getfixturevalue(name)


# ------------------------------------------------------------------------------------ sites


def test_both_models_are_registered_as_families_of_their_own() -> None:
    assert {"googlenet", "inception_v3"} <= set(list_backbones())
    assert GOOGLENET.family == "googlenet" and INCEPTION_V3.family == "inception_v3"
    assert (GOOGLENET.min_image_size, INCEPTION_V3.min_image_size) == (15, 75)


@pytest.mark.parametrize("name", MODELS)
def test_sites_are_the_inception_modules(name: str) -> None:
    family = get_backbone(name)
    with torch.device("meta"):
        net = family.build(name, num_classes=10)
    sites = family.list_sites(net)
    expected = SITES[name]
    assert [(s.name, s.block_type, s.in_channels, s.out_channels) for s in sites] == expected
    for site in sites:
        assert site.variants == ("none", "standard")
        assert site.channels("standard") == site.out_channels
        assert not site.existing


@pytest.mark.parametrize("name", MODELS)
def test_site_widths_match_a_forward_pass(name: str, built: Callable[[str], nn.Module]) -> None:
    net = built(name).eval()
    family = get_backbone(name)
    sites = family.list_sites(net)
    seen: dict[str, tuple[int, int]] = {}

    def record(m: nn.Module, args: Any, out: torch.Tensor, name: str) -> None:
        seen[name] = (args[0].shape[1], out.shape[1])

    handles = [
        net.get_submodule(s.name).register_forward_hook(functools.partial(record, name=s.name))
        for s in sites
    ]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, MIN_SIZE[name], MIN_SIZE[name]))
    finally:
        for h in handles:
            h.remove()
    assert seen == {s.name: (s.in_channels, s.out_channels) for s in sites}


@pytest.mark.parametrize("name", MODELS)
def test_min_image_size_is_the_smallest_input_the_model_takes(
    name: str, built: Callable[[str], nn.Module]
) -> None:
    net = built(name).eval()
    least = get_backbone(name).min_image_size
    with torch.no_grad():
        assert net(torch.zeros(1, 3, least, least)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, least - 1, least - 1))


# ----------------------------------------------------------------------------- training mode


@pytest.mark.parametrize("name", MODELS)
def test_training_forward_returns_logits_only(
    name: str, built: Callable[[str], nn.Module]
) -> None:
    """Without auxiliary classifiers, training mode gives a tensor, not a namedtuple."""
    sites = [s.name for s in get_backbone(name).list_sites(built(name))]
    net = insert_se(built(name), Architecture.uniform(sites, "standard:16"), backbone=name)
    out = net.train()(torch.randn(2, 3, MIN_SIZE[name], MIN_SIZE[name]))
    assert type(out) is torch.Tensor and out.shape == (2, 10)
    out.sum().backward()
    assert all(m.se.fc1.weight.grad is not None for m in map(net.get_submodule, sites))


# ---------------------------------------------------------------------------- placement

# One module of every Inception class, as torchvision builds it at one site of each model,
# and an input size that its strided branches (Mixed_6a, Mixed_7a) still take.
MODULES: dict[str, Callable[[], nn.Module]] = {
    "googlenet.inception3a": lambda: Inception(192, 64, 96, 128, 16, 32, 32),
    "Mixed_5b.InceptionA": lambda: InceptionA(192, pool_features=32),
    "Mixed_6a.InceptionB": lambda: InceptionB(288),
    "Mixed_6b.InceptionC": lambda: InceptionC(768, channels_7x7=128),
    "Mixed_7a.InceptionD": lambda: InceptionD(768),
    "Mixed_7b.InceptionE": lambda: InceptionE(1280),
}


@pytest.fixture(params=MODULES, ids=list(MODULES))
def module_case(request: pytest.FixtureRequest) -> tuple[nn.Module, int, torch.Tensor]:
    block = MODULES[request.param]().eval()
    with torch.no_grad():  # non-trivial BN statistics, so that misplacements show
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    [site] = GOOGLENET.list_sites(nn.Sequential(block))  # the same code for both families
    x = torch.randn(2, site.in_channels, 9, 9)
    return block, site.out_channels, x


def _se(channels: int) -> SqueezeExcite:
    se = SqueezeExcite(channels, reduction=4)
    nn.init.normal_(se.fc2.bias)  # a gate far from 0.5 everywhere, so misplacements show
    return se.eval()


def _by_hand(se: SqueezeExcite, u: torch.Tensor) -> torch.Tensor:
    """The SE block of the paper on ``u``, written out from its weights."""
    z = u.mean(dim=(2, 3))
    hidden = nn.functional.linear(z, se.fc1.weight[:, :, 0, 0], se.fc1.bias).relu()
    s = torch.sigmoid(nn.functional.linear(hidden, se.fc2.weight[:, :, 0, 0], se.fc2.bias))
    return u * s[:, :, None, None]


def test_standard_scales_the_concatenated_output(module_case: Any) -> None:
    block, width, x = module_case
    cls = type(block)
    with torch.no_grad():
        reference = block(x)
        branches = block._forward(x)
    assert reference.shape[1] == width == sum(b.shape[1] for b in branches)
    se = _se(width)
    wrapped = GOOGLENET.wrap(copy.deepcopy(block), se, "standard").eval()
    calls: list[str] = []
    seen: list[torch.Tensor] = []
    for name, child in wrapped.named_children():
        child.register_forward_hook(lambda m, args, out, name=name: calls.append(name))
    se.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        y = wrapped(x)
        order = list(calls)
        inner = wrapped._forward(x)  # the inherited helper still runs the plain branches
    assert isinstance(wrapped, cls) and type(wrapped) is not cls
    assert order[-1] == "se" and order.count("se") == 1  # after every branch
    assert set(order[:-1]) == {n for n, _ in block.named_children()}
    [se_input] = seen
    torch.testing.assert_close(se_input, reference)  # on the module's concatenated output
    torch.testing.assert_close(torch.cat(inner, 1), reference)
    torch.testing.assert_close(y, _by_hand(se, reference))
    assert not torch.allclose(y, reference)


def test_googlenet_inception_forward_goes_through_forward_after_the_swap() -> None:
    """GoogLeNet's ``Inception.forward`` calls ``self._forward``: the swapped class must still
    reach the (inherited) helper, and a ``_forward`` of its own would be used."""
    block = Inception(192, 64, 96, 128, 16, 32, 32).eval()
    wrapped = GOOGLENET.wrap(copy.deepcopy(block), _se(256), "standard")
    assert type(wrapped)._forward is Inception._forward
    x = torch.randn(1, 192, 5, 5)
    marker = [torch.zeros(1, 256, 5, 5)]
    wrapped._forward = lambda x: marker  # type: ignore[method-assign]
    with torch.no_grad():
        assert torch.equal(wrapped(x), torch.zeros(1, 256, 5, 5))  # SE of zeros is zeros


def test_wrap_refuses_other_placements() -> None:
    block = InceptionA(192, pool_features=32)
    for variant in ("pre", "post", "identity", "inner"):
        with pytest.raises(ValueError, match="only on its output"):
            INCEPTION_V3.wrap(block, SqueezeExcite(256), variant)
    with pytest.raises(ValueError, match="only on its output"):
        INCEPTION_V3.wrap(block, None, "none")


# ----------------------------------------------------------------------- names and refusals


@pytest.mark.parametrize("name", MODELS)
def test_insertion_keeps_each_modules_class_and_its_sites(name: str) -> None:
    family = get_backbone(name)
    with torch.device("meta"):
        net = family.build(name, num_classes=10)
    sites = [s.name for s in family.list_sites(net)]
    arch = Architecture({s: "standard:16" for s in sites[::2]})
    out = insert_se(net, arch, backbone=name)
    added = set(out.state_dict()) - set(net.state_dict())
    assert {k.rsplit(".se.", 1)[0] for k in added} == set(sites[::2])
    assert all(k.split(".")[1] == "se" for k in added)  # right under the module
    assert all(isinstance(out.get_submodule(s), type(net.get_submodule(s))) for s in sites)
    assert not any(hasattr(net.get_submodule(s), "se") for s in sites)  # input untouched
    assert [s.name for s in family.list_sites(out)] == sites


@pytest.mark.parametrize("variant", ["pre", "post", "identity", "inner", "keep"])
def test_a_variant_an_inception_module_cannot_take_is_refused(variant: str) -> None:
    with torch.device("meta"):
        net = GOOGLENET.build("googlenet", num_classes=10)
    arch = Architecture({"inception4a": f"{variant}:16" if variant != "keep" else "keep"})
    with pytest.raises(ArchitectureError, match=rf"inception4a .*variant '{variant}'"):
        insert_se(net, arch, backbone="googlenet")


@pytest.mark.parametrize(("name", "variant"), [("googlenet", "pre"), ("inception_v3", "identity")])
def test_a_space_with_a_variant_no_site_takes_is_refused(
    name: str, variant: str, write_space: Callable[..., Path]
) -> None:
    path = write_space(
        f"""
        backbone: {{model: {name}, num_classes: 10}}
        choices: {{variant: [none, standard, {variant}], reduction: [16]}}
        data: {{image_size: {MIN_SIZE[name]}}}
        """
    )
    with pytest.raises(SpaceError, match=rf"choices\.variant.*{variant}.*no shortcut"):
        load_space(path)


@pytest.mark.parametrize("name", MODELS)
def test_a_space_below_the_smallest_input_is_refused(
    name: str, write_space: Callable[..., Path]
) -> None:
    least = MIN_SIZE[name]
    path = write_space(f"backbone: {{model: {name}, num_classes: 10}}\n")
    assert load_space(path, {"data.image_size": least}).data.image_size == least
    with pytest.raises(SpaceError, match=rf"data\.image_size.*at least {least}x{least}"):
        load_space(path, {"data.image_size": least - 1})


# ---------------------------------------------------------------------------------- forward

CHOICES = [
    SEChoice(v, r, sq, g)
    for v in ("none", "standard")
    for r in (2, 16)
    for sq in SQUEEZE_NAMES
    for g in GATE_NAMES
]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "inception_v3" else n for n in MODELS],
)
def test_forward_of_none_and_a_random_architecture(
    name: str, built: Callable[[str], nn.Module]
) -> None:
    net = built(name).eval()
    sites = [s.name for s in get_backbone(name).list_sites(net)]
    rng = random.Random(1)
    arch = Architecture({s: rng.choice(CHOICES) for s in sites})
    assert any(arch.choice(s).adds_block for s in sites)
    assert any(arch.choice(s).is_none for s in sites)
    x = torch.randn(1, 3, MIN_SIZE[name], MIN_SIZE[name])
    plain, plain_features = _run(net, x)
    y_none, none_features = _run(insert_se(net, Architecture(), backbone=name), x)
    y, features = _run(insert_se(net, arch, backbone=name), x)
    assert torch.equal(y_none, plain) and torch.equal(none_features, plain_features)
    assert y.shape == (1, 10) and torch.isfinite(y).all()
    # In eval mode a fresh model's activations shrink layer by layer (weights of std 0.01 in
    # GoogLeNet, fresh BN statistics), so its logits are about the classifier's bias: the
    # blocks' effect is checked, relatively, on the pooled features the classifier sees.
    assert not torch.allclose(features, plain_features, rtol=1e-2, atol=0)


def _run(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and pooled features of ``net`` on ``x``, in eval mode."""
    pooled = []
    handle = net.avgpool.register_forward_hook(lambda m, args, out: pooled.append(out))
    try:
        with torch.no_grad():
            logits = net.eval()(x)
    finally:
        handle.remove()
    return logits, pooled[0]
