"""Backbones with SE blocks of their own (MobileNetV3, EfficientNet, RegNetY): each of
torchvision's ``SqueezeExcitation`` modules is a site that is kept, removed or replaced.

What every family shares (upstream's model, parameter names kept, pickling, the cost
table) is checked in test_contract.py.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import get_model, list_models
from torchvision.models.regnet import BlockParams
from torchvision.ops import SqueezeExcitation

from se_search.costs.flops import count_params
from se_search.errors import ArchitectureError, SpaceError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.backbones.own_se import OwnSEFamily
from se_search.models.blocks import SqueezeExcite
from se_search.models.surgery import insert_se
from se_search.outputs.export import export_model, load_model
from se_search.space import load_space
from tests.models.backbones.archs import GATE_NAMES, SQUEEZE_NAMES

# Sites per model: MobileNetV3's blocks with use_se; one per MBConv in EfficientNet (V2's
# FusedMBConv stages have none); one per block in RegNetY (torchvision's depths).
SITE_COUNTS = {
    "mobilenet_v3_small": 9,
    "mobilenet_v3_large": 8,
    "efficientnet_b0": 16,
    "efficientnet_b1": 23,
    "efficientnet_b2": 23,
    "efficientnet_b3": 26,
    "efficientnet_b4": 32,
    "efficientnet_b5": 39,
    "efficientnet_b6": 45,
    "efficientnet_b7": 55,
    "efficientnet_v2_s": 6 + 9 + 15,
    "efficientnet_v2_m": 7 + 14 + 18 + 5,
    "efficientnet_v2_l": 10 + 19 + 25 + 7,
    "regnet_y_400mf": 16,
    "regnet_y_800mf": 14,
    "regnet_y_1_6gf": 27,
    "regnet_y_3_2gf": 21,
    "regnet_y_8gf": 17,
    "regnet_y_16gf": 18,
    "regnet_y_32gf": 20,
    "regnet_y_128gf": 27,
}
NAME_PATTERNS = {
    "mobilenet_v3": r"features\.\d+\.block\.\d",
    "efficientnet": r"features\.\d+\.\d+\.block\.\d",
    "regnet_y": r"trunk_output\.block\d\.block\d-\d+\.f\.se",
}
ACTS = {"mobilenet_v3": "relu", "efficientnet": "silu", "regnet_y": "relu"}
GATES = {"mobilenet_v3": nn.Hardsigmoid, "efficientnet": nn.Sigmoid, "regnet_y": nn.Sigmoid}
# The bundled spaces' models, one per family: the default suite's representatives.
BUNDLED = ["mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf"]
LIGHT = {"mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf"}
SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These models are tiny at 32x32: with torch's two OpenMP threads on a busy 2-core
    machine, each op waits for a descheduled thread (a forward pass 30x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _skeleton(model: str) -> nn.Module:
    with torch.device("meta"):
        return get_backbone(model).build(model, num_classes=10)


def _site_names(model: str) -> list[str]:
    return [s.name for s in get_backbone(model).list_sites(_skeleton(model))]


def _siblings(model: nn.Module, name: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The module before the one at ``name`` in its parent, that module, and the one after."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    names = list(parent._modules)
    i = names.index(child)
    return parent._modules[names[i - 1]], parent._modules[child], parent._modules[names[i + 1]]


def _random_arch(
    sites: list[str], seed: int, reductions: tuple[int, ...] = (4, 8)
) -> Architecture:
    """Each of none, keep and standard at a third of the sites, in random places; standard
    with a random ratio, squeeze and gate."""
    rng = random.Random(seed)
    variants = (["none", "keep", "standard"] * len(sites))[: len(sites)]
    rng.shuffle(variants)
    arch = {}
    for site, variant in zip(sites, variants):
        if variant == "standard":
            squeeze, gate = rng.choice(SQUEEZE_NAMES), rng.choice(GATE_NAMES)
            variant = f"standard:{rng.choice(reductions)}:{squeeze}:{gate}"
        arch[site] = variant
    return Architecture(arch)


# ----------------------------------------------------------------------------------- sites


def test_registers_every_torchvision_classifier_with_se_blocks() -> None:
    ours = {n for n in list_backbones() if isinstance(get_backbone(n), OwnSEFamily)}
    assert ours == set(SITE_COUNTS)
    torchvision_names = {
        n
        for n in list_models(module=torchvision.models)
        if n.startswith(("mobilenet_v3", "efficientnet", "regnet_y"))
    }
    assert ours == torchvision_names
    assert not any(n.startswith("regnet_x") for n in ours)  # RegNetX has no SE blocks


@pytest.mark.parametrize(("model", "count"), SITE_COUNTS.items())
def test_sites_are_the_backbones_own_se_blocks(model: str, count: int) -> None:
    family = get_backbone(model)
    net = _skeleton(model)
    sites = family.list_sites(net)
    assert len(sites) == count
    assert [s.name for s in sites] == [
        n for n, m in net.named_modules() if isinstance(m, SqueezeExcitation)
    ]
    for site in sites:
        block = net.get_submodule(site.name)
        assert re.fullmatch(NAME_PATTERNS[family.family], site.name)
        assert site.existing and site.variants == ("none", "keep", "standard")
        assert site.act == ACTS[family.family]
        assert type(block.scale_activation) is GATES[family.family]  # the spaces' gate
        assert site.channels("standard") == site.channels("keep") == block.fc1.in_channels
        # Right after the depthwise (RegNet: grouped) conv, on its output channels.
        before, _, after = _siblings(net, site.name)
        conv = before[0]
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == site.channels("standard")
        assert conv.kernel_size != (1, 1)
        if family.family != "regnet_y":
            assert conv.groups == conv.out_channels  # depthwise
        else:  # BottleneckTransform: a, b (3x3, grouped but in RegNetY-32GF's block1), se, c
            f = net.get_submodule(site.name.removesuffix(".se"))
            assert before is f.b and after is f.c
        assert after[0].in_channels == site.channels("standard")  # then the 1x1 projection
        assert after[0].kernel_size == (1, 1)
    assert all(p.is_meta for p in net.parameters())


# (model) -> (C at each site, torchvision's squeeze width at each site)
WIDTHS = {
    "mobilenet_v3_large": (
        [72, 120, 120, 480, 672, 672, 960, 960],
        [24, 32, 32, 120, 168, 168, 240, 240],  # _make_divisible(C // 4, 8)
    ),
    "mobilenet_v3_small": (
        [16, 96, 240, 240, 120, 144, 288, 576, 576],
        [8, 24, 64, 64, 32, 40, 72, 144, 144],
    ),
    "efficientnet_b0": (
        [32, 96, 144, 144, 240, 240, 480, 480, 480, 672, 672, 672, 1152, 1152, 1152, 1152],
        [8, 4, 6, 6, 10, 10, 20, 20, 20, 28, 28, 28, 48, 48, 48, 48],  # MBConv input // 4
    ),
    "regnet_y_400mf": (
        [48] + [104] * 3 + [208] * 6 + [440] * 6,
        [8, 12, 26, 26, 26] + [52] * 6 + [110] * 5,  # round(block input / 4)
    ),
}


@pytest.mark.parametrize("model", WIDTHS)
def test_site_widths_and_torchvisions_own_squeeze(model: str) -> None:
    """What ``keep`` and ``standard:4`` differ by (the module docstring): torchvision's own
    squeeze widths are not ``C // 4``."""
    net = _skeleton(model)
    sites = get_backbone(model).list_sites(net)
    channels, squeezed = WIDTHS[model]
    assert [s.channels("standard") for s in sites] == channels
    assert [net.get_submodule(s.name).fc1.out_channels for s in sites] == squeezed
    assert any(c // 4 != h for c, h in zip(channels, squeezed))


def test_regnet_skeleton_on_meta_matches_the_real_model() -> None:
    original = BlockParams.__dict__["from_init_params"]
    with pytest.raises(NotImplementedError), torch.device("meta"):  # why the workaround
        get_model("regnet_y_400mf", weights=None, num_classes=10)
    meta = _skeleton("regnet_y_400mf")
    assert BlockParams.__dict__["from_init_params"] is original  # the patch is undone
    real = get_backbone("regnet_y_400mf").build("regnet_y_400mf", num_classes=10)
    family = get_backbone("regnet_y_400mf")
    assert family.list_sites(meta) == family.list_sites(real)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [
        (n, p.shape) for n, p in real.named_parameters()
    ]
    assert not any(p.is_meta for p in real.parameters())


# ------------------------------------------------------------------------------- choices


def _reference(model: str) -> nn.Module:
    torch.manual_seed(0)
    return get_model(model, weights=None, num_classes=10).eval()


def _built(model: str, arch: Architecture) -> nn.Module:
    torch.manual_seed(0)
    plain = get_backbone(model).build(model, num_classes=10)
    return insert_se(plain, arch, backbone=model).eval()


@pytest.mark.parametrize("model", BUNDLED)
def test_none_removes_every_own_block(model: str) -> None:
    sites = get_backbone(model).list_sites(_skeleton(model))
    built = _built(model, Architecture())  # none everywhere
    reference = _reference(model)
    assert not any(isinstance(m, SqueezeExcitation) for m in built.modules())
    assert all(type(built.get_submodule(s.name)) is nn.Identity for s in sites)
    own = sum(count_params(reference.get_submodule(s.name)) for s in sites)
    by_hand = sum(
        2 * s.channels("keep") * (h := reference.get_submodule(s.name).fc1.out_channels)
        + h
        + s.channels("keep")
        for s in sites
    )
    assert own == by_hand
    assert count_params(built) == count_params(reference) - own
    # Every other weight as torchvision has it; the sites' keys are gone.
    ours, theirs = built.state_dict(), reference.state_dict()
    prefixes = tuple(f"{s.name}." for s in sites)
    assert list(ours) == [k for k in theirs if not k.startswith(prefixes)]
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Same outputs as torchvision's model with each SE block's output replaced by its input.
    for s in sites:
        reference.get_submodule(s.name).register_forward_hook(lambda m, args, out: args[0])
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(built(x), reference(x))


def _trace_site(model: nn.Module, name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of the module before the site, the site's input and output (when it runs)
    and the input of the module after it, in one forward pass of ``model``."""
    before, at, after = _siblings(model, name)
    seen: dict[str, torch.Tensor] = {}

    def record_at(m: nn.Module, args: Any, out: torch.Tensor) -> None:
        seen["at_in"], seen["at_out"] = args[0].clone(), out.clone()

    hooks = [
        before.register_forward_hook(lambda m, a, out: seen.update(before=out.clone())),
        at.register_forward_hook(record_at),
        after.register_forward_pre_hook(lambda m, a: seen.update(after=a[0].clone())),
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


PLACES = {  # a site in the middle of each backbone
    "mobilenet_v3_large": "features.12.block.2",  # 672 channels, with a shortcut
    "efficientnet_b0": "features.4.1.block.2",
    "regnet_y_400mf": "trunk_output.block3.block3-2.f.se",
}


@pytest.mark.parametrize("model", PLACES)
def test_standard_replaces_the_block_at_the_same_place(model: str) -> None:
    site_name = PLACES[model]
    [site] = [s for s in get_backbone(model).list_sites(_skeleton(model)) if s.name == site_name]
    arch = Architecture({site_name: "standard:8:max:hardsigmoid"})
    built = _built(model, arch)
    se = built.get_submodule(site_name)
    assert type(se) is SqueezeExcite and se.channels == site.channels("standard")
    assert se.fc1.out_channels == site.channels("standard") // 8
    assert se.squeeze.mode == "max" and type(se.gate) is nn.Hardsigmoid
    assert type(se.act) is {"relu": nn.ReLU, "silu": nn.SiLU}[ACTS[get_backbone(model).family]]
    nn.init.normal_(se.fc2.bias)  # a gate far from one value, so misplacements show
    seen = _trace_site(built, site_name, torch.randn(2, 3, SIZE, SIZE))
    u = seen["before"]  # the depthwise/grouped conv's output ...
    assert torch.equal(seen["at_in"], u)
    with torch.no_grad():
        s = nn.functional.hardsigmoid(se.fc2(se.act(se.fc1(u.amax(dim=(2, 3), keepdim=True)))))
    torch.testing.assert_close(seen["at_out"], u * s)  # ... scaled channel-wise ...
    assert torch.equal(seen["after"], seen["at_out"])  # ... is what the projection reads
    assert not torch.allclose(seen["at_out"], u)


@pytest.mark.parametrize("model", PLACES)
def test_none_and_keep_at_one_site(model: str) -> None:
    site_name = PLACES[model]
    names = _site_names(model)
    x = torch.randn(2, 3, SIZE, SIZE)
    # A site an architecture leaves out is ``none``: keep is written out everywhere else.
    removed = _built(model, Architecture({n: "keep" for n in names if n != site_name}))
    assert type(removed.get_submodule(site_name)) is nn.Identity
    seen = _trace_site(removed, site_name, x)
    assert torch.equal(seen["after"], seen["before"])  # the projection reads the conv directly
    assert all(
        type(removed.get_submodule(n)) is SqueezeExcitation for n in names if n != site_name
    )
    reference = _reference(model)
    seen_ref = _trace_site(reference, site_name, x)
    assert torch.equal(seen["before"], seen_ref["before"])  # the same up to the site
    assert not torch.equal(seen_ref["after"], seen_ref["before"])  # torchvision's block scales
    kept = _built(model, Architecture({site_name: "keep"}))  # every other site removed
    assert type(kept.get_submodule(site_name)) is SqueezeExcitation
    assert all(type(kept.get_submodule(n)) is nn.Identity for n in names if n != site_name)
    seen_kept = _trace_site(kept, site_name, x)
    block = reference.get_submodule(site_name)
    with torch.no_grad():
        torch.testing.assert_close(seen_kept["after"], block(seen_kept["before"]))


@pytest.mark.parametrize("model", BUNDLED)
def test_parameter_names_are_torchvisions(model: str) -> None:
    sites = get_backbone(model).list_sites(_skeleton(model))
    names = [s.name for s in sites]
    theirs = _reference(model).state_dict()
    # standard: a new block under torchvision's names (fc1/fc2; test_contract.py checks that
    # the keys are torchvision's), other shapes where C // r differs from its squeeze.
    ours = _built(model, Architecture.uniform(names, "standard:4")).state_dict()
    for s in sites:
        c = s.channels("standard")
        assert ours[f"{s.name}.fc1.weight"].shape == (c // 4, c, 1, 1)
        assert ours[f"{s.name}.fc2.weight"].shape == (c, c // 4, 1, 1)
    # A mix: the removed sites' keys go, nothing else changes name.
    arch = _random_arch(names, seed=1)
    mixed = _built(model, arch).state_dict()
    removed = tuple(f"{n}." for n in names if arch.choice(n).is_none)
    assert list(mixed) == [k for k in theirs if not k.startswith(removed)]


@pytest.mark.parametrize("variant", ["pre:4", "post:4", "identity:4", "inner:4"])
def test_other_variants_are_refused(variant: str) -> None:
    model = "mobilenet_v3_small"
    plain = get_backbone(model).build(model, num_classes=10)
    site = _site_names(model)[1]
    with pytest.raises(ArchitectureError) as err:
        insert_se(plain, Architecture({site: variant}), backbone=model)
    message = str(err.value)
    assert f"site {site} (SqueezeExcitation) does not take variant" in message
    assert "use one of none, keep, standard" in message and "backbone's own SE block" in message
    se = SqueezeExcite(96, reduction=4)
    with pytest.raises(ValueError, match="use keep, none or standard"):
        get_backbone(model).wrap(plain.get_submodule(site), se, variant.split(":")[0])


def test_a_space_with_a_variant_no_site_takes_is_refused(write_space: Any) -> None:
    path = write_space(
        """
        backbone: {model: efficientnet_b0}
        choices: {variant: [none, keep, standard, pre], reduction: [4]}
        """
    )
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert "choices.variant[3]" in message and "variant 'pre' fits no selected site" in message
    assert "its sites take none, standard, keep" in message


def test_a_reduction_wider_than_the_narrowest_block_is_refused(write_space: Any) -> None:
    path = write_space(
        """
        backbone: {model: mobilenet_v3_small}
        choices: {variant: [none, keep, standard], reduction: [4, 32]}
        """
    )
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert "choices.reduction[1]" in message
    assert "16 channels" in message and "features.1.block.1" in message


@pytest.mark.parametrize(
    ("model", "gate", "reductions"),
    [
        ("mobilenet_v3_large", "hardsigmoid", [4, 8, 16]),
        ("efficientnet_b0", "sigmoid", [4, 8, 16, 24]),
        ("regnet_y_400mf", "sigmoid", [4, 8, 16]),
    ],
)
def test_bundled_spaces(model: str, gate: str, reductions: list[int]) -> None:
    space = load_space(model)
    assert space.backbone.model == model and space.data.image_size == SIZE
    assert space.choices.variant == ["none", "keep", "standard"]
    assert space.choices.gate == [gate] and space.choices.reduction == reductions
    assert space.site_names == _site_names(model)
    assert all(space.variants_at(s) == ["none", "keep", "standard"] for s in space.all_sites)
    assert space.size == (2 + len(reductions)) ** len(space.site_names)


# ------------------------------------------------------------------------- forward passes

MODELS = [m if m in LIGHT else pytest.param(m, marks=pytest.mark.slow) for m in SITE_COUNTS]


@pytest.mark.parametrize("model", MODELS)
def test_forward_of_none_and_a_random_architecture(model: str) -> None:
    family = get_backbone(model)
    torch.manual_seed(0)
    plain = family.build(model, num_classes=10)
    names = [s.name for s in family.list_sites(plain)]
    x = torch.randn(1, 3, SIZE, SIZE)
    for arch in (Architecture(), _random_arch(names, seed=0)):
        built = insert_se(plain, arch, backbone=model).eval()
        with torch.no_grad():
            y = built(x)
        assert y.shape == (1, 10) and torch.isfinite(y).all()
        kinds = {
            "none": nn.Identity,
            "keep": SqueezeExcitation,
            "standard": SqueezeExcite,
        }
        assert all(type(built.get_submodule(n)) is kinds[arch.choice(n).variant] for n in names)
        del built


def test_a_replaced_block_trains() -> None:
    model = "mobilenet_v3_small"
    names = _site_names(model)
    built = _built(model, Architecture.uniform(names, "standard:4:avg:hardsigmoid")).train()
    loss = nn.functional.cross_entropy(built(torch.randn(2, 3, SIZE, SIZE)), torch.tensor([1, 2]))
    loss.backward()
    for n in names:
        fc1 = built.get_submodule(n).fc1
        assert fc1.weight.grad is not None and fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fmt", ["state_dict", "pt2", "safetensors"])
def test_a_mixed_architecture_exports_and_loads(tmp_path: Path, fmt: str) -> None:
    """A replaced block's weights (other shapes under torchvision's names) and the removed
    blocks' missing keys survive the state_dict and safetensors exports, which rebuild and
    load strictly; the pt2 program computes the same logits."""
    model = "mobilenet_v3_small"
    names = _site_names(model)
    arch = _random_arch(names, seed=2)
    built = _built(model, arch)
    path = export_model(
        built,
        backbone=model,
        num_classes=10,
        arch=arch,
        image_size=SIZE,
        metadata={},
        format=fmt,
        path=tmp_path / f"model.{fmt}",
    )
    loaded = load_model(path)  # in eval mode already (a pt2 module refuses eval())
    assert not loaded.training
    x = torch.randn(3, 3, SIZE, SIZE)  # exported at batch 2
    with torch.no_grad():
        got, want = loaded(x), built(x)
    if fmt == "pt2":  # a traced graph: the same ops, up to float rounding
        assert isinstance(loaded, torch.fx.GraphModule)
        assert (got - want).abs().max().item() <= 1e-5
        return
    assert torch.equal(got, want)
    assert [type(loaded.get_submodule(n)) for n in names] == [
        type(built.get_submodule(n)) for n in names
    ]
