from __future__ import annotations

import pytest
import torch
from torch import nn

from se_search.models.blocks import ChannelScale, Squeeze, SqueezeExcite, squeeze_width
from se_search.models.variants import VARIANTS


def test_squeeze_width_is_floor_and_rejects_bad_ratios() -> None:
    assert squeeze_width(256, 16) == 16
    assert squeeze_width(100, 16) == 6
    assert squeeze_width(64, 64) == 1
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            squeeze_width(64, bad)
    with pytest.raises(ValueError, match="at most 64"):
        squeeze_width(64, 128)


@pytest.mark.parametrize(("channels", "r"), [(256, 16), (2048, 2), (64, 32)])
def test_parameter_count_matches_formula(channels: int, r: int) -> None:
    se = SqueezeExcite(channels, reduction=r)
    hidden = channels // r
    assert sum(p.numel() for p in se.parameters()) == 2 * channels * hidden + hidden + channels


def test_forward_is_the_papers_formula() -> None:
    se = SqueezeExcite(32, reduction=4).eval()
    x = torch.randn(2, 32, 5, 7)
    z = x.mean(dim=(2, 3))  # squeeze
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)  # excitation
    expected = x * s[:, :, None, None]  # scale
    torch.testing.assert_close(se(x), expected)


def test_max_squeeze_and_hardsigmoid_gate() -> None:
    se = SqueezeExcite(16, reduction=4, squeeze="max", gate="hardsigmoid").eval()
    assert isinstance(se.gate, nn.Hardsigmoid)
    x = torch.randn(1, 16, 4, 4)
    z = x.amax(dim=(2, 3))
    h = torch.relu(z @ se.fc1.weight.flatten(1).T + se.fc1.bias)
    s = nn.functional.hardsigmoid(h @ se.fc2.weight.flatten(1).T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_unknown_squeeze_or_gate_names_the_choices() -> None:
    with pytest.raises(ValueError, match="avg"):
        Squeeze("median")
    with pytest.raises(ValueError, match="hardsigmoid.*relu.*sigmoid.*tanh"):
        SqueezeExcite(16, gate="swish")
    with pytest.raises(ValueError, match="avg.*max.*none"):
        SqueezeExcite(16, squeeze="median")


def test_steps_are_leaf_modules_for_the_cost_model() -> None:
    se = SqueezeExcite(16, reduction=4)
    kinds = [type(m) for m in se.children()]
    assert Squeeze in kinds and ChannelScale in kinds and nn.Sigmoid in kinds


def test_variant_registry_matches_the_paper() -> None:
    paper = ["none", "standard", "pre", "post", "identity"]
    assert list(VARIANTS) == [*paper, "inner", "keep"]
    assert VARIANTS["pre"].sees == "in"
    assert {VARIANTS[v].sees for v in ("standard", "post", "identity", "inner")} == {"out"}
    assert [v for v in VARIANTS if not VARIANTS[v].adds_block] == ["none", "keep"]


# ------------------------------------------------------------------- the fused forwards

RESIDUAL = ("standard", "pre", "post", "identity")
# (model, site): a Bottleneck with a projection shortcut, a BasicBlock without one.
FUSED_BLOCKS = {"bottleneck": ("resnet50", "layer2.0"), "basic": ("resnet18", "layer1.1")}


def _se_block(
    case: str, variant: str, *, squeeze: str = "avg", gate: str = "sigmoid", gain: float = 1.0
) -> nn.Module:
    from torchvision.models import get_model

    from se_search.models.backbones import get_backbone

    model, name = FUSED_BLOCKS[case]
    torch.manual_seed(0)
    net = get_model(model, num_classes=10)
    family = get_backbone(model)
    site = {s.name: s for s in family.list_sites(net)}[name]
    block = net.get_submodule(name)
    with torch.no_grad():  # non-trivial BN statistics and gates far from 0.5
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    se = SqueezeExcite(site.channels(variant), reduction=4, squeeze=squeeze, gate=gate, gain=gain)
    nn.init.normal_(se.fc2.bias)
    return family.wrap(block, se, variant)


def _both(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    block.fused = True
    fused = block(x)
    block.fused = False
    return fused, block(x)


#: (squeeze, gate, gain): every squeeze and every gate at least once, NoSqueeze (a scale per
#: pixel, [N, C, H, W], where the fused joins were written for [N, C, 1, 1]) with each gate.
BLOCK_KINDS = [
    ("avg", "sigmoid", 1.0),
    ("avg", "hardsigmoid", 2.0),
    ("max", "tanh", 1.0),
    ("avg", "relu", 1.0),
    ("none", "sigmoid", 2.0),
    ("none", "hardsigmoid", 1.0),
    ("none", "tanh", 1.0),
    ("none", "relu", 1.0),
]


def test_block_kinds_cover_every_squeeze_and_gate() -> None:
    from se_search.models.blocks import GATES, SQUEEZES

    assert {k[0] for k in BLOCK_KINDS} == set(SQUEEZES)
    assert {k[1] for k in BLOCK_KINDS} == set(GATES)
    assert {k[1] for k in BLOCK_KINDS if k[0] == "none"} == set(GATES)


@pytest.mark.parametrize("case", FUSED_BLOCKS)
@pytest.mark.parametrize("variant", RESIDUAL)
@pytest.mark.parametrize(("squeeze", "gate", "gain"), BLOCK_KINDS)
def test_fused_forward_matches_the_reference_in_inference(
    case: str, variant: str, squeeze: str, gate: str, gain: float
) -> None:
    block = _se_block(case, variant, squeeze=squeeze, gate=gate, gain=gain).eval()
    x = torch.randn(2, block.conv1.in_channels, 12, 12)
    kept = x.clone()
    with torch.inference_mode():
        fused, reference = _both(block, x)
        block.se = nn.Identity()  # the same block without its SE block
        block.fused = False
        without = block(x)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    assert not torch.allclose(reference, without, atol=1e-2)  # the SE block does something
    assert torch.equal(x, kept)  # in-place writes never touch the block's input


@pytest.mark.parametrize("case", FUSED_BLOCKS)
@pytest.mark.parametrize("variant", RESIDUAL)
@pytest.mark.parametrize(("squeeze", "gate"), [("avg", "sigmoid"), ("none", "tanh")])
def test_fused_forward_matches_the_reference_in_training_with_its_gradients(
    case: str, variant: str, squeeze: str, gate: str
) -> None:
    block = _se_block(case, variant, squeeze=squeeze, gate=gate).train()
    x = torch.randn(4, block.conv1.in_channels, 8, 8)
    results = []
    for fused in (True, False):
        block.fused = fused
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        out = block(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters()}
        results.append((out.detach(), xi.grad, grads))
    (out_f, dx_f, grads_f), (out_r, dx_r, grads_r) = results
    torch.testing.assert_close(out_f, out_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_f, dx_r, rtol=1e-4, atol=1e-5)
    assert grads_f.keys() == grads_r.keys() and any(k.startswith("se.") for k in grads_f)
    for name in grads_f:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=1e-4, atol=1e-5)


def test_fused_se_resnet50_matches_the_reference_and_keeps_channels_last() -> None:
    from se_search.models.arch import Architecture
    from se_search.models.backbones import get_backbone
    from se_search.models.surgery import insert_se
    from se_search.models.variants import set_fused

    torch.manual_seed(0)
    from torchvision.models import get_model

    plain = get_model("resnet50", num_classes=10)
    sites = [s.name for s in get_backbone("resnet50").list_sites(plain)]
    choices = ["standard:16", "pre:8", "post:4", "identity:16"]
    choices += ["standard:16:none:tanh", "post:8:none:relu", "identity:4:none", "pre:4:max:relu"]
    arch = Architecture({name: choices[i % len(choices)] for i, name in enumerate(sites)})
    model = insert_se(plain, arch, backbone="resnet50").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert set_fused(model, True) == 16
        fused = model(x)
        set_fused(model, False)
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        set_fused(model, True)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        block_out = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x_cl)))))
        fused_cl = model(x_cl)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused_cl, reference, rtol=0, atol=1e-5)
    assert block_out.is_contiguous(memory_format=torch.channels_last)


def test_pointwise_conv_is_a_1x1_convolution_of_a_squeezed_or_a_full_map() -> None:
    from se_search.models.blocks import PointwiseConv

    conv = PointwiseConv(6, 3)
    assert set(conv.state_dict()) == {"weight", "bias"} and conv.weight.shape == (3, 6, 1, 1)
    squeezed = torch.randn(4, 6, 1, 1)
    torch.testing.assert_close(
        conv(squeezed), nn.functional.conv2d(squeezed, conv.weight, conv.bias)
    )
    full = torch.randn(2, 6, 5, 7)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        conv(full)  # a squeezed map's conv refuses a full one: a squeeze left out fails loudly
    conv.per_pixel = True  # NoSqueeze's: any map, a squeezed one too
    for x in (squeezed, full, full.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight, conv.bias))


def test_the_squeeze_sets_where_the_excitation_runs() -> None:
    se = SqueezeExcite(16, reduction=4, squeeze="none")
    assert se.fc1.per_pixel and se.fc2.per_pixel
    se.set_squeeze("max")
    assert se.squeeze.mode == "max" and not se.fc1.per_pixel and not se.fc2.per_pixel
    assert list(dict(se.named_children())) == ["squeeze", "fc1", "act", "fc2", "gate", "scale"]


def test_tracing_a_block_raises_no_warning_of_ours() -> None:
    """torch.jit.trace (the torchscript export) warns at a branch on a traced size."""
    import warnings

    for squeeze in ("avg", "none"):
        se = SqueezeExcite(16, reduction=4, squeeze=squeeze).eval()
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.jit.trace(se, torch.randn(2, 16, 4, 4))
        assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", RESIDUAL)
@pytest.mark.parametrize(("squeeze", "gate"), [("avg", "sigmoid"), ("none", "tanh")])
def test_fused_forward_matches_the_reference_on_cuda_channels_last_and_bf16(
    variant: str, squeeze: str, gate: str
) -> None:
    block = _se_block("bottleneck", variant, squeeze=squeeze, gate=gate)
    block = block.eval().cuda().to(memory_format=torch.channels_last)
    x = torch.randn(4, block.conv1.in_channels, 14, 14, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused, reference = _both(block, x)
        torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused_bf16, reference_bf16 = _both(block, x)
    torch.testing.assert_close(fused_bf16.float(), reference_bf16.float(), rtol=2e-2, atol=2e-2)
