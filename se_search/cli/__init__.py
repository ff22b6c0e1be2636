"""The ``se-search`` command line. Thin: each command parses its options, calls the library
and prints what it returns. The commands live by what they do: ``search`` (inspect, run,
verify, spaces), ``results`` (front, show, export, report, dashboard) and ``bench``.

Every :class:`~se_search.errors.SESearchError` becomes one clear message on stderr and exit
code 2, in one place (:class:`_Group`); other exceptions are bugs and keep their traceback.
Option names come from :mod:`se_search.commands`, which the library's hints use too.
Heavy imports happen inside the commands, so ``--help`` does not load torch.
"""

from __future__ import annotations

import importlib
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from se_search.commands import DEFAULT_STORAGE, flag
from se_search.errors import SESearchError

__all__ = ["app"]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class _Group(typer.core.TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SESearchError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    cls=_Group,
    help="Neural architecture search over Squeeze-and-Excitation placement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

SpaceOpt = Annotated[
    str,
    typer.Option(
        flag("space"), "-s", help="Search-space YAML: a path, or a bundled name such as resnet50."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        flag("set"), help="Override a YAML key, e.g. --set data.image_size=64. Repeatable."
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        flag("storage"),
        help=f"Results database URL; default: the space's storage, else {DEFAULT_STORAGE}.",
    ),
]
LookupSpaceOpt = Annotated[
    str | None,
    typer.Option(flag("space"), "-s", help="The space searched (its storage, study)."),
]
StudyOpt = Annotated[
    str | None, typer.Option(flag("study"), help="Study name (default: the space's).")
]


def _print(*renderables: Any) -> None:
    """Print tables and lines; a line is printed as it is (no markup) and never wrapped, so
    a command in it can be copied."""
    for item in renderables:
        text = isinstance(item, str)
        console.print(item, highlight=False, soft_wrap=text, markup=not text)


def _key_overrides(keys: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in keys.items() if value is not None]


def _results(space: str | None, study: str | None, storage: str | None) -> Any:
    """Open a study's results from --space (its storage and study) or --study/--storage."""
    from se_search.storage.results import Results

    if space is not None:
        from se_search.space import load_space

        loaded = load_space(space)
        return Results(storage or loaded.storage, study or loaded.study_name)
    if study is None:
        raise SESearchError(f"give {flag('space')} FILE or {flag('study')} NAME")
    return Results(storage or DEFAULT_STORAGE, study)


# The commands register themselves on ``app`` when their modules are imported, in the order
# --help lists them.
for _module in ("search", "results", "bench"):
    importlib.import_module(f"{__name__}.{_module}")

if __name__ == "__main__":
    app()
