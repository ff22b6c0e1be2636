from __future__ import annotations

import pytest
import torch
from torch import nn

from se_search.blocks import VARIANTS, ChannelScale, Squeeze, SqueezeExcite, squeeze_width


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
    with pytest.raises(ValueError, match="sigmoid"):
        SqueezeExcite(16, gate="tanh")


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
    # Table 14: every integration variant beats no SE; identity is the paper's best.
    errs = {name: VARIANTS[name].paper_top1_err for name in paper}
    assert min(errs, key=errs.get) == "identity" and max(errs, key=errs.get) == "none"
