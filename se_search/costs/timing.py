"""The one timing loop, and what every latency figure of se-search shares: how a clock
waits for the device, how many threads run, and (from :mod:`se_search.stats.spread`) what
an interquartile range is.

:func:`interleaved` times several runners in rounds, one pass of each per round, the order
rotating from round to round, so that a slow stretch of the machine (another process, a
change of clock) hits all of them alike and the i-th figure of each runner comes from the
same round. A whole-network latency (:func:`~se_search.costs.latency.measure_latency`) is
its one-runner case; the lookup table times a site's choices with it, and ``se-search
bench`` pairs models with it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from se_search.errors import SESearchError

__all__ = [
    "device_name",
    "interleaved",
    "resolve_device",
    "synchronizer",
    "torch_threads",
]

K = TypeVar("K", bound=Hashable)
Runner = Callable[[], Any]  # one pass of whatever is timed, on its own input


def resolve_device(device: str, *, key: str = "latency.device") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU; ``key`` names the
    setting in the error when CUDA is asked for and missing."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SESearchError(
            f"{key} {device!r} asked for, but CUDA is not available here; "
            f"use {key}{'' if key.startswith('-') else ':'} auto or cpu"
        )
    return resolved


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's (what a measurement was taken on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work before a clock is read."""
    return torch.cuda.synchronize if device.type == "cuda" else _nothing


def _nothing() -> None:
    pass


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Torch's intra-op threads set to ``threads`` for the block only (None: as they are);
    yields the number in use."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _rotated(order: Sequence[K], start: int) -> list[K]:
    k = start % len(order)
    return [*order[k:], *order[:k]]


def interleaved(
    runners: Mapping[K, Runner],
    *,
    device: torch.device,
    rounds: int,
    warmup: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[K, list[float]]:
    """Milliseconds of ``rounds`` timed passes of every runner, interleaved.

    Each round runs every runner once, the order rotating by one from round to round;
    ``warmup`` untimed rounds come first (they allocate, pick kernels and fill caches). Each
    pass is bracketed by the device's :func:`synchronizer`, so a CUDA time is the kernels',
    not the launch's. Under ``torch.inference_mode``. ``progress(round, rounds)`` follows the
    timed rounds.
    """
    sync = synchronizer(device)
    order = list(runners)
    times: dict[K, list[float]] = {key: [] for key in order}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            for key in _rotated(order, r):
                sync()
                start = time.perf_counter()
                runners[key]()
                sync()
                if r >= warmup:
                    times[key].append((time.perf_counter() - start) * 1e3)
            if progress is not None and r >= warmup:
                progress(r - warmup + 1, rounds)
    return times
