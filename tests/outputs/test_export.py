from __future__ import annotations

import copy
import gc
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model

import se_search
from se_search.errors import SESearchError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import insert_se
from se_search.outputs.export import EXPORT_FORMATS, export_model, load_model, read_metadata

IMAGE_SIZE = 32
ARCH = Architecture(
    {
        "layer1.0": "standard:16",
        "layer2.1": "pre:4",
        "layer3.0": "post:8",
        "layer4.1": "identity:16:max:hardsigmoid",
    }
)
EXTRA = {"study": "unit", "trial": 3, "accuracy": 0.875, "flops": 1234567, "latency_ms": None}


@dataclass
class Exported:
    model: nn.Module  # the original, still in train mode
    before: dict[str, torch.Tensor]  # its state before any export
    paths: dict[str, Path]
    warnings: list[str]  # every warning the exports raised


def _model() -> nn.Module:
    torch.manual_seed(1)
    base = get_model("resnet18", num_classes=10)
    sites = [site.name for site in get_backbone("resnet18").list_sites(base)]
    assert set(ARCH) <= set(sites)
    model = insert_se(base, ARCH, backbone="resnet18")
    # Move every weight and every BN statistic away from its initial value, so a file that held
    # freshly initialised weights could not pass the round-trip checks.
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_var"):  # must stay positive
                value.mul_(torch.empty_like(value).uniform_(0.5, 1.5))
            elif value.is_floating_point():
                value.mul_(1 + 0.1 * torch.randn_like(value)).add_(0.01 * torch.randn_like(value))
    return model.train()


def _export(model: nn.Module, fmt: str, path: Path, **overrides) -> Path:
    kwargs = dict(
        backbone="resnet18",
        num_classes=10,
        arch=ARCH,
        image_size=IMAGE_SIZE,
        metadata=EXTRA,
        format=fmt,
        path=path,
    )
    kwargs.update(overrides)
    return export_model(model, **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gc.collect()  # what earlier tests left behind is finalised now, not during the exports
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = {fmt: _export(model, fmt, root / "sub" / f"model.{fmt}") for fmt in EXPORT_FORMATS}
    return Exported(model, before, paths, _ours(caught))


def _ours(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings raised by the code under test. A ResourceWarning is about some object other
    code left open, surfacing whenever the garbage collector runs (the ONNX exporter runs it)."""
    return [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, ResourceWarning)
    ]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x)


def _expected_metadata() -> dict:
    return {
        "format_version": 1,
        "se_search_version": se_search.__version__,
        "backbone": "resnet18",
        "num_classes": 10,
        "image_size": IMAGE_SIZE,
        "architecture": ARCH.to_dict(),
        "arch_hash": ARCH.hash,
        **EXTRA,
    }


def test_registry_has_the_three_formats() -> None:
    assert list(EXPORT_FORMATS) == ["state_dict", "torchscript", "onnx"]


def test_each_export_is_one_self_contained_file(exported: Exported) -> None:
    folder = exported.paths["onnx"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"model.{fmt}" for fmt in EXPORT_FORMATS
    )  # no .partial leftovers, no ONNX external-data file


def test_perturbed_weights_differ_from_a_fresh_model(exported: Exported) -> None:
    torch.manual_seed(1)
    fresh = insert_se(get_model("resnet18", num_classes=10), ARCH, backbone="resnet18")
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (_logits(fresh, x) - _logits(exported.model, x)).abs().max() > 1e-2


# --------------------------------------------------------------------------------- state_dict


def test_state_dict_round_trip(exported: Exported) -> None:
    loaded = load_model(exported.paths["state_dict"])
    assert not loaded.training
    assert type(loaded).__name__ == "ResNet"
    original = exported.model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(loaded.state_dict()[k], original[k]) for k in original)
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        diff = (loaded(x) - _logits(exported.model, x)).abs().max().item()
    assert diff <= 1e-5


def test_state_dict_metadata_round_trips(exported: Exported) -> None:
    meta = read_metadata(exported.paths["state_dict"])
    assert meta == _expected_metadata()
    assert Architecture(meta["architecture"]) == ARCH


def test_state_dict_file_loads_with_plain_weights_only_torch_load(exported: Exported) -> None:
    obj = torch.load(exported.paths["state_dict"], map_location="cpu", weights_only=True)
    assert obj["se_search"]["arch_hash"] == ARCH.hash
    assert torch.equal(obj["state_dict"]["fc.weight"], exported.model.fc.weight.detach())
    assert "layer2.1.se.fc1.weight" in obj["state_dict"]


def test_load_model_leaves_the_global_rng_alone(exported: Exported) -> None:
    state = torch.get_rng_state()
    load_model(exported.paths["state_dict"])
    assert torch.equal(torch.get_rng_state(), state)


def test_format_is_detected_by_content_not_extension(exported: Exported, tmp_path: Path) -> None:
    misnamed = tmp_path / "really_a_state_dict.onnx"
    misnamed.write_bytes(exported.paths["state_dict"].read_bytes())
    assert type(load_model(misnamed)).__name__ == "ResNet"
    misnamed = tmp_path / "really_torchscript.pt"
    misnamed.write_bytes(exported.paths["torchscript"].read_bytes())
    assert isinstance(load_model(misnamed), torch.jit.ScriptModule)


# -------------------------------------------------------------------------------- torchscript


@pytest.mark.parametrize("batch", [1, 5])
def test_torchscript_round_trip(exported: Exported, batch: int) -> None:
    loaded = load_model(exported.paths["torchscript"])
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert not loaded.training
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = loaded(x)
    assert out.shape == (batch, 10)
    assert (out - _logits(exported.model, x)).abs().max().item() <= 1e-5


def test_torchscript_metadata_round_trips(exported: Exported) -> None:
    assert read_metadata(exported.paths["torchscript"]) == _expected_metadata()


def test_exports_and_loads_raise_no_warnings(exported: Exported) -> None:
    assert exported.warnings == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fmt in ("state_dict", "torchscript"):
            load_model(exported.paths[fmt])
            read_metadata(exported.paths[fmt])
        read_metadata(exported.paths["onnx"])
    assert _ours(caught) == []


# --------------------------------------------------------------------------------------- onnx


def test_onnx_runs_in_onnxruntime_with_a_dynamic_batch(exported: Exported) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(exported.paths["onnx"]))
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # a symbolic batch axis
    for batch in (2, 3):
        x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
        (out,) = session.run(None, {"images": x.numpy()})
        assert out.shape == (batch, 10)
        expected = _logits(exported.model, x).numpy()
        assert abs(out - expected).max() <= 1e-4


def test_onnx_metadata_round_trips(exported: Exported) -> None:
    assert read_metadata(exported.paths["onnx"]) == _expected_metadata()
    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(str(exported.paths["onnx"])).metadata_props}
    assert json.loads(props["se_search"])["arch_hash"] == ARCH.hash


def test_load_model_on_onnx_says_to_use_onnxruntime(exported: Exported) -> None:
    with pytest.raises(SESearchError, match="onnxruntime.InferenceSession"):
        load_model(exported.paths["onnx"])


# ------------------------------------------------------------------------------------- errors


def test_unknown_format_lists_the_valid_ones(exported: Exported, tmp_path: Path) -> None:
    with pytest.raises(SESearchError, match="state_dict, torchscript, onnx") as info:
        _export(exported.model, "tflite", tmp_path / "m.tflite")
    assert "'tflite'" in str(info.value)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)) * 4, b"\x08" + bytes(range(255, 0, -1)) * 3, b""],
    ids=["random", "onnx-like", "empty"],
)
def test_a_foreign_file_is_refused_naming_its_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    for function in (load_model, read_metadata):
        with pytest.raises(SESearchError, match="foreign.bin") as info:
            function(path)
        assert "export_model" in str(info.value)


def test_a_plain_torch_save_file_is_refused_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"a": 1}, path)
    for function in (load_model, read_metadata):
        with pytest.raises(SESearchError, match="plain.pt.*without se-search metadata"):
            function(path)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_torchscript_file_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bare.ts"
    scripted = torch.jit.script(nn.Linear(2, 2))
    scripted.save(str(path))
    with pytest.raises(SESearchError, match="bare.ts is a torchscript file without"):
        read_metadata(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SESearchError, match="no such file"):
        load_model(tmp_path / "nope.pt")


def test_a_model_that_does_not_match_its_metadata_is_refused(
    exported: Exported, tmp_path: Path
) -> None:
    other = Architecture({"layer1.0": "standard:4"})
    with pytest.raises(SESearchError, match="pass the backbone, num_classes and architecture"):
        _export(exported.model, "state_dict", tmp_path / "m.pt", arch=other)
    with pytest.raises(SESearchError, match="fc.weight"):
        _export(exported.model, "state_dict", tmp_path / "m.pt", num_classes=100)
    assert not (tmp_path / "m.pt").exists()


def test_metadata_must_be_json_and_must_not_contradict_the_export(
    exported: Exported, tmp_path: Path
) -> None:
    with pytest.raises(SESearchError, match="JSON-serialisable"):
        _export(exported.model, "state_dict", tmp_path / "m.pt", metadata={"x": torch.ones(1)})
    with pytest.raises(SESearchError, match="arch_hash"):
        _export(exported.model, "state_dict", tmp_path / "m.pt", metadata={"arch_hash": "0"})
    path = _export(
        exported.model, "state_dict", tmp_path / "m.pt", metadata={"pair": (1, 2), "n": 1}
    )
    meta = read_metadata(path)
    assert meta["pair"] == [1, 2]
    assert meta["n"] == 1


# --------------------------------------------------------------------------- the caller's model


def test_export_leaves_the_original_model_alone(exported: Exported) -> None:
    model = exported.model
    assert model.training
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert after.keys() == exported.before.keys()
    assert all(torch.equal(after[k], exported.before[k]) for k in after)
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
