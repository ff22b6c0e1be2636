"""Loading spaces: bundled names, overrides, and every invalid case with its key path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from se_search.errors import SpaceError
from se_search.space import bundled_spaces, load_space, resolve_space_path

WriteSpace = Callable[..., Path]


def test_bundled_spaces_load_by_name_or_file_name() -> None:
    assert {"resnet50", "resnet18"} <= set(bundled_spaces())
    space = load_space("resnet50")
    assert load_space("resnet50.yaml").hash == space.hash
    assert space.backbone.model == "resnet50"
    assert len(space.site_names) == 16 and space.site_names[0] == "layer1.0"
    assert space.choices.variant == ["none", "standard", "pre", "post", "identity"]
    assert space.choices.reduction == [2, 4, 8, 16, 32]
    assert space.objectives == {"accuracy": "max", "flops": "min", "latency_ms": "min"}
    assert space.data.dataset == "digits" and space.data.image_size == 32
    assert len(load_space("resnet18").site_names) == 8
    assert resolve_space_path("resnet50").read_text() == space.text


def test_defaults_and_name_from_file(write_space: WriteSpace) -> None:
    space = load_space(write_space("backbone: {model: resnet18}\n", name="tiny.yaml"))
    assert space.name == "tiny" and space.study_name == "tiny"
    assert space.sites == "all" and space.storage == "sqlite:///se_search.db"
    assert space.search.sampler == "nsga2" and space.search.engine == "local"


def test_site_globs_select_in_forward_order(write_space: WriteSpace) -> None:
    space = load_space(
        write_space("backbone: {model: resnet50}\nsites: ['layer4.*', 'layer3.0']\n")
    )
    assert space.site_names == ["layer3.0", "layer4.0", "layer4.1", "layer4.2"]
    assert len(space.all_sites) == 16


def test_size_counts_each_sites_choices(write_space: WriteSpace) -> None:
    text = (
        "backbone: {model: resnet18}\nchoices: {variant: [none, standard, pre], reduction: %s}\n"
    )
    assert load_space(write_space(text % "[4, 8]")).size == (1 + 2 * 2) ** 8
    one = load_space(
        write_space(text % "[4, 8]"),
        {"sites": ["layer1.0"], "choices.gate": ["sigmoid", "hardsigmoid"]},
    )
    assert one.size == 1 + 2 * 2 * 2  # none, or two variants x two ratios x two gates


def test_the_papers_ablations_are_choices(write_space: WriteSpace) -> None:
    """tanh and relu gates (Table 12) and NoSqueeze (Table 16), in a train space; under
    finetune, NoSqueeze with a gate that starts as the identity."""
    text = (
        "backbone: {model: resnet18%s}\nsites: [layer1.0]\n"
        "choices: {variant: [none, standard], reduction: [4], squeeze: [avg, max, none], "
        "gate: %s}\nevaluation: {strategy: %s}\n"
    )
    space = load_space(write_space(text % ("", "[sigmoid, hardsigmoid, tanh, relu]", "train")))
    assert space.choices.squeeze == ["avg", "max", "none"]
    assert space.choices.gate == ["sigmoid", "hardsigmoid", "tanh", "relu"]
    assert space.size == 1 + 3 * 4
    tuned = load_space(
        write_space(text % (", weights: IMAGENET1K_V1", "[sigmoid, hardsigmoid]", "finetune"))
    )
    assert tuned.choices.squeeze == ["avg", "max", "none"]


def test_a_variant_no_site_takes_is_refused_with_the_sites_choices(
    write_space: WriteSpace,
) -> None:
    path = write_space("backbone: {model: resnet18}\nchoices: {variant: [none, keep]}\n")
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert "choices.variant[1]" in message and "variant 'keep' fits no selected site" in message
    assert "its sites take none, standard, pre, post, identity" in message


def test_overrides_apply_and_change_the_hash(small_space_file: Path) -> None:
    path = small_space_file
    space = load_space(path, ["search.trials=4", "choices.reduction=[8]", "data.root=/x"])
    assert space.search.trials == 4 and space.choices.reduction == [8]
    assert space.data.root == "/x"
    assert load_space(path, {"search.trials": 4}).search.trials == 4
    assert space.hash != load_space(path).hash


def test_override_errors_are_marked_as_coming_from_set(small_space_file: Path) -> None:
    path = small_space_file
    with pytest.raises(SpaceError) as err:
        load_space(path, ["search.trials=0"])
    assert "(--set): search.trials" in str(err.value)
    with pytest.raises(SpaceError, match="write KEY=VALUE"):
        load_space(path, ["search.trials"])


def test_missing_space_lists_bundled_ones() -> None:
    with pytest.raises(SpaceError, match="resnet18, resnet50"):
        load_space("no-such-space")


def _problem(write_space: WriteSpace, text: str) -> str:
    with pytest.raises(SpaceError) as err:
        load_space(write_space(text))
    return str(err.value)


# One case per rule in the issue: (YAML, expected key path with line, words of the fix).
INVALID = {
    "unknown top-level key": (
        "backbone: {model: resnet18}\nepochs: 3\n",
        "space.yaml:2: epochs: unknown key 'epochs'",
        "valid keys here: name, backbone",
    ),
    "unknown nested key": (
        "backbone: {model: resnet18}\nchoices:\n  variant: [standard]\n  colour: red\n",
        "space.yaml:4: choices.colour: unknown key 'colour'",
        "variant, reduction, squeeze, gate",
    ),
    "unknown backbone": (
        "backbone: {model: resnet5}\n",
        "space.yaml:1: backbone.model: unknown backbone 'resnet5'",
        "resnet164, resnet18, resnet20",
    ),
    "unknown variant": (
        "backbone: {model: resnet18}\nchoices:\n  variant: [none, sideways]\n",
        "space.yaml:3: choices.variant[1]: unknown variant 'sideways'",
        "none, standard, pre, post, identity",
    ),
    "zero reduction": (
        "backbone: {model: resnet18}\nchoices:\n  variant: [standard]\n"
        "  reduction:\n    - 4\n    - 8\n    - 0\n",
        "space.yaml:7: choices.reduction[2]: reduction 0 is not a positive integer",
        "integers such as",
    ),
    "fractional reduction": (
        "backbone: {model: resnet18}\nchoices: {variant: [standard], reduction: [4, 2.5]}\n",
        "choices.reduction[1]: reduction 2.5 is not a positive integer",
        "integers such as",
    ),
    "string reduction": (
        "backbone: {model: resnet18}\nchoices: {variant: [standard], reduction: ['8']}\n",
        "choices.reduction[0]: reduction '8' is not a positive integer",
        "integers such as",
    ),
    "reduction wider than a site": (
        "backbone: {model: resnet18}\nchoices:\n  variant: [standard]\n  reduction: [16, 128]\n",
        "space.yaml:4: choices.reduction[1]: reduction 128 exceeds the 64 channels",
        "use at most 64",
    ),
    "reduction wider than a pre site": (
        "backbone: {model: resnet50}\nsites: ['layer2.*']\n"
        "choices: {variant: [standard, pre], reduction: [512]}\n",
        "choices.reduction[0]: reduction 512 exceeds the 256 channels that variant 'pre'",
        "at site layer2.0",
    ),
    "site pattern matching nothing": (
        "backbone: {model: resnet18}\nsites:\n  - layer1.0\n  - layer9.*\n",
        "space.yaml:4: sites[1]: pattern 'layer9.*' matches no site of resnet18",
        "layer1.0, layer1.1, layer2.0",
    ),
    "empty variant list": (
        "backbone: {model: resnet18}\nchoices:\n  variant: []\n",
        "space.yaml:3: choices.variant: empty list",
        "at least one value",
    ),
    "empty reduction list": (
        "backbone: {model: resnet18}\nchoices: {reduction: []}\n",
        "choices.reduction: empty list",
        "at least one value",
    ),
    "empty site list": (
        "backbone: {model: resnet18}\nsites: []\n",
        "sites: ",
        "give 'all', or a list of site names",
    ),
    "unknown objective": (
        "backbone: {model: resnet18}\nobjectives:\n  accuracy: max\n  speed: max\n",
        "space.yaml:4: objectives.speed: unknown objective 'speed'",
        "accuracy, params, flops, latency_ms",
    ),
    "bad direction": (
        "backbone: {model: resnet18}\nobjectives:\n  accuracy: up\n",
        "space.yaml:3: objectives.accuracy: direction 'up' is neither 'min' nor 'max'",
        "use min or max",
    ),
    "unknown gate": (
        "backbone: {model: resnet18}\nchoices:\n  gate: [sigmoid, swish]\n",
        "space.yaml:3: choices.gate[1]: unknown gate 'swish'",
        "use one of sigmoid, hardsigmoid, tanh, relu",
    ),
    "unknown squeeze": (
        "backbone: {model: resnet18}\nchoices:\n  squeeze: [mean]\n",
        "space.yaml:3: choices.squeeze[0]: unknown squeeze 'mean'",
        "use one of avg, max, none",
    ),
    "tanh gate under finetune": (
        "backbone: {model: resnet18, weights: IMAGENET1K_V1}\nchoices:\n"
        "  gate: [sigmoid, tanh, relu]\nevaluation: {strategy: finetune}\n",
        "space.yaml:3: choices.gate[1]: gate 'tanh' cannot start as the identity",
        "tanh(0) = 0, so a new block would zero the map it scales",
    ),
    "relu gate under finetune": (
        "backbone: {model: resnet18, weights: IMAGENET1K_V1}\nchoices:\n"
        "  gate: [sigmoid, tanh, relu]\nevaluation: {strategy: finetune}\n",
        "choices.gate[2]: gate 'relu' cannot start as the identity",
        "use gate sigmoid or hardsigmoid under finetune, or strategy 'train'",
    ),
    "duplicate variant": (
        "backbone: {model: resnet18}\nchoices: {variant: [pre, pre]}\n",
        "choices.variant: pre listed twice",
        "list each value once",
    ),
    "missing backbone": (
        "name: x\n",
        "backbone: required key is missing",
        "add 'backbone:'",
    ),
    "unknown Ray resource": (
        "backbone: {model: resnet18}\nsearch:\n  ray:\n    resources: {cpu: 1, tpu: 1}\n",
        "space.yaml:4: search.ray.resources.tpu",
        "should be 'cpu' or 'gpu'",
    ),
    "unknown early-stopping rule": (
        "backbone: {model: resnet18}\nevaluation:\n  early_stopping: {rule: median}\n",
        "space.yaml:3: evaluation.early_stopping.rule",
        "'none' or 'asha'",
    ),
    "reduction factor below 2": (
        "backbone: {model: resnet18}\nevaluation:\n  early_stopping: {reduction_factor: 1}\n",
        "evaluation.early_stopping.reduction_factor",
        "greater than or equal to 2",
    ),
}


@pytest.mark.parametrize(("text", "where", "fix"), INVALID.values(), ids=list(INVALID))
def test_invalid_space_names_file_key_and_fix(
    write_space: WriteSpace, text: str, where: str, fix: str
) -> None:
    message = _problem(write_space, text)
    assert where in message
    assert fix in message


def test_malformed_yaml_names_its_line(write_space: WriteSpace) -> None:
    message = _problem(
        write_space, "name: x\nbackbone: {model: resnet18}\nchoices:\n  variant: [none\n  x: 1\n"
    )
    assert "space.yaml:5: malformed YAML" in message
    assert "indentation or quoting" in message
    assert "top level must be a mapping" in _problem(write_space, "- a\n- b\n")


def test_every_problem_is_reported_at_once(write_space: WriteSpace) -> None:
    message = _problem(
        write_space,
        "backbone: {model: resnet18, colour: red}\nchoices: {variant: [x], reduction: [0]}\n",
    )
    for key in ("backbone.colour", "choices.variant[0]", "choices.reduction[0]"):
        assert key in message
