"""Each integration variant sits where the paper's Fig. 5 puts it, in both ResNet blocks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from se_search.models.backbones import get_backbone, list_backbones
from se_search.models.blocks import SqueezeExcite
from se_search.models.variants import ResidualSE

RESNET = get_backbone("resnet50")
SITES_PER_MODEL = {
    "resnet18": 8,
    "resnet34": 16,
    "resnet50": 16,
    "resnet101": 33,
    "resnet152": 50,
    "resnext50_32x4d": 16,
    "resnext101_32x8d": 33,
    "wide_resnet50_2": 16,
}


@pytest.mark.parametrize(("model", "count"), SITES_PER_MODEL.items())
def test_sites_are_the_residual_blocks(model: str, count: int) -> None:
    assert model in list_backbones()
    with torch.device("meta"):
        net = RESNET.build(model, num_classes=10)
    sites = RESNET.list_sites(net)
    assert len(sites) == count
    assert sites[0].name == "layer1.0" and sites[-1].name.startswith("layer4.")
    for site in sites:
        block = net.get_submodule(site.name)
        assert site.in_channels == block.conv1.in_channels
        assert site.channels("pre") == site.in_channels
        assert site.channels("standard") == site.out_channels


def test_resnet50_site_widths() -> None:
    with torch.device("meta"):
        net = RESNET.build("resnet50", num_classes=10)
    widths = [s.out_channels for s in RESNET.list_sites(net)]
    assert widths == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3


def _trace(block: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, Any, Any]], torch.Tensor]:
    """Run ``block`` on ``x``; return (child name, inputs, output) per call, in call order.

    Inputs are copied before the call and outputs right after it, so in-place ReLUs do not
    rewrite what was recorded.
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


def _wrap(block: nn.Module, variant: str) -> ResidualSE:
    channels = block.conv1.in_channels if variant == "pre" else block.bn2.num_features
    if hasattr(block, "bn3"):
        channels = block.conv1.in_channels if variant == "pre" else block.bn3.num_features
    se = SqueezeExcite(channels, reduction=4)
    nn.init.normal_(se.fc2.bias)  # a gate far from 0.5 everywhere, so misplacements show
    wrapped = RESNET.wrap(block, se, variant).eval()
    wrapped.fused = False  # the reference forward calls ``se`` as one module, which _trace sees
    return wrapped


def _events(events: list[tuple[str, Any, Any]], name: str) -> list[tuple[Any, Any]]:
    return [(i, o) for n, i, o in events if n == name]


BLOCKS = {
    # (model, site): a Bottleneck with a projection shortcut, a BasicBlock with one and without.
    "bottleneck": ("resnet50", "layer2.0", "bn3"),
    "basic-downsample": ("resnet18", "layer2.0", "bn2"),
    "basic-identity": ("resnet18", "layer1.1", "bn2"),
}


@pytest.fixture(params=BLOCKS, ids=list(BLOCKS))
def block_case(request: pytest.FixtureRequest) -> tuple[nn.Module, str, torch.Tensor]:
    model, site, last_bn = BLOCKS[request.param]
    block = get_model(model, num_classes=10).get_submodule(site).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that misplacements show
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    return block, last_bn, x


def _shortcut(events: list[tuple[str, Any, Any]], x: torch.Tensor) -> torch.Tensor:
    ds = _events(events, "downsample")
    return ds[0][1] if ds else x


def test_standard_scales_the_branch_before_the_addition(block_case: Any) -> None:
    block, last_bn, x = block_case
    reference = block(x)
    events, y = _trace(_wrap(block, "standard"), x)
    [(se_in, se_out)] = _events(events, "se")
    assert torch.equal(se_in[0], _events(events, last_bn)[0][1])  # right after the last BN
    names = [n for n, _, _ in events]
    assert names.index("se") == names.index(last_bn) + 1
    torch.testing.assert_close(y, torch.relu(se_out + _shortcut(events, x)))
    assert y.shape == reference.shape


def test_pre_scales_the_branch_input(block_case: Any) -> None:
    block, _, x = block_case
    reference = block(x)
    events, y = _trace(_wrap(block, "pre"), x)
    [(se_in, se_out)] = _events(events, "se")
    assert events[0][0] == "se" and torch.equal(se_in[0], x)  # before the first conv
    assert torch.equal(_events(events, "conv1")[0][0][0], se_out)
    ds = _events(events, "downsample")
    if ds:  # the shortcut still sees the unscaled input
        assert torch.equal(ds[0][0][0], x)
    assert y.shape == reference.shape


def test_post_scales_after_the_addition_and_its_relu(block_case: Any) -> None:
    block, last_bn, x = block_case
    reference = block(x)
    events, y = _trace(_wrap(block, "post"), x)
    [(se_in, se_out)] = _events(events, "se")
    assert events[-1][0] == "se" and events[-2][0] == "relu"
    expected_sum = torch.relu(_events(events, last_bn)[0][1] + _shortcut(events, x))
    torch.testing.assert_close(se_in[0], expected_sum)
    torch.testing.assert_close(se_in[0], reference)  # SE input is the plain block's output
    assert torch.equal(y, se_out) and y.shape == reference.shape


def test_identity_scales_the_shortcut_in_parallel(block_case: Any) -> None:
    block, last_bn, x = block_case
    reference = block(x)
    events, y = _trace(_wrap(block, "identity"), x)
    [(se_in, se_out)] = _events(events, "se")
    torch.testing.assert_close(se_in[0], _shortcut(events, x))
    branch = _events(events, last_bn)[0][1]
    torch.testing.assert_close(y, torch.relu(branch + se_out))
    assert y.shape == reference.shape


def test_wrapping_keeps_parameter_names_and_refuses_none() -> None:
    block = get_model("resnet50", num_classes=10).layer1[0]
    keys = set(block.state_dict())
    wrapped = RESNET.wrap(block, SqueezeExcite(256), "standard")
    new = set(wrapped.state_dict())
    assert keys < new and {k for k in new - keys if not k.startswith("se.")} == set()
    assert wrapped.stride == block.stride
    with pytest.raises(ValueError, match="not one of a residual block"):
        RESNET.wrap(block, SqueezeExcite(256), "none")
