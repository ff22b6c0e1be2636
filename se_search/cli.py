"""The ``se-search`` command line. Thin: the work lives in the library.

Every :class:`~se_search.errors.SESearchError` becomes one clear message on stderr and exit
code 2, in one place (:class:`_Group`); other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
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

# The bench's forms and references, named here so that --help needs no torch import.
FORM_NAMES = ("eager", "channels_last", "compiled", "torchscript", "onnxruntime")
REFERENCE_NAMES = ("timm", "torchvision", "unfused")

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
    from se_search.blocks import VARIANTS

    table = Table(title=f"{info['space']}: {info['backbone']}, {info['summary']}")
    for column in ("site", "block", "in", "out", "takes", "choice", "SE params"):
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
            " ".join(VARIANTS[v].code for v in s["variants"]),
            choice,
            f"{s['se_params']:,}",
        )
    console.print(table)
    console.print(
        "takes: the variants a site can have: "
        + ", ".join(f"{v.code} {name}" for name, v in VARIANTS.items())
    )
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


StorageOpt = Annotated[
    str | None,
    typer.Option(
        help="Results database URL; default: the space's storage, else sqlite:///se_search.db."
    ),
]
LookupSpaceOpt = Annotated[
    str | None, typer.Option("--space", "-s", help="The space searched (its storage, study).")
]
StudyOpt = Annotated[str | None, typer.Option(help="Study name (default: the space's).")]
DEFAULT_STORAGE = "sqlite:///se_search.db"


@app.command()
def run(
    space: SpaceOpt,
    trials: Annotated[
        int | None, typer.Option(help="Finished trials wanted in total (search.trials).")
    ] = None,
    storage: StorageOpt = None,
    engine: Annotated[str | None, typer.Option(help="local or ray (search.engine).")] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Join this Ray cluster, e.g. auto (search.ray.address)."),
    ] = None,
    overrides: SetOpt = None,
) -> None:
    """Search the space: train candidates, store them and the Pareto front, print the front.

    Running the same command again resumes the same study.
    """
    import optuna

    from se_search.engines import get_engine
    from se_search.progress import SearchProgress, front_table
    from se_search.space import load_space

    flags = {
        "search.trials": trials,
        "storage": storage,
        "search.engine": engine,
        "search.ray.address": ray_address,
    }
    loaded = load_space(space, [*(overrides or []), *_flag_overrides(flags)])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with SearchProgress(err_console) as progress:
        searcher = get_engine(loaded.search.engine)(loaded, listener=progress)
        summary = searcher.run()
    console.print(
        front_table(
            summary.front,
            title=f"Pareto front of {summary.study_name}: "
            f"{len(summary.front)} of {summary.finished} finished trials",
        )
    )
    console.print(
        f"results in {summary.storage} (study {summary.study_name}); export one with\n"
        f"  se-search export --study {summary.study_name} --storage {summary.storage} "
        "--pick knee --format state_dict -o model.pt",
        highlight=False,
    )
    if summary.finished < summary.target:
        err_console.print(
            f"[bold red]stopped:[/] {summary.failed} trial(s) of this run failed and "
            f"{summary.finished} of {summary.target} finished; see why with "
            f"se-search show N --study {summary.study_name}"
        )
        raise typer.Exit(1)


def _flag_overrides(flags: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


def _results(space: str | None, study: str | None, storage: str | None) -> Any:
    """Open a study's results from --space (its storage and study) or --study/--storage."""
    from se_search.results import Results

    if space is None and study is None:
        raise SESearchError("give --space FILE or --study NAME")
    if space is not None:
        from se_search.space import load_space

        loaded = load_space(space)
        return Results(storage or loaded.storage, study or loaded.study_name)
    return Results(storage or DEFAULT_STORAGE, study)


def _front_table(results: Any, rows: list[dict]) -> None:
    from se_search.progress import front_table

    console.print(front_table(rows, title=f"Pareto front of {results.study} ({len(rows)})"))


def _front_json(results: Any, rows: list[dict]) -> None:
    typer.echo(json.dumps(rows, indent=2, default=str))


def _front_csv(results: Any, rows: list[dict]) -> None:
    import csv
    import sys

    keys = ["trial_number", "accuracy", "params", "flops", "latency_ms", "latency_iqr_ms"]
    keys += ["arch_hash", "placement"]
    writer = csv.DictWriter(sys.stdout, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


FRONT_FORMATS = {"table": _front_table, "json": _front_json, "csv": _front_csv}


@app.command()
def front(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """The Pareto front of a study."""
    if fmt not in FRONT_FORMATS:
        raise SESearchError(f"unknown --format {fmt!r}; choose one of {', '.join(FRONT_FORMATS)}")
    results = _results(space, study, storage)
    FRONT_FORMATS[fmt](results, results.front())


@app.command()
def verify(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1, help="How many candidates to train.")] = 10,
) -> None:
    """Train the top-K candidates stand-alone; rank agreement with the search's scores and
    the front on verified accuracies. Running it again resumes."""
    from se_search.progress import verified_table
    from se_search.verify import verify as run_verify

    results = _results(space, study, storage)

    def listen(event: str, info: dict[str, Any]) -> None:
        if event == "verify_start":
            err_console.print(
                f"verify {info['index']}/{info['of']}: training trial {info['trial']} "
                f"stand-alone ({info['arch'].summary()})",
                highlight=False,
            )
        elif event == "verify_done":
            err_console.print(
                f"  trial {info['trial']}: {info['accuracy']:.4f} stand-alone, "
                f"{info['searched']:.4f} in the search ({info['train_seconds']:.1f} s)",
                highlight=False,
            )

    report = run_verify(results.storage, results.study, top=top, listener=listen)
    console.print(verified_table(report.rows, title=f"verified candidates of {report.study}"))
    console.print(
        f"rank agreement over {len(report.rows)} candidates: "
        f"Kendall tau {report.kendall_tau:.3f}, Spearman rho {report.spearman_rho:.3f}; "
        "verified front (on stand-alone accuracy): "
        f"trials {', '.join(map(str, report.front)) or '-'}",
        highlight=False,
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
    from se_search.arch import SEChoice

    record = _results(space, study, storage).trial(trial)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    table = Table(
        title=f"trial {trial} of {record['study_name']}: {record['state']}"
        f"{' (on the front)' if record['on_front'] else ''}"
    )
    table.add_column("site")
    table.add_column("choice")
    for site, choice in record["architecture"].items():
        table.add_row(site, str(SEChoice.parse(choice)))
    console.print(table)
    for key in (
        "summary",
        "arch_hash",
        "accuracy",
        "params",
        "flops",
        "latency_ms",
        "latency_iqr_ms",
        "train_seconds",
        "epochs",
        "feasible",
        "violations",
        "duplicate_of",
        "failure_reason",
        "checkpoint",
        "seconds",
    ):
        if record.get(key) is not None:
            console.print(f"{key:15s} {record[key]}", highlight=False)


@app.command()
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option(help="Trial number to export.")] = None,
    pick: Annotated[
        str | None,
        typer.Option(help="Pick from the front: knee, max-accuracy, min-latency, min-flops."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="state_dict, torchscript or onnx.")
    ] = "state_dict",
) -> None:
    """Write a trial's trained model with its architecture and figures as metadata."""
    from se_search.arch import Architecture
    from se_search.export import export_model

    results = _results(space, study, storage)
    record = results.choose(trial=trial, pick_name=pick)
    model = results.trained_model(record)
    backbone = results.space["backbone"]
    metadata = {
        "study": results.study,
        "trial": record["trial_number"],
        **{k: record[k] for k in ("accuracy", "params", "flops", "latency_ms")},
    }
    path = export_model(
        model,
        backbone=backbone["model"],
        num_classes=backbone["num_classes"],
        arch=Architecture(record["architecture"]),
        image_size=results.space["data"]["image_size"],
        metadata=metadata,
        format=fmt,
        path=output,
    )
    console.print(
        f"exported trial {record['trial_number']} ({record['summary']}, accuracy "
        f"{record['accuracy']:.4f}) as {fmt} to {path}",
        highlight=False,
    )


@app.command()
def report(
    space: LookupSpaceOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file.")] = Path(
        "report.html"
    ),
) -> None:
    """Write one self-contained HTML report of a study (opens offline, no CDN)."""
    from se_search.report import write_report

    results = _results(space, study, storage)
    path = write_report(results.storage, results.study, output)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)


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
    from se_search.dashboard import serve
    from se_search.engines.study import (
        OPTUNA_ARTIFACTS,
        default_artifacts_dir,
        optuna_artifacts_dir,
    )
    from se_search.store import ResultsStore, redact

    if space is not None:
        from se_search.space import load_space

        loaded = load_space(space)
        storage = storage or loaded.storage
        artifacts = artifacts or optuna_artifacts_dir(loaded, storage)
    storage = storage or DEFAULT_STORAGE
    ResultsStore(storage, read_only=True)  # a clear error if there is no results database
    if artifacts is None:
        artifacts = default_artifacts_dir(storage) / OPTUNA_ARTIFACTS
    if host not in LOOPBACK:
        err_console.print(
            f"[bold yellow]warning:[/] serving on {host}: anyone who can reach this machine "
            "can read the study and edit its notes; optuna-dashboard has no login"
        )
    err_console.print(
        f"optuna-dashboard on http://{host}:{port}/ for {redact(storage)} (Ctrl-C stops it)",
        highlight=False,
    )
    serve(storage, host=host, port=port, artifacts=artifacts if artifacts.exists() else None)


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
    import dataclasses

    import torch

    from se_search import bench as b

    if device == "all":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] * torch.cuda.is_available())
    else:
        from se_search.costs import resolve_device

        devices = [resolve_device(device)]
    chosen_forms = [f for f in forms.split(",") if f]
    chosen_refs = [r for r in references.split(",") if r]
    record: dict[str, Any] = {}
    for dev in devices:
        console.print(f"[bold]{b.describe_device(dev)}[/], {image_size}x{image_size}")
        with console.status("preparing") as status:
            ratios, skipped = b.latency_ratios(
                device=dev,
                batches=batch or [1, 8],
                image_size=image_size,
                rounds=rounds,
                forms=chosen_forms,
                references=chosen_refs,
                progress=lambda message: status.update(message),
            )
        _ratio_tables(ratios, dev)
        for what, why in skipped.items():
            console.print(f"  {what} left out: {why}", highlight=False)
        entry: dict[str, Any] = {
            "device": b.describe_device(dev),
            "ratios": [dataclasses.asdict(r) for r in ratios],
            "skipped": skipped,
        }
        if train:
            with console.status("training") as status:
                tp = b.training_throughput(
                    device=dev, steps=train_steps, progress=lambda m: status.update(m)
                )
            console.print(
                f"training SE-ResNet-50 (batch 64, 32x32, images/s of the last epoch's steps): "
                f"bare loop {tp.bare:.1f}, train strategy {tp.strategy:.1f}, "
                f"ratio {tp.ratio:.3f}"
                + (" (target at least 0.80)" if dev.type == "cuda" else ""),
                highlight=False,
            )
            entry["training"] = {**dataclasses.asdict(tp), "ratio": tp.ratio}
        record[str(dev)] = entry
    if json_out is not None:
        json_out.write_text(json.dumps(record, indent=2))
        console.print(f"figures written to {json_out}", highlight=False)


def _ratio_tables(ratios: list[Any], dev: Any) -> None:
    from se_search.bench import REFERENCES

    target = 1.03 if dev.type == "cuda" else 1.05
    for batch in sorted({r.batch for r in ratios}):
        table = Table(title=f"batch {batch}: SE model / plain model, median of per-round ratios")
        for column in ("SE-ResNet-50", "form", "plain ms", "SE ms", "ratio", "IQR", "vs timm"):
            table.add_column(
                column, justify="left" if column in {"SE-ResNet-50", "form"} else "right"
            )
        rows = [r for r in ratios if r.batch == batch]
        timm = {r.form: r.median for r in rows if r.label == "timm"}
        for r in rows:
            versus = ""
            if r.label == "se-search" and r.form in timm:
                versus = "better" if r.median <= timm[r.form] else "worse"
            mark = " *" if r.label == "se-search" and batch == 8 and r.median <= target else ""
            table.add_row(
                r.label,
                r.form,
                f"{r.plain_ms:.2f}",
                f"{r.se_ms:.2f}",
                f"{r.median:.3f}{mark}",
                f"{r.q1:.3f}-{r.q3:.3f}",
                versus,
            )
        console.print(table)
    console.print(
        f"  * at batch 8: within the target overhead of {target} on {dev.type}\n"
        "  se-search: standard:16 at all 16 blocks, over torchvision's resnet50; "
        + "; ".join(f"{key}: {description}" for key, (description, _) in REFERENCES.items()),
        highlight=False,
    )


@app.command()
def spaces() -> None:
    """List the bundled search spaces."""
    from se_search.space import bundled_spaces, load_space

    table = Table(title="bundled search spaces")
    for column in ("name", "backbone", "sites", "variants", "reductions", "architectures"):
        numeric = column in {"sites", "architectures"}
        table.add_column(column, justify="right" if numeric else "left")
    unavailable = []
    for name in bundled_spaces():
        try:
            s = load_space(name)
        except SESearchError as err:  # e.g. a timm backbone without timm installed
            unavailable.append(f"{name}: unavailable: {str(err).split(': ', 2)[-1]}")
            continue
        table.add_row(
            name,
            s.backbone.model,
            str(len(s.site_names)),
            ", ".join(s.choices.variant),
            ", ".join(map(str, s.choices.reduction)),
            f"{s.size:,}" if s.size < 10**6 else f"{s.size:.2e}",
        )
    console.print(table)
    for line in unavailable:
        typer.echo(line)


if __name__ == "__main__":
    app()
