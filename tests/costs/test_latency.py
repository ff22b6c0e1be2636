"""A whole network's measured latency and the conditions recorded with it."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import get_model

from se_search.costs.latency import measure_latency
from se_search.costs.timing import resolve_device
from se_search.errors import SESearchError
from se_search.models.arch import Architecture
from se_search.models.backbones import get_backbone
from se_search.models.surgery import insert_se


@pytest.fixture
def small_model() -> torch.nn.Module:
    model = get_model("resnet18", num_classes=10)
    sites = [s.name for s in get_backbone("resnet18").list_sites(model)]
    return insert_se(model, Architecture.uniform(sites, "standard:4"), backbone="resnet18")


def test_latency_record(small_model: torch.nn.Module) -> None:
    threads = torch.get_num_threads()
    result = measure_latency(
        small_model, image_size=32, batch_size=2, device="cpu", warmup=1, repeats=5, threads=1
    )
    assert result.median_ms > 0 and result.iqr_ms >= 0
    assert result.device == "cpu" and result.device_name
    assert result.threads == 1 and torch.get_num_threads() == threads
    assert result.batch_size == 2 and result.input_size == (3, 32, 32)
    assert result.repeats == 5 and result.torch_version == torch.__version__
    assert small_model.training  # measured on a copy in eval mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_latency_without_cuda_says_what_to_use() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SESearchError, match="latency.device: auto or cpu"):
        resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_latency(small_model: torch.nn.Module) -> None:
    result = measure_latency(small_model, image_size=32, device="cuda", warmup=2, repeats=5)
    assert result.device.startswith("cuda") and result.median_ms > 0
    assert result.device_name == torch.cuda.get_device_name()
