"""The commands that read a study back: front, show, export, report, dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from se_search.cli import (
    DEFAULT_STORAGE,
    LookupSpaceOpt,
    StorageOpt,
    StudyOpt,
    _print,
    _results,
    app,
    console,
    err_console,
    flag,
)
from se_search.errors import SESearchError


@app.command()
def front(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    fmt: Annotated[str, typer.Option(flag("format"), "-f", help="table, json or csv.")] = "table",
) -> None:
    """The Pareto front of a study."""
    from se_search.display import noise_line
    from se_search.outputs.terminal import FRONT_FORMATS

    if fmt not in FRONT_FORMATS:
        raise SESearchError(
            f"unknown {flag('format')} {fmt!r}; choose one of {', '.join(FRONT_FORMATS)}"
        )
    results = _results(space, study, storage)
    rows = results.front()
    title = f"Pareto front of {results.study} ({len(rows)})"
    out = FRONT_FORMATS[fmt](rows, title=title, width=console.width)
    if isinstance(out, str):
        typer.echo(out)
        return
    noise = results.noise()
    _print(out, noise_line(noise))
    if noise and noise.get("budget_warning"):
        _print(f"warning: {noise['budget_warning']}")


@app.command()
def show(
    trial: Annotated[int, typer.Argument(help="Trial number.")],
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """One trial: its architecture, figures, state and checkpoint."""
    from se_search.outputs.terminal import trial_table

    record = _results(space, study, storage).trial(trial)
    if as_json:
        typer.echo(json.dumps(record.to_dict(also=("on_front",)), indent=2))
        return
    _print(*trial_table(record))


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", flag("output"), help="File to write.")],
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    trial: Annotated[
        int | None, typer.Option(flag("trial"), help="Trial number to export.")
    ] = None,
    pick: Annotated[
        str | None,
        typer.Option(
            flag("pick"),
            help="Pick from the front: knee, max-accuracy, min-latency, min-flops, min-params, "
            "cheapest-within-noise.",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            flag("format"), "-f", help="state_dict, torchscript, onnx, pt2 or safetensors."
        ),
    ] = "state_dict",
    seed: Annotated[
        int | None,
        typer.Option(flag("seed"), help="The weights of this seed; default: the trial's first."),
    ] = None,
) -> None:
    """Write a trial's trained model with its architecture and figures as metadata."""
    from se_search.outputs.export import export_trial, read_metadata

    results = _results(space, study, storage)
    record = results.choose(trial=trial, pick_name=pick)
    path = export_trial(results, record, fmt=fmt, path=output, seed=seed)
    meta = read_metadata(path)
    which = ""
    if meta["seed"] is not None:
        others = ", ".join(map(str, meta["seeds"]))
        which = f", the weights of seed {meta['seed']} (trained under seeds {others})"
    _print(
        f"exported trial {record.trial_number} ({record.summary}, accuracy "
        f"{record.accuracy:.4f}{which}) as {fmt} to {path}"
    )


@app.command()
def report(
    space: LookupSpaceOpt = None,
    study: Annotated[
        list[str] | None,
        typer.Option(
            flag("study"), help="Study name (default: the space's); repeat it to compare studies."
        ),
    ] = None,
    storage: StorageOpt = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            flag("group"),
            help="NAME=GLOB: the studies a group of the comparison holds (default: by the "
            "name pattern <group>-seed<k>). Repeatable.",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", flag("output"), help="The HTML file.")
    ] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report of a study, or compare several (opens offline,
    no CDN)."""
    if study and len(study) > 1:
        from se_search.outputs.compare import write_comparison

        path = write_comparison(
            storage or DEFAULT_STORAGE, study, output, patterns=_groups(group or [])
        )
    else:
        from se_search.outputs.report import write_report

        results = _results(space, study[0] if study else None, storage)
        path = write_report(results.storage, results.study, output)
    _print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _groups(pairs: list[str]) -> dict[str, str]:
    groups = {}
    for pair in pairs:
        name, sep, glob = pair.partition("=")
        if not sep or not name or not glob:
            raise SESearchError(
                f"{flag('group')} {pair!r}: write NAME=GLOB, e.g. {flag('group')} nsga2='nsga2-*'"
            )
        groups[name] = glob
    return groups


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def dashboard(
    space: LookupSpaceOpt = None,
    storage: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; others can reach it if not loopback.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="Optuna artifact store (placement images); default: the space's."),
    ] = None,
) -> None:
    """Serve optuna-dashboard on the results database, with the trials' placement images."""
    from se_search.outputs.dashboard_server import serve, where
    from se_search.storage.database import redact

    storage, artifacts = where(space=space, storage=storage, artifacts=artifacts)
    if host not in LOOPBACK:
        err_console.print(
            f"[bold yellow]warning:[/] serving on {host}: anyone who can reach this machine "
            "can read the study and edit its notes; optuna-dashboard has no login"
        )
    err_console.print(
        f"optuna-dashboard on http://{host}:{port}/ for {redact(storage)} (Ctrl-C stops it)",
        highlight=False,
    )
    serve(storage, host=host, port=port, artifacts=artifacts)
