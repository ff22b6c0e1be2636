"""``se-search dashboard``: optuna-dashboard on a results database, with the trials'
placement images (:mod:`se_search.storage.trial_records` writes what it shows)."""

from __future__ import annotations

from pathlib import Path

from se_search.commands import DEFAULT_STORAGE
from se_search.storage.artifacts import (
    OPTUNA_ARTIFACTS,
    default_artifacts_dir,
    optuna_artifacts_dir,
)
from se_search.storage.store import ResultsStore
from se_search.storage.trial_records import artifact_store

__all__ = ["serve", "where"]


def where(
    *, space: str | None, storage: str | None, artifacts: Path | None
) -> tuple[str, Path | None]:
    """The results database and Optuna artifact store to serve: given, or the space's, or
    the defaults; the store is None where it does not exist. A storage without se-search's
    results is refused with the fix."""
    if space is not None:
        from se_search.space import load_space

        loaded = load_space(space)
        storage = storage or loaded.storage
        artifacts = artifacts or optuna_artifacts_dir(loaded, storage)
    storage = storage or DEFAULT_STORAGE
    ResultsStore(storage, read_only=True)  # a clear error if there is no results database
    if artifacts is None:
        artifacts = default_artifacts_dir(storage) / OPTUNA_ARTIFACTS
    return storage, artifacts if artifacts.exists() else None


def serve(storage: str, *, host: str, port: int, artifacts: Path | None) -> None:
    """Run optuna-dashboard on ``storage`` until interrupted."""
    import optuna_dashboard

    store = artifact_store(artifacts) if artifacts is not None else None
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
