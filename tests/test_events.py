"""Typed events: a misspelt event or field fails, and the terminal listens to each event the
library emits."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import se_search
from se_search import events
from se_search.events import Event, RunStarted, TrialDone, TrialFailed
from se_search.models.arch import Architecture
from se_search.outputs.progress import SearchProgress

EVENT_CLASSES = {
    obj
    for _, obj in inspect.getmembers(events, inspect.isclass)
    if issubclass(obj, Event) and obj.__module__ == events.__name__
}


def test_a_misspelt_field_fails_where_the_event_is_built() -> None:
    with pytest.raises(TypeError, match="trail"):
        TrialFailed(trail=3, arch=Architecture(), placement="-", reason="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        TrialFailed(3, Architecture(), "-", "x")  # type: ignore[misc]  (keywords only)
    event = RunStarted(target=2, finished=0, recovered=[], queued=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.target = 3  # type: ignore[misc]


def test_a_listener_refuses_what_is_not_an_event() -> None:
    progress = SearchProgress(Console(file=open("/dev/null", "w")))  # noqa: SIM115
    with pytest.raises(TypeError, match="not str"):
        progress("trial_done")  # the old string events


def test_a_handler_for_a_misspelt_event_fails_when_its_class_is_defined() -> None:
    source = (
        "from functools import singledispatchmethod\n"
        "from se_search.events import Event\n"
        "class Listener:\n"
        "    @singledispatchmethod\n"
        "    def __call__(self, event: Event) -> None: ...\n"
        "    @__call__.register\n"
        "    def _(self, event: TrialDnoe) -> None: ...\n"
    )
    with pytest.raises(NameError, match="TrialDnoe"):
        exec(compile(source, "<listener>", "exec"), {"__name__": "listener"})


def test_the_terminal_shows_every_event_but_the_quiet_ones() -> None:
    handled = set(SearchProgress.__dict__["__call__"].dispatcher.registry) - {object, Event}
    quiet = {events.TrialStarted, events.TrialEpoch}  # a line per finished trial suffices
    assert handled == EVENT_CLASSES - {Event} - quiet - {events._TrialEvent}


def test_the_terminal_prints_a_finished_trial(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as file, SearchProgress(Console(file=file, width=200)) as progress:
        progress(RunStarted(target=1, finished=0, recovered=[], queued=["none"]))
        progress(
            TrialDone(
                trial=0, arch=Architecture(), placement="- - | - -", front=[],
                metrics={"accuracy": 0.5, "flops": 2_000_000_000, "latency_ms": 1.25, "epochs": 1},
                feasible=True, seconds=3.0,
            )
        )  # fmt: skip
    text = out.read_text()
    assert "queued the paper's references first: none" in text
    assert "trial   0  acc 0.5000  2.0000 GMACs  1.25 ms  (trained, 3.0 s)  - - | - -" in text


def test_events_import_neither_torch_nor_a_later_stage() -> None:
    """The records and the model an event carries are typed for type checking only."""
    code = "import sys, se_search.events; print(sorted(m for m in sys.modules if m in WATCH))"
    watch = "WATCH = {'torch', 'se_search.storage', 'se_search.storage.rows'}; "
    out = subprocess.run(
        [sys.executable, "-c", watch + code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_terminal_says_which_verification_was_copied_and_from_where(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as file, SearchProgress(Console(file=file, width=200)) as progress:
        progress(events.VerifyDone(trial=3, searched=0.9, accuracy=0.95, train_seconds=12.0))
        progress(
            events.VerifyDone(
                trial=4, searched=0.9, accuracy=0.96, train_seconds=12.0,
                copied_from="nsga2-seed1 trial 0",
            )
        )  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0].endswith("trial 3: 0.9500 stand-alone, 0.9000 in the search (12.0 s)")
    assert lines[1].endswith("(copied from nsga2-seed1 trial 0, which trained it)")


def test_the_terminal_names_a_few_shot_copy(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("w") as file, SearchProgress(Console(file=file, width=200)) as progress:
        progress(events.SupernetStarted(path="s.pt", epochs=6))
        progress(events.SupernetStarted(path="p.pt", epochs=2, part="layer4.2=post"))
        progress(events.SupernetReady(path="p.pt", trained=False, part="layer4.2=post"))
    lines = out.read_text().splitlines()
    assert lines[0].endswith("oneshot: training the supernet for 6 epochs, once (saved to s.pt)")
    assert lines[1].endswith(
        "training its copy for layer4.2=post for 2 epochs, once (saved to p.pt)"
    )
    assert "the supernet's copy for layer4.2=post loaded (p.pt)" in lines[2]


def _emitted(tree: ast.AST) -> list[ast.Call]:
    """Calls of a listener (``listener(...)``, ``emit(...)``, ``self.listener(...)``)."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name.split(".")[-1] in {"listener", "emit", "_listener"}:
                calls.append(node)
    return calls


def test_the_library_emits_only_event_objects() -> None:
    names = {cls.__name__ for cls in EVENT_CLASSES}
    builders = {"done_event"}  # StudyRecorder.done_event returns a TrialDone
    bad = []
    for path in Path(se_search.__file__).parent.rglob("*.py"):
        for call in _emitted(ast.parse(path.read_text())):
            [arg] = call.args or [None]
            made = isinstance(arg, ast.Call) and ast.unparse(arg.func).split(".")[-1]
            if made not in names | builders:
                bad.append(f"{path.name}:{call.lineno}: {ast.unparse(call)}")
    assert not bad, bad
