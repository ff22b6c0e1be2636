"""What the statistics read of a study's objectives: which attribute of a row is an objective,
and whether it is minimised or maximised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

__all__ = ["Objectives"]


class Objectives(Protocol):
    """``objective -> "min" | "max"``, read only: a space's ``objectives`` (its keys and
    directions are ``Literal``s), a study's stored ones (plain ``str``), any such dict.

    Not ``Mapping[str, str]``: a ``Mapping`` is invariant in its key type, so it refuses a
    space's ``dict[Literal[...], ...]``; read only, a mapping's keys can be covariant.
    """

    def __contains__(self, key: object, /) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def items(self) -> Iterable[tuple[str, str]]: ...
