from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from se_search.space import SearchSpace, load_space

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def write_space(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text (dedented) to a file and return its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def small_space_file(tmp_path: Path) -> Path:
    """A copy of tests/assets/small.yaml: ResNet-18 (8 sites), tiny images."""
    path = tmp_path / "small.yaml"
    shutil.copy(ASSETS / "small.yaml", path)
    return path


@pytest.fixture
def small_space(small_space_file: Path) -> SearchSpace:
    return load_space(small_space_file)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database on a private PostgreSQL server, for the whole session."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    """A finished 8-trial search of tests/assets/e2e.yaml by the stand-in evaluator (about a
    second): for the tests that only read a study (dashboard, report, browser)."""
    from se_search.engines.local import LocalEngine
    from se_search.testing.standin import StandIn

    root = tmp_path_factory.mktemp("standin")
    space = load_space(
        ASSETS / "e2e.yaml",
        {"storage": f"sqlite:///{root / 'standin.db'}", "search.trials": 8,
         "search.checkpoints": "none"},
    )  # fmt: skip
    LocalEngine(space, evaluator=StandIn()).run()
    return space


@pytest.fixture(scope="session")
def compared(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Four finished stand-in studies in one database, two per sampler: nsga2-seed0/1,
    random-seed0/1 (6 trials each); the storage URL."""
    from se_search.engines.local import LocalEngine
    from se_search.testing.standin import StandIn

    storage = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'compare.db'}"
    for sampler in ("nsga2", "random"):
        for seed in (0, 1):
            space = load_space(
                ASSETS / "e2e.yaml",
                {"storage": storage, "search.trials": 6, "search.checkpoints": "none",
                 "search.sampler": sampler, "search.seed": seed,
                 "search.study": f"{sampler}-seed{seed}"},
            )  # fmt: skip
            LocalEngine(space, evaluator=StandIn()).run()
    return storage
