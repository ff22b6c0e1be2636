"""What a search shows while it runs: a progress bar (trial i/N, best accuracy, front size,
ETA) and one line per finished trial. It listens to an engine's events; engines know nothing
about the terminal.
"""

from __future__ import annotations

import statistics
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["SearchProgress", "front_table", "latency_check_table", "verified_table"]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (
    "trial",
    "accuracy",
    "params (M)",
    "GMACs",
    "latency ms",
    "placement",
)
LEGEND = (
    "placement: one site each, S standard P pre O post I identity M inner + ratio, "
    "K kept, - none, | stage"
)


def front_table(rows: list[dict], *, title: str) -> Table:
    """The front as a rich table, best accuracy first."""
    table = Table(title=title, caption=LEGEND)
    for header in COLUMNS:
        table.add_column(header, justify="left" if header == "placement" else "right")
    for row in sorted(rows, key=lambda r: -(r.get("accuracy") or 0)):
        table.add_row(
            str(row["trial_number"]),
            _fmt(row["accuracy"], ".4f"),
            _fmt(row["params"] and row["params"] / 1e6, ".3f"),
            _fmt(row["flops"] and row["flops"] / 1e9, ".4f"),
            _fmt(row["latency_ms"], ".3f"),
            row["placement"],
        )
    return table


def verified_table(rows: list[dict], *, title: str) -> Table:
    """Verified candidates: the search's accuracy beside the stand-alone one."""
    table = Table(title=title, caption="*: on the verified front (stand-alone accuracy)")
    for header in ("trial", "search acc", "stand-alone acc", "GMACs", "latency ms", "placement"):
        table.add_column(header, justify="left" if header == "placement" else "right")
    for row in sorted(rows, key=lambda r: -r["accuracy"]):
        table.add_row(
            f"{row['trial_number']}{'*' if row['on_front'] else ''}",
            _fmt(row["searched_accuracy"], ".4f"),
            _fmt(row["accuracy"], ".4f"),
            _fmt(row["flops"] and row["flops"] / 1e9, ".4f"),
            _fmt(row["latency_ms"], ".3f"),
            row["placement"],
        )
    return table


def latency_check_table(rows: list[dict]) -> Table:
    """The front's predicted latencies beside their measurements (``lut+verify``)."""
    errors = [abs(r["latency"]["error"]) for r in rows]
    table = Table(
        title="latency lookup table, checked on the front",
        caption=f"|error|: median {statistics.median(errors):.2%}, max {max(errors):.2%}",
    )
    for header in ("trial", "predicted ms", "measured ms", "error", "placement"):
        table.add_column(header, justify="left" if header == "placement" else "right")
    for row in sorted(rows, key=lambda r: r["trial_number"]):
        lat = row["latency"]
        table.add_row(
            str(row["trial_number"]),
            f"{row['latency_ms']:.3f}",
            f"{lat['measured_ms']:.3f}",
            f"{lat['error']:+.2%}",
            row["placement"],
        )
    return table


class SearchProgress:
    """An engine listener that drives a rich progress bar. Use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best acc {task.fields[best]} · front {task.fields[front]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: Any = None
        self.best: float | None = None

    def __enter__(self) -> SearchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        getattr(self, f"_on_{event}", lambda info: None)(info)

    def _on_start(self, info: dict[str, Any]) -> None:
        if info["recovered"]:
            self.console.print(
                f"resumed: trial(s) {info['recovered']} were left running by a killed "
                "process; marked failed and queued again"
            )
        if info["queued"]:
            self.console.print(f"queued the paper's references first: {', '.join(info['queued'])}")
        self.task = self.progress.add_task(
            "trials", total=info["target"], completed=info["finished"], best="-", front=0
        )

    def _on_trial_done(self, info: dict[str, Any]) -> None:
        evaluation = info["evaluation"]
        m = evaluation.metrics
        if m.get("accuracy") is not None:
            self.best = max(self.best or 0.0, m["accuracy"])
        if info["duplicate_of"]:
            how = f"same as trial {info['duplicate_of']['trial_number']}, not trained again"
        elif not evaluation.feasible:
            how = "infeasible, not trained"
        else:
            how = "trained" if m.get("epochs") else "scored on the supernet"
        self.console.print(
            f"trial {info['trial']:>3}  acc {_fmt(m.get('accuracy'), '.4f')}  "
            f"{m['flops'] / 1e9:.4f} GMACs  {_fmt(m.get('latency_ms'), '.2f')} ms  "
            f"({how}, {evaluation.seconds:.1f} s)  "
            f"{info['arch'].placement(s.name for s in info['sites'])}",
            highlight=False,
        )
        self.progress.update(
            self.task, advance=1, best=_fmt(self.best, ".4f"), front=len(info["front"])
        )

    def _on_trial_failed(self, info: dict[str, Any]) -> None:
        self.console.print(f"trial {info['trial']:>3}  [red]failed[/]: {info['reason']}")

    def _on_trial_pruned(self, info: dict[str, Any]) -> None:
        self.console.print(f"trial {info['trial']:>3}  [yellow]pruned[/]: {info['reason']}")
        self.progress.update(self.task, advance=1)

    def _on_supernet_start(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"oneshot: training the supernet for {info['epochs']} epochs, once "
            f"(saved to {info['path']})"
        )

    def _on_supernet_epoch(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"supernet epoch {info['epoch']}/{info['epochs']}  loss {info['loss']:.4f}  "
            f"largest architecture's acc {info['accuracy']:.4f}  ({info['seconds']:.0f} s)",
            highlight=False,
        )

    def _on_supernet_ready(self, info: dict[str, Any]) -> None:
        how = "trained" if info["trained"] else "loaded"
        self.console.print(
            f"oneshot: supernet {how} ({info['path']}); candidates inherit its weights",
            highlight=False,
        )

    def _on_lut_start(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"latency: filling the lookup table ({info['stored']} entries stored already)"
        )
        self._lut_task = self.progress.add_task("latency table", total=None, best="-", front="-")

    def _on_lut_progress(self, info: dict[str, Any]) -> None:
        self.progress.update(self._lut_task, total=info["total"], completed=info["done"])

    def _on_lut_ready(self, info: dict[str, Any]) -> None:
        self.progress.remove_task(self._lut_task)
        self.console.print(
            f"latency: {info['entries']} table entries, {info['measured']} measured now "
            f"({info['seconds']:.0f} s); candidates' latencies are predicted from them",
            highlight=False,
        )

    def _on_latency_checked(self, info: dict[str, Any]) -> None:
        rows = info["front"]
        if not rows:
            return
        self.console.print(latency_check_table(rows))

    def _on_trial_held(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"trial {info['trial']:>3}  waits for trial {info['twin']}, which trains the same "
            "architecture now"
        )

    def _on_trial_retry(self, info: dict[str, Any]) -> None:
        self.console.print(
            f"Tune trial {info['tune_trial']}: worker failed ({info['reason']}); "
            f"retry {info['failures']}"
        )
