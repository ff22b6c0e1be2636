"""The ``oneshot`` strategy: one weight-sharing supernet, trained once, scores every candidate.

Training each candidate from scratch is what makes NAS expensive; a supernet (Pham et al.
2018, Guo et al. 2020, Once-for-All) is trained once and each candidate inherits its weights.

**What the supernet is.** The space's backbone (with the ``keep`` blocks of a backbone that
has its own, and nothing at unselected sites) in which every selected site is a
:class:`ChoiceSite` holding one *option* per variant the site takes:

- ``none`` (and ``keep``) is the site's own block;
- every other variant is the family's own wrapping of that block (``ResidualSE``, an appended
  block, ``inner`` inside a mobile block, a replacement for an existing SE block), built on a
  structural twin of the block that shares every parameter and buffer with it
  (:func:`shared_twin`). So the backbone's weights are shared by all options: a candidate
  trains the same convolutions whichever variants it picks.
- Each variant that adds a block has its own :class:`SlimmableSE` at the *smallest* ratio of
  ``choices.reduction`` (the widest excitation). Ratio ``r`` uses the first ``C // r`` hidden
  units: ``fc1.weight[:h]``, ``fc1.bias[:h]``, ``fc2.weight[:, :h]`` and all of ``fc2.bias``,
  so every ratio's weights are a slice of the smallest ratio's (slimmable networks, Yu et al.
  2019). Squeeze (avg/max) and gate (sigmoid/hardsigmoid) choices share those weights too.
- Variants do *not* share SE weights with each other: ``pre`` sees the block's input,
  ``standard`` the branch, ``post`` the sum, ``identity`` the shortcut; their statistics differ.

**Training** samples architectures per batch (``evaluation.supernet.sampling``): ``uniform``
draws one; ``sandwich`` the largest, the smallest and ``random_per_step`` random ones, their
gradients averaged (Yu & Huang 2019 sum them; the mean keeps a step as large as one
network's, so ``evaluation.lr`` means the same as under ``train``: summed, ResNet-50's
supernet stayed near chance for two epochs at lr 0.05). The checkpoint goes to the study's
artifacts folder under a key of everything that shapes it, so later runs, resumes and Ray
workers load it.

**Scoring** a candidate: activate its choices, recalibrate BatchNorm's running statistics on
``calibration_batches`` training batches (shared weights leave the stored statistics wrong
for any one candidate; Guo et al. 2020), then top-1 accuracy on the validation split.
:meth:`Supernet.extract` builds the candidate as a stand-alone model holding exactly the
supernet's (sliced) weights and those statistics.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from se_search.arch import Architecture, SEChoice
from se_search.backbones import Site
from se_search.blocks import SQUEEZES, VARIANTS, SqueezeExcite, pointwise, squeeze_width
from se_search.space import SearchSpace
from se_search.surgery import build_backbone, build_model, insert_se
from se_search.train import Diverged, make_optimizer

__all__ = [
    "ChoiceSite",
    "OneShotScorer",
    "SlimmableSE",
    "Supernet",
    "largest",
    "random_architecture",
    "recalibrate_bn",
    "shared_twin",
    "smallest",
    "supernet_key",
    "train_supernet",
]

GATE_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
}


class SlimmableSE(SqueezeExcite):
    """An SE block at the widest ratio whose active ratio, squeeze and gate are set per
    forward (:meth:`activate`); ratio ``r`` runs on the first ``C // r`` hidden units."""

    def __init__(self, channels: int, *, reduction: int, act: str = "relu") -> None:
        super().__init__(channels, reduction=reduction, act=act)
        self.hidden = self.fc1.out_channels
        self.squeeze_mode, self.gate_name = "avg", "sigmoid"

    def activate(self, choice: SEChoice) -> None:
        self.hidden = squeeze_width(self.channels, choice.reduction)
        self.squeeze_mode, self.gate_name = choice.squeeze, choice.gate

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden
        z = pointwise(SQUEEZES[self.squeeze_mode](x), self.fc1.weight[:h], self.fc1.bias[:h])
        z = pointwise(self.act(z), self.fc2.weight[:, :h], self.fc2.bias)
        return GATE_FUNCTIONS[self.gate_name](z)


def shared_twin(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure whose parameters and buffers *are* the original's.

    Every submodule is a new object (so a family's surgery may rewire the twin freely) but
    holds the same tensors: training any twin trains them all.
    """
    twin = copy.copy(module)
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    twin._modules = {k: None if m is None else shared_twin(m) for k, m in module._modules.items()}
    return twin


class ChoiceSite(nn.Module):
    """A site of the supernet: one option per variant; the active one runs."""

    def __init__(self, options: dict[str, nn.Module], ses: dict[str, SlimmableSE]) -> None:
        super().__init__()
        self.options = nn.ModuleDict(options)
        self._ses = ses  # the SE block of each variant that adds one (inside its option)
        self.active = "none" if "none" in options else next(iter(options))

    def activate(self, choice: SEChoice) -> None:
        if choice.variant not in self.options:
            raise ValueError(
                f"variant {choice.variant!r} is not an option here; options: "
                f"{', '.join(self.options)}"
            )
        self.active = choice.variant
        if choice.variant in self._ses:
            self._ses[choice.variant].activate(choice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.options[self.active](x)


def _options(space: SearchSpace, site: Site, block: nn.Module) -> ChoiceSite:
    widest = min(space.choices.reduction)
    options: dict[str, nn.Module] = {}
    ses: dict[str, SlimmableSE] = {}
    for variant in space.variants_at(site):
        if variant == "keep" or (variant == "none" and not site.existing):
            options[variant] = block
            continue
        se = None
        if VARIANTS[variant].adds_block:
            se = ses[variant] = SlimmableSE(
                site.channels(variant), reduction=min(widest, site.channels(variant)), act=site.act
            )
        options[variant] = space.family.wrap(shared_twin(block), se, variant)
    return ChoiceSite(options, ses)


class Supernet(nn.Module):
    """The space's backbone with a :class:`ChoiceSite` at every selected site."""

    def __init__(
        self, space: SearchSpace, *, init: Callable[[nn.Module], None] | None = None
    ) -> None:
        """``init`` runs on the backbone before its sites become choices (the train
        strategy's zero-initialised residual branches)."""
        super().__init__()
        self.space = space
        # Unselected sites as every candidate has them (an existing SE block kept only where
        # the site is selected: elsewhere the architecture's default, none, applies).
        kept = Architecture({s.name: "keep" for s in space.selected_sites if s.existing})
        self.net = insert_se(build_backbone(space.backbone), kept, backbone=space.backbone.model)
        if init is not None:
            init(self.net)
        self.sites: dict[str, ChoiceSite] = {}
        for site in space.selected_sites:
            choice_site = _options(space, site, self.net.get_submodule(site.name))
            _replace(self.net, site.name, choice_site)
            self.sites[site.name] = choice_site

    def activate(self, arch: Architecture) -> None:
        """Run ``arch`` on the next forwards."""
        for name, site in self.sites.items():
            site.activate(arch.choice(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def candidate_state(self, arch: Architecture, template: dict[str, torch.Tensor]) -> dict:
        """``arch``'s weights as a stand-alone model's ``state_dict`` (keys of ``template``):
        each tensor is the supernet's, sliced to the candidate's shape."""
        own = self.net.state_dict()
        state = {}
        for key, like in template.items():
            source = own[self._supernet_key(key, arch)]
            state[key] = source[tuple(slice(0, n) for n in like.shape)].clone()
        return state

    def _supernet_key(self, key: str, arch: Architecture) -> str:
        for name in self.sites:
            if key.startswith(name + "."):
                rest = key[len(name) + 1 :]
                return f"{name}.options.{arch.choice(name).variant}.{rest}"
        return key

    def extract(self, arch: Architecture) -> nn.Module:
        """``arch`` as a stand-alone model (``build_model``) holding the supernet's weights."""
        model = build_model(self.space, arch)
        model.load_state_dict(self.candidate_state(arch, model.state_dict()))
        return model.to(next(self.parameters()).device)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# ------------------------------------------------------------------------------- sampling


def _block_options(space: SearchSpace, variant: str) -> list[SEChoice]:
    c = space.choices
    if not VARIANTS[variant].adds_block:
        return [SEChoice(variant)]
    return [SEChoice(variant, r, s, g) for r in c.reduction for s in c.squeeze for g in c.gate]


def random_architecture(space: SearchSpace, rng: random.Random) -> Architecture:
    """A variant per site uniformly, then its ratio, squeeze and gate (as the samplers do)."""
    return Architecture(
        {
            site.name: rng.choice(_block_options(space, rng.choice(space.variants_at(site))))
            for site in space.selected_sites
        }
    )


def _se_params(site: Site, choice: SEChoice) -> int:
    if not VARIANTS[choice.variant].adds_block:
        return -1 if choice.variant == "none" else 0
    c = site.channels(choice.variant)
    return 2 * c * squeeze_width(c, choice.reduction or 1)


def _extreme(space: SearchSpace, pick: Callable[..., SEChoice]) -> Architecture:
    """At every site the option ``pick`` (``max`` or ``min``) takes by SE parameters."""
    return Architecture(
        {
            site.name: pick(
                (o for v in space.variants_at(site) for o in _block_options(space, v)),
                key=lambda o, site=site: _se_params(site, o),
            )
            for site in space.selected_sites
        }
    )


def largest(space: SearchSpace) -> Architecture:
    """At every site the option with the most SE parameters (the widest block)."""
    return _extreme(space, max)


def smallest(space: SearchSpace) -> Architecture:
    """At every site the option with the fewest SE parameters (``none`` where offered)."""
    return _extreme(space, min)


def _step_archs(space: SearchSpace, rng: random.Random) -> list[Architecture]:
    cfg = space.evaluation.supernet
    if cfg.sampling == "uniform":
        return [random_architecture(space, rng)]
    randoms = [random_architecture(space, rng) for _ in range(cfg.random_per_step)]
    return [largest(space), smallest(space), *randoms]


# ------------------------------------------------------------------------------- training


def supernet_key(space: SearchSpace) -> str:
    """What the supernet's weights depend on, hashed: the checkpoint's name."""
    shape = space.model_dump(
        mode="json",
        include={"backbone", "sites", "choices", "data", "evaluation"},
        exclude={"evaluation": {"early_stopping", "strategy", "device"}},
    )
    shape["seed"] = space.search.seed
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SupernetReport:
    epoch: int
    epochs: int
    loss: float
    accuracy: float  # the largest architecture's, BN recalibrated
    seconds: float


def train_supernet(
    supernet: Supernet,
    *,
    train_loader: Iterable,
    scorer: OneShotScorer,
    device: torch.device,
    report: Callable[[SupernetReport], None] | None = None,
) -> list[SupernetReport]:
    """Train ``supernet`` in place for ``evaluation.supernet.epochs``; one report per epoch."""
    space = supernet.space
    ev, cfg = space.evaluation, space.evaluation.supernet
    rng = random.Random(space.search.seed)
    supernet.to(device)
    steps = cfg.epochs * len(train_loader)  # type: ignore[arg-type]
    optimizer, schedule = make_optimizer(
        supernet, lr=ev.lr, momentum=ev.momentum, weight_decay=ev.weight_decay, steps=steps
    )
    loss_fn = nn.CrossEntropyLoss()
    reports = []
    per_step = len(_step_archs(space, random.Random(0)))
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        supernet.train()
        total, batches = torch.zeros((), device=device), 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            archs = _step_archs(space, rng)
            for arch in archs:
                supernet.activate(arch)
                loss = loss_fn(supernet(images), labels)
                # the mean over the step's architectures: a step as large as one network's
                (loss / len(archs)).backward()
                total += loss.detach()
            optimizer.step()
            schedule.step()
            batches += 1
        mean = total.item() / max(1, batches * per_step)
        if not math.isfinite(mean):
            raise Diverged(
                f"the supernet's training loss became {mean} in epoch {epoch}; lower "
                f"evaluation.lr (now {ev.lr})"
            )
        accuracy = scorer.score(largest(space))
        reports.append(
            SupernetReport(epoch, cfg.epochs, mean, accuracy, time.perf_counter() - start)
        )
        if report is not None:
            report(reports[-1])
    return reports


# -------------------------------------------------------------------------------- scoring


def _norms(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    return (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by the exact mean and variance over
    ``batches`` (forwards in training mode, cumulative averaging); ``model`` ends in eval."""
    norms = list(_norms(model))
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for images in batches:
        model(images)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    model.eval()


class OneShotScorer:
    """Scores architectures on a supernet: activate, recalibrate BN, validation top-1.

    The calibration batches (the first ``calibration_batches`` of a seeded shuffle of the
    training split) and the validation split are held on the device in channels_last, each
    as a few large batches: scoring is a handful of forwards (on a 2-core CPU, one forward of
    360 images in channels_last is ~1.5x faster than six of 64 in the default layout).
    """

    def __init__(
        self,
        supernet: Supernet,
        *,
        calibration: list[torch.Tensor],
        val: list[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        chunk: int = 512,
    ) -> None:
        self.supernet = supernet.to(memory_format=torch.channels_last)
        images = torch.cat(calibration).to(device, memory_format=torch.channels_last)
        self.calibration = list(images.split(chunk))
        x = torch.cat([x for x, _ in val]).to(device, memory_format=torch.channels_last)
        y = torch.cat([y for _, y in val]).to(device)
        self.val = list(zip(x.split(chunk), y.split(chunk)))

    def prepare(self, arch: Architecture) -> None:
        """Activate ``arch`` and recalibrate its BN statistics."""
        self.supernet.activate(arch)
        recalibrate_bn(self.supernet, self.calibration)

    @torch.no_grad()
    def score(self, arch: Architecture) -> float:
        """Validation top-1 of ``arch`` with inherited weights and recalibrated BN."""
        was_training = self.supernet.training
        self.prepare(arch)
        correct = total = 0
        for images, labels in self.val:
            correct += int((self.supernet(images).argmax(1) == labels).sum())
            total += labels.numel()
        self.supernet.train(was_training)
        return correct / max(total, 1)


def checkpoint_path(folder: Path, space: SearchSpace) -> Path:
    return folder / f"supernet-{supernet_key(space)}.pt"


def save_supernet(supernet: Supernet, path: Path, meta: dict[str, Any]) -> None:
    """Write the supernet's weights (atomically: a killed run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    state = {k: v.detach().cpu() for k, v in supernet.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, partial)
    partial.replace(path)


def load_supernet(supernet: Supernet, path: Path) -> dict[str, Any]:
    """Load weights saved by :func:`save_supernet`; their metadata."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    supernet.load_state_dict(saved["state_dict"])
    return saved["meta"]
