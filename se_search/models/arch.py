"""Architectures: which SE choice sits at which site.

An :class:`Architecture` is an immutable mapping ``site -> SEChoice``. Sites without a block
(variant ``none``) are left out, so the same placement has one canonical JSON and one hash
whatever way it was written. The hash is SHA-256 of the canonical JSON, so it is the same in
every process, run and machine.

Compact text form of a choice: ``VARIANT[:R[:SQUEEZE[:GATE]]]``, e.g. ``standard:16``
(the paper's SE block), ``pre:8:max:hardsigmoid``, ``standard:16:none:tanh`` (the paper's
NoSqueeze block with a tanh gate: a squeeze ``none`` is not the variant ``none``) or ``none``.
SQUEEZE is one of :data:`~se_search.models.blocks.SQUEEZES` and GATE one of
:data:`~se_search.models.blocks.GATES`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from se_search.errors import ArchitectureError
from se_search.models.blocks import GATES, SQUEEZES
from se_search.models.variants import VARIANTS

__all__ = ["Architecture", "SEChoice", "resolve_architecture"]

DEFAULT_SQUEEZE = "avg"
DEFAULT_GATE = "sigmoid"
#: What a placement token carries when its squeeze or gate is not the default.
SQUEEZE_GATE_MARK = "*"


@dataclass(frozen=True)
class SEChoice:
    """What one site gets: an integration variant, a reduction ratio, a squeeze and a gate.

    A variant that adds no block (``none``, ``keep``) carries no ratio, squeeze or gate:
    ``SEChoice("none")`` and ``SEChoice("keep")`` are the only ones.
    """

    variant: str
    reduction: int | None = None
    squeeze: str = DEFAULT_SQUEEZE
    gate: str = DEFAULT_GATE

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ArchitectureError(
                f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        if not VARIANTS[self.variant].adds_block:
            object.__setattr__(self, "reduction", None)
            object.__setattr__(self, "squeeze", DEFAULT_SQUEEZE)
            object.__setattr__(self, "gate", DEFAULT_GATE)
            return
        r = self.reduction
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ArchitectureError(
                f"variant {self.variant!r} needs a positive integer reduction, got {r!r}; "
                f"write it as '{self.variant}:16'"
            )
        if self.squeeze not in SQUEEZES:
            raise ArchitectureError(
                f"unknown squeeze {self.squeeze!r}; choose one of {', '.join(SQUEEZES)}"
            )
        if self.gate not in GATES:
            raise ArchitectureError(
                f"unknown gate {self.gate!r}; choose one of {', '.join(GATES)}"
            )

    @property
    def is_none(self) -> bool:
        return self.variant == "none"

    @property
    def adds_block(self) -> bool:
        """Whether this choice puts a new SE block at its site."""
        return VARIANTS[self.variant].adds_block

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | SEChoice) -> SEChoice:
        """A choice from its compact text (``standard:16``), a mapping or a choice."""
        if isinstance(value, SEChoice):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"variant", "reduction", "squeeze", "gate"}
            if unknown or "variant" not in value:
                raise ArchitectureError(
                    f"a choice needs the key 'variant' and may have 'reduction', 'squeeze', "
                    f"'gate'; got keys {sorted(value)}"
                )
            return cls(**dict(value))
        if not isinstance(value, str):
            raise ArchitectureError(f"a choice is text like 'standard:16', got {value!r}")
        parts = value.strip().split(":")
        if len(parts) > 4 or not parts[0]:
            raise ArchitectureError(
                f"cannot read choice {value!r}; write VARIANT[:R[:SQUEEZE[:GATE]]], "
                "e.g. 'standard:16' or 'none'"
            )
        reduction: int | None = None
        if len(parts) > 1:
            try:
                reduction = int(parts[1])
            except ValueError:
                raise ArchitectureError(
                    f"reduction {parts[1]!r} in {value!r} is not an integer; e.g. 'standard:16'"
                ) from None
        return cls(
            parts[0],
            reduction,
            parts[2] if len(parts) > 2 else DEFAULT_SQUEEZE,
            parts[3] if len(parts) > 3 else DEFAULT_GATE,
        )

    def __str__(self) -> str:
        if not self.adds_block:
            return self.variant
        text = f"{self.variant}:{self.reduction}"
        if (self.squeeze, self.gate) != (DEFAULT_SQUEEZE, DEFAULT_GATE):
            text += f":{self.squeeze}:{self.gate}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) if self.adds_block else {"variant": self.variant}


NONE = SEChoice("none")


class Architecture(Mapping[str, SEChoice]):
    """An immutable, hashable mapping ``site -> SEChoice`` (``none`` sites left out)."""

    __slots__ = ("_json", "_map")

    def __init__(
        self, choices: Mapping[str, SEChoice | str | Mapping[str, Any]] | None = None
    ) -> None:
        items = {}
        for site, value in dict(choices or {}).items():
            try:
                choice = SEChoice.parse(value)
            except ArchitectureError as err:
                raise ArchitectureError(f"site {site!r}: {err}") from None
            if not choice.is_none:
                items[str(site)] = choice
        self._map: dict[str, SEChoice] = dict(sorted(items.items()))
        self._json: str | None = None  # computed on first use; the mapping never changes

    @classmethod
    def uniform(cls, sites: Iterable[str], choice: SEChoice | str) -> Architecture:
        """The same choice at every site (``standard:16`` everywhere is the paper's SENet)."""
        parsed = SEChoice.parse(choice)
        return cls({site: parsed for site in sites})

    def choice(self, site: str) -> SEChoice:
        """The choice at ``site``: ``SEChoice('none')`` where no block sits."""
        return self._map.get(site, NONE)

    def __getitem__(self, site: str) -> SEChoice:
        return self._map[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Architecture) and self._map == other._map

    def __hash__(self) -> int:
        return hash(tuple(self._map.items()))

    def __repr__(self) -> str:
        return f"Architecture({self.summary()})"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {site: choice.to_dict() for site, choice in self._map.items()}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, ``none`` sites left out."""
        if self._json is None:
            self._json = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return self._json

    @property
    def hash(self) -> str:
        """First 16 hex digits of SHA-256 over :meth:`to_json`; stable across processes."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def summary(self) -> str:
        """A short human-readable form, e.g. ``standard:16 x16`` or ``layer1.0=pre:8, ...``."""
        if not self._map:
            return "none"
        distinct = set(self._map.values())
        if len(distinct) == 1:
            return f"{next(iter(distinct))} x{len(self._map)}"
        return ", ".join(f"{site}={choice}" for site, choice in self._map.items())

    def placement(self, sites: Iterable[str]) -> str:
        """One token per site in ``sites`` order, stages split by ``|``.

        ``-`` is no block, ``K`` the backbone's own block; otherwise the variant's letter
        (S standard, P pre, O post, I identity, M inner) and the ratio, with ``*`` when
        squeeze or gate is not the default: ``S16 - P8 | I4 ...``.
        """
        stages: dict[str, list[str]] = {}
        for site in sites:
            choice = self.choice(site)
            token = VARIANTS[choice.variant].code
            if choice.adds_block:
                token += str(choice.reduction)
                if (choice.squeeze, choice.gate) != (DEFAULT_SQUEEZE, DEFAULT_GATE):
                    token += SQUEEZE_GATE_MARK
            stages.setdefault(site.rpartition(".")[0], []).append(token)
        return " | ".join(" ".join(tokens) for tokens in stages.values())

    def check_sites(self, sites: Iterable[str]) -> None:
        """Raise :class:`ArchitectureError` if a site is not one of ``sites``."""
        known = list(sites)
        unknown = [site for site in self if site not in known]
        if unknown:
            raise ArchitectureError(
                f"unknown site(s) {', '.join(unknown)}; valid sites are {', '.join(known)}"
            )


def resolve_architecture(spec: str, *, sites: Iterable[str]) -> Architecture:
    """An architecture from a preset or a file, checked against ``sites``.

    ``spec`` is ``none``; a choice for every site such as ``standard:16`` (the paper's SENet)
    or ``pre:8:max:hardsigmoid``; or the path of a JSON file mapping sites to choices
    (``{"layer1.0": "standard:16", "layer4.2": {"variant": "pre", "reduction": 8}}``, or an
    object with that mapping under ``"architecture"``, as ``se-search inspect --json`` prints).
    """
    sites = list(sites)
    path = Path(spec)
    if spec.endswith(".json") or path.is_file():
        arch = _load_json(path)
    else:
        try:
            arch = Architecture.uniform(sites, spec)
        except ArchitectureError as err:
            raise ArchitectureError(
                f"--arch {spec!r}: {err}. Give 'none', a choice such as 'standard:16', "
                "or the path of a JSON file"
            ) from None
    arch.check_sites(sites)
    return arch


def _load_json(path: Path) -> Architecture:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchitectureError(
            f"architecture file {path} does not exist; check the path, or give a preset "
            "such as 'none' or 'standard:16'"
        ) from None
    except json.JSONDecodeError as err:
        raise ArchitectureError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix the file"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("architecture"), dict):
        data = data["architecture"]
    if not isinstance(data, dict):
        raise ArchitectureError(
            f"{path}: expected a JSON object mapping sites to choices, "
            f'e.g. {{"layer1.0": "standard:16"}}'
        )
    try:
        return Architecture(data)
    except ArchitectureError as err:
        raise ArchitectureError(f"{path}: {err}") from None
