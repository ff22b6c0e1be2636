"""Data sets for training candidates: the ``data:`` section of a space, turned into splits.

``digits`` is the default because it is real data that needs no network: scikit-learn ships
its 1,797 8×8 handwritten digits, so a search runs (and its accuracy means something) on a
machine that is offline; it has no official test set. The MNIST family (``fashion-mnist``,
``mnist``, ``kmnist``: :mod:`~se_search.data.idx`) is read from its IDX files, offline first
(Debian's ``dataset-fashion-mnist``); ``cifar10``/``cifar100`` download on first use under a
bounded socket timeout, so an offline machine fails within seconds with the fix in the
message. Each of these is held in memory as tensors, its batches preprocessed and augmented
on the device (:class:`~se_search.data.batches.BatchPipeline`). ``imagefolder`` reads
``data.root/{train,val}/<class>/`` (and ``test/``, when there is one) through PIL.
``synthetic`` is torchvision's ``FakeData``, materialised once: plumbing for tests and timing
only, flagged ``meaningful=False`` and warned about.

Where a data set has an official test set, the validation split is held out of its training
set (``data.val_fraction``, stratified, fixed by ``search.seed``) and the test set is kept
apart: no search, screen or budget choice sees it; ``verify --split test`` scores what was
already chosen on it.

Every loader is a plain function ``(spec, seed) -> DataBundle`` in :data:`DATASETS`;
:func:`load_data` dispatches through it.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets
from torchvision import transforms as T

from se_search.data.batches import BatchPipeline
from se_search.data.idx import IDX_DATASETS, load_idx_dataset
from se_search.errors import SESearchError
from se_search.space.specs import AugmentSpec, DataSpec

__all__ = ["AUGMENT", "DATASETS", "DEFAULT_ROOT", "DataBundle", "load_data"]

#: Where downloaded data sets go when ``data.root`` is not set.
DEFAULT_ROOT = Path("~/.cache/se_search/data").expanduser()

#: Seconds any one network operation of a download may block before it is abandoned.
DOWNLOAD_TIMEOUT_S = 15.0

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SYNTHETIC_TRAIN, SYNTHETIC_VAL = 512, 128

#: Each data set's training augmentation when ``data.augment`` is not set: the usual recipes
#: (He et al. 2016 for CIFAR; a flip is wrong for digits and letters).
AUGMENT: dict[str, AugmentSpec] = {
    "digits": AugmentSpec(),
    "fashion-mnist": AugmentSpec(crop_padding=2, flip=True),
    "mnist": AugmentSpec(crop_padding=2),
    "kmnist": AugmentSpec(crop_padding=2),
    "cifar10": AugmentSpec(crop_padding=4, flip=True),
    "cifar100": AugmentSpec(crop_padding=4, flip=True),
    "synthetic": AugmentSpec(),
}


@dataclass(frozen=True)
class DataBundle:
    """Train and validation splits (and the official test split, where there is one) yielding
    ``(images, label)``; in-memory splits hold stored images that ``pipeline`` turns into
    normalised float ``[3, S, S]`` batches, augmented for training."""

    train: Dataset
    val: Dataset
    num_classes: int
    name: str
    meaningful: bool = True  # False for synthetic data: its accuracy means nothing
    test: Dataset | None = None  # never seen by a search; verify --split test scores on it
    pipeline: BatchPipeline | None = None


def load_data(spec: DataSpec, *, seed: int) -> DataBundle:
    """The data set ``spec.dataset`` names, split and transformed as ``spec`` says.

    Raises:
        SESearchError: data that cannot be found or fetched, naming the key and the fix.
    """
    return DATASETS[spec.dataset](spec, seed)


# ---------------------------------------------------------------------------------- splits


def _split(labels: torch.Tensor, spec: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation splits: ``val_fraction`` held out, stratified
    by class, then (``train_size``) a stratified subset of the rest; fixed by ``seed``."""
    from sklearn.model_selection import train_test_split

    y = labels.numpy()
    train, val = train_test_split(
        np.arange(len(y)), test_size=spec.val_fraction, stratify=y, random_state=seed
    )
    if spec.train_size is not None and spec.train_size < len(train):
        train, _ = train_test_split(
            train, train_size=spec.train_size, stratify=y[train], random_state=seed
        )
    return torch.from_numpy(train), torch.from_numpy(val)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` ([N, C, H, W]) at ``size`` x ``size`` (bilinear), in their own dtype."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else out


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``images / 255`` (uint8 [N, C, H, W])."""
    x = images.double().div(255).transpose(0, 1).flatten(1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-6).tolist())


def _in_memory(
    name: str,
    spec: DataSpec,
    seed: int,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
) -> DataBundle:
    """A bundle of uint8 images ([N, C, H, W], the official training set) and their labels:
    resized to ``image_size``, split (:func:`_split`), normalised by the training split's
    statistics (so validation and test leak nothing), augmented as ``data.augment`` says."""
    images = _resized(images, spec.image_size)
    train, val = _split(labels, spec, seed)
    mean, std = _channel_stats(images[train])
    augment = spec.augment or AUGMENT[name]
    pipeline = BatchPipeline(
        mean=mean, std=std, crop_padding=augment.crop_padding, flip=augment.flip
    )
    held_out = None
    if test is not None:
        held_out = TensorDataset(_resized(test[0], spec.image_size), test[1].long())
    return DataBundle(
        train=TensorDataset(images[train], labels[train].long()),
        val=TensorDataset(images[val], labels[val].long()),
        num_classes=num_classes,
        name=name,
        test=held_out,
        pipeline=pipeline,
    )


# ----------------------------------------------------------------------------- in memory


def _standardised(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits scaled by the training split's mean and std, so val leaks nothing."""
    mean, std = train.mean(), train.std().clamp_min(1e-6)
    return (train - mean) / std, (val - mean) / std


def _digits(spec: DataSpec, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    size = spec.image_size
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    train_idx, val_idx = _split(labels, spec, seed)
    train_x, val_x = _standardised(images[train_idx], images[val_idx])
    augment = spec.augment or AUGMENT["digits"]
    return DataBundle(
        train=TensorDataset(train_x, labels[train_idx]),
        val=TensorDataset(val_x, labels[val_idx]),
        num_classes=10,
        name="digits",
        pipeline=BatchPipeline(crop_padding=augment.crop_padding, flip=augment.flip),
    )


def _synthetic(spec: DataSpec, seed: int) -> DataBundle:
    warnings.warn(
        "data.dataset: synthetic is random noise for testing the plumbing; its accuracy means "
        "nothing; use digits or a real data set",
        UserWarning,
        stacklevel=3,
    )
    shape = (3, spec.image_size, spec.image_size)
    offset = seed * (SYNTHETIC_TRAIN + SYNTHETIC_VAL)  # disjoint image seeds for the splits

    def materialise(size: int, random_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        fake = datasets.FakeData(
            size, shape, num_classes=10, transform=T.ToTensor(), random_offset=random_offset
        )
        images, labels = zip(*(fake[i] for i in range(size)))
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    train_x, train_y = materialise(SYNTHETIC_TRAIN, offset)
    val_x, val_y = materialise(SYNTHETIC_VAL, offset + SYNTHETIC_TRAIN)
    train_x, val_x = _standardised(train_x, val_x)
    return DataBundle(
        train=TensorDataset(train_x, train_y),
        val=TensorDataset(val_x, val_y),
        num_classes=10,
        name="synthetic",
        meaningful=False,
    )


def _mnist_family(name: str) -> Callable[[DataSpec, int], DataBundle]:
    def load(spec: DataSpec, seed: int) -> DataBundle:
        found = load_idx_dataset(
            name, root=spec.root, cache=DEFAULT_ROOT, download_timeout_s=DOWNLOAD_TIMEOUT_S
        )
        return _in_memory(
            name, spec, seed,
            images=found.train_images.unsqueeze(1), labels=found.train_labels,
            test=(found.test_images.unsqueeze(1), found.test_labels),
            num_classes=len(found.classes),
        )  # fmt: skip

    return load


# ------------------------------------------------------------------------------- on disk


def _cifar(cls: type[datasets.CIFAR10], num_classes: int) -> Callable[[DataSpec, int], DataBundle]:
    def load(spec: DataSpec, seed: int) -> DataBundle:
        root = Path(spec.root).expanduser() if spec.root else DEFAULT_ROOT

        def both() -> tuple[datasets.CIFAR10, datasets.CIFAR10]:
            return cls(root, train=True), cls(root, train=False)

        try:
            train, test = both()
        except RuntimeError:  # not there yet: one bounded attempt to download (into root)
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                cls(root, train=True, download=True)
                train, test = both()
            except (OSError, RuntimeError) as err:
                raise SESearchError(
                    f"data.dataset: {spec.dataset} is not under {root} and could not be "
                    f"downloaded ({type(err).__name__}: {err}); without internet, put "
                    f"{cls.base_folder} under {root} (data.root), or use dataset: digits "
                    "or fashion-mnist"
                ) from None
            finally:
                socket.setdefaulttimeout(previous)

        def tensors(split: datasets.CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
            return images, torch.tensor(split.targets, dtype=torch.long)

        images, labels = tensors(train)
        return _in_memory(
            spec.dataset, spec, seed, images=images, labels=labels, test=tensors(test),
            num_classes=num_classes,
        )  # fmt: skip

    return load


def _imagefolder(spec: DataSpec, seed: int) -> DataBundle:
    layout = "train/<class>/<image> and val/<class>/<image>, the same classes in both"
    if spec.root is None:
        raise SESearchError(f"data.root: imagefolder needs data.root, a directory of {layout}")
    if spec.augment is not None or spec.train_size is not None:
        key = "data.augment" if spec.augment is not None else "data.train_size"
        raise SESearchError(
            f"{key}: applies to in-memory data sets; an image folder trains on all of train/ "
            "with a random resized crop and flip: remove the key"
        )
    root = Path(spec.root).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise SESearchError(
                f"data.root: {root / split} is not a directory; data.root must hold {layout}"
            )
    size = spec.image_size
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *tail])
    val_tf = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), *tail])
    folders = ["train", "val", *(["test"] if (root / "test").is_dir() else [])]
    try:
        splits = {
            name: datasets.ImageFolder(str(root / name), transform=train_tf if name == "train"
                                       else val_tf)
            for name in folders
        }  # fmt: skip
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise SESearchError(f"data.root: {root}: {err}; data.root must hold {layout}") from None
    train = splits["train"]
    for name, split in splits.items():
        if split.classes != train.classes:
            only = sorted(set(train.classes) ^ set(split.classes))
            raise SESearchError(
                f"data.root: {root}: train/ and {name}/ hold different classes (only in one: "
                f"{', '.join(only)}); give every split the same class folders"
            )
    return DataBundle(
        train=train, val=splits["val"], num_classes=len(train.classes), name="imagefolder",
        test=splits.get("test"),
    )  # fmt: skip


#: Loaders by ``data.dataset`` name; each is ``(spec, seed) -> DataBundle``.
DATASETS: dict[str, Callable[[DataSpec, int], DataBundle]] = {
    "digits": _digits,
    **{name: _mnist_family(name) for name in IDX_DATASETS},
    "cifar10": _cifar(datasets.CIFAR10, 10),
    "cifar100": _cifar(datasets.CIFAR100, 100),
    "imagefolder": _imagefolder,
    "synthetic": _synthetic,
}
