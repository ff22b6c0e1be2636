"""What a search reports while it runs: one frozen dataclass per event, and the
:class:`Listener` that receives them.

Engines, the evaluator (supernet, latency table) and ``verify`` emit events; the terminal
(:class:`~se_search.outputs.progress.SearchProgress`) and tests listen. An event is built
with keyword arguments, so a misspelt field fails where it is emitted, and a listener
registers a handler per event class (:func:`functools.singledispatchmethod`), so a misspelt
event name fails when the listener's module is imported; an event nobody handles is
ignored on purpose. Nothing here imports torch, or a later stage: the types of the records
an event carries are imported for type checking only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    from torch import nn

    from se_search.models.arch import Architecture
    from se_search.storage.rows import Candidate, Metrics

__all__ = [
    "Event",
    "LatencyChecked",
    "LatencyTableProgress",
    "LatencyTableReady",
    "LatencyTableStarted",
    "Listener",
    "PretrainReady",
    "PretrainStarted",
    "RunStarted",
    "SupernetEpoch",
    "SupernetReady",
    "SupernetStarted",
    "TrialDone",
    "TrialEpoch",
    "TrialFailed",
    "TrialFields",
    "TrialHeld",
    "TrialPruned",
    "TrialRetried",
    "TrialStarted",
    "VerifyDone",
    "VerifyStarted",
    "ignore",
]

_EVENT = {"frozen": True, "kw_only": True}


@dataclass(**_EVENT)
class Event:
    """Base class of every event."""


class Listener(Protocol):
    """Anything that takes events: ``listener(event)``."""

    def __call__(self, event: Event) -> None: ...


def ignore(event: Event) -> None:
    """The listener that takes no notice."""


# -------------------------------------------------------------------------------- a run


@dataclass(**_EVENT)
class RunStarted(Event):
    target: int  # finished trials wanted in total
    finished: int  # finished already (a resumed study)
    recovered: list[int]  # trials a killed process left running, queued again
    queued: list[str]  # reference architectures queued first ("none", "standard:16")


@dataclass(**_EVENT)
class _TrialEvent(Event):
    trial: int
    arch: Architecture
    placement: str  # arch.placement over every site of the backbone


class TrialFields(TypedDict):
    """The fields every event of one trial carries, to build each with ``**fields``."""

    trial: int
    arch: Architecture
    placement: str


@dataclass(**_EVENT)
class TrialStarted(_TrialEvent):
    pass


@dataclass(**_EVENT)
class TrialEpoch(_TrialEvent):
    """A Ray worker reported an epoch's validation accuracy."""

    epoch: int
    accuracy: float
    node: str | None = None
    pid: int | None = None


@dataclass(**_EVENT)
class TrialDone(_TrialEvent):
    metrics: Metrics  # as stored: accuracy, params, flops, latency_ms, ...
    feasible: bool
    seconds: float
    front: list[Candidate]  # the study's front after this trial (without seed figures)
    duplicate_of: int | None = None  # the earlier trial whose figures it took
    model: nn.Module | None = None  # the network it trained, in this process (local engine)


@dataclass(**_EVENT)
class TrialFailed(_TrialEvent):
    reason: str


@dataclass(**_EVENT)
class TrialPruned(_TrialEvent):
    reason: str


@dataclass(**_EVENT)
class TrialHeld(Event):
    """A copy of an architecture another trial trains now waits for its figures (Ray)."""

    trial: int
    twin: int


@dataclass(**_EVENT)
class TrialRetried(Event):
    """Tune retries a trial whose worker died."""

    tune_trial: str
    failures: int
    reason: str


@dataclass(**_EVENT)
class LatencyChecked(Event):
    """``latency.mode: lut+verify``: the front's predicted latencies, measured."""

    front: list[Candidate]


# ------------------------------------------------------------------------ preparation


@dataclass(**_EVENT)
class SupernetStarted(Event):
    path: str
    epochs: int
    part: str = ""  # a few-shot split's copy: "SITE=VARIANT"; "": the supernet


@dataclass(**_EVENT)
class SupernetEpoch(Event):
    epoch: int
    epochs: int
    loss: float
    accuracy: float  # the largest architecture's, BN recalibrated
    seconds: float


@dataclass(**_EVENT)
class SupernetReady(Event):
    path: str
    trained: bool  # False: loaded from the checkpoint
    meta: dict[str, Any] = field(default_factory=dict)  # seconds, accuracy, epochs, sampling
    part: str = ""  # a few-shot split's copy: "SITE=VARIANT"; "": the supernet


@dataclass(**_EVENT)
class PretrainStarted(Event):
    """``backbone.weights: self``: the backbone trains on the data set, once."""

    path: str
    epochs: int


@dataclass(**_EVENT)
class PretrainReady(Event):
    path: str
    trained: bool  # False: loaded from the checkpoint
    accuracy: float | None = None  # its validation accuracy, when trained now
    seconds: float | None = None


@dataclass(**_EVENT)
class LatencyTableStarted(Event):
    stored: int  # entries the database holds already


@dataclass(**_EVENT)
class LatencyTableProgress(Event):
    done: int
    total: int


@dataclass(**_EVENT)
class LatencyTableReady(Event):
    measured: int
    entries: int
    seconds: float


# ------------------------------------------------------------------------------ verify


@dataclass(**_EVENT)
class VerifyStarted(Event):
    trial: int
    index: int
    of: int
    arch: Architecture


@dataclass(**_EVENT)
class VerifyDone(Event):
    trial: int
    searched: float  # the search's accuracy
    accuracy: float  # stand-alone
    train_seconds: float
    copied_from: str = ""  # "<study> trial N": another study's verify trained it
