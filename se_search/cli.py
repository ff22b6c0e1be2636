"""The ``se-search`` command line. Thin: each command parses its options, calls the library
and prints what it returns.

Every :class:`~se_search.errors.SESearchError` becomes one clear message on stderr and exit
code 2, in one place (:class:`_Group`); other exceptions are bugs and keep their traceback.
Option names come from :mod:`se_search.commands`, which the library's hints use too.
Heavy imports happen inside the commands, so ``--help`` does not load torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from se_search.commands import DEFAULT_STORAGE, command, flag
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

# The bench's forms and references, named here so that --help needs no torch import
# (tests/test_cli.py holds them equal to the bench's registries).
FORM_NAMES = ("eager", "channels_last", "compiled", "torchscript", "onnxruntime")
REFERENCE_NAMES = ("timm", "torchvision", "unfused")

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
    from se_search.outputs.tables import description_table
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

    from se_search.display import noise_line
    from se_search.engines import get_engine
    from se_search.outputs.progress import SearchProgress
    from se_search.outputs.tables import front_table
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
    title = (
        f"Pareto front of {summary.study_name}: "
        f"{len(summary.front)} of {summary.finished} finished trials"
    )
    export = command(
        "export", study=summary.study_name, storage=summary.storage, pick="knee",
        format="state_dict", output="model.pt",
    )  # fmt: skip
    _print(front_table(summary.front, title=title), noise_line(summary.noise))
    if summary.noise and summary.noise.get("budget_warning"):
        err_console.print(f"[bold yellow]warning:[/] {summary.noise['budget_warning']}")
    _print(
        f"results in {summary.storage} (study {summary.study_name}); export one with\n  {export}"
    )
    if summary.finished < summary.target:
        show = command("show", "N", study=summary.study_name, storage=summary.storage)
        err_console.print(
            f"[bold red]stopped:[/] {summary.failed} trial(s) of this run failed and "
            f"{summary.finished} of {summary.target} finished; see why with {show}",
            highlight=False,
        )
        raise typer.Exit(1)


def _key_overrides(keys: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in keys.items() if value is not None]


def _results(space: str | None, study: str | None, storage: str | None) -> Any:
    """Open a study's results from --space (its storage and study) or --study/--storage."""
    from se_search.storage.results import Results

    if space is None and study is None:
        raise SESearchError(f"give {flag('space')} FILE or {flag('study')} NAME")
    if space is not None:
        from se_search.space import load_space

        loaded = load_space(space)
        return Results(storage or loaded.storage, study or loaded.study_name)
    return Results(storage or DEFAULT_STORAGE, study)


@app.command()
def front(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    fmt: Annotated[str, typer.Option(flag("format"), "-f", help="table, json or csv.")] = "table",
) -> None:
    """The Pareto front of a study."""
    from se_search.display import noise_line
    from se_search.outputs.tables import FRONT_FORMATS

    if fmt not in FRONT_FORMATS:
        raise SESearchError(
            f"unknown {flag('format')} {fmt!r}; choose one of {', '.join(FRONT_FORMATS)}"
        )
    results = _results(space, study, storage)
    rows = results.front()
    out = FRONT_FORMATS[fmt](rows, title=f"Pareto front of {results.study} ({len(rows)})")
    if isinstance(out, str):
        typer.echo(out)
        return
    noise = results.noise()
    _print(out, noise_line(noise))
    if noise and noise.get("budget_warning"):
        _print(f"warning: {noise['budget_warning']}")


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
) -> None:
    """Train the top-K candidates and the references stand-alone (at --epochs, under
    --seeds); rank agreement with the search's scores, with a bootstrap interval, and the
    front on verified accuracies. Running it again resumes."""
    from se_search.outputs.progress import SearchProgress
    from se_search.outputs.tables import verified_table
    from se_search.outputs.verify import agreement_line, reference_lines
    from se_search.outputs.verify import verify as run_verify

    results = _results(space, study, storage)
    report = run_verify(
        results.storage, results.study, top=top, epochs=epochs, seeds=seeds,
        listener=SearchProgress(err_console),
    )  # fmt: skip
    _print(
        verified_table(report.rows, title=f"verified candidates of {report.study}"),
        agreement_line(report),
        *reference_lines(report),
        "verified front (on stand-alone accuracy): trials "
        + (", ".join(map(str, report.front)) or "-"),
    )


@app.command()
def show(
    trial: Annotated[int, typer.Argument(help="Trial number.")],
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """One trial: its architecture, figures, state and checkpoint."""
    from se_search.outputs.tables import trial_table

    record = _results(space, study, storage).trial(trial)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
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
        str, typer.Option(flag("format"), "-f", help="state_dict, torchscript or onnx.")
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
        f"exported trial {record['trial_number']} ({record['summary']}, accuracy "
        f"{record['accuracy']:.4f}{which}) as {fmt} to {path}"
    )


@app.command()
def report(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    output: Annotated[
        Path, typer.Option("--output", flag("output"), help="The HTML file.")
    ] = Path("report.html"),
) -> None:
    """Write one self-contained HTML report of a study (opens offline, no CDN)."""
    from se_search.outputs.report import write_report

    results = _results(space, study, storage)
    path = write_report(results.storage, results.study, output)
    _print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


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
    from se_search.outputs.dashboard import serve, where
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


@app.command()
def bench(
    device: Annotated[
        str, typer.Option(help="all (the CPU, and CUDA when present), cpu, cuda or cuda:N.")
    ] = "all",
    batch: Annotated[
        list[int] | None, typer.Option(min=1, help="Batch sizes timed (repeatable; 1 and 8).")
    ] = None,
    image_size: Annotated[int, typer.Option(min=8, help="Input height and width.")] = 224,
    rounds: Annotated[int, typer.Option(min=4, help="Interleaved rounds per batch size.")] = 20,
    forms: Annotated[
        str, typer.Option(help="Comma-separated forms timed: " + ", ".join(FORM_NAMES) + ".")
    ] = ",".join(FORM_NAMES),
    references: Annotated[
        str, typer.Option(help="Comma-separated references: " + ", ".join(REFERENCE_NAMES) + ".")
    ] = ",".join(REFERENCE_NAMES),
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Also compare training throughput.")
    ] = True,
    train_steps: Annotated[int, typer.Option(min=2, help="Batches per timed epoch.")] = 20,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
) -> None:
    """Latency overhead of SE-ResNet-50 over ResNet-50 in every form, beside timm's and
    torchvision's SE blocks, in one interleaved run; and training throughput."""
    from se_search.bench import run_bench

    record = run_bench(
        console,
        device=device,
        batches=batch or [1, 8],
        image_size=image_size,
        rounds=rounds,
        forms=[f for f in forms.split(",") if f],
        references=[r for r in references.split(",") if r],
        train_steps=train_steps if train else None,
    )
    if json_out is not None:
        json_out.write_text(json.dumps(record, indent=2))
        _print(f"figures written to {json_out}")


@app.command()
def spaces() -> None:
    """List the bundled search spaces."""
    from se_search.outputs.tables import spaces_table

    _print(*spaces_table())


if __name__ == "__main__":
    app()
