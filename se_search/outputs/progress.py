"""What a search shows while it runs: a progress bar (trial i/N, best accuracy, front size,
ETA) and one line per finished trial. It listens to the events of
:mod:`se_search.events`; engines know nothing about the terminal.
"""

from __future__ import annotations

from functools import singledispatchmethod
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

from se_search.display import fmt
from se_search.events import (
    Event,
    LatencyChecked,
    LatencyTableProgress,
    LatencyTableReady,
    LatencyTableStarted,
    PretrainReady,
    PretrainStarted,
    RunStarted,
    SupernetEpoch,
    SupernetReady,
    SupernetStarted,
    TrialDone,
    TrialFailed,
    TrialHeld,
    TrialPruned,
    TrialRetried,
    VerifyDone,
    VerifyStarted,
)
from se_search.outputs.terminal import latency_check_table

__all__ = ["SearchProgress"]


class SearchProgress:
    """A listener that drives a rich progress bar and prints a line per trial. Use as a
    context manager."""

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
        self._lut_task: Any = None

    def __enter__(self) -> SearchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False)

    @singledispatchmethod
    def __call__(self, event: Event) -> None:
        """An event this listener does not show."""
        if not isinstance(event, Event):
            raise TypeError(f"a listener takes an Event, not {type(event).__name__}")

    @__call__.register
    def _(self, event: RunStarted) -> None:
        if event.recovered:
            self._print(
                f"resumed: trial(s) {event.recovered} were left running by a killed process; "
                "marked failed and queued again"
            )
        if event.queued:
            self._print(f"queued the paper's references first: {', '.join(event.queued)}")
        self.task = self.progress.add_task(
            "trials", total=event.target, completed=event.finished, best="-", front=0
        )

    @__call__.register
    def _(self, event: TrialDone) -> None:
        m = event.metrics
        accuracy = m.get("accuracy")
        if accuracy is not None:
            self.best = max(self.best or 0.0, accuracy)
        if event.duplicate_of is not None:
            how = f"same as trial {event.duplicate_of}, not trained again"
        elif not event.feasible:
            how = "infeasible, not trained"
        else:
            how = "trained" if m.get("epochs") else "scored on the supernet"
        self._print(
            f"trial {event.trial:>3}  acc {fmt(accuracy, '.4f')}  "
            f"{m['flops'] / 1e9:.4f} GMACs  {fmt(m.get('latency_ms'), '.2f')} ms  "
            f"({how}, {event.seconds:.1f} s)  {event.placement}"
        )
        self.progress.update(
            self.task, advance=1, best=fmt(self.best, ".4f"), front=len(event.front)
        )

    @__call__.register
    def _(self, event: TrialFailed) -> None:
        self.console.print(f"trial {event.trial:>3}  [red]failed[/]: {event.reason}")

    @__call__.register
    def _(self, event: TrialPruned) -> None:
        self.console.print(f"trial {event.trial:>3}  [yellow]pruned[/]: {event.reason}")
        self.progress.update(self.task, advance=1)

    @__call__.register
    def _(self, event: TrialHeld) -> None:
        self._print(
            f"trial {event.trial:>3}  waits for trial {event.twin}, which trains the same "
            "architecture now"
        )

    @__call__.register
    def _(self, event: TrialRetried) -> None:
        self._print(
            f"Tune trial {event.tune_trial}: worker failed ({event.reason}); "
            f"retry {event.failures}"
        )

    @__call__.register
    def _(self, event: SupernetStarted) -> None:
        what = f"its copy for {event.part}" if event.part else "the supernet"
        self._print(
            f"oneshot: training {what} for {event.epochs} epochs, once (saved to {event.path})"
        )

    @__call__.register
    def _(self, event: SupernetEpoch) -> None:
        self._print(
            f"supernet epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}  "
            f"largest architecture's acc {event.accuracy:.4f}  ({event.seconds:.0f} s)"
        )

    @__call__.register
    def _(self, event: SupernetReady) -> None:
        how = "trained" if event.trained else "loaded"
        if event.part:
            self._print(
                f"oneshot: the supernet's copy for {event.part} {how} ({event.path}); "
                "candidates with that variant there inherit its weights"
            )
        else:
            self._print(f"oneshot: supernet {how} ({event.path}); candidates inherit its weights")

    @__call__.register
    def _(self, event: PretrainStarted) -> None:
        self._print(
            f"backbone.weights: self: training the backbone on the data set for {event.epochs} "
            f"epochs, once (saved to {event.path})"
        )

    @__call__.register
    def _(self, event: PretrainReady) -> None:
        how = "trained" if event.trained else "loaded"
        figure = f", validation accuracy {event.accuracy:.4f}" if event.accuracy else ""
        self._print(
            f"backbone.weights: self: {how} ({event.path}{figure}); candidates fine-tune from it"
        )

    @__call__.register
    def _(self, event: LatencyTableStarted) -> None:
        self._print(f"latency: filling the lookup table ({event.stored} entries stored already)")
        self._lut_task = self.progress.add_task("latency table", total=None, best="-", front="-")

    @__call__.register
    def _(self, event: LatencyTableProgress) -> None:
        self.progress.update(self._lut_task, total=event.total, completed=event.done)

    @__call__.register
    def _(self, event: LatencyTableReady) -> None:
        self.progress.remove_task(self._lut_task)
        self._print(
            f"latency: {event.entries} table entries, {event.measured} measured now "
            f"({event.seconds:.0f} s); candidates' latencies are predicted from them"
        )

    @__call__.register
    def _(self, event: LatencyChecked) -> None:
        if event.front:
            self.console.print(latency_check_table(event.front))

    @__call__.register
    def _(self, event: VerifyStarted) -> None:
        self._print(
            f"verify {event.index}/{event.of}: training trial {event.trial} stand-alone "
            f"({event.arch.summary()})"
        )

    @__call__.register
    def _(self, event: VerifyDone) -> None:
        how = (f"copied from {event.copied_from}, which trained it" if event.copied_from
               else f"{event.train_seconds:.1f} s")  # fmt: skip
        self._print(
            f"  trial {event.trial}: {event.accuracy:.4f} stand-alone, "
            f"{event.searched:.4f} in the search ({how})"
        )
