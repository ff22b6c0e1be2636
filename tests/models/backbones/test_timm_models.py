"""timm's Inception-ResNet-v2, Inception-v4 and SENet-154 (an optional extra).

The default tests build the real timm blocks in small networks (or full models on the meta
device); the full-width models are built only by test_contract.py, in tests marked slow.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import random
import re
import sys
from typing import Any

import pytest
import torch
from torch import nn

from se_search.costs.flops import CostTable, count_flops, count_module_flops, count_params
from se_search.errors import ArchitectureError, BackboneError, SpaceError
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.backbones.timm_models import EXTRA
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.models.variants import ResidualSE
from se_search.space import load_space
from tests.models.backbones.archs import GATE_NAMES, SQUEEZE_NAMES

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is an optional extra")

IRV2 = get_backbone("timm/inception_resnet_v2")
V4 = get_backbone("timm/inception_v4")
SENET = get_backbone("timm/senet154")
MODELS = {
    # name: (family, smallest input, site count)
    "timm/inception_resnet_v2": (IRV2, 75, 40),
    "timm/inception_v4": (V4, 75, 16),
    "timm/legacy_senet154": (SENET, 3, 50),
    "timm/senet154": (SENET, 3, 50),
}


# --------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One intra-op thread: these tensors are tiny, and on a busy CPU a second thread only
    waits (thop's profile of a small model: 0.1 s on one thread, 1.7 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _conv_block() -> Any:
    """The conv block timm builds Inception-v4 and Inception-ResNet-v2 with."""
    from timm.layers import ConvNormAct

    return functools.partial(
        ConvNormAct,
        padding=0,
        norm_layer="batchnorm2d",
        act_layer="relu",
        norm_kwargs={"eps": 1e-3},
        act_kwargs={"inplace": True},
    )


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so that misplacements show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _tiny_irv2() -> nn.Module:
    """timm's residual Inception blocks at their real widths: two Block35s (three branches, a
    ReLU ``act``) and the last Block8 (two branches, no ReLU)."""
    from timm.models.inception_resnet_v2 import Block8, Block35

    cb = _conv_block()
    return nn.Sequential(
        nn.Conv2d(3, 320, 3, padding=1),
        Block35(scale=0.17, conv_block=cb),
        Block35(scale=0.17, conv_block=cb),
        nn.Conv2d(320, 2080, 1, stride=2),
        Block8(no_relu=True, conv_block=cb),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2080, 10),
    )


def _v4_module(kind: str) -> nn.Module:
    module = importlib.import_module("timm.models.inception_v4")
    return getattr(module, kind)(_conv_block())


def _tiny_v4() -> nn.Module:
    """Two InceptionAs and a ReductionA (whose max-pool branch passes its input through)."""
    return nn.Sequential(
        nn.Conv2d(3, 384, 3, padding=1),
        _v4_module("InceptionA"),
        _v4_module("InceptionA"),
        _v4_module("ReductionA"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1024, 10),
    )


def _tiny_legacy_senet() -> nn.Module:
    """Two of timm's legacy SEBottlenecks (SENet-154's block), one with a projection."""
    from timm.models.senet import SEBottleneck

    down = nn.Sequential(nn.Conv2d(128, 256, 1, stride=2, bias=False), nn.BatchNorm2d(256))
    return nn.Sequential(
        nn.Conv2d(3, 128, 3, padding=1, bias=False),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        SEBottleneck(128, 32, groups=8, reduction=16),
        SEBottleneck(128, 64, groups=8, reduction=16, stride=2, downsample=down),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


def _tiny_timm_senet() -> nn.Module:
    """timm's senet154 recipe (a ResNet of SE Bottlenecks, deep stem), 1 block per stage,
    128 channels: its SE blocks squeeze to 8 = 128 // 16."""
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(
        block=Bottleneck,
        layers=(1, 1, 1, 1),
        channels=(32, 32, 32, 32),
        cardinality=8,
        base_width=4,
        stem_width=16,
        stem_type="deep",
        down_kernel_size=3,
        block_reduce_first=2,
        block_args={"attn_layer": "se"},
        num_classes=10,
    )


TINY = {
    # name: (builder, backbone name whose family applies, input size)
    "irv2": (_tiny_irv2, "timm/inception_resnet_v2", 8),
    "v4": (_tiny_v4, "timm/inception_v4", 11),
    "legacy_senet": (_tiny_legacy_senet, "timm/legacy_senet154", 8),
    "timm_senet": (_tiny_timm_senet, "timm/senet154", 16),
}


def _tiny(kind: str) -> tuple[nn.Module, str, int]:
    build, backbone, size = TINY[kind]
    return _randomize_norms(build()), backbone, size


def _trace(block: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, Any, Any]], torch.Tensor]:
    """Run ``block`` on ``x``; (child name, inputs, output) per child call, in call order.

    Inputs and outputs are copied as they pass, so in-place ReLUs do not rewrite them.
    """
    events: list[tuple[str, Any, Any]] = []
    pending: dict[str, Any] = {}
    handles = []
    for name, child in block.named_children():

        def pre(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            pending[name] = [a.clone() for a in args]

        def post(m: nn.Module, args: Any, out: torch.Tensor, name: str = name) -> None:
            events.append((name, pending.pop(name), out.clone()))

        handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
    try:
        with torch.no_grad():
            y = block(x)
    finally:
        for h in handles:
            h.remove()
    return events, y


def _events(events: list[tuple[str, Any, Any]], name: str) -> list[tuple[Any, Any]]:
    return [(i, o) for n, i, o in events if n == name]


def _se(channels: int, reduction: int = 4) -> SqueezeExcite:
    se = SqueezeExcite(channels, reduction=reduction)
    nn.init.normal_(se.fc2.bias)  # a gate far from 0.5 everywhere, so misplacements show
    return se.eval()


def _random_archs(sites: list[Any], n: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    archs = []
    for _ in range(n):
        choices = {}
        for site in sites:
            variant = rng.choice(site.variants)
            if variant in ("none", "keep"):
                choices[site.name] = SEChoice(variant)
            else:
                choices[site.name] = SEChoice(
                    variant,
                    rng.choice((2, 16)),
                    rng.choice(SQUEEZE_NAMES),
                    rng.choice(GATE_NAMES),
                )
        archs.append(Architecture(choices))
    return archs


def _skeleton(name: str) -> nn.Module:
    family = get_backbone(name)
    with torch.device("meta"):
        return family.build(name, num_classes=10)


# ---------------------------------------------------------------- registry, optional import


def test_registered_with_the_timm_prefix_one_family_per_input_size() -> None:
    names = set(list_backbones())
    assert set(MODELS) <= names
    assert not {"inception_resnet_v2", "inception_v4", "legacy_senet154"} & names
    for name, (family, least, _) in MODELS.items():
        assert get_backbone(name) is family and name in family.models
        assert family.min_image_size == least
    assert {IRV2.family, V4.family, SENET.family} == {
        "timm_inception_resnet_v2",
        "timm_inception_v4",
        "timm_senet",
    }


def test_the_module_imports_without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the module needs no timm (it is imported inside the families' methods);
    the families it then registers refuse their models, naming the extra to install."""
    import se_search.models.backbones as backbones

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails
    monkeypatch.delitem(sys.modules, "se_search.models.backbones.timm_models")
    monkeypatch.setattr(backbones, "timm_models", backbones.timm_models)  # restored after
    others = {k: v for k, v in backbones._REGISTRY.items() if k not in MODELS}
    monkeypatch.setattr(backbones, "_REGISTRY", others)  # room to register the names again
    fresh = importlib.import_module("se_search.models.backbones.timm_models")
    family = backbones.get_backbone("timm/inception_v4")
    assert family is not V4 and type(family) is fresh.InceptionV4Family
    with pytest.raises(BackboneError, match=re.escape(EXTRA)):
        family.check_available("timm/inception_v4")


def test_without_timm_models_and_spaces_are_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, write_space: Any
) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails
    for name, (family, _, _) in MODELS.items():
        with pytest.raises(BackboneError, match=re.escape(EXTRA)):
            family.check_available(name)
        with pytest.raises(BackboneError, match=re.escape(EXTRA)):
            family.build(name, num_classes=10)
    path = write_space(
        """
        backbone: {source: timm, model: inception_v4}
        data: {image_size: 75}
        """
    )
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert "backbone.model" in str(err.value) and EXTRA in str(err.value)
    assert "timm/inception_v4" in str(err.value)


@needs_timm
def test_a_timm_without_the_model_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    monkeypatch.setattr(timm, "is_model", lambda name: False)
    with pytest.raises(BackboneError, match=r"no model 'senet154'.*--upgrade"):
        SENET.check_available("timm/senet154")


@needs_timm
def test_spaces_name_timm_models_with_or_without_the_prefix(write_space: Any) -> None:
    for model in ("inception_v4", "timm/inception_v4"):
        space = load_space(
            write_space(f"backbone: {{source: timm, model: {model}}}\ndata: {{image_size: 75}}")
        )
        assert space.backbone.model == "timm/inception_v4" and space.backbone.source == "timm"
        assert len(space.site_names) == 16 and space.family is V4
    bundled = load_space("timm_inception_v4")
    assert bundled.backbone.model == "timm/inception_v4"
    assert bundled.site_names == [f"features.{i}" for i in range(6, 22)]
    assert bundled.choices.variant == ["none", "standard"]
    assert bundled.data.image_size == V4.min_image_size == 75
    with pytest.raises(SpaceError, match=r"data\.image_size.*at least 75x75"):
        load_space("timm_inception_v4", {"data.image_size": 74})


# ------------------------------------------------------------------------------ site lists


def _shapes_on_meta(name: str, image_size: int) -> tuple[list[Any], dict[str, Any]]:
    """The sites of ``name`` and each site module's (input, output) channels, by a meta pass."""
    net = _skeleton(name).eval()
    sites = get_backbone(name).list_sites(net)
    seen: dict[str, Any] = {}
    for site in sites:

        def hook(m: nn.Module, args: Any, out: torch.Tensor, name: str = site.name) -> None:
            seen[name] = (args[0].shape[1], out.shape[1])

        net.get_submodule(site.name).register_forward_hook(hook)
    with torch.no_grad():
        net(torch.empty(1, 3, image_size, image_size, device="meta"))
    return sites, seen


def _check_against_forward(sites: list[Any], seen: dict[str, Any]) -> None:
    for site in sites:
        assert seen[site.name] == (site.in_channels, site.out_channels), site.name


@needs_timm
def test_inception_resnet_v2_sites_are_its_residual_blocks() -> None:
    sites, seen = _shapes_on_meta("timm/inception_resnet_v2", 75)
    names = [f"repeat.{i}" for i in range(10)] + [f"repeat_1.{i}" for i in range(20)]
    names += [f"repeat_2.{i}" for i in range(9)] + ["block8"]
    assert [s.name for s in sites] == names
    assert [s.block_type for s in sites] == ["Block35"] * 10 + ["Block17"] * 20 + ["Block8"] * 10
    assert [s.out_channels for s in sites] == [320] * 10 + [1088] * 20 + [2080] * 10
    _check_against_forward(sites, seen)
    for site in sites:
        assert site.variants == ("none", "standard", "pre", "post", "identity")
        assert site.channels("pre") == site.in_channels == site.out_channels
        assert not site.existing


@needs_timm
def test_inception_v4_sites_are_its_inception_modules() -> None:
    sites, seen = _shapes_on_meta("timm/inception_v4", 75)
    assert [s.name for s in sites] == [f"features.{i}" for i in range(6, 22)]
    kinds = ["InceptionA"] * 4 + ["ReductionA"] + ["InceptionB"] * 7 + ["ReductionB"]
    assert [s.block_type for s in sites] == [*kinds, "InceptionC", "InceptionC", "InceptionC"]
    assert [s.in_channels for s in sites] == [384] * 5 + [1024] * 8 + [1536] * 3
    assert [s.out_channels for s in sites] == [384] * 4 + [1024] * 8 + [1536] * 4
    _check_against_forward(sites, seen)
    assert all(s.variants == ("none", "standard") for s in sites)


@needs_timm
@pytest.mark.parametrize(("name", "attr"), [("legacy_senet154", "se_module"), ("senet154", "se")])
def test_senet154_sites_are_its_own_se_blocks(name: str, attr: str) -> None:
    sites, seen = _shapes_on_meta(f"timm/{name}", 32)
    blocks = [(1, 3), (2, 8), (3, 36), (4, 3)]
    assert [s.name for s in sites] == [
        f"layer{stage}.{i}.{attr}" for stage, n in blocks for i in range(n)
    ]
    assert [s.out_channels for s in sites] == [256] * 3 + [512] * 8 + [1024] * 36 + [2048] * 3
    _check_against_forward(sites, seen)
    for site in sites:
        assert site.existing and site.variants == ("none", "keep", "standard")
        assert site.act == "relu" and site.block_type == "SEModule"


# ------------------------------------------------------------------ Inception-ResNet-v2 placement

IRV2_BLOCKS = {
    "block35": ("Block35", {"scale": 0.17}, 320),
    "block17": ("Block17", {"scale": 0.10}, 1088),
    "block8": ("Block8", {"scale": 0.20}, 2080),
    "block8-no-relu": ("Block8", {"no_relu": True}, 2080),
}


@pytest.fixture(params=IRV2_BLOCKS, ids=list(IRV2_BLOCKS))
def irv2_block(request: pytest.FixtureRequest) -> tuple[nn.Module, torch.Tensor, Any]:
    pytest.importorskip("timm")
    module = importlib.import_module("timm.models.inception_resnet_v2")
    kind, kwargs, channels = IRV2_BLOCKS[request.param]
    block = _randomize_norms(getattr(module, kind)(conv_block=_conv_block(), **kwargs))
    x = torch.randn(2, channels, 5, 5)
    act = (lambda t: t) if request.param == "block8-no-relu" else torch.relu
    return block, x, act


def _irv2_wrap(block: nn.Module, variant: str, channels: int) -> ResidualSE:
    wrapped = IRV2.wrap(block, _se(channels), variant).eval()
    wrapped.fused = False  # the reference forward calls ``se`` as one module, which _trace sees
    return wrapped


def test_irv2_standard_scales_the_scaled_branch_before_the_addition(irv2_block: Any) -> None:
    block, x, act = irv2_block
    reference = block(x)
    events, y = _trace(_irv2_wrap(block, "standard", x.shape[1]), x)
    [(se_in, se_out)] = _events(events, "se")
    conv_out = _events(events, "conv2d")[0][1]
    assert torch.equal(se_in[0], conv_out * block.scale)  # after the 1x1 conv and the scale
    torch.testing.assert_close(y, act(se_out + x))
    assert not torch.allclose(y, reference)


def test_irv2_pre_scales_the_input_of_the_branches_only(irv2_block: Any) -> None:
    block, x, act = irv2_block
    events, y = _trace(_irv2_wrap(block, "pre", x.shape[1]), x)
    [(se_in, se_out)] = _events(events, "se")
    assert events[0][0] == "se" and torch.equal(se_in[0], x)
    for branch in ("branch0", "branch1"):
        assert torch.equal(_events(events, branch)[0][0][0], se_out)
    conv_out = _events(events, "conv2d")[0][1]
    torch.testing.assert_close(y, act(conv_out * block.scale + x))  # shortcut: unscaled x


def test_irv2_post_scales_after_the_addition_and_its_activation(irv2_block: Any) -> None:
    block, x, _ = irv2_block
    reference = block(x)
    events, y = _trace(_irv2_wrap(block, "post", x.shape[1]), x)
    [(se_in, se_out)] = _events(events, "se")
    assert events[-1][0] == "se"
    assert torch.equal(se_in[0], reference)  # timm's own output, bit for bit
    assert torch.equal(y, se_out)


def test_irv2_identity_scales_the_shortcut(irv2_block: Any) -> None:
    block, x, act = irv2_block
    events, y = _trace(_irv2_wrap(block, "identity", x.shape[1]), x)
    [(se_in, se_out)] = _events(events, "se")
    assert torch.equal(se_in[0], x)
    conv_out = _events(events, "conv2d")[0][1]
    torch.testing.assert_close(y, act(conv_out * block.scale + se_out))


@needs_timm
def test_irv2_wrap_keeps_names_and_attributes_and_refuses_other_variants() -> None:
    from timm.models.inception_resnet_v2 import Block8

    block = Block8(no_relu=True, conv_block=_conv_block())
    keys = set(block.state_dict())
    wrapped = IRV2.wrap(block, SqueezeExcite(2080), "standard")
    assert {k for k in wrapped.state_dict() if k not in keys} == {
        "se.fc1.weight",
        "se.fc1.bias",
        "se.fc2.weight",
        "se.fc2.bias",
    }
    assert keys < set(wrapped.state_dict())
    assert wrapped.scale == block.scale == 1.0 and wrapped.relu is None
    assert IRV2.last_norm(wrapped) is None  # the branch ends in a biased conv, no norm
    with pytest.raises(ValueError, match="not one of a residual block"):
        IRV2.wrap(block, SqueezeExcite(2080), "inner")
    with pytest.raises(ValueError, match="Block35/Block17/Block8"):
        IRV2.wrap(nn.Conv2d(3, 3, 1), SqueezeExcite(3, reduction=1), "standard")


# ------------------------------------------------------------------------ Inception-v4 placement

V4_KINDS = ("InceptionA", "ReductionA", "InceptionB", "ReductionB", "InceptionC")


@needs_timm
@pytest.mark.parametrize("kind", V4_KINDS)
def test_v4_standard_is_the_block_on_the_module_output(kind: str) -> None:
    block = _randomize_norms(_v4_module(kind))
    [site] = V4.list_sites(nn.Sequential(block))
    x = torch.randn(2, site.in_channels, 5, 5)
    reference = copy.deepcopy(block)
    se = _se(site.out_channels)
    wrapped = V4.wrap(block, se, "standard")
    assert isinstance(wrapped, type(reference)) and wrapped.se is se
    seen = []
    se.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    with torch.no_grad():
        plain, y = reference(x), wrapped(x)
        expected = se(plain)
    assert torch.equal(seen[0], plain)  # the SE block sees the concatenated output
    assert plain.shape[1] == site.out_channels
    assert torch.equal(y, expected) and not torch.allclose(y, plain)
    assert set(wrapped.state_dict()) == set(reference.state_dict()) | {
        f"se.{k}" for k in se.state_dict()
    }
    with pytest.raises(ValueError, match="only on its output"):
        V4.wrap(reference, _se(site.out_channels), "pre")


# --------------------------------------------------------------------------- SENet-154 choices

SENETS = {
    "legacy": ("legacy_senet", "se_module"),
    "timm": ("timm_senet", "se"),
}


@pytest.fixture(params=SENETS, ids=list(SENETS))
def senet(request: pytest.FixtureRequest) -> tuple[nn.Module, str, int, list[Any]]:
    pytest.importorskip("timm")
    net, backbone, size = _tiny(SENETS[request.param][0])
    sites = get_backbone(backbone).list_sites(net)
    assert sites and all(s.name.endswith("." + SENETS[request.param][1]) for s in sites)
    return net, backbone, size, sites


def _outputs(net: nn.Module, size: int) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return net.eval()(x)


def test_senet_keep_is_timms_model(senet: Any) -> None:
    net, backbone, size, sites = senet
    kept = insert_se(net, Architecture.uniform([s.name for s in sites], "keep"), backbone=backbone)
    assert kept.state_dict().keys() == net.state_dict().keys()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in kept.state_dict().items())
    assert torch.equal(_outputs(kept, size), _outputs(net, size))


def test_senet_none_removes_the_blocks(senet: Any) -> None:
    net, backbone, size, sites = senet
    bare = insert_se(net, Architecture(), backbone=backbone)
    for site in sites:
        assert isinstance(bare.get_submodule(site.name), nn.Identity)
    removed = {k for k in net.state_dict() if any(k.startswith(s.name + ".") for s in sites)}
    assert removed and set(bare.state_dict()) == set(net.state_dict()) - removed
    # the last block by hand: its branch straight from bn3 to the addition
    name = sites[-1].name.rpartition(".")[0]
    block = bare.get_submodule(name)
    x = torch.randn(2, block.conv1.in_channels, 6, 6)
    acts = ("relu", "relu", "relu") if hasattr(block, "relu") else ("act1", "act2", "act3")
    a1, a2, a3 = (getattr(block, a) for a in acts)
    with torch.no_grad():
        out = a2(block.bn2(block.conv2(a1(block.bn1(block.conv1(x))))))
        expected = a3(block.bn3(block.conv3(out)) + block.downsample(x))
        torch.testing.assert_close(block(x), expected)
    assert not torch.allclose(_outputs(bare, size), _outputs(net, size))


def test_senet_standard_16_has_timms_names_and_shapes_and_computes_keep(senet: Any) -> None:
    net, backbone, size, sites = senet
    names = [s.name for s in sites]
    same = insert_se(net, Architecture.uniform(names, "standard:16"), backbone=backbone)
    for name in names:
        assert type(same.get_submodule(name)) is SqueezeExcite
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in same.state_dict().items()} == shapes
    same.load_state_dict(net.state_dict())  # timm's weights fit the replacement blocks
    # The same function (our excitation runs its 1x1 convs as matrix products: float rounding)
    torch.testing.assert_close(_outputs(same, size), _outputs(net, size), rtol=0, atol=1e-5)
    other = insert_se(net, Architecture.uniform(names, "standard:4"), backbone=backbone)
    assert set(other.state_dict()) == set(shapes)
    first = names[0]
    width = sites[0].channels("standard")
    assert other.state_dict()[f"{first}.fc1.weight"].shape == (width // 4, width, 1, 1)
    assert not torch.allclose(_outputs(other, size), _outputs(net, size))


def test_senet_wrap_refuses_what_is_not_its_se_block() -> None:
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="sites are SEModule"):
        SENET.wrap(nn.Conv2d(4, 4, 1), None, "none")
    block = _tiny_legacy_senet()[3].se_module
    assert SENET.wrap(block, None, "keep") is block
    with pytest.raises(ValueError, match="use keep, none or standard"):
        SENET.wrap(block, SqueezeExcite(128), "pre")


@needs_timm
def test_thop_charges_timms_own_se_blocks_only_their_convs_and_nn_sigmoid() -> None:
    """Documented: a timm SEModule's squeeze and scale are tensor ops thop does not see."""
    legacy = _tiny_legacy_senet()[4].se_module  # 256 channels, squeezed to 16
    assert count_module_flops(legacy, (256, 4, 4)) == 2 * 256 * 16 + 256  # fcs, nn.Sigmoid
    timm_se = _tiny_timm_senet().layer1[0].se  # 128 channels, squeezed to 8; timm's Sigmoid
    assert count_module_flops(timm_se, (128, 4, 4)) == 2 * 128 * 8
    ours = SqueezeExcite(256, reduction=16)
    assert count_module_flops(ours, (256, 4, 4)) == 2 * 256 * 16 + 256 + 2 * 256 * 4 * 4


# ------------------------------------------------------------------------- names and refusals


@needs_timm
@pytest.mark.parametrize("kind", ["irv2", "v4"])
def test_insertion_adds_parameters_only_under_se(kind: str) -> None:
    net, backbone, _ = _tiny(kind)
    sites = get_backbone(backbone).list_sites(net)
    assert [s.block_type for s in sites] == (
        ["Block35", "Block35", "Block8"] if kind == "irv2" else ["InceptionA"] * 2 + ["ReductionA"]
    )
    old = net.state_dict()
    built = insert_se(
        net, Architecture.uniform([s.name for s in sites], "standard:4"), backbone=backbone
    )
    new = built.state_dict()
    assert set(old) < set(new)
    assert all(re.match(r"^\d+\.se\.fc[12]\.(weight|bias)$", k) for k in set(new) - set(old))
    assert all(torch.equal(new[k], v) for k, v in old.items())


@needs_timm
@pytest.mark.parametrize(
    ("name", "site", "variants", "why"),
    [
        ("timm/inception_v4", "features.6", ["pre", "post", "identity", "keep", "inner"], None),
        ("timm/inception_resnet_v2", "repeat.0", ["keep", "inner"], None),
        ("timm/senet154", "layer1.0.se", ["pre", "post", "identity", "inner"], "own SE"),
        ("timm/legacy_senet154", "layer1.0.se_module", ["pre", "identity"], "own SE"),
    ],
)
def test_variants_a_site_cannot_take_are_refused(
    name: str, site: str, variants: list[str], why: str | None
) -> None:
    skeleton = _skeleton(name)
    for variant in variants:
        choice = variant if variant == "keep" else f"{variant}:4"
        with pytest.raises(ArchitectureError, match=rf"{site} .*does not take variant") as err:
            insert_se(skeleton, Architecture({site: choice}), backbone=name)
        if why:
            assert why in str(err.value)


@needs_timm
@pytest.mark.parametrize(
    ("model", "variants", "bad"),
    [
        ("inception_v4", "[none, standard, pre]", "pre"),
        ("inception_resnet_v2", "[none, pre, keep]", "keep"),
        ("legacy_senet154", "[keep, none, standard, identity]", "identity"),
    ],
)
def test_a_space_listing_a_variant_no_site_takes_is_refused(
    write_space: Any, model: str, variants: str, bad: str
) -> None:
    path = write_space(
        f"""
        backbone: {{source: timm, model: {model}}}
        choices: {{variant: {variants}}}
        data: {{image_size: 75}}
        """
    )
    with pytest.raises(
        SpaceError, match=rf"choices\.variant\[\d\].*{bad!r} fits no selected site"
    ):
        load_space(path)
    fine = variants.replace(f", {bad}", "")
    text = f"backbone: {{source: timm, model: {model}}}\nchoices: {{variant: {fine}}}\n"
    space = load_space(write_space(text + "data: {image_size: 75}\n"))
    assert space.choices.variant == fine.strip("[]").split(", ")


# ------------------------------------------------------------------------------- cost model


@needs_timm
@pytest.mark.parametrize("kind", list(TINY))
def test_cost_table_equals_profiling_the_built_model(kind: str) -> None:
    net, backbone, size = _tiny(kind)
    family = get_backbone(backbone)
    table = CostTable.build(net, family=family, image_size=size)
    sites = family.list_sites(net)
    uniform = "pre:2" if kind == "irv2" else "standard:2"
    archs = [Architecture(), Architecture.uniform([s.name for s in sites], uniform)]
    archs.append(Architecture.uniform([s.name for s in sites], f"{uniform}:none:tanh"))
    archs += _random_archs(sites, 2)
    if sites[0].existing:
        archs.append(Architecture.uniform([s.name for s in sites], "keep"))
    for arch in archs:
        built = insert_se(net, arch, backbone=backbone)
        measured = (count_params(built), count_flops(built, image_size=size))
        assert table.costs(arch) == measured, str(arch)
    assert table.costs(archs[1]) != table.costs(archs[0])
