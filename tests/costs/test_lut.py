"""The latency lookup table: what it stores, that it reuses it, and what a prediction sums.

Every measurement here is real (ResNet-18 at 16x16, two sites, one thread, few repeats);
counting wrappers around the measuring methods tell measured entries from reused ones.
Whether predictions are accurate is the benchmark's question (benchmarks/latency_lut.py):
timings on a shared 2-core CPU are no ground for assertions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from se_search.costs import lut as lut_module
from se_search.costs.lut import BASE_CHOICE, BASE_SITE, Conditions, LatencyLUT
from se_search.engines.local import LocalEngine
from se_search.errors import ArchitectureError
from se_search.events import LatencyChecked, LatencyTableReady, TrialStarted
from se_search.models.arch import Architecture, SEChoice
from se_search.outputs.report import build_report
from se_search.space import SearchSpace, load_space
from se_search.storage.store import ResultsStore
from se_search.storage.tables import LatencyEntryModel
from se_search.testing.events import EventLog
from se_search.testing.standin import StandIn
from tests.conftest import ASSETS

SITES = ["layer1.0", "layer2.1"]
CHOICES = [f"{variant}:{r}" for variant in ("standard", "pre") for r in (4, 16)]
BASE = (BASE_SITE, BASE_CHOICE)


def small_space(storage: str, **overrides: Any) -> SearchSpace:
    return load_space(
        ASSETS / "small.yaml",
        {
            "sites": SITES,
            "choices.variant": ["none", "standard", "pre"],
            "choices.reduction": [4, 16],
            "data.image_size": 16,
            "latency": {"device": "cpu", "threads": 1, "warmup": 1, "repeats": 3},
            "storage": storage,
            **overrides,
        },
    )


def count_measurements(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Wrap LatencyLUT's measuring methods (which still measure) to count what they measure:
    ``base`` runs and site ``entries``."""
    counts: Counter[str] = Counter()
    real_base, real_site = LatencyLUT._measure_base, LatencyLUT._measure_site

    def base(self: LatencyLUT) -> tuple[float, float]:
        counts["base"] += 1
        return real_base(self)

    def site(self: LatencyLUT, site: Any, choices: list[Any]) -> dict:
        counts["entries"] += len(choices)
        return real_site(self, site, choices)

    monkeypatch.setattr(LatencyLUT, "_measure_base", base)
    monkeypatch.setattr(LatencyLUT, "_measure_site", site)
    return counts


def stored_rows(url: str, space: SearchSpace | None = None) -> list[LatencyEntryModel]:
    """The table's rows, read back with SQLAlchemy; only those of ``space``'s conditions
    when it is given."""
    query = select(LatencyEntryModel)
    if space is not None:
        query = query.where(*Conditions.of(space).where())
    with Session(create_engine(url)) as s:
        return list(s.scalars(query))


@dataclass
class Filled:
    """A database holding every entry of the small space, and what filling it measured."""

    url: str
    counts: Counter[str]
    returned: int

    def lut(self, **overrides: Any) -> LatencyLUT:
        return LatencyLUT(space=small_space(self.url, **overrides))

    def deltas(self) -> dict[tuple[str, str], float]:
        """The rows of the small space's conditions, ``(site, choice) -> delta_ms``."""
        rows = stored_rows(self.url, small_space(self.url))
        return {(r.site, r.choice): r.delta_ms for r in rows}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    url = f"sqlite:///{tmp_path_factory.mktemp('lut') / 'lut.db'}"
    with pytest.MonkeyPatch.context() as mp:
        counts = count_measurements(mp)
        returned = LatencyLUT(space=small_space(url)).fill()
    return Filled(url, counts, returned)


def test_fill_measures_every_entry_once_and_stores_it(filled: Filled) -> None:
    assert filled.counts == {"base": lut_module.BASE_RUNS, "entries": len(SITES) * len(CHOICES)}
    assert filled.returned == 1 + len(SITES) * len(CHOICES)
    assert set(filled.deltas()) == {BASE} | {(s, c) for s in SITES for c in CHOICES}
    rows = stored_rows(filled.url)
    assert {(r.backbone, r.device, r.threads, r.batch_size, r.image_size) for r in rows} >= {
        ("resnet18", "cpu", 1, 1, 16)
    }


def test_a_second_table_on_the_same_storage_measures_nothing(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = count_measurements(monkeypatch)
    lut = filled.lut()
    assert lut.fill() == 0
    lut.predict(Architecture({"layer1.0": "pre:4", "layer2.1": "standard:16"}))
    assert counts == {}


def test_none_predicts_exactly_the_base(filled: Filled) -> None:
    latency = filled.lut().predict(Architecture())
    assert latency.median_ms == filled.deltas()[BASE]
    assert (latency.device, latency.threads, latency.batch_size, latency.input_size) == (
        "cpu",
        1,
        1,
        (3, 16, 16),
    )


def test_a_prediction_is_the_base_plus_the_stored_deltas(filled: Filled) -> None:
    arch = Architecture({"layer1.0": "standard:4", "layer2.1": "pre:16"})
    rows = filled.deltas()
    expected = rows[BASE] + rows["layer1.0", "standard:4"] + rows["layer2.1", "pre:16"]
    assert filled.lut().predict(arch).median_ms == pytest.approx(expected, abs=1e-9)


def test_se_blocks_add_latency_on_cpu(filled: Filled) -> None:
    deltas = {key: delta for key, delta in filled.deltas().items() if key != BASE}
    assert deltas
    assert all(delta > 0 for delta in deltas.values()), deltas


@pytest.mark.parametrize(
    "overrides",
    [{"latency.batch_size": 2}, {"latency.image_size": 24}, {"latency.threads": 2}],
    ids=["batch size", "image size", "threads"],
)
def test_other_conditions_do_not_reuse_rows(
    filled: Filled, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any]
) -> None:
    lut = filled.lut(**overrides)
    assert lut.deltas() == {}
    counts = count_measurements(monkeypatch)
    monkeypatch.setattr(lut_module, "BASE_RUNS", 1)  # a key is checked, not a measurement
    lut.predict(Architecture())  # only the base: the cheapest thing to measure
    assert counts == {"base": 1}


def test_another_device_does_not_reuse_rows(
    filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of a GPU (written here by hand: this machine may have none) are not the CPU's."""
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    space = small_space(url)
    gpu = replace(Conditions.of(space), device="cuda:0", device_name="NVIDIA H100")
    ResultsStore(url)  # a results database: creating se-search's tables creates ours too
    with Session(create_engine(url)) as s, s.begin():
        s.add_all(
            LatencyEntryModel(**vars(gpu), site=site, choice=choice, delta_ms=1.0, iqr_ms=0.0)
            for site, choice in filled.deltas()
        )
    lut = LatencyLUT(space=space)
    assert lut.deltas() == {}
    counts = count_measurements(monkeypatch)
    monkeypatch.setattr(lut_module, "BASE_RUNS", 1)
    lut.predict(Architecture())
    assert counts == {"base": 1}
    assert len(stored_rows(url)) == len(filled.deltas()) + 1


def test_the_papers_ablations_get_entries_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every squeeze (NoSqueeze included) and gate of the space has its own delta, measured
    on the block that the choice builds, and a prediction uses it."""
    url = f"sqlite:///{tmp_path / 'ablations.db'}"
    space = small_space(
        url,
        sites=["layer2.1"],
        **{
            "choices.variant": ["none", "standard"],
            "choices.reduction": [4],
            "choices.squeeze": ["avg", "none"],
            "choices.gate": ["sigmoid", "tanh", "relu"],
        },
    )
    monkeypatch.setattr(lut_module, "BASE_RUNS", 1)
    counts = count_measurements(monkeypatch)
    lut = LatencyLUT(space=space)
    assert lut.fill() == 1 + 2 * 3
    choices = {c for site, c in lut.deltas() if site == "layer2.1"}
    assert choices == {
        str(SEChoice("standard", 4, sq, g))  # standard:4 for avg and sigmoid, the defaults
        for sq in ("avg", "none")
        for g in ("sigmoid", "tanh", "relu")
    }
    assert counts == {"base": 1, "entries": 6}
    deltas = lut.deltas()
    arch = Architecture({"layer2.1": "standard:4:none:relu"})
    expected = deltas[BASE] + deltas["layer2.1", "standard:4:none:relu"]
    assert lut.predict(arch).median_ms == pytest.approx(expected, abs=1e-9)


def test_an_architecture_outside_the_space_is_refused(filled: Filled) -> None:
    with pytest.raises(ArchitectureError, match=r"layer3\.0"):
        filled.lut().predict(Architecture({"layer3.0": "standard:4"}))


# ------------------------------------------------------------------ in a search (lut+verify)


def test_a_search_predicts_latencies_and_checks_the_front(tmp_path: Path) -> None:
    """``latency.mode: lut+verify``: every candidate's latency is the table's prediction,
    and each front member's is measured afterwards and stored beside it with its error."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    space = small_space(
        url,
        **{"latency.mode": "lut+verify", "objectives": {"accuracy": "max", "latency_ms": "min"}},
    )
    events = EventLog()
    engine = LocalEngine(space, evaluator=StandIn(real_latency=True), listener=events)
    engine.run(trials=5)

    kinds = events.kinds()
    assert kinds.index(LatencyTableReady) < kinds.index(TrialStarted)
    assert kinds[-1] is LatencyChecked
    table = LatencyLUT(space=space)
    assert len(table.deltas()) == 1 + len(SITES) * len(CHOICES)  # filled before the trials

    done = engine.store.candidates(space.study_name, states=["complete"])
    assert len(done) == 5
    for cand in done:
        assert cand.latency["source"] == "lut"
        predicted = table.predict(Architecture(cand.architecture)).median_ms
        assert cand.latency_ms == pytest.approx(predicted, abs=1e-9)

    front = engine.store.front(space.study_name)
    checked = events.of(LatencyChecked)[0].front
    assert {c.trial_number for c in checked} == {c.trial_number for c in front}
    for cand in front:
        lat = cand.latency
        assert lat["measured_ms"] > 0
        expected_error = (cand.latency_ms - lat["measured_ms"]) / lat["measured_ms"]
        assert lat["error"] == pytest.approx(expected_error)
    html = build_report(url, space.study_name)  # the report shows each check
    for cand in front:
        assert f'data-measured="{cand.latency["measured_ms"]}"' in html
    off_front = [c for c in done if c.trial_number not in {f.trial_number for f in front}]
    assert all("measured_ms" not in c.latency for c in off_front)


def test_measure_mode_never_opens_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'measure.db'}"
    space = small_space(url, objectives={"accuracy": "max", "latency_ms": "min"})
    engine = LocalEngine(space, evaluator=StandIn(real_latency=True))
    engine.run(trials=2)
    done = engine.store.candidates(space.study_name, states=["complete"])
    assert [c.latency["source"] for c in done] == ["measured"] * 2
    assert "lut" not in engine.evaluator.__dict__  # the cached table was never built
