"""The dashboard and the report in a real browser: headless Chromium through Selenium.

Skips, saying why, where Chromium, its driver or selenium are missing (`.ci/run` installs
Debian's `chromium` and `chromium-driver`; selenium comes with the dev extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from se_search.outputs.report import LABELS, site_heatmap, write_report
from se_search.space import SearchSpace
from se_search.storage.store import ResultsStore
from se_search.testing.browser import headless_chromium, missing, open_and_wait
from se_search.testing.dashboard_process import dashboard_process

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = headless_chromium()
    yield driver
    driver.quit()


def _errors(driver: Any) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _requests(driver: Any) -> set[str]:
    """URLs the page asked for (Chrome's own chrome:// pages left out)."""
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith("chrome"):
                urls.add(url)
    return urls


PLOTS = "Array.from(document.querySelectorAll('.js-plotly-plot'))"


def test_dashboard_renders_the_pareto_front_with_objective_names(
    browser: Any, searched: SearchSpace
) -> None:
    store = ResultsStore(searched.storage)
    done = [c for c in store.candidates("e2e") if c.state == "complete"]
    with dashboard_process(searched.storage) as server:
        plot = "document.getElementById('graph-pareto-front')"
        open_and_wait(browser, f"{server.url}/dashboard/studies/1", f"{plot} && {plot}.data")
        xs = browser.execute_script(f"return {plot}.data.flatMap(t => Array.from(t.x || []))")
        history_axis = browser.execute_script(
            "const h = document.getElementById('plot-history');"
            "return h && h.layout.yaxis.title.text"
        )
        page = browser.find_element("tag name", "body").text
        errors = _errors(browser)
    assert sorted(xs) == pytest.approx(sorted(c.accuracy for c in done))  # x: accuracy
    assert "Objective X:\naccuracy" in page and "Objective Y:\nflops" in page
    assert history_axis == "accuracy"
    assert errors == []


def test_report_renders_offline_with_no_console_errors(
    browser: Any, searched: SearchSpace, tmp_path: Path
) -> None:
    path = write_report(searched.storage, "e2e", tmp_path / "report.html")
    open_and_wait(browser, path.as_uri(), f"{PLOTS}.length === 7 && {PLOTS}.every(p => p.data)")
    plots = browser.execute_script(
        f"return {PLOTS}.map(p => ({{id: p.id, x: p.layout.xaxis && p.layout.xaxis.title.text,"
        " y: p.layout.yaxis && p.layout.yaxis.title.text, data: p.data}))"
    )
    assert _errors(browser) == []
    assert {u for u in _requests(browser) if not u.startswith(("file:", "data:"))} == set()
    axes = [(p["x"], p["y"]) for p in plots[:3]]
    assert axes == [
        (LABELS["accuracy"], LABELS["flops"]),
        (LABELS["accuracy"], LABELS["latency_ms"]),
        (LABELS["flops"], LABELS["latency_ms"]),
    ]
    heat = next(p for p in plots if p["data"][0]["type"] == "heatmap")["data"][0]
    front = ResultsStore(searched.storage).front("e2e")
    expected = site_heatmap(front, [s.name for s in searched.all_sites], searched.choices.variant)
    assert heat["z"] == expected["z"] and heat["y"] == expected["sites"]


def test_comparison_draws_a_curve_and_a_band_per_group(
    browser: Any, compared: str, tmp_path: Path
) -> None:
    from se_search.outputs.compare import write_comparison

    studies = ["nsga2-seed0", "nsga2-seed1", "random-seed0", "random-seed1"]
    path = write_comparison(compared, studies, tmp_path / "compare.html")
    open_and_wait(browser, path.as_uri(), f"{PLOTS}.length === 4 && {PLOTS}.every(p => p.data)")
    curve = browser.execute_script(
        "const p = document.getElementById('figure-0');"
        "return {names: p.data.map(t => t.name), fills: p.data.map(t => t.fill || null),"
        " x: p.layout.xaxis.title.text, y: p.layout.yaxis.title.text}"
    )
    assert _errors(browser) == []
    assert {u for u in _requests(browser) if not u.startswith(("file:", "data:"))} == set()
    for group in ("nsga2", "random"):
        assert [n for n in curve["names"] if n.startswith(f"{group} median")] != []
        assert len([n for n in curve["names"] if n.startswith(group)]) == 2
        band = curve["names"].index(f"{group} IQR")
        assert curve["fills"][band] == "toself"
    assert curve["x"] == "trials" and curve["y"].startswith("hypervolume")
