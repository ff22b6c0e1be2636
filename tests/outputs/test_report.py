"""`se-search report`: the figures' data, and one self-contained HTML file."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from se_search.cli import app
from se_search.outputs.report import build_report, site_heatmap
from se_search.space import SearchSpace
from se_search.storage.store import ResultsStore

runner = CliRunner()


def test_site_heatmap_counts_variants_and_the_usual_ratio() -> None:
    sites = ["layer1.0", "layer1.1"]
    front = [  # what the heatmap reads of a front member's record
        SimpleNamespace(architecture={"layer1.0": "standard:16", "layer1.1": "pre:4"}),
        SimpleNamespace(architecture={"layer1.0": "standard:8"}),
        SimpleNamespace(architecture={"layer1.0": "standard:16", "layer1.1": "pre:8"}),
        SimpleNamespace(architecture={}),
    ]
    heat = site_heatmap(front, sites)  # type: ignore[arg-type]
    col = {v: j for j, v in enumerate(heat["variants"])}
    assert heat["z"][0][col["standard"]] == 0.75 and heat["z"][0][col["none"]] == 0.25
    assert heat["ratios"][0][col["standard"]] == [16, 8]  # 16 twice, then 8
    assert heat["z"][1][col["pre"]] == 0.5 and heat["z"][1][col["none"]] == 0.5
    assert heat["ratios"][1][col["pre"]] == [4, 8] and heat["ratios"][1][col["none"]] == []
    assert all(sum(row) == pytest.approx(1.0) for row in heat["z"])


def test_report_is_one_offline_file_with_every_figure_and_the_front(
    searched: SearchSpace,
) -> None:
    page = build_report(searched.storage, "e2e")
    # plotly is inline: no script or stylesheet comes from anywhere else
    assert not re.search(r"<script[^>]*\bsrc=", page) and not re.search(r"<link[^>]*href=", page)
    assert len(page) > 3_000_000
    figures = re.findall(r'<div id="figure-(\d+)"', page)
    # three objective pairs, 3D, the heatmap, hypervolume, FLOPs against latency
    assert len(figures) == 7
    front = ResultsStore(searched.storage).front("e2e")
    rows = re.findall(r'<tr data-trial="(\d+)" data-tie="(\d*)">', page)
    assert sorted(int(n) for n, _ in rows) == sorted(c.trial_number for c in front)
    for c in front:
        assert f"--trial {c.trial_number} -o model.pt" in page
    assert "layer4.1" in page  # the heatmap's sites


def test_report_command_writes_the_file_or_says_why_not(
    searched: SearchSpace, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    ok = runner.invoke(app, ["report", "--study", "e2e", "--storage", searched.storage,
                             "-o", str(out)])  # fmt: skip
    assert ok.exit_code == 0 and out.stat().st_size > 3_000_000
    missing = runner.invoke(app, ["report", "--study", "nope", "--storage", searched.storage])
    assert missing.exit_code == 2 and "no study 'nope'" in missing.output
