from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from se_search.errors import ArchitectureError, BackboneError
from se_search.models.arch import Architecture
from se_search.models.surgery import insert_se
from se_search.models.variants import ResidualSE
from se_search.space import SearchSpace, load_space
from se_search.space.build import build_model

WriteSpace = Callable[..., Path]


def _space(write_space: WriteSpace, model: str, extra: str = "") -> SearchSpace:
    return load_space(write_space(f"backbone: {{model: {model}, num_classes: 10}}\n{extra}"))


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_none_is_torchvisions_model_under_the_same_seed(
    write_space: WriteSpace, model: str
) -> None:
    space = _space(write_space, model)
    torch.manual_seed(7)
    reference = get_model(model, num_classes=10).eval()
    torch.manual_seed(7)
    ours = build_model(space, Architecture()).eval()
    assert type(ours) is type(reference)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(ours(x), reference(x))


def test_insert_se_never_mutates_its_input(small_space: SearchSpace) -> None:
    model = get_model("resnet18", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = insert_se(
        model, Architecture.uniform(small_space.site_names, "pre:4"), backbone="resnet18"
    )
    assert out is not model
    assert not any(isinstance(m, ResidualSE) for m in model.modules())
    assert sum(isinstance(m, ResidualSE) for m in out.modules()) == 8
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_untouched_keys_equal_torchvisions(small_space: SearchSpace) -> None:
    arch = Architecture({"layer1.0": "standard:16", "layer3.1": "identity:4"})
    keys = set(build_model(small_space, arch).state_dict())
    tv_keys = set(get_model("resnet18", num_classes=10).state_dict())
    assert tv_keys <= keys
    assert {k.split(".se.")[0] for k in keys - tv_keys} == {"layer1.0", "layer3.1"}


def test_same_seed_same_se_weights(small_space: SearchSpace) -> None:
    arch = Architecture.uniform(small_space.site_names, "standard:4")
    torch.manual_seed(3)
    a = build_model(small_space, arch).state_dict()
    torch.manual_seed(3)
    b = build_model(small_space, arch).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_backbone_weights_load_from_a_checkpoint(write_space: WriteSpace, tmp_path: Path) -> None:
    source = get_model("resnet18", num_classes=10)
    ckpt = tmp_path / "r18.pt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    space = load_space(
        write_space(f"backbone: {{model: resnet18, num_classes: 10, weights: {ckpt}}}\n")
    )
    model = build_model(space, Architecture.uniform(space.site_names, "standard:16"))
    state = model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(state[key], value), key


def test_checkpoint_with_another_classifier_keeps_a_fresh_one(
    write_space: WriteSpace, tmp_path: Path
) -> None:
    source = get_model("resnet18", num_classes=1000)
    ckpt = tmp_path / "imagenet.pt"
    torch.save(source.state_dict(), ckpt)
    space = load_space(
        write_space(f"backbone: {{model: resnet18, num_classes: 10, weights: {ckpt}}}\n")
    )
    with pytest.warns(UserWarning, match="fc.weight, fc.bias do not fit num_classes=10"):
        model = build_model(space, Architecture())
    assert model.fc.out_features == 10
    assert torch.equal(model.conv1.weight, source.conv1.weight)


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        ("/no/such/file.pt", "no such file"),
        ("IMAGENET_NOPE", "IMAGENET1K_V1"),
    ],
)
def test_bad_weights_say_what_to_give(
    write_space: WriteSpace, weights: str, fragment: str
) -> None:
    space = load_space(write_space(f"backbone: {{model: resnet18, weights: '{weights}'}}\n"))
    with pytest.raises(BackboneError, match=fragment):
        build_model(space, Architecture())


def test_a_weights_name_for_a_model_torchvision_does_not_have_is_refused(
    write_space: WriteSpace,
) -> None:
    text = "backbone: {model: resnet20, weights: IMAGENET1K_V1}\nchoices: {reduction: [16]}\n"
    space = load_space(write_space(text))
    with pytest.raises(BackboneError, match="resnet20 has no torchvision weights; give the path"):
        build_model(space, Architecture())


def test_checkpoint_of_another_model_is_refused(write_space: WriteSpace, tmp_path: Path) -> None:
    ckpt = tmp_path / "r50.pt"
    torch.save(get_model("resnet50", num_classes=10).state_dict(), ckpt)
    space = load_space(write_space(f"backbone: {{model: resnet18, weights: {ckpt}}}\n"))
    with pytest.raises(BackboneError, match="does not fit resnet18: wrong shapes"):
        build_model(space, Architecture())


def test_architecture_outside_the_space_is_refused(write_space: WriteSpace) -> None:
    space = _space(write_space, "resnet18", "sites: ['layer4.*']\n")
    with pytest.raises(ArchitectureError, match="layer1.0.*valid sites are layer4.0, layer4.1"):
        build_model(space, Architecture({"layer1.0": "standard:16"}))
    with pytest.raises(ArchitectureError, match="at most 512"):
        build_model(space, Architecture({"layer4.0": "standard:1024"}))


@pytest.mark.parametrize(
    "model",
    [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "wide_resnet50_2",
    ],
)
@pytest.mark.parametrize("variant", ["standard", "pre", "post", "identity"])
def test_every_resnet_and_variant_runs(write_space: WriteSpace, model: str, variant: str) -> None:
    space = _space(write_space, model)
    net = build_model(space, Architecture.uniform(space.site_names, f"{variant}:16")).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert sum(isinstance(m, ResidualSE) for m in net.modules()) == len(space.site_names)
