"""``se-search bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from se_search.cli import (
    _print,
    app,
    console,
)

# The bench's forms and references, named here so that --help needs no torch import
# (tests/test_cli.py holds them equal to the bench's registries).
FORM_NAMES = ("eager", "channels_last", "compiled", "torchscript", "onnxruntime")
REFERENCE_NAMES = ("timm", "torchvision", "unfused")


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
