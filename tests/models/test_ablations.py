"""The SENet paper's squeeze and excitation ablations as choices (arXiv 1709.01507): the tanh
and ReLU gates (Table 12) and NoSqueeze (squeeze ``none``, Section 7.1, Table 16): what each
block computes, what it costs (against thop), what a file of it holds, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from se_search.costs.flops import count_module_flops, count_params, se_costs
from se_search.errors import ArchitectureError
from se_search.models.arch import Architecture, SEChoice, resolve_architecture
from se_search.models.backbones import get_backbone
from se_search.models.blocks import (
    GATES,
    IDENTITY_GAIN,
    SQUEEZES,
    ReLUGate,
    SqueezeExcite,
    can_start_as_identity,
)
from se_search.models.surgery import insert_se

#: The gate each registry name stands for, written out.
GATE_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "hardsigmoid": nn.functional.hardsigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def _randomised(se: SqueezeExcite) -> SqueezeExcite:
    with torch.no_grad():  # gates far from their value at 0, and every unit alive
        nn.init.normal_(se.fc2.bias)
    return se.eval()


def test_the_registries_hold_the_papers_ablations() -> None:
    assert list(SQUEEZES) == ["avg", "max", "none"]
    assert list(GATES) == ["sigmoid", "hardsigmoid", "tanh", "relu"]
    assert set(GATE_FUNCTIONS) == set(GATES)
    assert [s for s in SQUEEZES if not SQUEEZES[s].pools] == ["none"]


@pytest.mark.parametrize("gate", list(GATES))
def test_every_gate_is_the_papers_formula(gate: str) -> None:
    se = _randomised(SqueezeExcite(32, reduction=4, gate=gate))
    x = torch.randn(2, 32, 5, 7)
    z = x.mean(dim=(2, 3))
    h = torch.relu(z @ se.fc1.weight.flatten(1).T + se.fc1.bias)
    s = GATE_FUNCTIONS[gate](h @ se.fc2.weight.flatten(1).T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_the_relu_gate_is_a_relu_of_its_own_class() -> None:
    gate = SqueezeExcite(16, reduction=4, gate="relu").gate
    assert isinstance(gate, nn.ReLU) and type(gate) is ReLUGate  # the backbone's stay free
    assert not gate.inplace  # it must not overwrite the excitation it reads


@pytest.mark.parametrize("gate", list(GATES))
def test_nosqueeze_is_the_excitation_mlp_at_every_pixel(gate: str) -> None:
    """Paper, Section 7.1: no pooling; the two FCs become 1x1 convs on the full map, and the
    gate scales every pixel of every channel."""
    se = _randomised(SqueezeExcite(24, reduction=4, squeeze="none", gate=gate))
    x = torch.randn(2, 24, 5, 7)
    pixels = x.permute(0, 2, 3, 1)  # [N, H, W, C]: an MLP over the channels of each pixel
    h = torch.relu(pixels @ se.fc1.weight.flatten(1).T + se.fc1.bias)
    s = GATE_FUNCTIONS[gate](h @ se.fc2.weight.flatten(1).T + se.fc2.bias).permute(0, 3, 1, 2)
    assert se.excite(x).shape == x.shape  # a scale per pixel and channel
    torch.testing.assert_close(se.excite(x), s)
    torch.testing.assert_close(se(x), x * s)
    # the same parameters, keys and shapes as the paper's block
    paper = SqueezeExcite(24, reduction=4)
    assert {k: v.shape for k, v in se.state_dict().items()} == {
        k: v.shape for k, v in paper.state_dict().items()
    }
    # and not the pooled block's function with those weights
    paper.load_state_dict(se.state_dict())
    assert not torch.allclose(paper.eval()(x), se(x), atol=1e-3)


def test_nosqueeze_on_a_1x1_map_is_the_pooled_block() -> None:
    se = _randomised(SqueezeExcite(16, reduction=4, squeeze="none"))
    paper = SqueezeExcite(16, reduction=4).eval()
    paper.load_state_dict(se.state_dict())
    x = torch.randn(3, 16, 1, 1)
    torch.testing.assert_close(se(x), paper(x))


@pytest.mark.parametrize("squeeze", list(SQUEEZES))
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize(("channels", "side", "r"), [(64, 7, 16), (48, 5, 4), (32, 1, 32)])
def test_a_blocks_costs_are_what_thop_counts(
    squeeze: str, gate: str, channels: int, side: int, r: int
) -> None:
    """The closed form against the profiler: NoSqueeze is 2·C·h per position (a per-pixel
    MLP) plus a gate per element, not a per-channel one."""
    se = SqueezeExcite(channels, reduction=r, squeeze=squeeze, gate=gate)
    params, flops = se_costs(channels, side, side + 2, r, squeeze)
    assert (params, flops) == (
        count_params(se),
        count_module_flops(se, (channels, side, side + 2)),
    )
    h, elements = channels // r, channels * side * (side + 2)
    if squeeze == "none":
        assert flops == (2 * channels * h + channels) * side * (side + 2) + elements
    else:
        assert flops == elements + 2 * channels * h + channels + elements


def test_the_relu_gate_is_charged_but_the_backbones_relus_are_not() -> None:
    """A rule for the relu gate must not reach the hidden ReLU δ or any of the backbone's."""
    net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), SqueezeExcite(16, reduction=4))
    relu_gate = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.ReLU(), SqueezeExcite(16, reduction=4, gate="relu")
    )
    relu_gate.load_state_dict(net.state_dict())
    assert count_module_flops(net, (3, 4, 4)) == count_module_flops(relu_gate, (3, 4, 4))
    assert count_module_flops(nn.ReLU(), (16, 4, 4)) == 0


# --------------------------------------------------------------------------- identity start


@pytest.mark.parametrize("gate", list(GATES))
def test_only_gates_that_are_half_at_zero_start_as_the_identity(gate: str) -> None:
    se = SqueezeExcite(16, reduction=4, squeeze="none", gate=gate, gain=IDENTITY_GAIN)
    assert can_start_as_identity(gate) == (gate in ("sigmoid", "hardsigmoid"))
    if can_start_as_identity(gate):
        se.start_as_identity()
        x = torch.randn(2, 16, 3, 5)
        torch.testing.assert_close(se(x), x, rtol=0, atol=0)
        return
    with pytest.raises(ValueError) as err:
        se.start_as_identity()
    message = str(err.value)
    assert "0 at a zero excitation" in message and "zero the map" in message
    assert "sigmoid or hardsigmoid" in message


def test_identity_init_of_a_tanh_block_names_the_site_and_the_fix() -> None:
    with torch.device("meta"):
        base = get_model("resnet18", num_classes=10)
    with pytest.raises(ArchitectureError, match=r"site layer1\.0 \(standard:4:avg:tanh\).*zero"):
        insert_se(
            base,
            Architecture({"layer1.0": "standard:4:avg:tanh"}),
            backbone="resnet18",
            init="identity",
        )


# ------------------------------------------------------------------------- architecture text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("standard:16:none:tanh", "standard:16:none:tanh"),
        ("identity:4:none:relu", "identity:4:none:relu"),
        ("pre:8:max:relu", "pre:8:max:relu"),
        ("standard:16:none", "standard:16:none:sigmoid"),  # a squeeze, not the variant
        ("post:2:avg:tanh", "post:2:avg:tanh"),
    ],
)
def test_ablation_choices_parse_and_round_trip(text: str, canonical: str) -> None:
    choice = SEChoice.parse(text)
    assert str(choice) == canonical and choice.adds_block
    assert SEChoice.parse(str(choice)) == choice == SEChoice.parse(choice.to_dict())
    sites = ["layer1.0", "layer1.1"]
    arch = resolve_architecture(text, sites=sites)
    assert Architecture(arch.to_dict()) == arch and arch.placement(sites).count("*") == 2


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("standard:16:avg:swish", ["unknown gate 'swish'", "sigmoid, hardsigmoid, tanh, relu"]),
        ("standard:16:mean", ["unknown squeeze 'mean'", "avg, max, none"]),
    ],
)
def test_unknown_names_in_arch_text_list_the_valid_ones(text: str, fragments: list[str]) -> None:
    with pytest.raises(ArchitectureError) as err:
        resolve_architecture(text, sites=["layer1.0"])
    message = str(err.value)
    assert f"--arch {text!r}" in message
    for fragment in fragments:
        assert fragment in message


# ------------------------------------------------------------------------------------ export


def test_a_state_dict_export_round_trips_every_ablation(tmp_path: Path) -> None:
    from se_search.outputs.export import export_model, load_model, read_metadata

    arch = Architecture(
        {
            "layer1.0": "standard:16:none:tanh",
            "layer1.1": "pre:8:max:relu",
            "layer2.0": "post:4:none:relu",
            "layer3.1": "identity:4:none:hardsigmoid",
            "layer4.0": "standard:32:avg:tanh",
        }
    )
    torch.manual_seed(3)
    model = insert_se(get_model("resnet18", num_classes=10), arch, backbone="resnet18")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("fc2.bias"):
                p.normal_()
    path = export_model(
        model,
        backbone="resnet18",
        num_classes=10,
        arch=arch,
        image_size=32,
        metadata={},
        format="state_dict",
        path=tmp_path / "ablations.pt",
    )
    loaded = load_model(path)
    assert Architecture(read_metadata(path)["architecture"]) == arch
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    se = loaded.get_submodule("layer1.0").se
    assert se.squeeze.mode == "none" and isinstance(se.gate, nn.Tanh)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=1e-5)


def test_every_family_builds_and_runs_the_ablations() -> None:
    """A uniform NoSqueeze/tanh and max/relu architecture on one model of a few families."""
    x = torch.randn(2, 3, 32, 32)
    for name in ("mobilenet_v2", "shufflenet_v2_x0_5", "mobilenet_v3_small"):
        family = get_backbone(name)
        torch.manual_seed(0)
        net = family.build(name, num_classes=10).eval()
        sites = [s.name for s in family.list_sites(net)]
        for text in ("standard:4:none:tanh", "standard:4:max:relu"):
            out = insert_se(net, Architecture.uniform(sites, text), backbone=name).eval()
            with torch.no_grad():
                y = out(x)
            assert y.shape == (2, 10) and torch.isfinite(y).all(), (name, text)
