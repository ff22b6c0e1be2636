"""What optuna-dashboard shows of a search, through its own API, and `se-search dashboard`."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna_dashboard import wsgi
from PIL import Image
from typer.testing import CliRunner

from se_search.cli import app
from se_search.models.arch import Architecture
from se_search.space import SearchSpace
from se_search.storage.artifacts import optuna_artifacts_dir
from se_search.storage.store import ResultsStore
from se_search.storage.trial_records import (
    VARIANT_COLOURS,
    artifact_store,
    cell_box,
    set_user_attrs,
)
from se_search.testing.dashboard_process import dashboard_process


def _get(app_: Any, path: str) -> bytes:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app_(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status)
    return body


def test_trials_carry_attributes_and_a_placement_image(searched: SearchSpace) -> None:
    store = artifact_store(optuna_artifacts_dir(searched, searched.storage))
    dash = wsgi(searched.storage, artifact_store=store)
    study = json.loads(_get(dash, "/api/studies/1"))
    sites = [s.name for s in searched.all_sites]
    cands = {c.trial_number: c for c in ResultsStore(searched.storage).candidates("e2e")}
    assert len(study["trials"]) == 8
    for trial in study["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        cand = cands[trial["number"]]
        assert attrs["placement"] == cand.placement and attrs["strategy"] == "train"
        assert float(attrs["flops"]) == cand.flops and attrs["arch_hash"] == cand.arch_hash
        assert "latency_ms" in attrs and "params" in attrs
        (artifact,) = trial["artifacts"]
        assert artifact["mimetype"] == "image/png"
        png = _get(dash, f"/artifacts/1/{trial['trial_id']}/{artifact['artifact_id']}")
        image = Image.open(io.BytesIO(png)).convert("RGB")
        arch = Architecture(cand.architecture)
        for site in sites:  # each cell is the colour of its site's variant
            left, _, _, bottom = cell_box(sites, site)
            corner = image.getpixel((left + 2, bottom - 3))  # clear of the label
            assert corner == VARIANT_COLOURS[arch.choice(site).variant], (site, trial["number"])


ATTRS = {"placement": "S16 - | P8", "params": 25_557_032, "latency_ms": 1.25, "h": [0.5, 0.75]}


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
def test_set_user_attrs_is_set_user_attr_in_one_write(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}" if storage == "sqlite" else None
    study = optuna.create_study(storage=url)
    trial = study.ask()
    trial.set_user_attr("h", [0.5])  # replaced, as set_user_attr would
    if storage == "sqlite":  # the RDB path writes rows itself, never one call per attribute
        monkeypatch.setattr(optuna.Trial, "set_user_attr", None)
    set_user_attrs(trial, ATTRS)
    assert trial.user_attrs == ATTRS  # the trial's own view
    study.tell(trial, 1.0)
    assert study.trials[0].user_attrs == ATTRS  # what the storage holds
    again = optuna.load_study(study_name=study.study_name, storage=url) if url else study
    assert again.trials[0].user_attrs == ATTRS
    with pytest.raises(RuntimeError, match="finished"):  # Optuna's own check still applies
        set_user_attrs(trial, {"late": 1, "later": 2})


def test_the_study_note_is_the_current_front(searched: SearchSpace) -> None:
    study = optuna.load_study(study_name="e2e", storage=searched.storage)
    body = json.loads(_get(wsgi(searched.storage), "/api/studies/1"))["note"]["body"]
    listed = {int(n) for n in re.findall(r"^\| (\d+) \|", body, flags=re.MULTILINE)}
    front = {c.trial_number for c in ResultsStore(searched.storage).front("e2e")}
    assert listed == front and front
    assert f"## Pareto front: {len(front)} member(s)" in body
    assert "se-search export --study e2e" in body
    assert study.metric_names == ["accuracy", "flops", "latency_ms"]  # the dashboard's axes


def test_dashboard_command_serves_the_study_and_warns_off_loopback(
    searched: SearchSpace,
) -> None:
    with dashboard_process(searched.storage, host="0.0.0.0") as server:
        assert [s["study_name"] for s in server.studies] == ["e2e"]
    assert "warning: serving on 0.0.0.0" in server.stderr[0]


def test_dashboard_refuses_a_missing_database(tmp_path: Path) -> None:
    db = tmp_path / "nothing.db"
    result = CliRunner().invoke(app, ["dashboard", "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 2 and not db.exists()
