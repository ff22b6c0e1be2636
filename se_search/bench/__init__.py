"""``se-search bench``: what SE blocks cost at inference, side by side in one run
(:mod:`~se_search.bench.latency_ratios`, over the forms and references of
:mod:`~se_search.bench.forms`), and how close the ``train`` strategy comes to a bare training
loop (:mod:`~se_search.bench.training`). The targets live beside what they measure."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from rich.console import Console

from se_search.costs.timing import device_name, resolve_device

__all__ = ["describe_device", "run_bench"]


def run_bench(
    console: Console,
    *,
    device: str,
    batches: list[int],
    image_size: int,
    rounds: int,
    forms: list[str],
    references: list[str],
    train_steps: int | None,
) -> dict[str, Any]:
    """``se-search bench``: on each device (``all``: the CPU, and CUDA when present), the
    latency ratios and, unless ``train_steps`` is None, the training throughput, printed to
    ``console`` as they come; every figure, by device."""
    from se_search.bench.latency_ratios import latency_ratios, ratio_tables
    from se_search.bench.training import throughput_line, training_throughput

    if device == "all":
        devices = [torch.device("cpu")] + [torch.device("cuda")] * torch.cuda.is_available()
    else:
        devices = [resolve_device(device, key="--device")]
    record: dict[str, Any] = {}
    for dev in devices:
        console.print(f"[bold]{describe_device(dev)}[/], {image_size}x{image_size}")
        with console.status("preparing") as status:
            ratios, skipped = latency_ratios(
                device=dev, batches=batches, image_size=image_size, rounds=rounds,
                forms=forms, references=references, progress=status.update,
            )  # fmt: skip
        for item in [
            *ratio_tables(ratios, dev),
            *(f"  {k} left out: {v}" for k, v in skipped.items()),
        ]:
            console.print(item, highlight=False)
        entry: dict[str, Any] = {
            "device": describe_device(dev),
            "ratios": [dataclasses.asdict(r) for r in ratios],
            "skipped": skipped,
        }
        if train_steps is not None:
            with console.status("training") as status:
                tp = training_throughput(device=dev, steps=train_steps, progress=status.update)
            console.print(throughput_line(tp, dev), highlight=False)
            entry["training"] = {**dataclasses.asdict(tp), "ratio": tp.ratio}
        record[str(dev)] = entry
    return record


def describe_device(device: torch.device) -> str:
    return (
        f"{device} ({device_name(device)}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
