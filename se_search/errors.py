"""Domain errors. Every message says what went wrong *and* what to do about it.

The CLI turns any :class:`SESearchError` into a one-line message and exit code 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ArchitectureError", "BackboneError", "SESearchError", "SpaceError"]


class SESearchError(Exception):
    """Base class of every error a user can fix by changing their input."""

    exit_code = 2


class SpaceError(SESearchError):
    """A search-space file that cannot be read or fails validation.

    ``problems`` holds one line per problem, each naming the file, the YAML key path
    (``choices.reduction[2]``), the line where that is known, and the fix.
    """

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = list(problems)
        head = f"invalid search space {file}" if len(problems) > 1 else "invalid search space"
        body = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head}:\n{body}" if len(problems) > 1 else f"{head}: {problems[0]}")


class ArchitectureError(SESearchError):
    """An architecture (preset, JSON file or mapping) that does not fit its search space."""


class BackboneError(SESearchError):
    """A backbone that is unknown, or weights that cannot be loaded into it."""
