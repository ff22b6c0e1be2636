"""The ``finetune`` strategy: SE blocks inserted into a pretrained backbone start as the
identity (gain 2, a zero last layer), so every candidate starts from the backbone's function;
then the whole model trains. Backbone weights here are random but far from any identity (BN
statistics measured on real images, then perturbed, and random BN affines), saved as a local
checkpoint like a user's would be."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from se_search.data.sets import DataBundle, load_data
from se_search.evaluation.evaluator import Evaluation, Evaluator
from se_search.evaluation.train import LAYOUT
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.blocks import IDENTITY_GAIN, SqueezeExcite
from se_search.models.surgery import build_backbone, insert_se
from se_search.outputs.export import export_model, load_model
from se_search.space import DataSpec, SearchSpace, load_space
from se_search.space.build import build_model

#: Each family's variants that add a block (an existing-SE family's ``standard`` replaces
#: one, which no initialisation can make function preserving: not here).
ADDING = {
    "resnet18": ["standard", "pre", "post", "identity"],
    "mobilenet_v2": ["inner", "standard"],
    "googlenet": ["standard"],  # a PlainFamily, as VGG (whose 120 M classifier is too slow)
}
IMAGE_SIZE = 32
RUN_ARCH = Architecture(
    {
        "layer1.0": "standard:4",
        "layer2.1": "pre:8:avg:hardsigmoid",
        "layer3.0": "post:16",
        "layer4.1": "identity:4:max",
    }
)


def _pretrained(model: str, calibration: torch.Tensor) -> nn.Module:
    """A randomly initialised backbone whose BN layers are nowhere the identity.

    The statistics are first measured on real images, then perturbed: arbitrary ones would
    let a deep random network (MobileNetV2, GoogLeNet) give every image the same logits,
    and a test of a constant function proves nothing.
    """
    torch.manual_seed(11)
    net = get_backbone(model).build(model, num_classes=10)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration batch
        net.train()(calibration)
        for bn in norms:
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    return net.eval()


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(DataSpec(dataset="digits", image_size=IMAGE_SIZE), seed=0)


@pytest.fixture(scope="module")
def images(digits: DataBundle) -> torch.Tensor:
    """Four real validation images, upsampled and standardised as training sees them."""
    return torch.stack([digits.val[i][0] for i in range(4)])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, digits: DataBundle) -> dict[str, Path]:
    """Each backbone's "pretrained" state_dict, saved as a user's checkpoint would be."""
    root = tmp_path_factory.mktemp("pretrained")
    calibration = torch.stack([digits.train[i][0] for i in range(16)])
    paths = {}
    for model in ADDING:
        paths[model] = root / f"{model}.pt"
        torch.save(_pretrained(model, calibration).state_dict(), paths[model])
    return paths


def _space(
    root: Path,
    model: str,
    weights: Path,
    *,
    strategy: str = "finetune",
    image_size: int = IMAGE_SIZE,
    batch_size: int = 256,
) -> SearchSpace:
    variants = ", ".join(["none", *ADDING[model]])
    path = root / f"{model}-{strategy}.yaml"
    path.write_text(
        f"backbone: {{model: {model}, num_classes: 10, weights: '{weights}'}}\n"
        f"choices: {{variant: [{variants}], reduction: [4, 16]}}\n"
        "objectives: {accuracy: max, flops: min}\n"
        f"data: {{dataset: digits, image_size: {image_size}, batch_size: {batch_size}}}\n"
        f"evaluation: {{strategy: {strategy}, epochs: 1, lr: 0.01, device: cpu}}\n"
        "latency: {device: cpu, warmup: 1, repeats: 3}\n"
    )
    return load_space(path)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x)


def _se_blocks(model: nn.Module) -> list[SqueezeExcite]:
    return [m for m in model.modules() if isinstance(m, SqueezeExcite)]


#: The gates that can start as the identity, and NoSqueeze (a scale per pixel) with one.
IDENTITY_BLOCKS = [("avg", "sigmoid"), ("avg", "hardsigmoid"), ("none", "sigmoid")]


@pytest.mark.parametrize(("squeeze", "gate"), IDENTITY_BLOCKS)
@pytest.mark.parametrize(
    ("model", "variant"), [(m, v) for m, variants in ADDING.items() for v in variants]
)
def test_inserted_blocks_keep_the_pretrained_function(
    tmp_path: Path,
    checkpoints: dict[str, Path],
    images: torch.Tensor,
    model: str,
    variant: str,
    squeeze: str,
    gate: str,
) -> None:
    space = _space(tmp_path, model, checkpoints[model])
    plain = _logits(build_backbone(space.backbone), images)
    assert plain.std(dim=0).min() > 1e-3  # every logit depends on the image
    # A block at every site, ratios 4 and 16 alternating: one build checks both.
    arch = Architecture(
        {
            site: f"{variant}:{(4, 16)[i % 2]}:{squeeze}:{gate}"
            for i, site in enumerate(space.site_names)
        }
    )
    candidate = build_model(space, arch)
    blocks = _se_blocks(candidate)
    assert len(blocks) == len(space.site_names)
    assert all(b.gain == IDENTITY_GAIN for b in blocks)
    diff = (_logits(candidate, images) - plain).abs().max().item()
    assert diff < 1e-5, f"{arch.summary()}: the logits moved by {diff}"


def test_train_space_builds_the_papers_blocks(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    arch = RUN_ARCH
    train = build_model(
        _space(tmp_path, "resnet18", checkpoints["resnet18"], strategy="train"), arch
    )
    tuned = build_model(_space(tmp_path, "resnet18", checkpoints["resnet18"]), arch)
    assert all(b.gain == 1.0 and b.fc2.weight.abs().sum() > 0 for b in _se_blocks(train))
    assert all(b.fc2.weight.abs().sum() == 0 == b.fc2.bias.abs().sum() for b in _se_blocks(tuned))
    reference = insert_se(
        get_backbone("resnet18").build("resnet18", num_classes=10), arch, backbone="resnet18"
    )
    assert list(train.state_dict()) == list(reference.state_dict())  # no key added
    gains = set(tuned.state_dict()) - set(train.state_dict())
    assert gains == {f"{site}.se.gain" for site in arch}  # finetune adds only the gains
    assert sum(p.numel() for p in train.parameters()) == sum(p.numel() for p in tuned.parameters())


def test_gain_is_checked_and_identity_needs_it() -> None:
    with pytest.raises(ValueError, match="positive finite"):
        SqueezeExcite(8, reduction=2, gain=0.0)
    with pytest.raises(ValueError, match=r"build it with gain=2\.0"):
        SqueezeExcite(8, reduction=2).start_as_identity()
    for gate in ("tanh", "relu"):  # 0 at 0: no gain makes them the identity
        with pytest.raises(ValueError, match="would zero the map whatever its gain"):
            SqueezeExcite(8, reduction=2, gate=gate, gain=IDENTITY_GAIN).start_as_identity()


def test_a_state_dict_sets_the_gain_it_was_saved_with() -> None:
    tuned = SqueezeExcite(8, reduction=2, gain=IDENTITY_GAIN)
    paper = SqueezeExcite(8, reduction=2)
    paper.load_state_dict(tuned.state_dict())  # strict: the gain key is taken, not refused
    assert paper.gain == IDENTITY_GAIN
    tuned.load_state_dict(SqueezeExcite(8, reduction=2).state_dict())
    assert tuned.gain == 1.0 and "gain" not in tuned.state_dict()


@dataclass
class Finetuned:
    space: SearchSpace
    evaluation: Evaluation
    zero_init_calls: int


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Finetuned:
    """One real fine-tuning run: resnet18 on digits at 16x16, 1 epoch of 2 batches."""
    root = tmp_path_factory.mktemp("run")
    space = _space(root, "resnet18", checkpoints["resnet18"], image_size=16, batch_size=64)
    evaluator = Evaluator(space)
    full = evaluator.data
    evaluator.data = replace(  # a couple of batches are enough to see the blocks train
        full, train=Subset(full.train, range(128)), val=Subset(full.val, range(64))
    )
    calls: list[tuple[object, ...]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "se_search.evaluation.strategies.zero_init_residual", lambda *a: calls.append(a)
        )
        evaluation = evaluator.evaluate(RUN_ARCH)
    return Finetuned(space, evaluation, len(calls))


def test_finetuning_trains_the_blocks_from_the_pretrained_start(finetuned: Finetuned) -> None:
    evaluation = finetuned.evaluation
    assert evaluation.feasible and 0.0 <= evaluation.metrics["accuracy"] <= 1.0
    assert evaluation.metrics["epochs"] == 1
    assert finetuned.zero_init_calls == 0  # it would have cut the pretrained function
    blocks = _se_blocks(evaluation.model)
    assert len(blocks) == len(RUN_ARCH)
    for block in blocks:
        assert block.gain == IDENTITY_GAIN  # a buffer: training leaves it
        assert block.fc2.weight.abs().max() > 0  # moved away from the zero start


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "pt2", "safetensors"])
def test_export_and_load_reproduce_the_finetuned_logits(
    tmp_path: Path, finetuned: Finetuned, fmt: str
) -> None:
    model = finetuned.evaluation.model
    x = torch.randn(4, 3, 16, 16)
    path = export_model(
        model,
        backbone="resnet18",
        num_classes=10,
        arch=RUN_ARCH,
        image_size=16,
        metadata={"strategy": "finetune"},
        format=fmt,
        path=tmp_path / f"model.{fmt}",
    )
    loaded = load_model(path)  # in eval mode already (a pt2 module refuses eval())
    with torch.no_grad():
        got = loaded(x)
    assert torch.allclose(got, _logits(model, x), atol=1e-5)
    if fmt in ("state_dict", "safetensors"):  # rebuilt from the metadata: the gains came back
        blocks = _se_blocks(loaded)
        assert len(blocks) == len(RUN_ARCH)
        assert all(b.gain == IDENTITY_GAIN for b in blocks)


def test_a_checkpoint_rebuilt_from_its_architecture_keeps_the_gain(finetuned: Finetuned) -> None:
    """As a study's trained_model rebuilds it: the paper's blocks, then the saved weights."""
    model = finetuned.evaluation.model
    rebuilt = insert_se(
        get_backbone("resnet18").build("resnet18", num_classes=10), RUN_ARCH, backbone="resnet18"
    )
    rebuilt.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    rebuilt.to(memory_format=LAYOUT)  # as it trained: bit for bit needs the same layout
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(_logits(rebuilt, x), _logits(model.cpu(), x))
