"""The oneshot strategy's supernet: shared and sliced weights, BN recalibration, training,
the checkpoint, and a search scored on it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from se_search.engines.local import LocalEngine
from se_search.evaluation.evaluator import Evaluator
from se_search.evaluation.oneshot import recalibrate_bn
from se_search.evaluation.supernet import SlimmableSE, Supernet
from se_search.events import SupernetEpoch, SupernetReady
from se_search.models.arch import Architecture
from se_search.models.blocks import GATES, SQUEEZES
from se_search.models.surgery import build_backbone
from se_search.space import SearchSpace, learned_key, load_space
from se_search.space.sampling import largest, random_architecture, smallest
from se_search.storage.store import ResultsStore
from se_search.testing.events import EventLog
from tests.conftest import ASSETS

SPACES = {
    "resnet18": {"choices.variant": ["none", "standard", "pre", "post", "identity"]},
    "mobilenet_v2": {"choices.variant": ["none", "inner", "standard", "pre", "identity"]},
    "vgg11": {"choices.variant": ["none", "standard"]},
    "mobilenet_v3_small": {"choices.variant": ["keep", "none", "standard"]},
}


def _space(model: str, tmp_path: Path | None = None, **overrides: Any) -> SearchSpace:
    settings = {
        "backbone.model": model,
        "choices.reduction": [4, 8],
        "choices.gate": list(GATES),  # every gate and squeeze, NoSqueeze included
        "choices.squeeze": list(SQUEEZES),
        "data.image_size": 32,
        **SPACES.get(model, {}),
        **overrides,
    }
    if tmp_path is not None:
        settings["storage"] = f"sqlite:///{tmp_path / 'oneshot.db'}"
    return load_space(ASSETS / "e2e.yaml", settings)


def _perturbed(net: nn.Module) -> nn.Module:
    """Non-trivial weights everywhere: BN statistics and affines, and the SE blocks."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            if isinstance(m, SlimmableSE):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return net.eval()


@pytest.mark.parametrize("model", list(SPACES))
def test_a_candidate_computes_what_the_supernet_computes_for_it(model: str) -> None:
    """For the smallest, the largest and random architectures: the stand-alone model built
    from the supernet's weights gives the supernet's logits (options share nothing wrongly)."""
    space = _space(model)
    torch.manual_seed(0)
    supernet = _perturbed(Supernet(space))
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    archs = [smallest(space), largest(space), *(random_architecture(space, rng) for _ in range(3))]
    for arch in archs:
        supernet.activate(arch)
        with torch.no_grad():
            expected = supernet(x)
            got = supernet.extract(arch).eval()(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=arch.summary)


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v3_small"])
def test_every_squeeze_and_gate_runs_on_the_shared_weights(model: str) -> None:
    """The slimmable block switches to each squeeze (NoSqueeze's per-pixel convs on the sliced
    weights too) and gate, and computes what the stand-alone block does with its slice."""
    space = _space(model)
    supernet = _perturbed(Supernet(space))
    names = space.site_names
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for squeeze in SQUEEZES:
        for gate in GATES:
            arch = Architecture({n: f"standard:{(4, 8)[i % 2]}:{squeeze}:{gate}"
                                 for i, n in enumerate(names)})  # fmt: skip
            supernet.activate(arch)
            block = supernet.sites[names[0]].options["standard"]
            se = next(m for m in block.modules() if isinstance(m, SlimmableSE))
            assert se.squeeze.mode == squeeze and type(se.gate) is GATES[gate]
            with torch.no_grad():
                expected = supernet(x)
                got = supernet.extract(arch).eval()(x)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=str(arch))
            outputs.append(expected)
    assert all(not torch.equal(outputs[0], other) for other in outputs[1:])  # each one acts


def test_a_candidate_holds_exactly_the_supernets_sliced_weights() -> None:
    space = _space("resnet18")
    supernet = _perturbed(Supernet(space))
    arch = Architecture({"layer1.0": "standard:8:max:hardsigmoid", "layer2.1": "pre:4"})
    model = supernet.extract(arch)
    own = dict(supernet.net.named_parameters(remove_duplicate=False))
    for site, variant in (("layer1.0", "standard"), ("layer2.1", "pre")):
        block = supernet.sites[site].options[variant].se
        assert isinstance(block, SlimmableSE) and block.fc1.out_channels == block.channels // 4
        se = model.get_submodule(site).se
        h = se.fc1.out_channels
        assert h == block.channels // arch.choice(site).reduction
        assert torch.equal(se.fc1.weight, block.fc1.weight[:h])
        assert torch.equal(se.fc1.bias, block.fc1.bias[:h])
        assert torch.equal(se.fc2.weight, block.fc2.weight[:, :h])
        assert torch.equal(se.fc2.bias, block.fc2.bias)
    assert model.get_submodule("layer1.0").se.squeeze.mode == "max"
    # the backbone's weights are the shared ones, whatever option a site runs
    for name, p in model.named_parameters():
        if ".se." not in name:
            site = next((s for s in supernet.sites if name.startswith(s + ".")), None)
            key = name
            if site is not None:
                key = f"{site}.options.{arch.choice(site).variant}.{name[len(site) + 1 :]}"
            assert torch.equal(p, own[key]), name


def test_per_ratio_se_weights_give_each_ratio_its_own_block() -> None:
    """``se_weights: per_ratio``: an option per variant and ratio, each with a full-width SE
    block of its ratio; a candidate still computes exactly what the supernet does for it."""
    space = _space("resnet18", **{"evaluation.supernet.se_weights": "per_ratio"})
    other = _space("resnet18")
    assert learned_key(space, "supernet") != learned_key(other, "supernet")  # another checkpoint
    supernet = _perturbed(Supernet(space))
    site = supernet.sites["layer2.1"]
    assert {"none", "standard:4", "standard:8", "pre:4", "pre:8"} <= set(site.options)
    four, eight = site.options["standard:4"].se, site.options["standard:8"].se
    assert four.fc1.out_channels == four.channels // 4
    assert eight.fc1.out_channels == eight.channels // 8
    assert four.fc1.weight.data_ptr() != eight.fc1.weight.data_ptr()  # not slices of one
    assert site.options["standard:8"].conv1.weight is site.options["none"].conv1.weight
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(1)
    for arch in [
        largest(space),
        smallest(space),
        *(random_architecture(space, rng) for _ in range(3)),
    ]:
        supernet.activate(arch)
        with torch.no_grad():
            expected = supernet(x)
            got = supernet.extract(arch).eval()(x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=arch.summary)
    ratio_8 = Architecture({"layer2.1": "standard:8"})
    supernet.activate(ratio_8)
    assert site.active == "standard:8"
    model = supernet.extract(ratio_8)
    assert torch.equal(model.get_submodule("layer2.1").se.fc1.weight, eight.fc1.weight)


@pytest.mark.parametrize("distill", [False, True])
def test_a_step_distils_the_largest_into_the_others_when_asked(distill: bool) -> None:
    from se_search.evaluation.oneshot import step_losses

    space = _space("resnet18", **{"evaluation.supernet.distill": distill})
    torch.manual_seed(0)
    supernet = Supernet(space).train()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    archs = [largest(space), smallest(space)]
    losses = [
        loss.item() for loss in step_losses(supernet, archs, images, labels, distill=distill)
    ]
    with torch.no_grad():  # the same forwards by hand (training-mode BN: batch statistics)
        supernet.activate(archs[0])
        big = supernet(images)
        supernet.activate(archs[1])
        small = supernet(images)
    ce = nn.functional.cross_entropy
    assert losses[0] == pytest.approx(ce(big, labels).item(), rel=1e-5)
    target = big.softmax(dim=1) if distill else labels
    assert losses[1] == pytest.approx(ce(small, target).item(), rel=1e-5)
    assert losses[1] != pytest.approx(
        ce(small, big.softmax(dim=1) if not distill else labels).item()
    )


def test_distillation_needs_the_sandwich_rule() -> None:
    from se_search.errors import SpaceError

    with pytest.raises(SpaceError, match="set sampling: sandwich"):
        _space("resnet18", **{"evaluation.supernet.distill": True,
                              "evaluation.supernet.sampling": "uniform"})  # fmt: skip


def test_the_none_candidate_is_the_plain_backbone_with_the_same_weights() -> None:
    space = _space("resnet18")
    supernet = _perturbed(Supernet(space))
    none = Architecture({})
    supernet.activate(none)
    plain = build_backbone(space.backbone)
    plain.load_state_dict(supernet.candidate_state(none, plain.state_dict()))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(supernet(x), plain.eval()(x))
    # options share the block's tensors: the standard option's conv is the plain block's
    site = supernet.sites["layer3.0"]
    assert site.options["standard"].conv1.weight is site.options["none"].conv1.weight


def test_bn_recalibration_replaces_the_running_statistics() -> None:
    space = _space("resnet18")
    supernet = _perturbed(Supernet(space))
    supernet.activate(largest(space))
    bn = supernet.net.bn1
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    batches = [torch.randn(8, 3, 32, 32) * 2 + 1 for _ in range(3)]
    recalibrate_bn(supernet, batches)
    assert not supernet.training and bn.momentum == 0.1  # momentum restored
    assert not torch.allclose(bn.running_mean, before_mean)
    assert not torch.allclose(bn.running_var, before_var)
    # exactly the statistics of the stem's output over all calibration images
    with torch.no_grad():
        stem = torch.cat([supernet.net.conv1(b) for b in batches])
    torch.testing.assert_close(bn.running_mean, stem.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_oneshot_search_trains_the_supernet_once_and_reuses_its_checkpoint(
    tmp_path: Path,
) -> None:
    space = _space(
        "resnet18", tmp_path,
        **{"sites": ["layer3.*", "layer4.*"], "data.image_size": 16, "choices.gate": ["sigmoid"],
           "choices.squeeze": ["avg"], "evaluation.strategy": "oneshot",
           "evaluation.supernet.epochs": 1, "evaluation.supernet.sampling": "uniform",
           "search.checkpoints": "none", "search.trials": 3},
    )  # fmt: skip
    events = EventLog()
    summary = LocalEngine(space, listener=events).run()
    assert summary.finished == 3
    ready = events.of(SupernetReady)
    assert len(ready) == 1 and ready[0].trained and Path(ready[0].path).is_file()
    assert len(events.of(SupernetEpoch)) == 1
    done = ResultsStore(space.storage).candidates("e2e", states=["complete"])
    assert all(0 < c.accuracy <= 1 and c.epochs == 0 for c in done)

    # a resumed run loads the checkpoint instead of training again; scores agree
    events.clear()
    LocalEngine(space, listener=events).run(5)
    ready = events.of(SupernetReady)
    assert len(ready) == 1 and not ready[0].trained
    assert not events.of(SupernetEpoch)
    evaluator = Evaluator(space, artifacts=Path(ready[0].path).parent)
    first = done[0]
    arch = Architecture(first.architecture)
    assert evaluator.evaluate(arch).metrics["accuracy"] == pytest.approx(first.accuracy)


# ------------------------------------------------------------------------ few-shot split


def _split_space(tmp_path: Path | None = None, **overrides: Any) -> SearchSpace:
    return _space(
        "resnet18", tmp_path,
        **{"sites": ["layer3.*", "layer4.*"], "data.image_size": 16, "choices.gate": ["sigmoid"],
           "choices.squeeze": ["avg"], "choices.variant": ["none", "standard", "post"],
           "evaluation.strategy": "oneshot", "evaluation.supernet.split": "variant",
           **overrides},
    )  # fmt: skip


def test_a_split_has_one_part_per_variant_of_its_site() -> None:
    from se_search.evaluation.oneshot import split_parts

    assert split_parts(_split_space()) == [
        ("layer4.1", "none"),
        ("layer4.1", "standard"),
        ("layer4.1", "post"),
    ]  # the last selected site by default
    named = _split_space(**{"evaluation.supernet.split_site": "layer3.0"})
    assert [site for site, _ in split_parts(named)] == ["layer3.0"] * 3
    assert split_parts(_space("resnet18")) == []  # split: none


def test_a_parts_steps_pin_its_site_and_leave_the_rest_as_drawn() -> None:
    from se_search.evaluation.oneshot import step_architectures

    space = _split_space(**{"evaluation.supernet.random_per_step": 3})
    unsplit = step_architectures(space, random.Random(5))
    # without a part, the sandwich as before: largest, smallest, then random draws
    rng = random.Random(5)
    assert unsplit == [largest(space), smallest(space),
                       *(random_architecture(space, rng) for _ in range(3))]  # fmt: skip
    for variant in ("none", "standard", "post"):
        archs = step_architectures(space, random.Random(5), ("layer4.1", variant))
        assert [a.choice("layer4.1").variant for a in archs] == [variant] * 5
        for pinned, drawn in zip(archs, unsplit):  # every other site as drawn
            assert {k: v for k, v in pinned.items() if k != "layer4.1"} == {
                k: v for k, v in drawn.items() if k != "layer4.1"
            }
    largest_post, smallest_post = step_architectures(
        space, random.Random(5), ("layer4.1", "post")
    )[:2]
    # the part's extremes: its variant at the widest and the narrowest ratio
    assert largest_post.choice("layer4.1").reduction == 4
    assert smallest_post.choice("layer4.1").reduction == 8  # choices.reduction: [4, 8]


def test_a_split_site_that_is_not_selected_is_refused_with_the_fix() -> None:
    from se_search.errors import SpaceError

    with pytest.raises(SpaceError, match=r"split_site 'layer1.0' is not one of .*layer4.1"):
        _split_space(**{"evaluation.supernet.split_site": "layer1.0"})
    with pytest.raises(SpaceError, match="makes one copy"):
        _split_space(**{"choices.variant": ["standard"]})


def test_the_split_leaves_the_supernets_key_and_its_copies_depend_on_their_epochs(
    tmp_path: Path,
) -> None:
    from se_search.evaluation.oneshot import checkpoint_path

    one = _split_space()
    unsplit = _split_space(**{"evaluation.supernet.split": "none"})
    assert learned_key(one, "supernet") == learned_key(unsplit, "supernet")
    longer = _split_space(**{"evaluation.supernet.split_epochs": 3})
    part = ("layer4.1", "post")
    assert checkpoint_path(tmp_path, one) == checkpoint_path(tmp_path, longer)
    assert checkpoint_path(tmp_path, one, part) != checkpoint_path(tmp_path, longer, part)
    assert checkpoint_path(tmp_path, one, part) != checkpoint_path(
        tmp_path, one, ("layer4.1", "standard")
    )


def test_a_split_trains_a_copy_per_part_from_the_supernet_and_scores_on_it(
    tmp_path: Path,
) -> None:
    from se_search.evaluation.oneshot import SplitScorer

    space = _split_space(
        tmp_path,
        **{"evaluation.supernet.epochs": 1, "evaluation.supernet.split_epochs": 1,
           "evaluation.supernet.sampling": "uniform"},
    )  # fmt: skip
    events = EventLog()
    evaluator = Evaluator(space, artifacts=tmp_path)
    evaluator.prepare(events)
    scorer = evaluator.scorer
    assert isinstance(scorer, SplitScorer) and list(scorer.scorers) == ["none", "standard", "post"]
    ready = events.of(SupernetReady)
    assert [(r.part, r.trained) for r in ready] == [
        ("", True),
        ("layer4.1=none", True),
        ("layer4.1=standard", True),
        ("layer4.1=post", True),
    ]
    assert all(Path(r.path).is_file() for r in ready)
    assert [e.epochs for e in events.of(SupernetEpoch)] == [1, 1, 1, 1]
    # each copy started from the supernet and trained on its own part: all differ
    trunk = torch.load(ready[0].path, weights_only=True)["state_dict"]
    key = "net.layer1.0.conv1.weight"  # a backbone weight every architecture trains
    weights = [trunk[key]] + [s.supernet.state_dict()[key] for s in scorer.scorers.values()]
    assert all(not torch.equal(a, b) for i, a in enumerate(weights) for b in weights[i + 1 :])
    # a candidate is scored on its part's copy
    rng = random.Random(0)
    archs = [random_architecture(space, rng) for _ in range(6)]
    for arch in archs:
        own = scorer.scorers[arch.choice("layer4.1").variant]
        assert scorer.scores(arch) == own.scores(arch)
    assert any(  # and the copies tell candidates apart differently
        len({s.scores(arch)["nll"] for s in scorer.scorers.values()}) == 3 for arch in archs
    )
    # a second run loads the copies, not the supernet they started from, and scores alike
    events.clear()
    again = Evaluator(space, artifacts=tmp_path)
    again.prepare(events)
    assert [(r.part, r.trained) for r in events.of(SupernetReady)] == [
        ("layer4.1=none", False),
        ("layer4.1=standard", False),
        ("layer4.1=post", False),
    ]
    assert [again.scorer.scores(a) for a in archs] == [scorer.scores(a) for a in archs]
