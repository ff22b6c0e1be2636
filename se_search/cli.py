"""The ``se-search`` command line. Thin: the work lives in the library.

Every :class:`~se_search.errors.SESearchError` becomes one clear message on stderr and exit
code 2, in one place (:class:`_Group`); other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
        "--space", "-s", help="Search-space YAML: a path, or a bundled name such as resnet50."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a YAML key, e.g. --set data.image_size=64. Repeatable."),
]


@app.command()
def inspect(
    space: SpaceOpt,
    arch: Annotated[
        str,
        typer.Option(
            "--arch",
            "-a",
            help="'none', a choice for every site such as 'standard:16', or a JSON file.",
        ),
    ] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    latency: Annotated[
        bool, typer.Option("--latency/--no-latency", help="Measure latency.")
    ] = True,
    device: Annotated[
        str | None, typer.Option(help="Latency device (auto, cpu, cuda:N); default: the YAML's.")
    ] = None,
    overrides: SetOpt = None,
) -> None:
    """Sites, parameters, FLOPs and latency of one architecture."""
    from se_search.arch import resolve_architecture
    from se_search.describe import describe
    from se_search.space import load_space

    loaded = load_space(space, overrides or [])
    resolved = resolve_architecture(arch, sites=loaded.site_names)
    info = describe(loaded, resolved, latency=latency, device=device)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _print_description(info)


def _print_description(info: dict[str, Any]) -> None:
    table = Table(title=f"{info['space']}: {info['backbone']}, {info['summary']}")
    for column in ("site", "block", "in", "out", "choice", "SE params"):
        table.add_column(
            column, justify="right" if column in {"in", "out", "SE params"} else "left"
        )
    for s in info["sites"]:
        choice = s["choice"] if s["searched"] else f"[dim]{s['choice']} (not searched)[/]"
        table.add_row(
            s["site"],
            s["block"],
            str(s["in_channels"]),
            str(s["out_channels"]),
            choice,
            f"{s['se_params']:,}",
        )
    console.print(table)
    console.print(f"arch hash   {info['arch_hash']}")
    console.print(f"params      {info['params']:,} ({info['params'] / 1e6:.3f} M)")
    console.print(
        f"FLOPs       {info['flops']:,} multiply-adds ({info['flops'] / 1e9:.4f} G) "
        f"at {info['image_size']}x{info['image_size']}"
    )
    lat = info["latency"]
    if lat is not None:
        console.print(
            f"latency     {lat['median_ms']:.3f} ms median, IQR {lat['iqr_ms']:.3f} ms "
            f"({lat['device']} {lat['device_name']}, batch {lat['batch_size']}, "
            f"{lat['threads']} threads, torch {lat['torch_version']}, {lat['repeats']} repeats)"
        )


@app.command()
def spaces() -> None:
    """List the bundled search spaces."""
    from se_search.space import bundled_spaces, load_space

    table = Table(title="bundled search spaces")
    for column in ("name", "backbone", "sites", "variants", "reductions"):
        table.add_column(column)
    for name in bundled_spaces():
        s = load_space(name)
        table.add_row(
            name,
            s.backbone.model,
            str(len(s.site_names)),
            ", ".join(s.choices.variant),
            ", ".join(map(str, s.choices.reduction)),
        )
    console.print(table)


if __name__ == "__main__":
    app()
