"""What ``se-search bench`` times: this project's SE-ResNet-50 beside ResNet-50 in every
form (:data:`FORMS`: eager, channels_last, ``torch.compile``, the TorchScript and ONNX
exports run by PyTorch and ONNX Runtime), and the other SE-ResNet-50s it is held against
(:data:`REFERENCES`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.variants import ResidualSE, set_fused

__all__ = [
    "BACKBONE",
    "FORMS",
    "REFERENCES",
    "REFERENCE_FORMS",
    "SE_CHOICE",
    "Form",
    "Unavailable",
    "se_resnet50_pair",
]

BACKBONE = "resnet50"
SE_CHOICE = "standard:16"
Runner = Callable[[], Any]  # one forward pass on the runner's own input


@dataclass(frozen=True, kw_only=True)
class Form:
    """One way to run a model: ``prepare(model, x, workdir)`` returns a runner, or raises
    :class:`Unavailable` saying what is missing."""

    name: str
    description: str
    prepare: Callable[[nn.Module, torch.Tensor, Path], Runner]


class Unavailable(Exception):
    """A form or reference that cannot run here; the message says why."""


def _eager(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    net = model.to(x.device).eval()
    return lambda: net(x)


def _channels_last(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    net = model.to(x.device).to(memory_format=torch.channels_last).eval()
    x = x.contiguous(memory_format=torch.channels_last)
    return lambda: net(x)


def _compiled(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    net = torch.compile(model.to(x.device).eval())
    return lambda: net(x)


def _exported(model: nn.Module, fmt: str, x: torch.Tensor, workdir: Path) -> Path:
    from se_search.outputs.export import export_model

    arch = getattr(model, "se_search_arch", None)
    if arch is None:
        raise Unavailable("only se-search's own models are exported")
    path = workdir / f"{arch.hash}.{fmt}"  # batch-agnostic: exported once per run
    if path.exists():
        return path
    classifier = model.get_submodule("fc")  # a ResNet-50's: the only backbone exported here
    assert isinstance(classifier, nn.Linear)
    return export_model(
        model,
        backbone=BACKBONE,
        num_classes=classifier.out_features,
        arch=arch,
        image_size=x.shape[-1],
        metadata={},
        format=fmt,
        path=path,
    )


def _torchscript(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    from se_search.outputs.export import load_model

    net = load_model(_exported(model, "torchscript", x, workdir), map_location=str(x.device))
    return lambda: net(x)


def _onnxruntime(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Unavailable("onnxruntime is not installed (pip install onnxruntime)") from None
    provider = "CUDAExecutionProvider" if x.device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime has no {provider} here")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    path = _exported(model, "onnx", x, workdir)
    session = ort.InferenceSession(str(path), options, providers=[provider])
    feed = {"images": x.cpu().numpy()}
    return lambda: session.run(None, feed)


#: The forms in which both ResNet-50 and this project's SE-ResNet-50 are timed.
FORMS: dict[str, Form] = {
    f.name: f
    for f in (
        Form(name="eager", description="PyTorch eager, NCHW", prepare=_eager),
        Form(
            name="channels_last",
            description="PyTorch eager, channels_last weights and input",
            prepare=_channels_last,
        ),
        Form(name="compiled", description="torch.compile (inductor), NCHW", prepare=_compiled),
        Form(
            name="torchscript",
            description="se-search's TorchScript export, run by PyTorch",
            prepare=_torchscript,
        ),
        Form(
            name="onnxruntime",
            description="se-search's ONNX export, run by ONNX Runtime",
            prepare=_onnxruntime,
        ),
    )
}


def _with_arch(model: nn.Module, arch: Architecture) -> nn.Module:
    # what _exported needs to export it; torch types a module's attributes as tensors and
    # modules, but a plain one is fine (and survives the deepcopy each form runs on)
    model.se_search_arch = arch  # type: ignore[assignment]
    return model


def se_resnet50_pair(*, num_classes: int = 1000) -> tuple[nn.Module, nn.Module]:
    """ResNet-50 and this project's SE-ResNet-50 (``standard:16`` at all 16 blocks), both
    built by :func:`~se_search.models.surgery.insert_se` (the first with the ``none`` architecture:
    torchvision's model unchanged), under seed 0."""
    from torchvision.models import get_model

    from se_search.models.surgery import insert_se

    torch.manual_seed(0)
    plain = get_model(BACKBONE, weights=None, num_classes=num_classes)
    sites = [s.name for s in get_backbone(BACKBONE).list_sites(plain)]
    models = []
    for choice in ("none", SE_CHOICE):
        arch = Architecture.uniform(sites, choice)
        models.append(_with_arch(insert_se(plain, arch, backbone=BACKBONE), arch))
    return models[0], models[1]


def _timm_pair() -> tuple[nn.Module, nn.Module]:
    try:
        import timm
    except ImportError:
        raise Unavailable("timm is not installed (pip install timm)") from None
    torch.manual_seed(0)
    return timm.create_model("resnet50"), timm.create_model("seresnet50")


def _torchvision_se_pair() -> tuple[nn.Module, nn.Module]:
    """Ours with torchvision's ``SqueezeExcitation`` (``C -> C // 16 -> C``) in each block."""
    from torchvision.ops import SqueezeExcitation

    plain, ours = se_resnet50_pair()
    for block in ours.modules():
        if isinstance(block, ResidualSE):
            block.se = SqueezeExcitation(block.se.channels, block.se.channels // 16)
    set_fused(ours, False)
    return plain, ours


def _unfused_pair() -> tuple[nn.Module, nn.Module]:
    plain, ours = se_resnet50_pair()
    set_fused(ours, False)
    return plain, ours


#: Other SE-ResNet-50s, each beside the plain ResNet-50 it adds SE blocks to, timed in the
#: forms of REFERENCE_FORMS that are asked for.
REFERENCES: dict[str, tuple[str, Callable[[], tuple[nn.Module, nn.Module]]]] = {
    "timm": ("timm's seresnet50 over timm's resnet50", _timm_pair),
    "torchvision": ("torchvision's SqueezeExcitation in our blocks", _torchvision_se_pair),
    "unfused": ("ours with the reference (unfused) forward", _unfused_pair),
}
REFERENCE_FORMS = ("eager", "channels_last")
