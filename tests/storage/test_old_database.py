"""A results database written by se-search 0.1.0 (tests/assets/release-0.1.0, made before the
package was regrouped) opens with today's code, and ``front``, ``show`` and ``export`` give
what 0.1.0 gave. The layout must not change without a schema version and a migration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from se_search.cli import app
from se_search.outputs.export import load_model, read_metadata
from se_search.storage.database import StorageError
from se_search.storage.store import ResultsStore
from se_search.storage.tables import ADDED_IN, SCHEMA_VERSION, Base, CandidateState
from tests.conftest import ASSETS

RELEASE = ASSETS / "release-0.1.0"
STUDY = "release-0.1.0"
runner = CliRunner()


@pytest.fixture
def old_db(tmp_path: Path) -> str:
    """A copy of the release's database and artifacts (tests never write to the fixture)."""
    shutil.copy(RELEASE / "se_search.db", tmp_path / "se_search.db")
    shutil.copytree(RELEASE / "se_search_artifacts", tmp_path / "se_search_artifacts")
    return f"sqlite:///{tmp_path / 'se_search.db'}"


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_todays_tables_are_the_tables_of_0_1_0_plus_added_ones(old_db: str) -> None:
    old = inspect(create_engine(old_db))
    added = {name for names in ADDED_IN.values() for name in names}
    assert set(old.get_table_names()) >= set(Base.metadata.tables) - added
    for name, table in Base.metadata.tables.items():
        if name in added:
            continue
        columns = {c["name"]: c for c in old.get_columns(name)}
        assert list(columns) == [c.name for c in table.columns], name
        for column in table.columns:
            assert str(columns[column.name]["type"]) == str(column.type.compile()), column


def test_read_only_leaves_it_as_it_is_and_writing_upgrades_it_in_place(old_db: str) -> None:
    before = _cli("front", "--study", STUDY, "--storage", old_db, "--format", "json")
    store = ResultsStore(old_db, read_only=True)
    added = {name for names in ADDED_IN.values() for name in names}
    assert store.missing == added and store.noise(STUDY) is None
    assert store.seed_results(STUDY) == {}
    assert store.split_scores(STUDY, split="test") == {}
    assert _version(old_db) == 2  # nothing written
    ResultsStore(old_db)  # opened for writing: the new tables are added
    assert _version(old_db) == SCHEMA_VERSION == 4
    assert added <= set(inspect(create_engine(old_db)).get_table_names())
    assert _cli("front", "--study", STUDY, "--storage", old_db, "--format", "json") == before


def test_a_newer_layout_is_refused(old_db: str) -> None:
    with create_engine(old_db).begin() as connection:
        connection.execute(text("UPDATE se_schema_version SET version = 99"))
    with pytest.raises(
        StorageError, match="schema version 99, this se-search reads versions 2, 3, 4"
    ):
        ResultsStore(old_db, read_only=True)


def _version(url: str) -> int:
    with create_engine(url).connect() as connection:
        return connection.execute(text("SELECT version FROM se_schema_version")).scalar_one()


def test_front_and_show_give_what_0_1_0_printed(old_db: str) -> None:
    then = json.loads((RELEASE / "front.json").read_text())
    now = json.loads(_cli("front", "--study", STUDY, "--storage", old_db, "--format", "json"))
    assert [r["trial_number"] for r in now] == [r["trial_number"] for r in then] == [0, 1, 3]
    for old, new in zip(then, now):
        assert {k: new[k] for k in old} == old  # every field 0.1.0 wrote, unchanged
    shown = json.loads(_cli("show", "3", "--study", STUDY, "--storage", old_db, "--json"))
    then_shown = json.loads((RELEASE / "show-3.json").read_text())
    assert {k: shown[k] for k in then_shown} == then_shown
    table = _cli("show", "3", "--study", STUDY, "--storage", old_db)
    assert "complete (on the front)" in table and "stage4.1" in table
    # rounded as the front table rounds them; --json keeps every digit
    lines = dict(line.split(None, 1) for line in table.splitlines() if line[:1].isalpha())
    assert lines["latency_ms"] == f"{then_shown['latency_ms']:.3f}"
    assert lines["params"] == f"{then_shown['params'] / 1e6:.3f} M"
    assert lines["accuracy"] == f"{then_shown['accuracy']:.4f}"
    assert len(str(shown["latency_ms"])) > 8


def test_states_read_back_as_the_enum(old_db: str) -> None:
    rows = ResultsStore(old_db, read_only=True).candidates(STUDY)
    assert {r.state for r in rows} == {CandidateState.COMPLETE}
    assert all(isinstance(r.state, CandidateState) for r in rows)


def test_export_finds_the_moved_checkpoint_and_writes_its_weights(
    old_db: str, tmp_path: Path
) -> None:
    out = tmp_path / "knee.pt"
    printed = _cli(
        "export", "--study", STUDY, "--storage", old_db, "--pick", "knee", "-o", str(out)
    )
    assert "exported trial 3" in printed
    # The stored path is where 0.1.0 ran (gone); the file beside the database is used.
    stored = json.loads((RELEASE / "show-3.json").read_text())["checkpoint"]
    assert not Path(stored).exists()
    meta = read_metadata(out)
    assert meta["trial"] == 3 and meta["accuracy"] == pytest.approx(0.9111, abs=1e-4)
    checkpoint = RELEASE / "se_search_artifacts" / STUDY / Path(stored).name
    trained = torch.load(checkpoint, weights_only=True)
    exported = load_model(out).state_dict()
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], trained[k]) for k in trained)


def test_export_of_a_trial_without_its_checkpoint_says_why(old_db: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "export",
            "--study",
            STUDY,
            "--storage",
            old_db,
            "--trial",
            "1",
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2
    assert "has no checkpoint" in result.output and "search.checkpoints: all" in result.output
