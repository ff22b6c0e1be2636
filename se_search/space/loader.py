"""Reading a search space: :func:`load_space` from a YAML file (or a bundled name), with
``--set`` overrides, and :func:`space_from_json` from what a run stored.

Every problem found while loading is reported at once, each naming the file, the line, the
YAML key path (``choices.reduction[2]``) and the fix. Checks that need the backbone (site
patterns, reductions that exceed the channels at a site) run on a model built on PyTorch's
``meta`` device, so they cost milliseconds and allocate nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from se_search.commands import flag
from se_search.errors import SpaceError
from se_search.models.backbones import Site, get_backbone
from se_search.models.blocks import GATES, can_start_as_identity
from se_search.models.variants import VARIANTS
from se_search.space.specs import OBJECTIVES, SearchSpace, matches
from se_search.space.yamlpath import NodeLines, fields_at, key_path

__all__ = [
    "backbone_sites",
    "bundled_spaces",
    "load_space",
    "resolve_space_path",
    "space_from_json",
    "spaces_dir",
]


def spaces_dir() -> Path:
    """The folder of bundled spaces: inside the installed package, or the source checkout's."""
    package = Path(__file__).resolve().parents[1]  # se_search/
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
        or _check_split(space)
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
                file,
                [f"{flag('set')} {item!r}: write KEY=VALUE, e.g. {flag('set')} search.trials=4"],
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
        if not any(matches(name, pattern) for name in names)
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
    if not space.evaluation.traits.from_weights:
        return []
    strategy = space.evaluation.strategy
    problems: list[tuple[tuple[Any, ...], str]] = []
    if space.backbone.weights is None:
        problems.append(
            (
                ("evaluation", "strategy"),
                f"strategy {strategy!r} starts from pretrained weights: set backbone.weights "
                "to a torchvision weights name (IMAGENET1K_V2) or a checkpoint path, or use "
                "strategy 'train'",
            )
        )
    # finetune's new blocks start as the identity (blocks.start_as_identity): a gate that is 0
    # at a zero excitation cannot, whatever its gain.
    starting = [g for g in GATES if can_start_as_identity(g)]
    problems += [
        (
            ("choices", "gate", i),
            f"gate {gate!r} cannot start as the identity, as strategy {strategy!r} needs: "
            f"{gate}(0) = 0, so a new block would zero the map it scales instead of keeping "
            f"the pretrained function; use gate {' or '.join(starting)} under {strategy}, or "
            "strategy 'train'",
        )
        for i, gate in enumerate(space.choices.gate)
        if not can_start_as_identity(gate)
    ]
    return problems


def _check_split(space: SearchSpace) -> list[tuple[tuple[Any, ...], str]]:
    cfg, site = space.evaluation.supernet, space.split_site
    if cfg.split == "none":
        return []
    names, key = space.site_names, ("evaluation", "supernet", "split_site")
    if site is None:
        return [
            (
                key,
                f"split_site {cfg.split_site!r} is not one of the space's selected sites; use "
                f"one of {', '.join(names)}, or leave it out for the last ({names[-1]})",
            )
        ]
    if len(space.variants_at(site)) < 2:
        return [
            (
                key if cfg.split_site else ("evaluation", "supernet", "split"),
                f"site {site.name} takes only {space.variants_at(site)}, so splitting on its "
                "variant makes one copy; name a split_site that takes several variants, or set "
                "split: none",
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
        where = f"{file} ({flag('set')})"
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
