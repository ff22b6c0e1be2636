"""Data loading on real data: digits, synthetic, offline CIFAR, an image folder, loaders."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import get_args

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from se_search.data.loaders import make_loader
from se_search.data.sets import DATASETS, DataBundle, load_data
from se_search.errors import SESearchError
from se_search.space import DataSpec

DIGITS = 1797


def _tensors(bundle: DataBundle) -> tuple[torch.Tensor, ...]:
    assert isinstance(bundle.train, TensorDataset) and isinstance(bundle.val, TensorDataset)
    return (*bundle.train.tensors, *bundle.val.tensors)


def test_registry_covers_every_dataset_a_space_accepts() -> None:
    assert set(DATASETS) == set(get_args(DataSpec.model_fields["dataset"].annotation))


@pytest.mark.parametrize("size", [32, 16])
def test_digits_shapes_classes_and_split_sizes(size: int) -> None:
    bundle = load_data(DataSpec(dataset="digits", image_size=size), seed=0)
    assert bundle.name == "digits" and bundle.num_classes == 10 and bundle.meaningful
    image, label = bundle.train[0]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert label.dtype == torch.int64
    train_x, train_y, val_x, val_y = _tensors(bundle)
    assert len(train_y) + len(val_y) == DIGITS
    assert abs(len(val_y) - 0.2 * DIGITS) <= 1
    assert set(train_y.tolist()) == set(val_y.tolist()) == set(range(10))
    assert val_x.shape[1:] == train_x.shape[1:]
    assert torch.equal(train_x[:, 0], train_x[:, 1]) and torch.equal(train_x[:, 0], train_x[:, 2])


def test_digits_val_fraction_is_honoured() -> None:
    bundle = load_data(DataSpec(dataset="digits", val_fraction=0.5), seed=0)
    assert abs(len(bundle.val) - 0.5 * DIGITS) <= 1


def test_digits_split_is_stratified() -> None:
    _, train_y, _, val_y = _tensors(load_data(DataSpec(dataset="digits"), seed=3))
    overall = torch.bincount(torch.cat([train_y, val_y]), minlength=10) / DIGITS
    in_val = torch.bincount(val_y, minlength=10) / len(val_y)
    assert (in_val - overall).abs().max() < 0.02


def test_digits_training_split_is_normalised() -> None:
    train_x, _, val_x, _ = _tensors(load_data(DataSpec(dataset="digits"), seed=0))
    assert abs(train_x.mean().item()) < 1e-4
    assert abs(train_x.std().item() - 1) < 1e-4
    assert abs(val_x.mean().item()) < 0.1  # same statistics, close but not exact on val


def test_digits_are_deterministic_per_seed() -> None:
    spec = DataSpec(dataset="digits", image_size=16)
    first, again = _tensors(load_data(spec, seed=0)), _tensors(load_data(spec, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = _tensors(load_data(spec, seed=1))
    assert not torch.equal(first[3], other[3])  # another seed: other val labels or order
    assert not torch.equal(first[2], other[2])


def test_synthetic_warns_and_is_not_meaningful() -> None:
    with pytest.warns(UserWarning, match="means nothing"):
        bundle = load_data(DataSpec(dataset="synthetic", image_size=16), seed=0)
    assert not bundle.meaningful and bundle.num_classes == 10 and bundle.name == "synthetic"
    train_x, train_y, val_x, val_y = _tensors(bundle)
    assert train_x.shape == (512, 3, 16, 16) and val_x.shape == (128, 3, 16, 16)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    labels = torch.cat([train_y, val_y])
    assert int(labels.min()) >= 0 and int(labels.max()) <= 9
    assert not torch.equal(train_x[:128], val_x)  # distinct offsets: distinct images


def _online(host: str = "www.cs.toronto.edu") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_offline_fails_fast_with_the_fix(dataset: str, tmp_path: Path) -> None:
    if _online():
        pytest.skip("this machine has internet; the offline error cannot be provoked")
    root = tmp_path / "empty"
    before = socket.getdefaulttimeout()
    try:
        load_data(DataSpec(dataset=dataset, root=str(root)), seed=0)
    except SESearchError as err:
        message = str(err)
    else:  # pragma: no cover - only with a network the probe above missed
        pytest.skip("the data set downloaded; the offline error cannot be provoked")
    assert "data.dataset" in message and "data.root" in message
    assert str(root) in message and "digits" in message
    assert socket.getdefaulttimeout() == before  # the bounded timeout is restored


def _image_tree(root: Path, splits: dict[str, list[str]], per_class: int = 3) -> Path:
    for split, classes in splits.items():
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (40, 40), (40 * i, 20 * j, 200)).save(folder / f"{j}.png")
    return root


def test_imagefolder_loads_classes_and_shapes(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs", {"train": ["cat", "dog"], "val": ["cat", "dog"]})
    bundle = load_data(DataSpec(dataset="imagefolder", root=str(root), image_size=24), seed=0)
    assert bundle.num_classes == 2 and bundle.name == "imagefolder" and bundle.meaningful
    assert len(bundle.train) == len(bundle.val) == 6
    for split in (bundle.train, bundle.val):
        image, label = split[5]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert label == 1


def test_imagefolder_without_val_names_data_root(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs", {"train": ["cat", "dog"]})
    with pytest.raises(SESearchError, match="data.root") as err:
        load_data(DataSpec(dataset="imagefolder", root=str(root)), seed=0)
    assert str(root / "val") in str(err.value) and "train/<class>" in str(err.value)


@pytest.mark.parametrize("root", [None, "missing"])
def test_imagefolder_without_root_names_data_root(root: str | None, tmp_path: Path) -> None:
    path = None if root is None else str(tmp_path / root)
    with pytest.raises(SESearchError, match="data.root"):
        load_data(DataSpec(dataset="imagefolder", root=path), seed=0)


def test_imagefolder_with_mismatched_classes_raises(tmp_path: Path) -> None:
    root = _image_tree(tmp_path / "imgs", {"train": ["cat", "dog"], "val": ["cat", "eel"]})
    with pytest.raises(SESearchError, match="different classes") as err:
        load_data(DataSpec(dataset="imagefolder", root=str(root)), seed=0)
    assert "dog" in str(err.value) and "eel" in str(err.value)


def test_imagefolder_without_class_folders_raises(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(SESearchError, match="data.root"):
        load_data(DataSpec(dataset="imagefolder", root=str(tmp_path)), seed=0)


def _label_order(dataset: TensorDataset, *, seed: int, shuffle: bool = True) -> torch.Tensor:
    loader = make_loader(dataset, batch_size=64, shuffle=shuffle, seed=seed)
    return torch.cat([labels for _, labels in loader])


def test_make_loader_order_depends_on_the_seed_alone() -> None:
    train = load_data(DataSpec(dataset="digits", image_size=8), seed=0).train
    first = _label_order(train, seed=7)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(first, _label_order(train, seed=7))
    assert not torch.equal(first, _label_order(train, seed=8))
    assert len(first) == len(train)  # drop_last=False keeps the short last batch
    assert torch.equal(_label_order(train, seed=7, shuffle=False), train.tensors[1])


def test_in_memory_sets_get_a_tensor_loader_that_yields_every_sample_once() -> None:
    from se_search.data.loaders import TensorLoader

    images = torch.arange(10 * 3 * 2 * 2, dtype=torch.float32).view(10, 3, 2, 2)
    dataset = TensorDataset(images, torch.arange(10))
    loader = make_loader(dataset, batch_size=4, shuffle=True, seed=0, device="cpu")
    assert isinstance(loader, TensorLoader) and len(loader) == 3
    for _ in range(2):  # each epoch a new order, each a permutation of the whole set
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [4, 4, 2]
        labels = torch.cat([b for _, b in batches])
        assert sorted(labels.tolist()) == list(range(10))
        assert torch.equal(torch.cat([x for x, _ in batches]), images[labels])  # pairs kept
    epochs = [torch.cat([b for _, b in loader]) for _ in range(3)]
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])


def test_a_data_set_that_is_not_in_memory_keeps_a_dataloader() -> None:
    from torch.utils.data import DataLoader, Subset

    dataset = Subset(TensorDataset(torch.zeros(6, 1), torch.arange(6)), range(6))
    loader = make_loader(dataset, batch_size=4, shuffle=False, seed=0)
    assert isinstance(loader, DataLoader)
    assert torch.cat([b for _, b in loader]).tolist() == list(range(6))


FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (.ci/run does)"
)


@needs_fashion
def test_fashion_mnist_holds_out_validation_from_train_and_keeps_the_test_set_apart() -> None:
    from se_search.data.idx import load_idx_dataset

    bundle = load_data(DataSpec(dataset="fashion-mnist", image_size=28), seed=0)
    assert bundle.name == "fashion-mnist" and bundle.num_classes == 10 and bundle.meaningful
    train_x, train_y, val_x, val_y = _tensors(bundle)
    assert (len(train_y), len(val_y), len(bundle.test)) == (48_000, 12_000, 10_000)
    assert train_x.dtype == torch.uint8 and train_x.shape[1:] == (1, 28, 28)
    assert torch.bincount(val_y).tolist() == [1_200] * 10  # stratified
    raw = load_idx_dataset("fashion-mnist", root=None, cache=Path("/nonexistent"),
                           download_timeout_s=1)  # fmt: skip
    test_x, test_y = bundle.test.tensors
    assert torch.equal(test_x[:, 0], raw.test_images) and torch.equal(test_y, raw.test_labels)
    # train and val are the official training set, split: every image once
    weights = torch.rand(784, dtype=torch.double)  # an image's fingerprint
    split = torch.cat([train_x, val_x]).flatten(1).double() @ weights
    official = raw.train_images.flatten(1).double() @ weights
    assert torch.equal(split.sort().values, official.sort().values)
    # normalised by the training split's statistics; grey repeated to the backbone's channels
    loader = make_loader(bundle.train, batch_size=4096, shuffle=False, seed=0,
                         pipeline=bundle.pipeline)  # fmt: skip
    images, _ = next(iter(loader))
    assert images.shape == (4096, 3, 28, 28) and abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1) < 0.05


@needs_fashion
def test_fashion_mnist_train_size_and_image_size_and_seed() -> None:
    spec = DataSpec(dataset="fashion-mnist", image_size=32, train_size=6_000)
    bundle = load_data(spec, seed=0)
    train_x, train_y, val_x, _ = _tensors(bundle)
    assert torch.bincount(train_y).tolist() == [600] * 10
    assert train_x.shape[1:] == val_x.shape[1:] == bundle.test.tensors[0].shape[1:] == (1, 32, 32)
    assert bundle.pipeline.crop_padding == 2 and bundle.pipeline.flip  # the data set's default
    other = load_data(spec, seed=1)
    assert not torch.equal(other.val.tensors[1], bundle.val.tensors[1])  # another split
    again = load_data(spec, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(again), _tensors(bundle)))
    plain = load_data(DataSpec(**{**spec.model_dump(), "augment": {"crop_padding": 0}}), seed=0)
    assert plain.pipeline.crop_padding == 0 and not plain.pipeline.flip


def test_a_root_without_the_mnist_files_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SESearchError, match=str(tmp_path)):
        load_data(DataSpec(dataset="fashion-mnist", root=str(tmp_path)), seed=0)


def test_imagefolder_with_a_test_folder_keeps_it_as_the_test_split(tmp_path: Path) -> None:
    classes = ["cat", "dog"]
    root = _image_tree(tmp_path / "imgs", {s: classes for s in ("train", "val", "test")})
    bundle = load_data(DataSpec(dataset="imagefolder", root=str(root), image_size=24), seed=0)
    assert bundle.test is not None and len(bundle.test) == 6
    assert bundle.test[0][0].shape == (3, 24, 24)
    without = _image_tree(tmp_path / "two", {s: classes for s in ("train", "val")})
    assert load_data(DataSpec(dataset="imagefolder", root=str(without)), seed=0).test is None
