"""``se-search report --study A --study B ...``: several studies of one space in one
self-contained HTML file, compared on one normalisation.

Studies form groups: by ``--group NAME=GLOB`` (the first pattern a study's name matches),
else by the name pattern ``<group>-seed<k>``, else each study alone. Every study's
hypervolume after each trial is computed over the same bounds and reference point (the
best and worst value of each objective over all the studies' trials), and each group is
drawn as its median curve with an interquartile band; the fronts are overlaid, coloured by
group. What Optuna users ask for when they compare samplers.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from se_search.errors import SESearchError
from se_search.stats.hypervolume import bands, bounds, hypervolume_by_trial
from se_search.stats.spread import quartiles
from se_search.storage.database import redact
from se_search.storage.results import Results
from se_search.storage.rows import Candidate
from se_search.storage.tables import CandidateState

__all__ = ["GROUP_COLOURS", "build_comparison", "group_studies", "write_comparison"]

GROUP_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
#: The trials ``search.trials`` counts (a failed one does not: an interrupted one is queued
#: again on resume), so the x axis of the hypervolume curves.
FINISHED = (CandidateState.COMPLETE, CandidateState.PRUNED)
_SEED_SUFFIX = re.compile(r"^(?P<group>.+)-seed\d+$")


def group_studies(
    studies: Sequence[str], patterns: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """``{group: [study, ...]}`` in the order groups first appear: the first of ``patterns``
    (``{name: glob}``) a study matches, else ``<group>-seed<k>``'s group, else the study."""
    groups: dict[str, list[str]] = {}
    for study in studies:
        group = next(
            (name for name, glob in (patterns or {}).items() if fnmatch.fnmatchcase(study, glob)),
            None,
        )
        if group is None:
            found = _SEED_SUFFIX.match(study)
            group = found.group("group") if found else study
        groups.setdefault(group, []).append(study)
    return groups


def _scored(results: Results) -> list[Candidate]:
    return [
        r
        for r in results.store.candidates(results.study, states=[CandidateState.COMPLETE])
        if r.feasible and r.duplicate_of is None and r.accuracy is not None
    ]


def comparison_data(
    storage: str, studies: Sequence[str], patterns: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Everything the comparison shows, as plain data: per study its rows, front and
    hypervolume after each trial (one normalisation for all), per group the median and IQR
    of its studies' curves."""
    if len(set(studies)) < 2:
        raise SESearchError("give two or more different --study names to compare")
    opened = {study: Results(storage, study) for study in studies}
    objectives = next(iter(opened.values())).objectives
    for study, results in opened.items():
        if results.objectives != objectives:
            raise SESearchError(
                f"study {study!r} optimises {results.objectives}, not {objectives}; compare "
                "studies of one set of objectives"
            )
    rows = {study: _scored(results) for study, results in opened.items()}
    if not all(rows.values()):
        empty = [s for s, r in rows.items() if not r]
        raise SESearchError(f"studies {', '.join(empty)} have no finished, feasible trial yet")
    scale = bounds(itertools.chain.from_iterable(rows.values()), objectives)
    curves = {
        study: hypervolume_by_trial(
            rows[study], objectives, scale,
            [c.trial_number for c in results.store.candidates(study, states=FINISHED)],
        )
        for study, results in opened.items()
    }  # fmt: skip
    groups = group_studies(studies, patterns)
    summary = {}
    for name, members in groups.items():
        median, q1, q3 = bands([curves[s] for s in members])
        final = quartiles([curves[s][-1] for s in members])
        summary[name] = {"studies": members, "median": median, "q1": q1, "q3": q3,
                         "final": final}  # fmt: skip
    return {
        "objectives": objectives,
        "bounds": scale,
        "rows": rows,
        "fronts": {study: results.front() for study, results in opened.items()},
        "curves": curves,
        "groups": summary,
    }


def _figures(data: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    from se_search.outputs.report import LABELS

    colour = {g: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, g in enumerate(data["groups"])}
    fig = go.Figure()
    for name, group in data["groups"].items():
        x = list(range(1, len(group["median"]) + 1))
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1], y=group["q3"] + group["q1"][::-1], fill="toself",
                fillcolor=colour[name], opacity=0.2, line={"width": 0}, hoverinfo="skip",
                name=f"{name} IQR", legendgroup=name,
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x, y=group["median"], mode="lines", line={"color": colour[name]},
                name=f"{name} median ({len(group['studies'])} studies)", legendgroup=name,
            )
        )  # fmt: skip
    fig.update_layout(
        xaxis_title="trials", yaxis_title="hypervolume (objectives normalised over all studies)"
    )
    figures = [("Hypervolume against trials: median and interquartile range per group", fig)]
    group_of = {s: g for g, info in data["groups"].items() for s in info["studies"]}
    for a, b in itertools.combinations(data["objectives"], 2):
        fig = go.Figure()
        for study, front in data["fronts"].items():
            fig.add_trace(
                go.Scatter(
                    x=[getattr(r, a) for r in front], y=[getattr(r, b) for r in front],
                    mode="markers", marker={"color": colour[group_of[study]], "size": 9},
                    name=f"{study}", legendgroup=group_of[study],
                    text=[f"{study} trial {r.trial_number}<br>{r.placement}" for r in front],
                    hoverinfo="text",
                )
            )  # fmt: skip
        fig.update_layout(xaxis_title=LABELS[a], yaxis_title=LABELS[b])
        figures.append((f"Fronts: {a} and {b} (a colour per group)", fig))
    return figures


def build_comparison(
    storage: str, studies: Sequence[str], patterns: Mapping[str, str] | None = None
) -> str:
    """The comparison's HTML text."""
    import jinja2
    import plotly.offline

    from se_search.outputs.report import dashboards_dir

    data = comparison_data(storage, studies, patterns)
    figures = [
        (title, fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{i}"))
        for i, (title, fig) in enumerate(_figures(data))
    ]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(dashboards_dir()), autoescape=jinja2.select_autoescape()
    )
    return env.get_template("compare.html.j2").render(
        storage=redact(storage),
        objectives=data["objectives"],
        bounds=data["bounds"],
        groups=data["groups"],
        trials={s: len(c) for s, c in data["curves"].items()},
        figures=figures,
        plotly_js=plotly.offline.get_plotlyjs(),
    )


def write_comparison(
    storage: str, studies: Sequence[str], path: Path, patterns: Mapping[str, str] | None = None
) -> Path:
    path.write_text(build_comparison(storage, studies, patterns), encoding="utf-8")
    return path
