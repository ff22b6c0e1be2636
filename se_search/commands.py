"""The command line's names, for every message that tells the user what to run.

The CLI (:mod:`se_search.cli`) declares its options under these names, and library messages
build the commands they suggest with :func:`command`, so a hint never names a flag the CLI
lacks (``tests/test_cli.py`` checks every name here against the typer app). Commands are
written on one line, ready to copy.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

__all__ = ["DEFAULT_STORAGE", "FLAGS", "PROG", "command", "flag", "program"]

PROG = "se-search"

#: The results database a command uses when neither ``--storage`` nor the space names one.
DEFAULT_STORAGE = "sqlite:///se_search.db"

#: Option name by keyword: ``command(..., study="x")`` writes ``--study x``.
FLAGS: dict[str, str] = {
    "space": "--space",
    "study": "--study",
    "storage": "--storage",
    "trial": "--trial",
    "pick": "--pick",
    "format": "--format",
    "output": "-o",
    "set": "--set",
    "arch": "--arch",
    "trials": "--trials",
    "engine": "--engine",
    "ray_address": "--ray-address",
    "top": "--top",
    "epochs": "--epochs",
    "seeds": "--seeds",
    "split": "--split",
    "seed": "--seed",
    "group": "--group",
}


def flag(key: str) -> str:
    """The option ``key`` names (``flag("ray_address")`` is ``--ray-address``)."""
    try:
        return FLAGS[key]
    except KeyError:
        raise KeyError(f"no CLI option {key!r}; options: {', '.join(FLAGS)}") from None


@functools.cache
def program() -> str:
    """How to call this se-search from the working folder, as a hint must write it:
    ``se-search`` when that is on the PATH and is this installation's, else the path of this
    installation's script (``.venv/bin/se-search`` after ``make``, without activating)."""
    here = Path(sys.executable).with_name(PROG)
    found = shutil.which(PROG)
    if found and (not here.exists() or Path(found).resolve() == here.resolve()):
        return PROG
    if not here.exists():
        return PROG
    try:
        return os.path.relpath(here)
    except ValueError:  # another drive (Windows)
        return str(here)


def command(name: str, *args: object, **options: object) -> str:
    """``se-search NAME ARGS --option value ...`` on one line, ready to run from here (see
    :func:`program`); options whose value is None are left out, a value True writes the
    bare flag."""
    words = [program(), name, *map(str, args)]
    for key, value in options.items():
        if value is None or value is False:
            continue
        words.append(flag(key))
        if value is not True:
            words.append(str(value))
    return " ".join(words)
