"""``se-search report``: one self-contained HTML file about a study, readable offline.

Plotly's JavaScript is inlined (no CDN); the page is rendered from ``dashboards/report.html.j2``.
It shows the Pareto front (each objective pair in 2D, all three in 3D), where SE goes on the
front (a site x variant heatmap), hypervolume against trial number, FLOPs against measured
latency, and the front as a table with the command that exports each member.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from se_search.commands import command
from se_search.display import accuracy_cell, latency_cell, noise_line
from se_search.errors import SESearchError
from se_search.models.arch import Architecture
from se_search.models.variants import VARIANTS
from se_search.outputs.verify import verified_rows
from se_search.space import backbone_sites
from se_search.stats.hypervolume import hypervolume_history
from se_search.stats.noise import ties
from se_search.stats.ranking import kendall_ci, rank_agreement
from se_search.storage.database import redact
from se_search.storage.results import Results
from se_search.storage.rows import Candidate
from se_search.storage.tables import CandidateState
from se_search.storage.trial_records import VARIANT_COLOURS

__all__ = ["build_report", "site_heatmap", "write_report"]

LABELS = {
    "accuracy": "accuracy (top-1)",
    "params": "params",
    "flops": "FLOPs (multiply-adds)",
    "latency_ms": "latency (ms)",
}


def dashboards_dir() -> Path:
    """The templates: inside the installed package, or the source checkout's."""
    package = Path(__file__).resolve().parents[1]  # se_search/
    for candidate in (package / "dashboards", package.parent / "dashboards"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise SESearchError("the report templates (dashboards/) are missing; reinstall se-search")


def site_heatmap(
    front: Sequence[Candidate], sites: Sequence[str], variants: Sequence[str] = tuple(VARIANTS)
) -> dict[str, Any]:
    """How often each variant sits at each site among front members, and with which ratios.

    ``z[i][j]`` is the share of members with variant ``variants[j]`` at ``sites[i]``;
    ``ratios[i][j]`` their reductions, most common first (empty for ``none`` and ``keep``).
    ``variants`` are the columns: the space's (``choices.variant``), or every variant.
    """
    variants = list(variants)
    counts: dict[tuple[str, str], list[int | None]] = {(s, v): [] for s in sites for v in variants}
    for member in front:
        arch = Architecture(member.architecture)
        for site in sites:
            choice = arch.choice(site)
            counts[site, choice.variant].append(choice.reduction)
    n = max(len(front), 1)
    z = [[len(counts[s, v]) / n for v in variants] for s in sites]
    ratios = [
        [_by_count(counts[s, v]) if VARIANTS[v].adds_block else [] for v in variants]
        for s in sites
    ]
    return {"sites": list(sites), "variants": variants, "z": z, "ratios": ratios}


def _by_count(values: list[Any]) -> list[Any]:
    return sorted(set(values), key=lambda v: (-values.count(v), v))


def _figures(
    results: Results, rows: list[Candidate], front: list[Candidate]
) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    objectives = results.objectives
    on_front = {r.trial_number for r in front}
    hover = [f"trial {r.trial_number}<br>{r.placement}" for r in rows]
    colours = ["#d62728" if r.trial_number in on_front else "#9e9e9e" for r in rows]

    def values(key: str) -> list[Any]:  # an objective over every row
        return [getattr(r, key) for r in rows]

    figures = []
    for a, b in itertools.combinations(objectives, 2):
        fig = go.Figure(
            go.Scatter(
                x=values(a), y=values(b), mode="markers",
                marker={"color": colours, "size": 9}, text=hover, hoverinfo="text",
                name="trials",
            )
        )  # fmt: skip
        fig.update_layout(xaxis_title=LABELS[a], yaxis_title=LABELS[b], showlegend=False)
        figures.append((f"Pareto front: {a} and {b} (red: on the front)", fig))
    if len(objectives) == 3:
        a, b, c = objectives
        fig = go.Figure(
            go.Scatter3d(
                x=values(a), y=values(b), z=values(c),
                mode="markers", marker={"color": colours, "size": 5}, text=hover,
                hoverinfo="text",
            )
        )  # fmt: skip
        fig.update_layout(scene={"xaxis_title": a, "yaxis_title": b, "zaxis_title": c})
        figures.append(("Pareto front in 3D", fig))

    backbone = results.space["backbone"]
    sites = [s.name for s in backbone_sites(backbone["model"], backbone["num_classes"])]
    heat = site_heatmap(front, sites, results.space["choices"]["variant"])
    text = [
        [
            f"{share:.0%}" + (" r" + "/".join(map(str, r)) if r else "") if share else ""
            for share, r in zip(zs, rs)
        ]
        for zs, rs in zip(heat["z"], heat["ratios"])
    ]
    fig = go.Figure(
        go.Heatmap(
            z=heat["z"], x=heat["variants"], y=heat["sites"], text=text,
            texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
            colorbar={"title": "share of front"},
        )
    )  # fmt: skip
    fig.update_layout(
        xaxis_title="variant", yaxis_title="site", yaxis={"autorange": "reversed"},
        height=max(320, 26 * len(sites) + 120),
    )  # fmt: skip
    figures.append(("Where SE goes on the front (share of members; r: their ratios)", fig))

    if len(objectives) in (2, 3):
        fig = go.Figure(
            go.Scatter(
                x=[r.trial_number for r in rows],
                y=hypervolume_history(rows, objectives), mode="lines+markers",
            )
        )  # fmt: skip
        fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume (normalised objectives)")
        figures.append(("Hypervolume against trial number", fig))

    timed = [r for r in rows if r.latency_ms is not None]
    if timed:
        fig = go.Figure(
            go.Scatter(
                x=[r.flops for r in timed], y=[r.latency_ms for r in timed],
                mode="markers", text=[f"trial {r.trial_number}" for r in timed],
                marker={"color": [r.accuracy for r in timed], "colorscale": "Viridis",
                        "showscale": True, "colorbar": {"title": "accuracy"}, "size": 9},
            )
        )  # fmt: skip
        fig.update_layout(xaxis_title=LABELS["flops"], yaxis_title=LABELS["latency_ms"])
        figures.append(("FLOPs against measured latency (where FLOPs mislead)", fig))
    return figures


def build_report(storage: str, study: str) -> str:
    """The report's HTML text."""
    import jinja2
    import plotly.offline

    results = Results(storage, study)
    rows = [
        r
        for r in results.store.candidates(study, states=[CandidateState.COMPLETE])
        if r.feasible and r.duplicate_of is None and r.accuracy is not None
    ]
    if not rows:
        raise SESearchError(f"study {study!r} has no finished, feasible trial to report yet")
    front = sorted(results.front(), key=lambda r: -(r.accuracy or 0))
    figures = [
        (title, fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{i}"))
        for i, (title, fig) in enumerate(_figures(results, rows, front))
    ]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dashboards_dir()), autoescape=jinja2.select_autoescape()
    )
    shown = redact(storage)
    verified_all, _ = verified_rows(results.store, study)
    verified = sorted(verified_all, key=lambda r: -(r.accuracy or 0))
    tied = ties([r for r in verified if r.on_front], results.objectives)
    verified = [replace(r, within_noise_of=tied.get(r.trial_number)) for r in verified]
    pairs = [r.searched_accuracy or 0.0 for r in verified], [r.accuracy or 0.0 for r in verified]
    (tau, rho), (low, high) = rank_agreement(*pairs), kendall_ci(*pairs)
    noise = results.noise()
    return env.get_template("report.html.j2").render(
        verified=verified,
        tested=any(r.test_accuracy is not None for r in verified),
        pooled=any(r.pooled_accuracy is not None for r in front),
        agreement={"tau": tau, "rho": rho, "low": low, "high": high},
        noise_line=noise_line(noise),
        budget_warning=noise and noise.get("budget_warning"),
        accuracy_cell=lambda row: accuracy_cell(asdict(row)),  # display reads mappings
        latency_cell=lambda row: latency_cell(asdict(row)),
        study=study,
        storage=shown,
        objectives=results.objectives,
        trials=len(results.store.candidates(study)),
        finished=len(rows),
        front=front,
        figures=figures,
        plotly_js=plotly.offline.get_plotlyjs(),
        colours={k: "#{:02x}{:02x}{:02x}".format(*c) for k, c in VARIANT_COLOURS.items()},
        export=lambda n: command("export", study=study, storage=shown, trial=n, output="model.pt"),
    )


def write_report(storage: str, study: str, path: Path) -> Path:
    path.write_text(build_report(storage, study), encoding="utf-8")
    return path
