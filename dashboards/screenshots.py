"""Screenshots for the docs (docs/screenshots links here): a study's dashboard Pareto front
and report heatmap, or the hypervolume figure of a comparison of studies.

    .venv/bin/python dashboards/screenshots.py --storage sqlite:///se_search.db \\
        --study resnet50-se [--out dashboards/screenshots]
    .venv/bin/python dashboards/screenshots.py \\
        --storage sqlite:///benchmarks/results/search_quality.db \\
        --compare nsga2-seed0 nsga2-seed1 ... --name search-quality-hypervolume

The first starts ``se-search dashboard`` on a free port and writes the report to a temporary
file, then opens both in headless Chromium (see ``se_search/testing/browser.py`` for what
that needs) and saves ``dashboard-pareto.png`` and ``report-heatmap.png``. The second writes
the comparison report (``se-search report --study A --study B ...``) and saves its
hypervolume-against-trials figure as ``<name>.png``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from se_search.outputs.compare import write_comparison
from se_search.outputs.report import write_report
from se_search.testing.browser import headless_chromium, open_and_wait
from se_search.testing.dashboard_process import dashboard_process

HEATMAP = (
    "Array.from(document.querySelectorAll('.js-plotly-plot'))"
    ".find(p => p.data && p.data[0].type === 'heatmap')"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///se_search.db")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--study")
    which.add_argument("--compare", nargs="+", metavar="STUDY")
    parser.add_argument("--name", default="compare-hypervolume", help="with --compare")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    driver = headless_chromium(width=1280, height=1000)
    if args.compare:
        try:
            comparison(driver, args.storage, args.compare, args.out / f"{args.name}.png")
        finally:
            driver.quit()
        return
    try:
        with dashboard_process(args.storage) as server:
            ids = {s["study_name"]: s["study_id"] for s in server.studies}
            plot = "document.getElementById('graph-pareto-front')"
            url = f"{server.url}/dashboard/studies/{ids[args.study]}"
            open_and_wait(driver, url, f"{plot} && {plot}.data")
            time.sleep(1.0)  # let plotly finish drawing
            card = driver.find_element("id", "graph-pareto-front").find_element("xpath", "../..")
            card.screenshot(str(args.out / "dashboard-pareto.png"))
        with tempfile.TemporaryDirectory() as tmp:
            page = write_report(args.storage, args.study, Path(tmp) / "report.html")
            open_and_wait(driver, page.as_uri(), HEATMAP)
            time.sleep(1.0)
            section = driver.execute_script(f"return ({HEATMAP}).closest('section')")
            driver.execute_script("arguments[0].scrollIntoView()", section)
            section.screenshot(str(args.out / "report-heatmap.png"))
    finally:
        driver.quit()
    print(f"wrote {args.out / 'dashboard-pareto.png'} and {args.out / 'report-heatmap.png'}")


def comparison(driver: Any, storage: str, studies: list[str], png: Path) -> None:
    """The comparison report's first figure, hypervolume against trials, as ``png``."""
    figure = "document.getElementById('figure-0')"
    with tempfile.TemporaryDirectory() as tmp:
        page = write_comparison(storage, studies, Path(tmp) / "compare.html")
        open_and_wait(driver, page.as_uri(), f"{figure} && {figure}.data")
        time.sleep(1.0)  # let plotly finish drawing
        section = driver.execute_script(f"return {figure}.closest('section')")
        driver.execute_script("arguments[0].scrollIntoView()", section)
        section.screenshot(str(png))
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
