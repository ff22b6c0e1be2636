"""A latency lookup table: a candidate's latency as the base network's plus one delta per site.

Timing every candidate costs ``warmup + repeats`` forward passes of a whole network per
trial. SE blocks only add work at their sites (nothing else in the network changes), so a
candidate's latency is predicted as

    latency(arch) = latency(base) + sum over its sites of delta(site, choice)

where ``base`` is the plain backbone (for a backbone with its own SE blocks, those blocks
kept) and each delta is measured once per backbone, device, batch, input size and threads,
then kept in the results database (``se_latency_lut``): the table fills lazily, and a
second process, a Ray worker or a resumed run reuses it.

How a delta is measured, and why so: subtracting two whole-network timings gives a small
difference of two large, noisy numbers, and a candidate sums 16 of them. Instead the
site's own module (a residual block, an Inception module, a backbone's own SE block) is
timed alone on its real input (captured by a forward hook on the base network), as the base
has it and with each choice (built by the family's own ``wrap``, as
:func:`~se_search.surgery.insert_se` builds it), all interleaved round-robin so that drifts
of the machine hit each alike. That captures everything a choice changes: the block's
squeeze, convs, gate and scale on the map its variant sees (``pre`` the input, the others
the output) and the wrapper's own Python overhead. Where the network's weights overflow
the CPU's last-level cache, each module is cycled through replicas so that its weights come
from memory, as in the network (see :meth:`LatencyLUT._replicas`).

On ResNet-50 at 32x32 (batch 1, one thread), site deltas summed over 16 blocks agreed with
whole-network differences timed in the same rounds to within their noise (a few percent
of the network's latency); benchmarks/latency_lut.py measures the predictions.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import DateTime, Float, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from torch import nn

from se_search.arch import Architecture, SEChoice
from se_search.backbones import Site
from se_search.blocks import VARIANTS
from se_search.costs import Latency, device_name, measure_latency, resolve_device
from se_search.space import SearchSpace
from se_search.store import (
    Base,
    StorageError,
    open_engine,
    redact,
    retry_racing,
    transaction,
)
from se_search.surgery import build_model, check_variants, se_block

__all__ = [
    "BASE_CHOICE",
    "BASE_SITE",
    "Conditions",
    "LatencyEntryModel",
    "LatencyLUT",
    "base_architecture",
    "time_interleaved",
]

#: The row that holds the base network's whole latency: no site, this choice.
BASE_SITE, BASE_CHOICE = "", "base"
#: Whole-network measurements (``latency.repeats`` passes each) the base is the fastest of,
#: spread over the table's fill.
BASE_RUNS = 5
#: The fewest interleaved rounds a delta (and timed passes the base) is measured over,
#: whatever ``latency.repeats`` says.
MIN_DELTA_ROUNDS = 40
#: The fewest untimed passes before each of the base's measurements (a cold process is slow).
MIN_BASE_WARMUP = 5
#: The most replicas of one module a delta cycles through (see ``LatencyLUT._replicas``).
MAX_REPLICAS = 64
#: The most choices of one site measured together (each group also times the site as is).
GROUP_SIZE = 10

Key = tuple[str, str]  # (site, choice)
Progress = Callable[[int, int], None]  # (entries done, entries to do)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LatencyEntryModel(Base):
    """One measured delta (or the base latency) and the conditions it was taken under."""

    __tablename__ = "se_latency_lut"
    __table_args__ = (
        UniqueConstraint(
            "backbone",
            "num_classes",
            "device",
            "device_name",
            "torch_version",
            "threads",
            "batch_size",
            "image_size",
            "site",
            "choice",
            name="uq_se_latency_lut_key",
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backbone: Mapped[str] = mapped_column(String(255))
    num_classes: Mapped[int] = mapped_column(Integer)  # the classifier is part of the base
    device: Mapped[str] = mapped_column(String(64))
    device_name: Mapped[str] = mapped_column(String(255))
    torch_version: Mapped[str] = mapped_column(String(64))
    threads: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(255))  # BASE_SITE on the base row
    choice: Mapped[str] = mapped_column(String(255))  # str(SEChoice); BASE_CHOICE[:hash]
    delta_ms: Mapped[float] = mapped_column(Float)  # on the base row: the base's latency
    iqr_ms: Mapped[float] = mapped_column(Float)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


@dataclass(frozen=True)
class Conditions:
    """What a measurement depends on; rows are shared only between equal conditions."""

    backbone: str
    num_classes: int
    device: str
    device_name: str
    torch_version: str
    threads: int
    batch_size: int
    image_size: int

    @classmethod
    def of(cls, space: SearchSpace) -> Conditions:
        """The conditions ``space.latency`` asks for, on this machine and this torch."""
        cfg = space.latency
        dev = resolve_device(cfg.device)
        return cls(
            backbone=space.backbone.model,
            num_classes=space.backbone.num_classes,
            device=str(dev),
            device_name=device_name(dev),
            torch_version=torch.__version__,
            threads=cfg.threads or torch.get_num_threads(),
            batch_size=cfg.batch_size,
            image_size=cfg.image_size or space.data.image_size,
        )

    def where(self) -> list[Any]:
        """SQL conditions that select the rows of these conditions."""
        return [getattr(LatencyEntryModel, key) == value for key, value in asdict(self).items()]


def base_architecture(space: SearchSpace) -> Architecture:
    """The architecture every delta is relative to: ``keep`` where a selected site holds
    the backbone's own SE block, no block elsewhere (the plain backbone)."""
    return Architecture({s.name: "keep" for s in space.selected_sites if s.existing})


def base_key(space: SearchSpace) -> str:
    """The base row's choice: ``base``, or ``base:HASH`` when the space's sites leave out
    some of the backbone's own SE blocks (:func:`build_model` removes those, so that base
    is not the plain backbone; the hash names the blocks it keeps)."""
    kept = [s.name for s in space.selected_sites if s.existing]
    if len(kept) == sum(s.existing for s in space.all_sites):
        return BASE_CHOICE
    return f"{BASE_CHOICE}:{hashlib.sha256(','.join(kept).encode()).hexdigest()[:16]}"


def site_choices(space: SearchSpace, site: Site) -> list[SEChoice]:
    """Every choice at ``site`` that has a delta: the blocks it may get, and at a site with
    the backbone's own block, ``none`` (removing it) when the space offers it."""
    c = space.choices
    choices = []
    for variant in space.variants_at(site):
        if VARIANTS[variant].adds_block:
            choices += [
                SEChoice(variant, r, squeeze, gate)
                for r in c.reduction
                for squeeze in c.squeeze
                for gate in c.gate
            ]
        elif variant == "none" and site.existing:
            choices.append(SEChoice("none"))
    return choices


def has_delta(site: Site, choice: SEChoice) -> bool:
    """Whether ``choice`` changes ``site`` from the base (which has none, or keeps its own)."""
    return choice.variant != ("keep" if site.existing else "none")


# ------------------------------------------------------------------------------- timing


def _rotated(count: int, start: int) -> list[int]:
    return [(start + k) % count for k in range(count)]


@torch.inference_mode()
def time_interleaved(
    variants: Sequence[Sequence[nn.Module]], x: torch.Tensor, *, rounds: int, warmup: int
) -> list[list[float]]:
    """Milliseconds of single forward passes on ``x`` of each variant, ``rounds`` of each.

    A variant is a list of replicas of one module (the same architecture, weights of their
    own); each pass of a variant runs its next replica. The variants take turns within
    every round and the order rotates between rounds, so that a slow stretch of the
    machine (another process, a change of clock) falls on all of them alike. ``warmup``
    untimed rounds come first, after one pass of every replica (which allocates and picks
    kernels).
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for replicas in variants:
        for module in replicas:
            module(x)
    times: list[list[float]] = [[] for _ in variants]
    for r in range(warmup + rounds):
        for i in _rotated(len(variants), r):
            module = variants[i][r % len(variants[i])]
            sync()
            start = time.perf_counter()
            module(x)
            sync()
            if r >= warmup:
                times[i].append((time.perf_counter() - start) * 1e3)
    return times


def site_inputs(
    model: nn.Module, names: Sequence[str], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The tensor each site's module receives in one forward pass of ``model`` on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:

        def record(m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            seen[name] = args[0].detach().clone()

        handles.append(model.get_submodule(name).register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (Linux sysfs), or 32 MiB where it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes, default=32 * 2**20)


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers: what each forward pass reads."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``threads`` for the block only."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------- table


class LatencyLUT:
    """Predicted latencies of a space's candidates, from deltas kept in the database.

    Build once per process (``LatencyLUT(space=space)``) and call :meth:`predict`; entries
    it lacks are measured on first use and stored, so the table fills as the search goes,
    or up front with :meth:`fill`. Entries are shared with every other process on the same
    storage whose conditions (:class:`Conditions`) are equal.
    """

    def __init__(self, *, space: SearchSpace, storage: str | None = None) -> None:
        self.space = space
        self.url = storage or space.storage
        self.conditions = Conditions.of(space)
        self.sites = {site.name: site for site in space.selected_sites}
        self.base_arch = base_architecture(space)
        self.base_choice = base_key(space)
        self._entries: dict[Key, tuple[float, float]] = {}
        self._sessions = sessionmaker(self._open(), expire_on_commit=False)
        self._load()

    def _open(self) -> Any:
        engine = open_engine(self.url)
        table = LatencyEntryModel.__table__
        try:
            retry_racing(lambda: Base.metadata.create_all(engine, tables=[table]))
        except SQLAlchemyError as err:
            raise StorageError(
                f"cannot open the latency table in {redact(self.url)!r}: "
                f"{err.__class__.__name__}; check that the path's folder exists and is "
                "writable, or that the server is running"
            ) from None
        return engine

    # --------------------------------------------------------------------------- public

    def predict(self, arch: Architecture) -> Latency:
        """``arch``'s latency as the base's plus its sites' deltas (measuring missing ones).

        The interquartile range is the base's: the deltas are far steadier than the whole.
        """
        arch.check_sites(self.sites)
        check_variants(arch, self.sites.values())
        keys = [
            (name, str(arch.choice(name)))
            for name, site in self.sites.items()
            if has_delta(site, arch.choice(name))
        ]
        self._ensure([(BASE_SITE, self.base_choice), *keys])
        base, iqr = self._entries[BASE_SITE, self.base_choice]
        cfg = self.space.latency
        return Latency(
            median_ms=base + sum(self._entries[key][0] for key in keys),
            iqr_ms=iqr,
            device=self.conditions.device,
            device_name=self.conditions.device_name,
            torch_version=self.conditions.torch_version,
            threads=self.conditions.threads,
            batch_size=self.conditions.batch_size,
            input_size=(3, self.conditions.image_size, self.conditions.image_size),
            warmup=cfg.warmup,
            repeats=cfg.repeats,
            source="lut",
        )

    def fill(self, progress: Progress | None = None) -> int:
        """Measure every entry of the space not stored yet; the number measured.

        ``progress(done, total)`` is called after each group of a site's entries
        (:data:`GROUP_SIZE`) and, last, after the base.
        """
        keys = [(BASE_SITE, self.base_choice)] + [
            (name, str(choice))
            for name, site in self.sites.items()
            for choice in site_choices(self.space, site)
        ]
        return self._ensure(keys, progress)

    def entries(self) -> dict[Key, tuple[float, float]]:
        """Every entry this process holds, ``(site, choice) -> (ms, iqr ms)`` (what a Ray
        driver ships to its workers)."""
        return dict(self._entries)

    def add(self, entries: dict[Key, tuple[float, float]]) -> None:
        """Hold ``entries`` (measured elsewhere under the same conditions) without storing
        them: a Ray worker's table, filled by its driver."""
        self._entries.update(entries)

    def deltas(self) -> dict[Key, float]:
        """The entries this process knows, ``(site, choice) -> ms``, the base under
        ``("", base)``."""
        return {key: delta for key, (delta, _) in self._entries.items()}

    # ------------------------------------------------------------------------- database

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def _load(self) -> None:
        """Read this key's rows (another process may have stored some since)."""
        query = select(LatencyEntryModel).where(*self.conditions.where())
        with self._session() as s:
            for row in s.scalars(query):
                self._entries[row.site, row.choice] = (row.delta_ms, row.iqr_ms)

    def _store(self, measured: dict[Key, tuple[float, float]]) -> None:
        """Insert new rows; a row another process stored first is kept, and read back."""
        retry_racing(lambda: self._insert(measured))
        self._load()

    def _insert(self, measured: dict[Key, tuple[float, float]]) -> None:
        with self._session() as s:
            query = select(LatencyEntryModel.site, LatencyEntryModel.choice).where(
                *self.conditions.where()
            )
            stored = {tuple(row) for row in s.execute(query)}
            s.add_all(
                LatencyEntryModel(
                    **asdict(self.conditions), site=site, choice=choice, delta_ms=d, iqr_ms=q
                )
                for (site, choice), (d, q) in measured.items()
                if (site, choice) not in stored
            )

    # ------------------------------------------------------------------------ measuring

    def _ensure(self, keys: list[Key], progress: Progress | None = None) -> int:
        """Give every key an entry, measuring what neither this process nor the database
        holds; the number of entries measured. Each site's entries are measured (and
        stored) in groups of at most :data:`GROUP_SIZE`; the base's :data:`BASE_RUNS` runs
        are spread between the groups, so that a busy stretch of the machine (which only
        slows a run) cannot bias every prediction through the base."""
        missing = [key for key in dict.fromkeys(keys) if key not in self._entries]
        if missing:
            self._load()  # another process may have measured them since
            missing = [key for key in missing if key not in self._entries]
        if not missing:
            return 0
        base = (BASE_SITE, self.base_choice)
        groups: list[tuple[str, list[SEChoice]]] = []
        for site in self.sites:
            choices = [SEChoice.parse(c) for s, c in missing if s == site]
            groups += [
                (site, choices[i : i + GROUP_SIZE]) for i in range(0, len(choices), GROUP_SIZE)
            ]
        base_runs: list[tuple[float, float]] = []
        spacing = max(1, len(groups) // BASE_RUNS)
        done = 0
        with torch_threads(self.conditions.threads):
            for i, (site, choices) in enumerate(groups):
                if base in missing and i % spacing == 0 and len(base_runs) < BASE_RUNS - 1:
                    base_runs.append(self._measure_base())
                self._store(self._measure_site(self.sites[site], choices))
                done += len(choices)
                if progress is not None:
                    progress(done, len(missing))
            if base in missing:
                while len(base_runs) < BASE_RUNS:
                    base_runs.append(self._measure_base())
                self._store({base: min(base_runs)})  # the fastest run's (median, iqr)
                if progress is not None:
                    progress(len(missing), len(missing))
        return len(missing)

    def _measure_base(self) -> tuple[float, float]:
        """``(median, iqr)`` of one whole-network measurement of the base, with the space's
        settings, as a search measures a candidate, but at least :data:`MIN_BASE_WARMUP`
        untimed and :data:`MIN_DELTA_ROUNDS` timed passes: every prediction builds on it.
        The base's entry is the fastest of :data:`BASE_RUNS` of them: other processes only
        ever slow a run down."""
        cfg = self.space.latency
        lat = measure_latency(
            self._base_model,
            image_size=self.conditions.image_size,
            batch_size=self.conditions.batch_size,
            device=self.conditions.device,
            warmup=max(cfg.warmup, MIN_BASE_WARMUP),
            repeats=max(cfg.repeats, MIN_DELTA_ROUNDS),
            threads=self.conditions.threads,
        )
        return lat.median_ms, lat.iqr_ms

    def _measure_site(self, site: Site, choices: list[SEChoice]) -> dict[Key, tuple[float, float]]:
        """Deltas of ``choices`` at ``site``: the site's module timed with each choice and as
        the base has it, interleaved; ``(delta, iqr of the choice's passes)`` each.

        A delta is the difference of lower quartiles: another process taking the CPU
        mid-pass only ever lengthens a pass, so the fast side of each distribution is the
        part that measures the module (on a quiet machine it is within noise of the median).
        """
        plain, x = self._base_model.get_submodule(site.name), self._inputs[site.name]
        one_each = [plain, *(self._with_choice(plain, site, c) for c in choices)]
        copies = self._replicas(sum(tensor_bytes(m) for m in one_each))
        variants = [[plain, *(copy.deepcopy(plain) for _ in range(copies - 1))]] + [
            [first, *(self._with_choice(plain, site, c) for _ in range(copies - 1))]
            for first, c in zip(one_each[1:], choices)
        ]
        cfg = self.space.latency
        times = time_interleaved(
            variants, x, rounds=max(cfg.repeats, MIN_DELTA_ROUNDS), warmup=cfg.warmup
        )
        reference = _quartiles(times[0])[0]
        return {
            (site.name, str(choice)): (_quartiles(t)[0] - reference, _iqr(t))
            for choice, t in zip(choices, times[1:])
        }

    def _replicas(self, round_bytes: int) -> int:
        """How many replicas of each module a round cycles through: enough that one round
        reads twice the CPU's last-level cache, when the network's weights overflow it.

        In the network, the rest of a forward pass evicts a block's weights before its next
        pass, so every pass reads them from memory; a block timed alone would run from cache
        (and a large SE block's 1x1 convs look several times cheaper). Cycling through
        replicas evicts the weights in the same way while the input, the code and the
        framework's own data stay hot, as they do in the network. (Sweeping a buffer between
        passes instead evicts those too, and charges a small SE block three times its cost.)
        """
        if self._device.type != "cpu":
            return 1
        cache = last_level_cache_bytes()
        if tensor_bytes(self._base_model) <= cache:
            return 1  # the whole network runs from cache
        return max(1, min(-(-2 * cache // max(round_bytes, 1)), MAX_REPLICAS))

    def _with_choice(self, block: nn.Module, site: Site, choice: SEChoice) -> nn.Module:
        """A copy of the site's ``block`` with ``choice`` applied, as ``insert_se`` does."""
        se = se_block(site, choice)
        wrapped = self.space.family.wrap(copy.deepcopy(block), se, choice.variant)
        return wrapped.to(self._device).eval()

    @property
    def _device(self) -> torch.device:
        return torch.device(self.conditions.device)

    @functools.cached_property
    def _base_model(self) -> nn.Module:
        torch.manual_seed(self.space.search.seed)
        return build_model(self.space, self.base_arch).to(self._device).eval()

    @functools.cached_property
    def _inputs(self) -> dict[str, torch.Tensor]:
        """Each site's input in one forward pass of the base network on a random batch."""
        size = self.conditions.image_size
        x = torch.randn(self.conditions.batch_size, 3, size, size, device=self._device)
        return site_inputs(self._base_model, list(self.sites), x)


def _quartiles(times: list[float]) -> list[float]:
    return statistics.quantiles(times, n=4, method="inclusive")


def _iqr(times: list[float]) -> float:
    q1, _, q3 = _quartiles(times)
    return q3 - q1
