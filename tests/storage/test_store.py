from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from se_search.storage.database import StorageError, redact
from se_search.storage.store import ResultsStore
from se_search.storage.tables import SCHEMA_VERSION


def test_redact_hides_passwords_only() -> None:
    assert redact("postgresql+psycopg://alice:s3cr3t@db:5432/x") == (
        "postgresql+psycopg://alice:***@db:5432/x"
    )
    assert redact("sqlite:///se_search.db") == "sqlite:///se_search.db"


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    ResultsStore(url)  # creates the tables at the current version
    with sqlite3.connect(tmp_path / "r.db") as con:
        con.execute("update se_schema_version set version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(url)


def test_read_only_never_creates_anything(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no results database"):
        ResultsStore(f"sqlite:///{missing}", read_only=True)
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()  # a database without se-search's tables
    with pytest.raises(StorageError, match="holds no se-search results"):
        ResultsStore(f"sqlite:///{other}", read_only=True)
    with sqlite3.connect(other) as con:
        assert con.execute("select name from sqlite_master").fetchall() == []


def test_bad_urls_name_the_forms(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="sqlite:///se_search.db"):
        ResultsStore("not a url")
    with pytest.raises(StorageError, match=r"folder .*no/such does not exist; create it"):
        ResultsStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(StorageError) as err:
        ResultsStore("postgresql+nosuchdriver://bob:hunter2@localhost/db")
    assert "hunter2" not in str(err.value) and "***" in str(err.value)
