"""The search-space YAML: pydantic models and :func:`load_space`.

Every problem found while loading is reported at once, each naming the file, the line, the
YAML key path (``choices.reduction[2]``) and the fix. Checks that need the backbone (site
patterns, reductions that exceed the channels at a site) run on a model built on PyTorch's
``meta`` device, so they cost milliseconds and allocate nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from se_search.backbones import BackboneFamily, Site, get_backbone
from se_search.blocks import GATES, SQUEEZES, VARIANTS
from se_search.errors import BackboneError, SpaceError
from se_search.yamlpath import NodeLines, fields_at, key_path

__all__ = [
    "OBJECTIVES",
    "SearchSpace",
    "bundled_spaces",
    "load_space",
    "resolve_space_path",
]

#: Objectives a space can optimise, with the direction each usually takes.
OBJECTIVES: dict[str, str] = {
    "accuracy": "max",
    "params": "min",
    "flops": "min",
    "latency_ms": "min",
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
    def _source_matches(self) -> BackboneSpec:
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


class DataSpec(_Section):
    dataset: Literal["digits", "synthetic", "cifar10", "cifar100", "imagefolder"] = "digits"
    image_size: Annotated[int, Field(strict=True, ge=8)] = 32
    batch_size: PositiveInt = 64
    root: str | None = None
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
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
    weights (see :mod:`se_search.supernet`)."""

    epochs: PositiveInt = 6
    #: uniform: one random architecture per batch; sandwich: the largest, the smallest and
    #: ``random_per_step`` random ones per batch, their gradients averaged (Yu & Huang 2019).
    sampling: Literal["uniform", "sandwich"] = "sandwich"
    random_per_step: NonNegativeInt = 2
    #: Training batches whose statistics recalibrate BatchNorm before a candidate is scored.
    calibration_batches: PositiveInt = 4


class EvaluationSpec(_Section):
    #: train: each candidate from scratch; finetune: from backbone.weights, with SE blocks
    #: that start as the identity; oneshot: weights inherited from a supernet trained once.
    strategy: Literal["train", "finetune", "oneshot"] = "train"
    device: DeviceName = "auto"  # auto: the first CUDA device when there is one, else the CPU
    epochs: PositiveInt = 3
    lr: PositiveFloat = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 5e-4
    zero_init_residual: bool = True  # last BN of each residual branch starts at gamma = 0
    compile: bool = False  # train through torch.compile (pays off on a GPU, for long runs)
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    supernet: SupernetSpec = SupernetSpec()


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
    seed: NonNegativeInt = 0
    engine: Literal["local", "ray"] = "local"
    seed_paper: bool = True  # enqueue the paper's none and standard:16 first
    checkpoints: Literal["front", "all", "none"] = "front"  # trained weights kept for export
    artifacts: str | None = None  # folder for checkpoints; default: beside the SQLite file
    study: Annotated[str, Field(pattern=r"^[\w.-]+$")] | None = None  # default: the space's name
    ray: RaySpec = RaySpec()


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
    storage: str = "sqlite:///se_search.db"

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
        return [s for s in self._all_sites if any(_matches(s.name, p) for p in self.sites)]

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.selected_sites]

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


def _matches(site: str, pattern: str) -> bool:
    return site == pattern or fnmatch.fnmatchcase(site, pattern)


# ------------------------------------------------------------------------------------- loading


def spaces_dir() -> Path:
    """The folder of bundled spaces: inside the installed package, or the source checkout's."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "search_spaces", package.parent / "search_spaces"):
        if candidate.is_dir():
            return candidate
    raise SpaceError(
        "search_spaces", ["the bundled search spaces are missing; reinstall se-search"]
    )


def backbone_sites(model: str, num_classes: int) -> tuple[Site, ...]:
    """Every site of a backbone, from a skeleton on the meta device (milliseconds)."""
    family = get_backbone(model)
    with torch.device("meta"):
        skeleton = family.build(model, num_classes=num_classes)
    return tuple(family.list_sites(skeleton))


def bundled_spaces() -> list[str]:
    """Names of the bundled spaces (``resnet50``, ...)."""
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def resolve_space_path(spec: str | Path) -> Path:
    """A space file from a path or a bundled name (``resnet50`` or ``resnet50.yaml``)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.parent == Path("."):
        bundled = spaces_dir() / (
            path.name if path.suffix in {".yaml", ".yml"} else f"{path}.yaml"
        )
        if bundled.is_file():
            return bundled
    raise SpaceError(
        str(spec),
        [
            f"no such file, and no bundled space of that name; give the path of a YAML file "
            f"or one of: {', '.join(bundled_spaces())}"
        ],
    )


def load_space(
    spec: str | Path, overrides: Mapping[str, Any] | Iterable[str] | None = None
) -> SearchSpace:
    """Read, override and validate a search space.

    Args:
        spec: a YAML path, or the name of a bundled space.
        overrides: ``{"search.trials": 4}`` or ``["search.trials=4"]`` (values parsed as YAML),
            applied on top of the file, as the CLI's ``--set`` does.

    Raises:
        SpaceError: naming the file, line, key path and fix of every problem found.
    """
    path = resolve_space_path(spec)
    file = str(path)
    text = path.read_text()
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise SpaceError(
            file, [f"{where}: malformed YAML: {problem}; fix the indentation or quoting there"]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(
            file, [f"{file}:1: the top level must be a mapping of keys, e.g. 'name: x'"]
        )
    data.setdefault("name", path.stem)
    overridden = _apply_overrides(data, _parse_overrides(file, overrides))

    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as err:
        lines = NodeLines(root)
        raise SpaceError(
            file,
            [_describe(file, lines, overridden, e) for e in err.errors(include_url=False)],
        ) from None

    space._path, space._text = file, text
    space._all_sites = backbone_sites(space.backbone.model, space.backbone.num_classes)
    problems = (
        _check_sites(space)
        or _check_variants(space)
        or _check_reductions(space)
        or _check_image_size(space)
        or _check_strategy(space)
    )
    if problems:
        lines = NodeLines(root)
        raise SpaceError(
            file, [_locate(file, lines, overridden, loc, msg) for loc, msg in problems]
        )
    return space


def space_from_json(data: Mapping[str, Any], *, origin: str) -> SearchSpace:
    """A space as a run stored it (``model_dump(mode="json")``); ``origin`` names it in
    errors, e.g. ``study NAME in STORAGE``."""
    try:
        space = SearchSpace.model_validate(dict(data))
    except ValidationError as err:
        raise SpaceError(
            origin, [f"{key_path(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
        ) from None
    space._path = origin
    space._all_sites = backbone_sites(space.backbone.model, space.backbone.num_classes)
    return space


def _parse_overrides(
    file: str, overrides: Mapping[str, Any] | Iterable[str] | None
) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpaceError(
                file, [f"--set {item!r}: write KEY=VALUE, e.g. --set search.trials=4"]
            )
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> set[tuple[str, ...]]:
    """Set each dotted key in ``data``; return the key paths that came from overrides."""
    paths = set()
    for dotted, value in overrides.items():
        keys = tuple(dotted.split("."))
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
        paths.add(keys)
    return paths


# ------------------------------------------------------------------------------ site checks


def _check_sites(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    if space.sites == "all":
        return []
    names = [s.name for s in space.all_sites]
    return [
        (
            ("sites", i),
            f"pattern {pattern!r} matches no site of {space.backbone.model}; "
            f"use 'all', or names or globs of: {', '.join(names)}",
        )
        for i, pattern in enumerate(space.sites)
        if not any(_matches(name, pattern) for name in names)
    ]


def _check_variants(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    """A variant no selected site takes (``pre`` on VGG) is an error; one that only some
    take (``pre`` on MobileNetV2, whose blocks without a shortcut cannot) is offered there."""
    sites = space.selected_sites
    takes = sorted({v for s in sites for v in s.variants}, key=list(VARIANTS).index)
    return [
        (
            ("choices", "variant", i),
            f"variant {variant!r} fits no selected site of {space.backbone.model} "
            f"({sites[0].why_not(variant)}); its sites take {', '.join(takes)}: "
            f"drop {variant!r} from choices.variant",
        )
        for i, variant in enumerate(space.choices.variant)
        if not any(variant in s.variants for s in sites)
    ]


def _check_strategy(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    if space.evaluation.strategy == "finetune" and space.backbone.weights is None:
        return [
            (
                ("evaluation", "strategy"),
                "strategy 'finetune' starts from pretrained weights: set backbone.weights to a "
                "torchvision weights name (IMAGENET1K_V2) or a checkpoint path, or use "
                "strategy 'train'",
            )
        ]
    return []


def _check_image_size(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    least = space.family.min_image_size
    if space.data.image_size >= least:
        return []
    return [
        (
            ("data", "image_size"),
            f"{space.backbone.model} needs images of at least {least}x{least}; "
            f"set data.image_size to {least} or more",
        )
    ]


def _check_reductions(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    problems = []
    variants = [v for v in space.choices.variant if VARIANTS[v].adds_block]
    for i, r in enumerate(space.choices.reduction):
        for variant in variants:
            taking = [s for s in space.selected_sites if variant in s.variants]
            narrowest = min(taking, key=lambda s: s.channels(variant))
            channels = narrowest.channels(variant)
            if r > channels:
                problems.append(
                    (
                        ("choices", "reduction", i),
                        f"reduction {r} exceeds the {channels} channels that variant "
                        f"{variant!r} squeezes at site {narrowest.name}; use at most {channels}, "
                        "or narrow 'sites'",
                    )
                )
                break
    return problems


# ---------------------------------------------------------------------------- error messages


def _locate(
    file: str,
    lines: NodeLines,
    overridden: set[tuple[str, ...]],
    loc: tuple[Any, ...],
    message: str,
) -> str:
    keys = tuple(str(k) for k in loc)
    if any(keys[: len(o)] == o or o[: len(keys)] == keys for o in overridden):
        where = f"{file} (--set)"
    else:
        line = lines.line(loc)
        where = f"{file}:{line}" if line else file
    return f"{where}: {key_path(loc)}: {message}"


def _describe(
    file: str, lines: NodeLines, overridden: set[tuple[str, ...]], error: Mapping[str, Any]
) -> str:
    loc = tuple(k for k in error["loc"] if not (isinstance(k, str) and "[" in k and k != "[key]"))
    return _locate(file, lines, overridden, loc, _message(loc, error))


def _message(loc: tuple[Any, ...], error: Mapping[str, Any]) -> str:
    kind, msg, value = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        valid = ", ".join(fields_at(SearchSpace, loc[:-1]))
        return f"unknown key {loc[-1]!r}; remove or rename it (valid keys here: {valid})"
    if kind == "missing":
        return f"required key is missing; add '{loc[-1]}:'"
    if kind == "too_short":
        return "empty list; give at least one value"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if loc[:2] == ("choices", "reduction"):
        return f"reduction {value!r} is not a positive integer; use integers such as 4, 8, 16"
    if loc and loc[0] == "objectives" and "[key]" in error["loc"]:
        return f"unknown objective {value!r}; objectives are any of {', '.join(OBJECTIVES)}"
    if loc and loc[0] == "objectives":
        return f"direction {value!r} is neither 'min' nor 'max'; use min or max"
    if loc and loc[0] == "constraints" and "[key]" in error["loc"]:
        return f"unknown constraint {value!r}; caps can be set on params, flops, latency_ms"
    if loc == ("sites",):
        return "give 'all', or a list of site names or globs such as ['layer3.*', 'layer4.0']"
    return f"{msg} (got {value!r})"
