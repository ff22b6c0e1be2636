"""``se-search bench``: every form runs the model it names, ratios pair the right models.

No timing is asserted (the machine is shared and noisy): what is checked is that each form
computes what the eager model does, that ratios are formed from the right pairs and that
what cannot run is reported, not hidden.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from se_search.bench import forms, latency_ratios, training
from se_search.cli import app
from se_search.cli.bench import FORM_NAMES, REFERENCE_NAMES
from se_search.errors import SESearchError

CPU = torch.device("cpu")


def test_the_cli_names_every_form_and_reference() -> None:
    assert tuple(forms.FORMS) == FORM_NAMES and tuple(forms.REFERENCES) == REFERENCE_NAMES


def test_the_pair_is_resnet50_and_se_resnet50_standard_16() -> None:
    plain, se = forms.se_resnet50_pair(num_classes=10)
    extra = {k for k in se.state_dict() if k not in plain.state_dict()}
    assert {k.rsplit(".se.", 1)[0] for k in extra} == {
        f"layer{i}.{j}" for i, n in enumerate((3, 4, 6, 3), 1) for j in range(n)
    }
    assert se.state_dict()["layer1.0.se.fc1.weight"].shape == (256 // 16, 256, 1, 1)
    assert set(plain.state_dict()) == set(se.state_dict()) - extra


@pytest.mark.parametrize("form", ["channels_last", "torchscript", "onnxruntime"])
def test_each_form_computes_what_the_eager_model_does(form: str, tmp_path: Path) -> None:
    if form == "onnxruntime":
        pytest.importorskip("onnxruntime")
    _, se = forms.se_resnet50_pair(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = forms.FORMS["eager"].prepare(se, x, tmp_path)()
        got = forms.FORMS[form].prepare(se, x, tmp_path)()
    got = torch.as_tensor(np.asarray(got[0])) if isinstance(got, list) else got
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_ratios_pair_each_form_and_reference_and_report_what_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> None:
        raise forms.Unavailable("timm is not installed (pip install timm)")

    monkeypatch.setitem(forms.REFERENCES, "timm", ("timm", missing))
    ratios, skipped = latency_ratios.latency_ratios(
        device=CPU,
        batches=(1, 2),
        image_size=32,
        rounds=4,
        warmup=1,
        forms=("eager", "channels_last"),
        references=("unfused", "timm"),
    )
    assert skipped == {"timm": "timm is not installed (pip install timm)"}
    assert sorted((r.batch, r.label, r.form) for r in ratios) == sorted(
        (b, label, form)
        for b in (1, 2)
        for label in ("se-search", "unfused")
        for form in ("eager", "channels_last")
    )
    for r in ratios:
        assert r.q1 <= r.median <= r.q3 and r.se_ms > 0 and r.plain_ms > 0


def test_an_unknown_form_names_the_choices() -> None:
    with pytest.raises(SESearchError, match="unknown bench form.*forms: eager, channels_last"):
        latency_ratios.latency_ratios(device=CPU, forms=("eagre",))


def test_training_throughput_times_both_loops() -> None:
    tp = training.training_throughput(device=CPU, batch=4, image_size=16, steps=2, rounds=1)
    assert tp.bare > 0 and tp.strategy > 0 and tp.ratio == tp.strategy / tp.bare


def test_the_bench_command_prints_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--device", "cpu", "--batch", "1", "--image-size", "32", "--rounds", "4"]
    args += ["--forms", "eager", "--references", "unfused", "--no-train", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "batch 1" in result.output and "unfused" in result.output
    figures = json.loads(out.read_text())["cpu"]
    assert {(r["label"], r["form"]) for r in figures["ratios"]} == {
        ("se-search", "eager"),
        ("unfused", "eager"),
    }
    bad = CliRunner().invoke(app, ["bench", "--device", "cpu", "--forms", "eagre"])
    assert bad.exit_code == 2 and "unknown bench form" in bad.output
