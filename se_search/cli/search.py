"""The commands that search: inspect, run, verify, spaces."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from se_search.cli import (
    LookupSpaceOpt,
    SetOpt,
    SpaceOpt,
    StorageOpt,
    StudyOpt,
    _key_overrides,
    _print,
    _results,
    app,
    console,
    err_console,
    flag,
)


@app.command()
def inspect(
    space: SpaceOpt,
    arch: Annotated[
        str,
        typer.Option(
            flag("arch"),
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
    from se_search.costs.describe import describe
    from se_search.models.arch import resolve_architecture
    from se_search.outputs.terminal import description_table
    from se_search.space import load_space

    loaded = load_space(space, overrides or [])
    resolved = resolve_architecture(arch, sites=loaded.site_names)
    info = describe(loaded, resolved, latency=latency, device=device)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _print(*description_table(info))


@app.command()
def run(
    space: SpaceOpt,
    trials: Annotated[
        int | None,
        typer.Option(flag("trials"), help="Finished trials wanted in total (search.trials)."),
    ] = None,
    storage: StorageOpt = None,
    engine: Annotated[
        str | None, typer.Option(flag("engine"), help="local or ray (search.engine).")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            flag("ray_address"), help="Join this Ray cluster, e.g. auto (search.ray.address)."
        ),
    ] = None,
    overrides: SetOpt = None,
) -> None:
    """Search the space: train candidates, store them and the Pareto front, print the front.

    Running the same command again resumes the same study.
    """
    import optuna

    from se_search.engines import get_engine
    from se_search.evaluation.measured import rank_caveat
    from se_search.outputs.progress import SearchProgress
    from se_search.outputs.terminal import run_report
    from se_search.space import load_space

    keys = {
        "search.trials": trials,
        "storage": storage,
        "search.engine": engine,
        "search.ray.address": ray_address,
    }
    loaded = load_space(space, [*(overrides or []), *_key_overrides(keys)])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with SearchProgress(err_console) as progress:
        searcher = get_engine(loaded.search.engine)(loaded, listener=progress)
        summary = searcher.run()
    printed, warnings = run_report(summary, width=console.width)
    _print(*printed)
    for line in warnings:
        err_console.print(f"[bold yellow]{line}", highlight=False)
    caveat = rank_caveat(loaded)
    if caveat:
        err_console.print(f"[yellow]{caveat}", highlight=False)
    if summary.finished < summary.target:
        raise typer.Exit(1)


@app.command()
def verify(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    top: Annotated[
        int, typer.Option(flag("top"), min=1, help="How many candidates to train.")
    ] = 10,
    epochs: Annotated[
        int | None,
        typer.Option(
            flag("epochs"), min=1, help="Train for this many epochs; default: the study's."
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(flag("seeds"), min=1, help="Under this many seeds; default: the study's."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            flag("split"),
            help="val: train and compare on the validation split; test: then also score the "
            "verified front and the references on the held-out test split.",
        ),
    ] = "val",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verified trials as one JSON object.")
    ] = False,
) -> None:
    """Train the top-K candidates and the references stand-alone (at --epochs, under
    --seeds); rank agreement with the search's scores, with a bootstrap interval, and the
    front on verified accuracies; with --split test, the front and references scored on the
    test split. Running it again resumes."""
    from se_search.outputs.progress import SearchProgress
    from se_search.outputs.terminal import verified_table
    from se_search.outputs.verify import agreement_line, reference_lines, report_json
    from se_search.outputs.verify import verify as run_verify

    results = _results(space, study, storage)
    report = run_verify(
        results.storage, results.study, top=top, epochs=epochs, seeds=seeds, split=split,
        listener=SearchProgress(err_console),
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report_json(report), indent=2))
        return
    _print(
        verified_table(report.rows, title=f"verified candidates of {report.study}"),
        agreement_line(report),
        *reference_lines(report),
        "verified front (on stand-alone accuracy): trials "
        + (", ".join(map(str, report.front)) or "-"),
    )


@app.command()
def spaces() -> None:
    """List the bundled search spaces."""
    from se_search.outputs.terminal import spaces_table

    _print(*spaces_table())
