from __future__ import annotations

import copy
import gc
import io
import json
import logging
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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
from se_search.models.variants import ResidualSE
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
LOADABLE = ("state_dict", "torchscript", "pt2", "safetensors")  # onnx: onnxruntime runs it


@dataclass
class Exported:
    model: nn.Module  # the original, still in train mode
    before: dict[str, torch.Tensor]  # its state before any export
    paths: dict[str, Path]
    warnings: list[str]  # every warning the exports raised
    logs: list[str]  # every warning torch logged meanwhile (torch.export logs, not warns)


@dataclass
class Loaded:
    models: dict[str, nn.Module]  # load_model of each loadable format
    warnings: list[str]  # every warning the loads and read_metadata of every file raised
    logs: list[str]


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
    # Under no_grad, as inference code calls it: the case where the fused SE forward writes
    # in place, which the pt2 export must not record (see pt2.py).
    with _recording() as (caught, logs), torch.no_grad():
        paths = {fmt: _export(model, fmt, root / "sub" / f"model.{fmt}") for fmt in EXPORT_FORMATS}
    return Exported(model, before, paths, _ours(caught), logs)


@pytest.fixture(scope="module")
def loaded(exported: Exported) -> Loaded:
    with _recording() as (caught, logs):
        models = {fmt: load_model(exported.paths[fmt]) for fmt in LOADABLE}
        for path in exported.paths.values():
            read_metadata(path)
    return Loaded(models, _ours(caught), logs)


@contextmanager
def _recording() -> Iterator[tuple[list[warnings.WarningMessage], list[str]]]:
    """Every warning raised, and every warning logged by torch, inside the block. torch's
    loggers that do not propagate (``torch``, ``torch.export``...) each get the handler."""
    logs: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logs.append(record.getMessage())  # type: ignore[method-assign]
    names = ["torch", *logging.root.manager.loggerDict]
    loggers = [
        logging.getLogger(n)
        for n in names
        if n.split(".")[0] == "torch" and not logging.getLogger(n).propagate
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught, logs
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


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


def test_registry_has_the_five_formats_with_onnx_detected_last() -> None:
    assert list(EXPORT_FORMATS) == ["state_dict", "torchscript", "pt2", "safetensors", "onnx"]


def test_each_file_is_recognised_by_its_own_format(exported: Exported) -> None:
    for fmt, path in exported.paths.items():
        matching = [name for name, e in EXPORT_FORMATS.items() if e.detect(path)]
        assert matching[0] == fmt
        # ONNX's one-byte test may match a safetensors header too (see the test below).
        assert [m for m in matching if (fmt, m) != ("safetensors", "onnx")] == [fmt]


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
    misnamed = tmp_path / "really_pt2.pt"
    misnamed.write_bytes(exported.paths["pt2"].read_bytes())
    # Only the pt2 reader finds this metadata (every other one refuses the file); loading the
    # archive again would cost a second.
    assert read_metadata(misnamed) == _expected_metadata()
    misnamed = tmp_path / "really_safetensors.pt2"
    misnamed.write_bytes(exported.paths["safetensors"].read_bytes())
    assert type(load_model(misnamed)).__name__ == "ResNet"
    assert read_metadata(misnamed) == _expected_metadata()


# -------------------------------------------------------------------------------- torchscript


def _assert_same_logits(exported: Exported, model: nn.Module, batch: int) -> None:
    """A loaded export is in eval mode and gives the eager model's logits at any batch."""
    assert not model.training
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (batch, 10)
    assert (out - _logits(exported.model, x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, 5])
def test_torchscript_round_trip(exported: Exported, loaded: Loaded, batch: int) -> None:
    model = loaded.models["torchscript"]
    assert isinstance(model, torch.jit.ScriptModule)
    _assert_same_logits(exported, model, batch)


def test_torchscript_metadata_round_trips(exported: Exported) -> None:
    assert read_metadata(exported.paths["torchscript"]) == _expected_metadata()


def test_exports_and_loads_raise_no_warnings(exported: Exported, loaded: Loaded) -> None:
    assert exported.warnings == []
    assert exported.logs == []
    assert loaded.warnings == []
    assert loaded.logs == []


def test_torch_log_warnings_are_recorded(tmp_path: Path) -> None:
    """The recorder above sees what torch.export logs (it logs, it does not warn)."""
    program = torch.export.export(nn.Linear(2, 2), (torch.randn(2, 2),))
    with _recording() as (_, logs):
        torch.export.save(program, tmp_path / "linear.bin")  # not .pt2: torch logs a warning
    assert any("ending in .pt2" in line for line in logs)


# ---------------------------------------------------------------------------------------- pt2


@pytest.mark.parametrize("batch", [1, 5])  # exported at batch 2: the batch axis is dynamic
def test_pt2_round_trip(exported: Exported, loaded: Loaded, batch: int) -> None:
    model = loaded.models["pt2"]
    assert isinstance(model, torch.fx.GraphModule)
    _assert_same_logits(exported, model, batch)


def test_pt2_program_writes_nothing_in_place_and_runs_under_autograd(
    exported: Exported, loaded: Loaded
) -> None:
    """Exported under no_grad, where the fused SE forward would record ``out=`` ops."""
    model = loaded.models["pt2"]
    targets = [str(n.target) for n in model.graph.nodes if n.op == "call_function"]
    assert any("addcmul" in t or "mul" in t for t in targets)  # the SE scale is there
    assert not [t for t in targets if t.endswith(".out")]
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    model(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pt2_loads_with_plain_torch_export_load(exported: Exported) -> None:
    extra = {"se_search.json": ""}
    program = torch.export.load(exported.paths["pt2"], extra_files=extra)
    assert json.loads(extra["se_search.json"]) == _expected_metadata()
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = program.module()(x)
    assert (out - _logits(exported.model, x)).abs().max().item() <= 1e-5


def test_pt2_metadata_round_trips(exported: Exported) -> None:
    assert read_metadata(exported.paths["pt2"]) == _expected_metadata()


def test_pt2_files_of_older_torch_are_recognised(tmp_path: Path) -> None:
    """torch 2.4-2.7 wrote a flat zip, the extra files under ``extra_files/``."""
    path = tmp_path / "old.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("serialized_exported_program.json", "{}")
        archive.writestr("version", "7.3")
        archive.writestr("extra_files/se_search.json", json.dumps(_expected_metadata()))
    assert EXPORT_FORMATS["pt2"].detect(path)
    assert read_metadata(path) == _expected_metadata()


# -------------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip(exported: Exported, loaded: Loaded) -> None:
    model = loaded.models["safetensors"]
    assert not model.training
    assert type(model).__name__ == "ResNet"
    original = exported.model.state_dict()
    assert model.state_dict().keys() == original.keys()
    assert all(torch.equal(model.state_dict()[k], original[k]) for k in original)
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        diff = (model(x) - _logits(exported.model, x)).abs().max().item()
    assert diff <= 1e-5


def test_safetensors_metadata_round_trips_and_plain_safetensors_reads_the_file(
    exported: Exported,
) -> None:
    safetensors = pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    path = exported.paths["safetensors"]
    assert read_metadata(path) == _expected_metadata()
    with safetensors.safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert list(header) == ["se_search"]
    assert json.loads(header["se_search"]) == _expected_metadata()
    weights = load_file(str(path))
    assert weights.keys() == exported.model.state_dict().keys()
    assert torch.equal(weights["fc.weight"], exported.model.fc.weight.detach())


def test_safetensors_load_never_unpickles(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling")

    for module, name in [
        (pickle, "Unpickler"),
        (pickle, "load"),
        (pickle, "loads"),
        (torch, "load"),
        (torch.serialization, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    with pytest.raises(SESearchError, match="unpickling"):  # the trap works
        load_model(exported.paths["state_dict"])
    model = load_model(exported.paths["safetensors"])
    assert read_metadata(exported.paths["safetensors"])["arch_hash"] == ARCH.hash
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert (model(x) - _logits(exported.model, x)).abs().max().item() <= 1e-5


def test_safetensors_exports_shared_and_non_contiguous_tensors(
    exported: Exported, tmp_path: Path
) -> None:
    """safetensors refuses both; a channels_last model has non-contiguous conv weights, and
    two buffers here hold one tensor."""
    model = copy.deepcopy(exported.model).to(memory_format=torch.channels_last)
    assert not model.conv1.weight.is_contiguous()
    model.bn1.running_mean = model.bn1.running_var  # one storage under two keys
    path = _export(model, "safetensors", tmp_path / "m.safetensors")
    back = load_model(path)
    assert torch.equal(back.bn1.running_mean, model.bn1.running_var)
    assert torch.equal(back.conv1.weight, model.conv1.weight.detach())
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert (back(x) - _logits(model, x)).abs().max().item() <= 1e-5


def test_a_safetensors_file_without_se_search_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"fc.weight": torch.ones(2, 2)}, str(path), metadata={"format": "pt"})
    for function in (load_model, read_metadata):
        with pytest.raises(
            SESearchError, match="bare.safetensors is a safetensors file without se-search"
        ):
            function(path)


def test_a_safetensors_header_that_starts_like_onnx_is_still_safetensors(
    tmp_path: Path,
) -> None:
    """A header length whose low byte is 0x08 opens the file as an ONNX protobuf does: the
    registry's order decides, safetensors before onnx."""
    from safetensors.torch import save_file

    path = tmp_path / "m.bin"
    for pad in range(512):  # the header is padded to 8 bytes: some length ends in 0x08
        meta = {**_expected_metadata(), "pad": "x" * pad}
        save_file({"w": torch.ones(1)}, str(path), metadata={"se_search": json.dumps(meta)})
        if path.read_bytes()[:1] == b"\x08":
            break
    assert path.read_bytes()[:1] == b"\x08"
    assert EXPORT_FORMATS["onnx"].detect(path)  # so the order is what decides
    assert read_metadata(path) == meta


# ---------------------------------------------------------------------------------- map_location


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_load_model_on_cuda(exported: Exported, fmt: str) -> None:
    model = load_model(exported.paths[fmt], map_location="cuda")
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        out = model(x.cuda())
    assert out.device.type == "cuda"
    assert (out.cpu() - _logits(exported.model, x)).abs().max().item() <= 1e-4


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
    with pytest.raises(
        SESearchError, match="state_dict, torchscript, pt2, safetensors, onnx"
    ) as info:
        _export(exported.model, "tflite", tmp_path / "m.tflite")
    assert "'tflite'" in str(info.value)
    assert not (tmp_path / "m.tflite").exists()


def _zip(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        bytes(range(256)) * 4,
        b"\x08" + bytes(range(255, 0, -1)) * 3,
        b"",
        (16).to_bytes(8, "little") + b"{not a header...}",
        _zip({"archive/archive_format": "pt2", "archive/models/model.json": "{}"}),
    ],
    ids=["random", "onnx-like", "empty", "safetensors-like", "pt2-like"],
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
    blocks = [m for m in model.modules() if isinstance(m, ResidualSE)]
    assert blocks and all(b.fused for b in blocks)  # the pt2 export ran a copy unfused
