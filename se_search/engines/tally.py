"""A run's tally: how many trials it evaluated and how many failed, and the listener that
hears of each. An engine owns one; whatever records trials for it (the local loop, Ray
Tune's search algorithm) counts and tells through it, and never writes into the engine."""

from __future__ import annotations

from dataclasses import dataclass

from se_search.events import Listener, ignore

__all__ = ["RunTally"]


@dataclass
class RunTally:
    listener: Listener = ignore
    ran: int = 0  # trials this run ended, however they ended (copies of a trained one too)
    failed: int = 0

    def ended(self, *, failed: bool = False) -> None:
        """Count a trial of this run that ended (``failed``: as FAILED)."""
        self.ran += 1
        self.failed += failed
