"""``se-search bench``: what SE blocks cost at inference, side by side in one run, and how
close the ``train`` strategy comes to a bare training loop.

**Latency.** Every model is timed interleaved: one forward pass of each per round, the order
rotating from round to round, so a slow moment of the machine hits every model alike. A ratio
is the median over rounds of the ratio *within* a round (paired, so slow drifts cancel), with
its interquartile range. Each form of this project's SE-ResNet-50 is divided by plain
ResNet-50 in the same form (:data:`FORMS`: eager, channels_last, ``torch.compile``, the
TorchScript and ONNX exports run by PyTorch and ONNX Runtime), and the references
(:data:`REFERENCES`) likewise: timm's ``seresnet50`` over timm's ``resnet50``, the same
SE-ResNet-50 with torchvision's ``SqueezeExcitation`` in each block, and ours with the
reference (unfused) forward.

**Training.** Images per second of a bare loop (one batch already on the device, forward,
backward, SGD step; AMP and channels_last on CUDA) against :func:`~se_search.train.
train_and_evaluate` on an in-memory data set of the same shape, rounds alternating.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from se_search.arch import Architecture
from se_search.backbones import get_backbone
from se_search.blocks import ResidualSE, set_fused
from se_search.costs import device_name
from se_search.errors import SESearchError

__all__ = [
    "FORMS",
    "REFERENCES",
    "Form",
    "Ratio",
    "latency_ratios",
    "se_resnet50_pair",
    "training_throughput",
]

BACKBONE = "resnet50"
SE_CHOICE = "standard:16"
Runner = Callable[[], Any]  # one forward pass on the runner's own input


@dataclass(frozen=True)
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
    net = model.to(x.device, memory_format=torch.channels_last).eval()
    x = x.contiguous(memory_format=torch.channels_last)
    return lambda: net(x)


def _compiled(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    net = torch.compile(model.to(x.device).eval())
    return lambda: net(x)


def _exported(model: nn.Module, fmt: str, x: torch.Tensor, workdir: Path) -> Path:
    from se_search.export import export_model

    arch = getattr(model, "se_search_arch", None)
    if arch is None:
        raise Unavailable("only se-search's own models are exported")
    path = workdir / f"{arch.hash}.{fmt}"  # batch-agnostic: exported once per run
    if path.exists():
        return path
    return export_model(
        model,
        backbone=BACKBONE,
        num_classes=model.fc.out_features,
        arch=arch,
        image_size=x.shape[-1],
        metadata={},
        format=fmt,
        path=path,
    )


def _torchscript(model: nn.Module, x: torch.Tensor, workdir: Path) -> Runner:
    from se_search.export import load_model

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
        Form("eager", "PyTorch eager, NCHW", _eager),
        Form("channels_last", "PyTorch eager, channels_last weights and input", _channels_last),
        Form("compiled", "torch.compile (inductor), NCHW", _compiled),
        Form("torchscript", "se-search's TorchScript export, run by PyTorch", _torchscript),
        Form("onnxruntime", "se-search's ONNX export, run by ONNX Runtime", _onnxruntime),
    )
}


# ------------------------------------------------------------------------------- models


def _with_arch(model: nn.Module, arch: Architecture) -> nn.Module:
    model.se_search_arch = arch  # what _exported needs to export it
    return model


def se_resnet50_pair(*, num_classes: int = 1000) -> tuple[nn.Module, nn.Module]:
    """ResNet-50 and this project's SE-ResNet-50 (``standard:16`` at all 16 blocks), both
    built by :func:`~se_search.surgery.insert_se` (the first with the ``none`` architecture:
    torchvision's model unchanged), under seed 0."""
    from torchvision.models import get_model

    from se_search.surgery import insert_se

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


# ------------------------------------------------------------------------------ latency


@dataclass(frozen=True)
class Ratio:
    """SE model over plain model, one form, one batch size: per-round ratios summarised."""

    label: str  # what is compared: "se-search" or a REFERENCES key
    form: str
    batch: int
    median: float
    q1: float
    q3: float
    se_ms: float  # median latency of the SE model
    plain_ms: float


def latency_ratios(
    *,
    device: torch.device,
    batches: Iterable[int] = (1, 8),
    image_size: int = 224,
    rounds: int = 20,
    warmup: int = 3,
    forms: Iterable[str] = tuple(FORMS),
    references: Iterable[str] = tuple(REFERENCES),
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[list[Ratio], dict[str, str]]:
    """Time every (pair, form) interleaved at each batch size; return the ratios and, per
    form or reference that could not run, why."""
    forms, references = list(forms), list(references)
    unknown = sorted(set(forms) - set(FORMS)) + sorted(set(references) - set(REFERENCES))
    if unknown:
        raise SESearchError(
            f"unknown bench form or reference {unknown}; forms: {', '.join(FORMS)}; "
            f"references: {', '.join(REFERENCES)}"
        )
    pairs: dict[str, tuple[nn.Module, nn.Module]] = {"se-search": se_resnet50_pair()}
    skipped: dict[str, str] = {}
    for key in references:
        try:
            pairs[key] = REFERENCES[key][1]()
        except Unavailable as why:
            skipped[key] = str(why)
    ratios: list[Ratio] = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            x = torch.randn(batch, 3, image_size, image_size, device=device)
            runners: dict[tuple[str, str, int], Runner] = {}
            for label, pair in pairs.items():
                for form in [f for f in forms if label == "se-search" or f in REFERENCE_FORMS]:
                    progress(f"batch {batch}: preparing {label} {form}")
                    try:
                        for side, model in enumerate(pair):
                            run = FORMS[form].prepare(copy.deepcopy(model), x, Path(tmp))
                            runners[(label, form, side)] = run
                    except Unavailable as why:
                        skipped[form] = str(why)
                        runners.pop((label, form, 0), None)
            progress(f"batch {batch}: warming up {len(runners)} models")
            times = _interleaved(runners, device, rounds=rounds, warmup=warmup, progress=progress)
            ratios += _ratios(times, batch)
    return ratios, skipped


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work before a clock is read."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _interleaved(
    runners: dict[Any, Runner],
    device: torch.device,
    *,
    rounds: int,
    warmup: int,
    progress: Callable[[str], None],
) -> dict[Any, list[float]]:
    sync = _synchronizer(device)
    with torch.inference_mode():
        for run in runners.values():
            for _ in range(warmup):
                run()
        sync()
        times: dict[Any, list[float]] = {key: [] for key in runners}
        order = list(runners)
        for i in range(rounds):
            for key in order[i % len(order) :] + order[: i % len(order)]:
                start = time.perf_counter()
                runners[key]()
                sync()
                times[key].append((time.perf_counter() - start) * 1e3)
            progress(f"round {i + 1}/{rounds}")
    return times


def _ratios(times: dict[tuple[str, str, int], list[float]], batch: int) -> list[Ratio]:
    out = []
    for (label, form, side), se_times in times.items():
        if side != 1 or (label, form, 0) not in times:
            continue
        plain_times = times[(label, form, 0)]
        per_round = [a / b for a, b in zip(se_times, plain_times)]
        q1, _, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
        out.append(
            Ratio(
                label=label,
                form=form,
                batch=batch,
                median=statistics.median(per_round),
                q1=q1,
                q3=q3,
                se_ms=statistics.median(se_times),
                plain_ms=statistics.median(plain_times),
            )
        )
    return out


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Throughput:
    bare: float  # images/s of the bare loop (median over rounds)
    strategy: float  # images/s of train_and_evaluate's training steps (median over rounds)
    rounds: int

    @property
    def ratio(self) -> float:
        return self.strategy / self.bare


def training_throughput(
    *,
    device: torch.device,
    batch: int = 64,
    image_size: int = 32,
    steps: int = 20,
    rounds: int = 2,
    progress: Callable[[str], None] = lambda message: None,
) -> Throughput:
    """Images per second of a bare training loop and of the ``train`` strategy, for
    SE-ResNet-50 (``standard:16``, 10 classes) on ``steps`` batches of ``batch`` images,
    rounds alternating. Both are steady-state figures: the bare loop's first step is not
    timed, and the strategy trains 2 epochs, of which the second's steps are counted (its
    evaluation never is)."""
    from torch.utils.data import TensorDataset

    from se_search.data import make_loader
    from se_search.train import train_and_evaluate

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(steps * batch, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 10, (steps * batch,), generator=generator)
    train_set = TensorDataset(images, labels)
    val_set = TensorDataset(images[:batch], labels[:batch])
    bare, strategy = [], []
    for i in range(rounds):
        progress(f"training round {i + 1}/{rounds}: bare loop")
        bare.append(_bare_loop(device, images[:batch], labels[:batch], steps=steps))
        progress(f"training round {i + 1}/{rounds}: train strategy")
        _, model = se_resnet50_pair(num_classes=10)
        result = train_and_evaluate(
            model,
            train_loader=make_loader(train_set, batch_size=batch, shuffle=True, seed=0),
            val_loader=make_loader(val_set, batch_size=batch, shuffle=False, seed=0),
            epochs=2,
            lr=0.01,
            momentum=0.9,
            weight_decay=5e-5,
            device=device,
        )
        strategy.append(result.epoch_images_per_second[-1])
    return Throughput(statistics.median(bare), statistics.median(strategy), rounds)


def _bare_loop(
    device: torch.device, images: torch.Tensor, labels: torch.Tensor, *, steps: int
) -> float:
    """The fastest plain loop on one resident batch: what the strategy is held against."""
    from se_search.train import autocast, make_optimizer, memory_format

    _, model = se_resnet50_pair(num_classes=10)
    fmt = memory_format(device)
    model.to(device, memory_format=fmt).train()
    x = images.to(device, memory_format=fmt)
    y = labels.to(device)
    optimizer, _ = make_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-5, steps=steps)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the first step allocates and picks kernels: not timed, as in the strategy's
    sync = _synchronizer(device)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(labels) / (time.perf_counter() - start)


def describe_device(device: torch.device) -> str:
    return (
        f"{device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
