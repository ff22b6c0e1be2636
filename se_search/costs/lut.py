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
:func:`~se_search.models.surgery.insert_se` builds it), all interleaved round-robin so that drifts
of the machine hit each alike. That captures everything a choice changes: the block's
squeeze, convs, gate and scale on the map its variant sees (``pre`` the input, the others
the output) and the wrapper's own Python overhead. Where the network's weights overflow
the CPU's last-level cache, each module is cycled through replicas so that its weights come
from memory, as in the network. :mod:`se_search.costs.deltas` measures them.

On ResNet-50 at 32x32 (batch 1, one thread), site deltas summed over 16 blocks agreed with
whole-network differences timed in the same rounds to within their noise (a few percent
of the network's latency); benchmarks/latency_lut.py measures the predictions.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from se_search.costs.deltas import Conditions, DeltaTimer
from se_search.costs.latency import Latency
from se_search.costs.timing import torch_threads
from se_search.models.arch import Architecture, SEChoice
from se_search.models.backbones import Site
from se_search.models.surgery import check_variants
from se_search.space import SearchSpace
from se_search.space.sampling import block_options
from se_search.storage.database import (
    StorageError,
    open_engine,
    redact,
    retry_racing,
    transaction,
)
from se_search.storage.tables import Base, LatencyEntryModel

__all__ = [
    "BASE_CHOICE",
    "BASE_SITE",
    "Conditions",
    "LatencyLUT",
    "base_architecture",
    "site_choices",
]

#: The row that holds the base network's whole latency: no site, this choice.
BASE_SITE, BASE_CHOICE = "", "base"
#: Whole-network measurements (``latency.repeats`` passes each) the base is the fastest of,
#: spread over the table's fill.
BASE_RUNS = 5
#: The most choices of one site measured together (each group also times the site as is).
GROUP_SIZE = 10

Key = tuple[str, str]  # (site, choice)
Progress = Callable[[int, int], None]  # (entries done, entries to do)


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
    return [
        choice
        for variant in space.variants_at(site)
        for choice in block_options(space, variant)
        if choice.adds_block or (choice.variant == "none" and site.existing)
    ]


def has_delta(site: Site, choice: SEChoice) -> bool:
    """Whether ``choice`` changes ``site`` from the base (which has none, or keeps its own)."""
    return choice.variant != ("keep" if site.existing else "none")


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
        table = Base.metadata.tables[LatencyEntryModel.__tablename__]
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
        base, base_iqr = self._entries[BASE_SITE, self.base_choice]
        cfg = self.space.latency
        return Latency(
            median_ms=base + sum(self._entries[key][0] for key in keys),
            iqr_ms=base_iqr,
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

    def _measure_base(self) -> tuple[float, float]:
        """One whole-network measurement of the base (see :meth:`DeltaTimer.base`)."""
        return self._timer.base()

    def _measure_site(self, site: Site, choices: list[SEChoice]) -> dict[Key, tuple[float, float]]:
        """The deltas of ``choices`` at ``site`` (see :meth:`DeltaTimer.site`)."""
        return {
            (site.name, str(choice)): figures
            for choice, figures in zip(choices, self._timer.site(site, choices))
        }

    @functools.cached_property
    def _timer(self) -> DeltaTimer:
        return DeltaTimer(space=self.space, conditions=self.conditions, base=self.base_arch)

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
