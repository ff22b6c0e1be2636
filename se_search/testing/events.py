"""A listener that keeps every event, for tests."""

from __future__ import annotations

from typing import TypeVar

from se_search.events import Event

__all__ = ["EventLog"]

E = TypeVar("E", bound=Event)


class EventLog(list[Event]):
    """Every event it was given, in order."""

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise TypeError(f"a listener takes an Event, not {type(event).__name__}")
        self.append(event)

    def of(self, kind: type[E]) -> list[E]:
        """The events of class ``kind``."""
        return [e for e in self if isinstance(e, kind)]

    def kinds(self) -> list[type[Event]]:
        return [type(e) for e in self]
