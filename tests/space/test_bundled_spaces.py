"""Every bundled search space: it loads, `se-search inspect` describes its reference
architectures, and a 2-trial search on synthetic data finishes.

The spaces are found at collection time, so a new file in ``search_spaces/`` is covered
without touching this test. The searches train real models for an epoch each (tens of
seconds per space on 2 cores), so they are marked slow: ``pytest -m slow
tests/test_bundled_spaces.py`` runs them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from se_search.cli import app
from se_search.engines.local import LocalEngine
from se_search.space import bundled_spaces, load_space
from se_search.storage.store import ResultsStore

runner = CliRunner()
SPACES = bundled_spaces()


def _inspect(space: str, arch: str) -> dict:
    result = runner.invoke(
        app, ["inspect", "--space", space, "--arch", arch, "--no-latency", "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", SPACES)
def test_inspect_describes_none_and_the_papers_block(name: str) -> None:
    space = load_space(name)
    plain, se = _inspect(name, "none"), _inspect(name, "standard:16")
    assert plain["backbone"] == se["backbone"] == space.backbone.model
    assert len(plain["sites"]) == len(space.all_sites) > 0
    assert plain["params"] > 0 and plain["flops"] > 0
    # `standard` is a new block at every site: bigger than `none`, which removes even the
    # backbone's own SE blocks where it has some.
    assert se["params"] > plain["params"] and se["flops"] > plain["flops"]
    assert all(s["se_params"] > 0 for s in se["sites"] if s["searched"])
    assert all(s["se_params"] == 0 for s in plain["sites"])
    assert space.size > 1


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_a_two_trial_search_on_synthetic_data_finishes(name: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    space = load_space(
        name,
        {
            "storage": storage,
            "data.dataset": "synthetic",
            "data.batch_size": 128,
            "evaluation.epochs": 1,
            "latency.warmup": 1,
            "latency.repeats": 3,
            "search.trials": 2,
            "search.checkpoints": "none",
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # synthetic data's own warning
        summary = LocalEngine(space).run()
    assert summary.finished == 2 and summary.failed == 0
    cands = ResultsStore(storage).candidates(space.study_name, states=["complete"])
    assert len(cands) == 2 and all(c.params > 0 and c.flops > 0 for c in cands)
    assert cands[0].summary == "none"  # the paper's reference comes first
