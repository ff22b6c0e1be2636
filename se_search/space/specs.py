"""The search-space YAML as pydantic models: one section per top-level key.

Each model checks what it can alone (types, ranges, registered names); the checks that need
the backbone's sites run in :func:`se_search.space.loader.load_space`. Defaults here are the
defaults a space file gets for every key it leaves out.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from se_search.commands import DEFAULT_STORAGE
from se_search.errors import BackboneError
from se_search.models.backbones import BackboneFamily, Site, get_backbone
from se_search.models.blocks import GATES, SQUEEZES
from se_search.models.variants import VARIANTS

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "AugmentSpec",
    "BackboneSpec",
    "ChoicesSpec",
    "DataSpec",
    "EarlyStoppingSpec",
    "EvaluationSpec",
    "LatencySpec",
    "RaySpec",
    "SearchSpace",
    "SearchSpec",
    "StrategyTraits",
    "SupernetSpec",
    "matches",
]

#: Objectives a space can optimise, with the direction each usually takes.
OBJECTIVES: dict[str, str] = {
    "accuracy": "max",
    "params": "min",
    "flops": "min",
    "latency_ms": "min",
}


@dataclass(frozen=True, kw_only=True)
class StrategyTraits:
    """What sets an ``evaluation.strategy`` apart, for every module that must tell them
    apart (the evaluator, the space's checks, model building, ``verify``, ``export``)."""

    #: Each candidate is trained under each of its seeds, and keeps its weights (train,
    #: finetune); otherwise it is scored on weights trained once for all (oneshot), which
    #: ``verify`` replaces by stand-alone training.
    trains_each: bool
    #: Candidates start from ``backbone.weights``, their new SE blocks as the identity, so
    #: that each starts as the pretrained network.
    from_weights: bool
    help: str


#: Every ``evaluation.strategy``, by name (the evaluation stage's registry has the same keys).
STRATEGIES: dict[str, StrategyTraits] = {
    "train": StrategyTraits(
        trains_each=True, from_weights=False, help="each candidate from scratch"
    ),
    "finetune": StrategyTraits(
        trains_each=True,
        from_weights=True,
        help="each candidate from backbone.weights, its SE blocks starting as the identity",
    ),
    "oneshot": StrategyTraits(
        trains_each=False,
        from_weights=False,
        help="weights inherited from a supernet trained once for the whole space",
    ),
}

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def _registered(registry: Mapping[str, Any], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in registry:
            raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(registry)}")
        return value

    return AfterValidator(check)


def _unique(values: list[Any]) -> list[Any]:
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(duplicates)} listed twice; list each value once")
    return values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(_Section):
    """The backbone: a torchvision model name, or with ``source: timm`` one of timm's (kept
    as ``timm/NAME`` in ``model``, which is also how it may be written)."""

    model: str
    source: Literal["torchvision", "timm"] = "torchvision"
    num_classes: PositiveInt = 10
    #: A checkpoint path, a torchvision weights name, or ``self``: weights se-search trains
    #: on the data set once (``evaluation.pretrain_epochs``) and caches in the artifacts.
    weights: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _prefix_timm(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") == "timm":
            model = data.get("model")
            if isinstance(model, str) and not model.startswith("timm/"):
                data = {**data, "model": f"timm/{model}"}
        return data

    @field_validator("model")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            get_backbone(value).check_available(value)
        except BackboneError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _sourcematches(self) -> BackboneSpec:
        if self.model.startswith("timm/") != (self.source == "timm"):
            raise ValueError(
                f"model {self.model!r} is one of timm's: write source: timm and the model's "
                "name without timm/, or give a torchvision model"
            )
        return self


VariantName = Annotated[str, _registered(VARIANTS, "variant")]
SqueezeName = Annotated[str, _registered(SQUEEZES, "squeeze")]
GateName = Annotated[str, _registered(GATES, "gate")]


class ChoicesSpec(_Section):
    variant: Annotated[list[VariantName], Field(min_length=1), AfterValidator(_unique)] = [
        "none",
        "standard",
    ]
    reduction: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_unique)] = [16]
    squeeze: Annotated[list[SqueezeName], Field(min_length=1), AfterValidator(_unique)] = ["avg"]
    gate: Annotated[list[GateName], Field(min_length=1), AfterValidator(_unique)] = ["sigmoid"]


class AugmentSpec(_Section):
    """The training split's augmentation, on whole batches (in-memory data sets)."""

    crop_padding: NonNegativeInt = 0  # a random crop back to size after padding this much
    flip: bool = False  # a random horizontal flip (wrong for digits and letters)


class DataSpec(_Section):
    dataset: Literal[
        "digits", "fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100", "imagefolder",
        "synthetic",
    ] = "digits"  # fmt: skip
    image_size: Annotated[int, Field(strict=True, ge=8)] = 32
    batch_size: PositiveInt = 64
    #: Where the data set's files are (used strictly when set); default: where each data
    #: set's own search looks (the MNIST family: Debian's folder, then the cache).
    root: str | None = None
    #: The share of the training set held out as the validation split (by ``search.seed``);
    #: a data set with an official test set keeps that apart, for ``verify --split test``.
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    #: Train on this many images of the training split (a class-stratified subset fixed by
    #: ``search.seed``); default: all of it.
    train_size: PositiveInt | None = None
    #: The training split's augmentation; default: the data set's own (CIFAR and
    #: Fashion-MNIST: crop after padding 4 and 2, and flip; MNIST and KMNIST: crop after
    #: padding 2; digits: none).
    augment: AugmentSpec | None = None
    num_workers: NonNegativeInt = 0


DeviceName = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")]


class EarlyStoppingSpec(_Section):
    """Stop a candidate whose validation accuracy trails its peers at the same epoch.

    ASHA's rule (Li et al. 2020): at rungs ``grace_epochs * reduction_factor**k`` epochs, a
    candidate continues only if its accuracy is in the top ``1/reduction_factor`` of those
    recorded at that rung. Ray's engine runs Tune's ASHAScheduler; the local engine the same
    rule against the study's trials.
    """

    rule: Literal["none", "asha"] = "none"
    grace_epochs: PositiveInt = 1  # no candidate is stopped before this many epochs
    reduction_factor: Annotated[int, Field(strict=True, ge=2)] = 3


class SupernetSpec(_Section):
    """The ``oneshot`` strategy's supernet: trained once, then every candidate inherits its
    weights (see :mod:`se_search.evaluation.supernet`)."""

    epochs: PositiveInt = 6
    #: uniform: one random architecture per batch; sandwich: the largest, the smallest and
    #: ``random_per_step`` random ones per batch, their gradients averaged (Yu & Huang 2019).
    sampling: Literal["uniform", "sandwich"] = "sandwich"
    random_per_step: NonNegativeInt = 2
    #: Training batches whose statistics recalibrate BatchNorm before a candidate is scored.
    calibration_batches: PositiveInt = 4
    #: slimmable: every ratio of a variant is a slice of one SE block; per_ratio: each ratio
    #: has its own (trained only when sampled).
    se_weights: Literal["slimmable", "per_ratio"] = "slimmable"
    #: sandwich only: the smaller architectures of a step learn the largest one's predicted
    #: distribution instead of the labels (in-place distillation, Yu et al. 2020, BigNAS).
    distill: bool = False
    #: Few-shot NAS (Zhao et al. 2021). variant: after its epochs the supernet is copied once
    #: per variant that ``split_site`` takes, and each copy trains ``split_epochs`` more on
    #: the architectures with that variant there; a candidate is scored on its variant's
    #: copy. none: one supernet scores every candidate.
    split: Literal["none", "variant"] = "none"
    split_site: str | None = None  # default: the last selected site
    split_epochs: PositiveInt = 2

    @model_validator(mode="after")
    def _distill_needs_a_teacher(self) -> SupernetSpec:
        if self.distill and self.sampling != "sandwich":
            raise ValueError(
                "distill needs the largest architecture in every step as the teacher: set "
                "sampling: sandwich, or distill: false"
            )
        return self


StrategyName = Annotated[str, _registered(STRATEGIES, "strategy")]


class EvaluationSpec(_Section):
    #: How a candidate gets its accuracy: one of :data:`STRATEGIES`.
    strategy: StrategyName = "train"
    device: DeviceName = "auto"  # auto: the first CUDA device when there is one, else the CPU
    epochs: PositiveInt = 3
    #: Each candidate trains under this many seeds (initial weights, batch order; the data
    #: split stays search.seed's); its accuracy, the objective, is their mean.
    seeds: PositiveInt = 1
    #: The references (none, standard:16) train under at least this many seeds; the spread
    #: of their accuracies is the run's noise floor. 0: no noise floor.
    noise_seeds: NonNegativeInt = 3
    lr: PositiveFloat = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    zero_init_residual: bool = True  # last BN of each residual branch starts at gamma = 0
    #: Score an average of the weights over the run's last ``average_span`` instead of the
    #: last ones: ema (exponential, its horizon a third of the span) or swa (equal), either
    #: with BatchNorm recomputed; see :mod:`se_search.evaluation.averaging`.
    average: Literal["none", "ema", "swa"] = "none"
    average_span: Annotated[float, Field(gt=0, le=1)] = 0.25
    #: additive: the front is drawn by the pooled additive model's prediction of each
    #: candidate's accuracy over all the study's trials (:mod:`se_search.stats.pooling`),
    #: shown with its interval beside the raw accuracy; none: by the raw accuracy.
    pooling: Literal["none", "additive"] = "none"
    compile: bool = False  # train through torch.compile (pays off on a GPU, for long runs)
    pretrain_epochs: PositiveInt = 16  # for backbone.weights: self
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    supernet: SupernetSpec = SupernetSpec()

    @property
    def traits(self) -> StrategyTraits:
        return STRATEGIES[self.strategy]


class LatencySpec(_Section):
    #: measure: time every candidate; lut: predict it from a lookup table of per-block
    #: deltas measured once (cached in the database); lut+verify: predict, then measure the
    #: front's members and store the prediction error.
    mode: Literal["measure", "lut", "lut+verify"] = "measure"
    device: DeviceName = "auto"
    batch_size: PositiveInt = 1
    image_size: Annotated[int, Field(strict=True, ge=8)] | None = None  # default: data.image_size
    warmup: NonNegativeInt = 5
    repeats: Annotated[int, Field(strict=True, ge=3)] = 30
    threads: PositiveInt | None = None  # default: torch's own


class RaySpec(_Section):
    """The ray engine: where trials run and with what."""

    address: str | None = None  # an existing cluster ("auto", "HOST:6379"); None: a local one
    max_concurrent_trials: PositiveInt = 2
    resources: dict[Literal["cpu", "gpu"], Annotated[float, Field(ge=0)]] = {"cpu": 1, "gpu": 0}
    max_failures: NonNegativeInt = 1  # retries of a trial whose worker died, then FAILED


class SearchSpec(_Section):
    sampler: Literal["nsga2", "tpe", "random"] = "nsga2"
    trials: PositiveInt = 20
    #: Trials drawn at random before the sampler learns from them: NSGA-II's generation size,
    #: TPE's startup trials. Default: a third of ``trials``, within [4, 50], so that a small
    #: budget still gets 3 generations (Optuna's own defaults, 50 and 10, leave a 24-trial
    #: NSGA-II search purely random).
    population: Annotated[int, Field(ge=2)] | None = None
    seed: NonNegativeInt = 0
    engine: Literal["local", "ray"] = "local"
    seed_paper: bool = True  # enqueue the paper's none and standard:16 first
    checkpoints: Literal["front", "all", "none"] = "front"  # trained weights kept for export
    artifacts: str | None = None  # folder for checkpoints; default: beside the SQLite file
    study: Annotated[str, Field(pattern=r"^[\w.-]+$")] | None = None  # default: the space's name
    ray: RaySpec = RaySpec()

    @property
    def random_trials(self) -> int:
        """``population``, or its default for ``trials``."""
        return self.population or min(50, max(4, self.trials // 3))


class SearchSpace(_Section):
    """A validated search space. Build with :func:`load_space`, which also checks the sites."""

    name: Annotated[str, Field(pattern=r"^[\w.-]+$")]
    backbone: BackboneSpec
    sites: Literal["all"] | Annotated[list[str], Field(min_length=1)] = "all"
    choices: ChoicesSpec = ChoicesSpec()
    objectives: Annotated[
        dict[Literal["accuracy", "params", "flops", "latency_ms"], Literal["min", "max"]],
        Field(min_length=1),
    ] = {"accuracy": "max", "flops": "min", "latency_ms": "min"}
    constraints: dict[Literal["params", "flops", "latency_ms"], PositiveFloat] = {}
    data: DataSpec = DataSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    latency: LatencySpec = LatencySpec()
    search: SearchSpec = SearchSpec()
    storage: str = DEFAULT_STORAGE

    _path: str = PrivateAttr(default="<memory>")
    _text: str = PrivateAttr(default="")
    _all_sites: tuple[Site, ...] = PrivateAttr(default=())

    @property
    def path(self) -> str:
        """The file this space was read from."""
        return self._path

    @property
    def text(self) -> str:
        """The YAML text as read (before ``--set`` overrides)."""
        return self._text

    @property
    def family(self) -> BackboneFamily:
        return get_backbone(self.backbone.model)

    @property
    def all_sites(self) -> list[Site]:
        """Every site of the backbone, in forward order."""
        return list(self._all_sites)

    @cached_property
    def selected_sites(self) -> list[Site]:
        """The sites the ``sites`` key selects, in forward order."""
        if self.sites == "all":
            return self.all_sites
        return [s for s in self._all_sites if any(matches(s.name, p) for p in self.sites)]

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.selected_sites]

    @property
    def split_site(self) -> Site | None:
        """The site a few-shot split of the supernet divides on: ``evaluation.supernet.
        split_site``, by default the last selected site; None when it is not a selected
        site (:func:`load_space` refuses that) or the supernet does not split."""
        cfg = self.evaluation.supernet
        if cfg.split == "none":
            return None
        name = cfg.split_site or self.site_names[-1]
        return next((s for s in self.selected_sites if s.name == name), None)

    def variants_at(self, site: Site) -> list[str]:
        """The space's variants that ``site`` takes, in the order ``choices.variant`` lists."""
        return [v for v in self.choices.variant if v in site.variants]

    @property
    def size(self) -> int:
        """How many architectures the space holds: the product over the selected sites of
        the choices each takes (a variant that adds a block counts once per ratio, squeeze
        and gate)."""
        choices = self.choices
        per_block = len(choices.reduction) * len(choices.squeeze) * len(choices.gate)
        size = 1
        for site in self.selected_sites:
            size *= sum(per_block if VARIANTS[v].adds_block else 1 for v in self.variants_at(site))
        return size

    @property
    def study_name(self) -> str:
        return self.search.study or self.name

    @property
    def hash(self) -> str:
        """SHA-256 (16 hex digits) of the validated content, overrides included."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def matches(site: str, pattern: str) -> bool:
    """Whether ``site`` is ``pattern`` or matches it as a glob (``layer3.*``)."""
    return site == pattern or fnmatch.fnmatchcase(site, pattern)
