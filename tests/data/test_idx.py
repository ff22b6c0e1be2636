"""IDX files: reading, validating, finding (flat and torchvision layouts), loading, offline."""

from __future__ import annotations

import dataclasses
import gzip
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from se_search.cli import app
from se_search.data import idx
from se_search.data.idx import (
    IDX_DATASETS,
    IDX_FILES,
    IdxNotFoundError,
    find_idx_files,
    load_idx_dataset,
    read_idx,
)
from se_search.errors import SESearchError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason=f"{DEBIAN} is absent: apt-get install dataset-fashion-mnist to run this test",
)


def _idx_bytes(array: np.ndarray, *, code: int = 0x08) -> bytes:
    """An IDX file's bytes: magic (0, 0, type, ndim), big-endian sizes, then the payload."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _write_set(
    folder: Path, *, n_train: int = 6, n_test: int = 4, gz: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four files of a tiny 28x28, 10-class data set in ``folder``; their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        _write(folder / (IDX_FILES[key] + (".gz" if gz else "")), array, gz=gz)
    return arrays


def _no_debian(monkeypatch: pytest.MonkeyPatch, name: str, tmp_path: Path) -> None:
    """Point ``name``'s Debian folder at a path that does not exist."""
    info = dataclasses.replace(IDX_DATASETS[name], debian_dir=tmp_path / "no-debian")
    monkeypatch.setitem(IDX_DATASETS, name, info)


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)], ids=["1d", "3d", "4d"])
def test_read_idx_round_trip(tmp_path: Path, gz: bool, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = _write(tmp_path / ("x.idx.gz" if gz else "x.idx"), array, gz=gz)
    tensor = read_idx(path)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == shape
    assert np.array_equal(tensor.numpy(), array)
    tensor[...] = 0  # writable, and owned: not a view of a read-only buffer


def _truncated(path: Path) -> Path:
    data = _idx_bytes(np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(data[: 16 + 1000])
    return path


def _trailing(path: Path) -> Path:
    path.write_bytes(_idx_bytes(np.zeros(5, np.uint8)) + b"garbage")
    return path


def _bad_magic(path: Path) -> Path:
    path.write_bytes(b"\x01\x02" + _idx_bytes(np.zeros(5, np.uint8))[2:])
    return path


def _bad_type(path: Path) -> Path:
    path.write_bytes(_idx_bytes(np.zeros(5, np.uint8), code=0x0D))
    return path


def _bad_ndim(path: Path) -> Path:
    path.write_bytes(bytes([0, 0, 8, 0]))
    return path


def _short_header(path: Path) -> Path:
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    return path


def _corrupt_gzip(path: Path) -> Path:
    data = bytearray(gzip.compress(_idx_bytes(np.arange(200, dtype=np.uint8))))
    data[20:40] = b"\xff" * 20
    path.write_bytes(bytes(data))
    return path


def _cut_gzip(path: Path) -> Path:
    path.write_bytes(gzip.compress(_idx_bytes(np.arange(200, dtype=np.uint8)))[:-30])
    return path


def _not_gzip(path: Path) -> Path:
    path.write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    return path


def _gzip_without_suffix(path: Path) -> Path:
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(5, np.uint8))))
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("x-idx3-ubyte", _truncated, "truncated: its header declares 10x28x28 = 7,840 bytes"),
        ("x-idx1-ubyte", _trailing, "7 bytes of trailing garbage"),
        ("x-idx1-ubyte", _bad_magic, "does not start with two zero bytes"),
        ("x-idx1-ubyte", _bad_type, "type 0x0D (float32)"),
        ("x-idx1-ubyte", _bad_ndim, "declares 0 dimensions"),
        ("x-idx3-ubyte", _short_header, "header of 3 dimensions needs 16 bytes"),
        ("x-idx1-ubyte.gz", _corrupt_gzip, "not a valid gzip stream"),
        ("x-idx1-ubyte.gz", _cut_gzip, "not a valid gzip stream"),
        ("x-idx1-ubyte.gz", _not_gzip, "not a valid gzip stream"),
        ("x-idx1-ubyte", _gzip_without_suffix, "it is gzip data: give it a .gz suffix"),
        ("x-idx1-ubyte", _directory, "is a directory"),
    ],
)
def test_read_idx_refuses_a_bad_file_naming_it(tmp_path: Path, name, make, says) -> None:
    path = make(tmp_path / name)
    with pytest.raises(SESearchError) as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message and says in message
    assert "data.root" in message  # the fix


def test_read_idx_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent-idx1-ubyte"
    with pytest.raises(SESearchError, match="cannot be read") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


# ----------------------------------------------------------------------------- finding


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
@pytest.mark.parametrize("torchvision_layout", [False, True], ids=["flat", "torchvision"])
def test_find_idx_files_in_either_layout(tmp_path: Path, gz: bool, torchvision_layout: bool):
    folder = tmp_path / "FashionMNIST" / "raw" if torchvision_layout else tmp_path
    _write_set(folder, gz=gz)
    found = find_idx_files("fashion-mnist", root=tmp_path, cache=tmp_path / "cache")
    assert set(found) == set(IDX_FILES)
    for key, path in found.items():
        assert path.parent == folder
        assert path.name == IDX_FILES[key] + (".gz" if gz else "")


def test_find_idx_files_prefers_uncompressed(tmp_path: Path) -> None:
    _write_set(tmp_path, gz=True)
    _write_set(tmp_path, gz=False)  # as torchvision leaves a download: both
    found = find_idx_files("mnist", root=str(tmp_path), cache=tmp_path / "cache")
    assert all(not path.name.endswith(".gz") for path in found.values())


def test_root_missing_a_file_fails_without_falling_back(tmp_path: Path) -> None:
    """data.root is used or fails, even though Debian's copy (where installed) would do."""
    _write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    _write_set(tmp_path / "cache" / "FashionMNIST" / "raw")  # a full cache must not be used
    with pytest.raises(SESearchError) as caught:
        find_idx_files("fashion-mnist", root=tmp_path, cache=tmp_path / "cache")
    message = str(caught.value)
    assert not isinstance(caught.value, IdxNotFoundError)  # not a cue to download
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "train-images-idx3-ubyte" not in message.split(";")[0]  # only the missing one
    assert str(tmp_path / "FashionMNIST" / "raw") in message  # both layouts named
    assert "data.root" in message


def test_root_that_does_not_exist_fails(tmp_path: Path) -> None:
    with pytest.raises(SESearchError, match="does not exist") as caught:
        find_idx_files("kmnist", root=tmp_path / "nowhere", cache=tmp_path)
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_root_with_a_directory_in_place_of_a_file_fails(tmp_path: Path) -> None:
    _write_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.unlink()
    bad.mkdir()
    with pytest.raises(SESearchError, match="not a regular file") as caught:
        find_idx_files("mnist", root=tmp_path, cache=tmp_path / "cache")
    assert str(bad) in str(caught.value)


@needs_debian
def test_without_root_debians_copy_is_found(tmp_path: Path) -> None:
    _write_set(tmp_path / "cache" / "FashionMNIST" / "raw")  # Debian's comes first
    found = find_idx_files("fashion-mnist", root=None, cache=tmp_path / "cache")
    assert {path.parent for path in found.values()} == {DEBIAN}


def test_without_root_the_cache_is_searched_after_debian(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_debian(monkeypatch, "kmnist", tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(IdxNotFoundError) as caught:
        find_idx_files("kmnist", root=None, cache=cache)
    assert caught.value.places == (tmp_path / "no-debian", cache)
    assert str(cache) in str(caught.value) and "absent" in str(caught.value)
    _write_set(cache / "KMNIST" / "raw")
    found = find_idx_files("kmnist", root=None, cache=cache)
    assert {path.parent for path in found.values()} == {cache / "KMNIST" / "raw"}


def test_an_unknown_data_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SESearchError, match="fashion-mnist, kmnist, mnist"):
        find_idx_files("emnist", root=None, cache=tmp_path)


def test_the_registry() -> None:
    assert set(IDX_DATASETS) == {"fashion-mnist", "mnist", "kmnist"}
    for info in IDX_DATASETS.values():
        assert info.num_classes == len(info.classes) == 10
        assert info.debian_dir.parts[:4] == ("/", "usr", "share", "datasets")
    fashion = IDX_DATASETS["fashion-mnist"]
    assert fashion.class_name == "FashionMNIST" and fashion.package == "dataset-fashion-mnist"
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[-1] == "Ankle boot"


# ----------------------------------------------------------------------------- loading


def test_load_idx_dataset_from_root(tmp_path: Path) -> None:
    arrays = _write_set(tmp_path / "MNIST" / "raw", gz=True)
    data = load_idx_dataset("mnist", root=tmp_path, cache=tmp_path / "c", download_timeout_s=1)
    assert data.source == tmp_path / "MNIST" / "raw"
    assert data.classes == IDX_DATASETS["mnist"].classes and data.num_classes == 10
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.test_labels.dtype == torch.int64
    for key, array in arrays.items():
        assert np.array_equal(getattr(data, key).numpy(), array)


@needs_debian
def test_the_real_fashion_mnist(tmp_path: Path) -> None:
    start = time.perf_counter()
    data = load_idx_dataset("fashion-mnist", root=None, cache=tmp_path, download_timeout_s=1)
    elapsed = time.perf_counter() - start
    assert data.source == DEBIAN
    assert tuple(data.train_images.shape) == (60_000, 28, 28)
    assert tuple(data.test_images.shape) == (10_000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.bincount().tolist() == [6000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10
    assert data.classes[9] == "Ankle boot"
    assert elapsed < 10, f"reading Fashion-MNIST took {elapsed:.1f} s"


def _refuse_network(monkeypatch: pytest.MonkeyPatch, timeouts: list[float | None]) -> None:
    """Make every name lookup and connection fail, recording the default timeout then."""

    def refuse(*args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise OSError(101, "Network is unreachable (refused by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", ["kmnist", "fashion-mnist"])
def test_offline_download_fails_fast_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _no_debian(monkeypatch, name, tmp_path)
    timeouts: list[float | None] = []
    _refuse_network(monkeypatch, timeouts)
    before = socket.getdefaulttimeout()
    cache = tmp_path / "cache"
    start = time.perf_counter()
    with pytest.raises(SESearchError) as caught:
        load_idx_dataset(name, root=None, cache=cache, download_timeout_s=2.5)
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert timeouts and set(timeouts) == {2.5}  # the download was tried, bounded
    assert socket.getdefaulttimeout() == before  # and the timeout restored
    assert str(tmp_path / "no-debian") in message and str(cache) in message  # places
    assert "could not be downloaded" in message and "RuntimeError" in message
    assert "\n" not in message  # the CLI shows it as one line
    assert "data.root" in message
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message
    else:
        assert "apt-get" not in message


def test_a_download_lands_in_the_cache_and_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download path without a network: a stand-in for torchvision's KMNIST."""
    import torchvision.datasets

    _no_debian(monkeypatch, "kmnist", tmp_path)
    calls: list[tuple[Path, bool, float | None]] = []

    class FakeKMNIST:
        def __init__(self, root: Path, *, train: bool, download: bool) -> None:
            assert download
            calls.append((Path(root), train, socket.getdefaulttimeout()))
            _write_set(Path(root) / "KMNIST" / "raw", gz=True)

    monkeypatch.setattr(torchvision.datasets, "KMNIST", FakeKMNIST)
    cache = tmp_path / "cache"
    data = load_idx_dataset("kmnist", root=None, cache=cache, download_timeout_s=3.0)
    assert calls == [(cache, True, 3.0), (cache, False, 3.0)]
    assert data.source == cache / "KMNIST" / "raw" and len(data.train_images) == 6
    assert data.classes[0] == "o"


def test_root_set_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "_download", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(SESearchError, match="data.root"):
        load_idx_dataset("mnist", root=tmp_path, cache=tmp_path, download_timeout_s=1)


def _replace(folder: Path, key: str, array: np.ndarray) -> Path:
    return _write(folder / IDX_FILES[key], array)


@pytest.mark.parametrize(
    ("key", "array", "says"),
    [
        ("train_labels", np.zeros(5, np.uint8), "holds 5 labels for the 6 images"),
        ("test_labels", np.zeros(5, np.uint8), "holds 5 labels for the 4 images"),
        ("test_labels", np.array([0, 1, 10, 2], np.uint8), "holds label 10"),
        ("train_images", np.zeros((6, 32, 32), np.uint8), "not [N, 28, 28]"),
        ("train_labels", np.zeros((6, 1), np.uint8), "not [N]"),
    ],
)
def test_an_inconsistent_split_is_refused_naming_the_file(
    tmp_path: Path, key: str, array: np.ndarray, says: str
) -> None:
    _write_set(tmp_path)
    path = _replace(tmp_path, key, array)
    with pytest.raises(SESearchError) as caught:
        load_idx_dataset("fashion-mnist", root=tmp_path, cache=tmp_path, download_timeout_s=1)
    message = str(caught.value)
    assert str(path) in message and says in message


def test_run_with_a_truncated_file_in_data_root_exits_2_naming_it(tmp_path: Path) -> None:
    _write_set(tmp_path / "idx")
    broken = tmp_path / "idx" / IDX_FILES["test_images"]
    broken.write_bytes(broken.read_bytes()[:-100])
    result = CliRunner().invoke(app, [
        "run", "--space", "fashion_resnet20", "--set", f"data.root={tmp_path / 'idx'}",
        "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--trials", "1",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich folds long lines
    assert str(broken) in message and "truncated" in message and "data.root" in message
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception)
