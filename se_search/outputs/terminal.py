"""The tables the terminal shows: a front, verified candidates, the latency table's check,
one architecture described. Each returns a rich :class:`~rich.table.Table`; nothing here
prints."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

from se_search.display import (
    DISTURBED_MARK,
    TIE_MARK,
    accuracy_cell,
    fmt,
    latency_cell,
    noise_line,
    rounded,
)
from se_search.models.arch import DEFAULT_GATE, DEFAULT_SQUEEZE, SQUEEZE_GATE_MARK
from se_search.models.variants import VARIANTS
from se_search.storage.rows import Candidate

__all__ = [
    "FRONT_FORMATS",
    "LEGEND",
    "description_table",
    "front_table",
    "latency_check_table",
    "run_report",
    "verified_table",
]


COLUMNS = (
    "trial",
    "accuracy ± se",
    "params (M)",
    "GMACs",
    "latency ms",
    "placement",
)
#: Every mark a front table prints, explained (a test checks that none is missing).
LEGEND = (
    "accuracy: validation top-1, ± the standard error of its mean; placement: one site "
    "each, "
    + ", ".join(f"{v.code} {name}" for name, v in VARIANTS.items() if v.adds_block)
    + " + ratio, "
    + ", ".join(f"{v.code} {name}" for name, v in VARIANTS.items() if not v.adds_block)
    + f"; {SQUEEZE_GATE_MARK}: a squeeze or gate other than {DEFAULT_SQUEEZE} and "
    f"{DEFAULT_GATE} (se-search show spells each site out); | or a new line: stage; "
    f"{TIE_MARK}: accuracy within noise of a cheaper member; {DISTURBED_MARK}: latency "
    "disturbed when measured twice"
)


#: What a front table drawn by the pooled model adds to its legend.
POOLED_LEGEND = (
    "; pooled: the accuracy the additive model fitted over all the study's trials predicts "
    f"(± its sd), by which the front is drawn and {TIE_MARK} marked"
)

#: Width of a front table without its placement column (borders and padding included).
FIGURES_WIDTH = 75


def front_table(rows: Sequence[Candidate], *, title: str, width: int | None = None) -> Table:
    """The front as a rich table, best accuracy first. Where a placement does not fit in
    ``width`` (a narrow terminal, or a file: 80), it is written a stage per line, so that
    no stage is split and no figure wraps."""
    pooled = any(r.pooled_accuracy is not None for r in rows)
    table = Table(title=title, caption=LEGEND + (POOLED_LEGEND if pooled else ""))
    columns = [*COLUMNS[:2], *(["pooled ± sd"] if pooled else []), *COLUMNS[2:]]
    for header in columns:
        if header == "placement":
            table.add_column(header, justify="left")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    longest = max((len(r.placement) for r in rows), default=0)
    stacked = width is not None and FIGURES_WIDTH + longest > width
    for row in sorted(rows, key=lambda r: -(r.accuracy or 0)):
        cells = [str(row.trial_number), accuracy_cell(vars(row))]
        if pooled:
            cells.append(
                "-" if row.pooled_accuracy is None
                else f"{row.pooled_accuracy:.4f} ± {fmt(row.pooled_sd, '.4f')}"
            )  # fmt: skip
        table.add_row(
            *cells,
            fmt(row.params and row.params / 1e6, ".3f"),
            fmt(row.flops and row.flops / 1e9, ".4f"),
            latency_cell(vars(row)),
            row.placement.replace(" | ", "\n") if stacked else row.placement,
        )
    return table


def verified_table(rows: Sequence[Candidate], *, title: str) -> Table:
    """Verified candidates: the search's accuracy beside the stand-alone one (both on the
    validation split), and the test split's where ``verify --split test`` scored them."""
    tested = any(r.test_accuracy is not None for r in rows)
    table = Table(
        title=title,
        caption=f"*: on the verified front (stand-alone accuracy); {TIE_MARK}: within noise "
        "of a cheaper front member; val: the validation split (held out of the training set)"
        + ("; test: the official test split, scored after the front was chosen" if tested
           else ""),
    )  # fmt: skip
    headers = ["trial", "search acc (val)", "stand-alone acc ± se (val)"]
    headers += ["test acc ± se"] if tested else []
    headers += ["epochs", "GMACs", "latency ms"]
    for header in (*headers, "placement"):
        table.add_column(header, justify="left" if header == "placement" else "right")
    for row in sorted(rows, key=lambda r: -(r.accuracy or 0)):
        test = []
        if tested:
            test = ["-" if row.test_accuracy is None else
                    f"{row.test_accuracy:.4f} ± {fmt(row.test_accuracy_se, '.4f')}"]  # fmt: skip
        table.add_row(
            f"{row.trial_number}{'*' if row.on_front else ''}",
            fmt(row.searched_accuracy, ".4f"),
            accuracy_cell(vars(row)),
            *test,
            str(row.epochs),
            fmt(row.flops and row.flops / 1e9, ".4f"),
            fmt(row.latency_ms, ".3f"),
            row.placement,
        )
    return table


def latency_check_table(rows: Sequence[Candidate]) -> Table:
    """The front's predicted latencies beside their measurements (``lut+verify``)."""
    errors = [abs((r.latency or {})["error"]) for r in rows]
    table = Table(
        title="latency lookup table, checked on the front",
        caption=f"|error|: median {statistics.median(errors):.2%}, max {max(errors):.2%}",
    )
    for header in ("trial", "predicted ms", "measured ms", "error", "placement"):
        table.add_column(header, justify="left" if header == "placement" else "right")
    for row in sorted(rows, key=lambda r: r.trial_number):
        lat = row.latency or {}
        table.add_row(
            str(row.trial_number),
            f"{row.latency_ms:.3f}",
            f"{lat['measured_ms']:.3f}",
            f"{lat['error']:+.2%}",
            row.placement,
        )
    return table


def description_table(info: dict[str, Any]) -> list[Any]:
    """``se-search inspect``'s output for :func:`~se_search.costs.describe.describe`'s
    ``info``: the sites table, then its totals as lines."""
    table = Table(title=f"{info['space']}: {info['backbone']}, {info['summary']}")
    for column in ("site", "block", "in", "out", "takes", "choice", "SE params"):
        table.add_column(
            column, justify="right" if column in {"in", "out", "SE params"} else "left"
        )
    for s in info["sites"]:
        choice = s["choice"] if s["searched"] else f"[dim]{s['choice']} (not searched)[/]"
        table.add_row(
            s["site"],
            s["block"],
            str(s["in_channels"]),
            str(s["out_channels"]),
            " ".join(VARIANTS[v].code for v in s["variants"]),
            choice,
            f"{s['se_params']:,}",
        )
    lines: list[Any] = [
        table,
        "takes: the variants a site can have: "
        + ", ".join(f"{v.code} {name}" for name, v in VARIANTS.items()),
        f"arch hash   {info['arch_hash']}",
        f"params      {info['params']:,} ({info['params'] / 1e6:.3f} M)",
        f"FLOPs       {info['flops']:,} multiply-adds ({info['flops'] / 1e9:.4f} G) "
        f"at {info['image_size']}x{info['image_size']}",
    ]
    lat = info["latency"]
    if lat is not None:
        lines.append(
            f"latency     {lat['median_ms']:.3f} ms median, IQR {lat['iqr_ms']:.3f} ms "
            f"({lat['device']} {lat['device_name']}, batch {lat['batch_size']}, "
            f"{lat['threads']} threads, torch {lat['torch_version']}, {lat['repeats']} repeats)"
        )
    return lines


#: The figures ``se-search show`` prints of a trial, in this order.
TRIAL_FIELDS = (
    "summary",
    "arch_hash",
    "accuracy",
    "accuracy_se",
    "params",
    "flops",
    "latency_ms",
    "latency_iqr_ms",
    "train_seconds",
    "epochs",
    "feasible",
    "violations",
    "duplicate_of",
    "failure_reason",
    "checkpoint",
    "seconds",
)


def trial_table(record: Candidate) -> list[Any]:
    """``se-search show``'s output: the trial's choices, then its figures as lines."""
    from se_search.models.arch import SEChoice

    table = Table(
        title=f"trial {record.trial_number} of {record.study_name}: {record.state}"
        f"{' (on the front)' if record.on_front else ''}"
    )
    for column in ("site", "variant", "ratio", "squeeze", "gate"):
        table.add_column(column)
    for site, text in record.architecture.items():
        choice = SEChoice.parse(text)
        ratio = "-" if choice.reduction is None else str(choice.reduction)
        squeeze, gate = (choice.squeeze, choice.gate) if choice.adds_block else ("-", "-")
        table.add_row(site, choice.variant, ratio, squeeze, gate)
    lines: list[Any] = [table]
    figures = {key: getattr(record, key) for key in TRIAL_FIELDS}
    lines += [f"{key:15s} {rounded(key, v)}" for key, v in figures.items() if v is not None]
    if record.seed_accuracies:
        accuracies = ", ".join(f"{a:.4f}" for a in record.seed_accuracies)
        lines.append(f"{'seeds':15s} {', '.join(map(str, record.seeds or []))}: {accuracies}")
    return lines


#: The columns of ``se-search front --format csv``.
CSV_COLUMNS = (
    "trial_number", "accuracy", "params", "flops", "latency_ms", "latency_iqr_ms",
    "arch_hash", "placement",
)  # fmt: skip


def _front_json(rows: Sequence[Candidate], *, title: str, width: int | None = None) -> str:
    return json.dumps([r.to_dict(also=("within_noise_of",)) for r in rows], indent=2)


def _front_csv(rows: Sequence[Candidate], *, title: str, width: int | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([getattr(r, c) for c in CSV_COLUMNS] for r in rows)
    return out.getvalue().rstrip("\n")


#: ``se-search front --format``: a rich table, or text.
FRONT_FORMATS: dict[str, Callable[..., Table | str]] = {
    "table": front_table,
    "json": _front_json,
    "csv": _front_csv,
}


def spaces_table() -> list[Any]:
    """``se-search spaces``: the bundled spaces, then a line for each that cannot load here
    (a timm backbone without timm, say)."""
    from se_search.errors import SESearchError
    from se_search.space import bundled_spaces, load_space

    table = Table(title="bundled search spaces")
    for column in ("name", "backbone", "sites", "variants", "reductions", "architectures"):
        table.add_column(
            column, justify="right" if column in {"sites", "architectures"} else "left"
        )
    unavailable = []
    for name in bundled_spaces():
        try:
            s = load_space(name)
        except SESearchError as err:
            unavailable.append(f"{name}: unavailable: {str(err).split(': ', 2)[-1]}")
            continue
        table.add_row(
            name,
            s.backbone.model,
            str(len(s.site_names)),
            ", ".join(s.choices.variant),
            ", ".join(map(str, s.choices.reduction)),
            f"{s.size:,}" if s.size < 10**6 else f"{s.size:.2e}",
        )
    return [table, *unavailable]


def run_report(summary: Any, *, width: int | None) -> tuple[list[Any], list[str]]:
    """What ``se-search run`` prints at its end, given the engine's
    :class:`~se_search.engines.recorder.RunSummary`: the front, its noise and how to export
    a member (stdout); the budget warning, and why it stopped short (stderr)."""
    from se_search.commands import command

    title = (
        f"Pareto front of {summary.study_name}: "
        f"{len(summary.front)} of {summary.finished} finished trials"
    )
    export = command(
        "export", study=summary.study_name, storage=summary.storage, pick="knee",
        format="state_dict", output="model.pt",
    )  # fmt: skip
    printed = [
        front_table(summary.front, title=title, width=width),
        noise_line(summary.noise),
        f"results in {summary.storage} (study {summary.study_name}); export one with\n  {export}",
    ]
    warnings = []
    if summary.noise and summary.noise.get("budget_warning"):
        warnings.append(f"warning: {summary.noise['budget_warning']}")
    if summary.finished < summary.target:
        show = command("show", "N", study=summary.study_name, storage=summary.storage)
        warnings.append(
            f"stopped: {summary.failed} trial(s) of this run failed and {summary.finished} "
            f"of {summary.target} finished; see why with {show}"
        )
    return printed, warnings
