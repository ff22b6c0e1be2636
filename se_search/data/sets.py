"""Data sets for training candidates: the ``data:`` section of a space, turned into tensors.

``digits`` is the default because it is real data that needs no network: scikit-learn ships
its 1,797 8×8 handwritten digits, so a search runs (and its accuracy means something) on a
machine that is offline. The images are upsampled to ``data.image_size`` and held in memory as
``TensorDataset`` objects; at 32×32 that is about 22 MB, and iterating costs no decoding.

``synthetic`` is torchvision's ``FakeData``, materialised once: plumbing for tests and timing
only, flagged ``meaningful=False`` and warned about. ``cifar10``/``cifar100`` download on first
use under a bounded socket timeout, so an offline machine fails within seconds with the fix in
the message rather than hanging. ``imagefolder`` reads ``data.root/{train,val}/<class>/``.

Every loader is a plain function ``(spec, seed) -> DataBundle`` in :data:`DATASETS`;
:func:`load_data` dispatches through it.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets
from torchvision import transforms as T

from se_search.errors import SESearchError
from se_search.space import DataSpec

__all__ = [
    "DATASETS",
    "DEFAULT_ROOT",
    "DEVICE_DATA_BYTES",
    "DataBundle",
    "TensorLoader",
    "load_data",
    "make_loader",
]

#: Where downloaded data sets go when ``data.root`` is not set.
DEFAULT_ROOT = Path("~/.cache/se_search/data").expanduser()

#: Seconds any one network operation of a download may block before it is abandoned.
DOWNLOAD_TIMEOUT_S = 15.0

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SYNTHETIC_TRAIN, SYNTHETIC_VAL = 512, 128


@dataclass(frozen=True)
class DataBundle:
    """Train and validation sets yielding ``(float32 [3, S, S] normalised, int64 label)``."""

    train: Dataset
    val: Dataset
    num_classes: int
    name: str
    meaningful: bool = True  # False for synthetic data: its accuracy means nothing


def load_data(spec: DataSpec, *, seed: int) -> DataBundle:
    """The data set ``spec.dataset`` names, split and transformed as ``spec`` says.

    Raises:
        SESearchError: data that cannot be found or fetched, naming the key and the fix.
    """
    return DATASETS[spec.dataset](spec, seed)


#: An in-memory data set up to this size is held on the training device (see TensorLoader).
DEVICE_DATA_BYTES = 2 << 30


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    device: torch.device | str | None = None,
) -> DataLoader | TensorLoader:
    """A loader whose batch order depends on ``seed`` alone, not on the global RNG.

    An in-memory data set (a ``TensorDataset``, as ``digits`` and ``synthetic`` are) of at most
    :data:`DEVICE_DATA_BYTES` gets a :class:`TensorLoader` that holds it on ``device`` (the
    CPU when not given); anything else a ``DataLoader``, whose generator also seeds the
    workers, so random augmentations in workers repeat too.
    """
    if isinstance(dataset, TensorDataset) and _nbytes(dataset) <= DEVICE_DATA_BYTES:
        return TensorLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device
        )
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


def _nbytes(dataset: TensorDataset) -> int:
    return sum(t.numel() * t.element_size() for t in dataset.tensors)


class TensorLoader:
    """Batches of a ``TensorDataset`` held on the training device.

    The tensors are copied to ``device`` once; a batch is then an index into them, on the
    device: no per-sample Python, no collation, no host-to-device copy per step (on a GPU,
    a step never waits for the host). The order of each epoch is ``torch.randperm`` from a
    generator seeded with ``seed``, so it depends on ``seed`` alone. Iterating yields
    ``(images, labels)`` like a ``DataLoader`` over the same set, the last batch smaller.
    """

    def __init__(
        self,
        dataset: TensorDataset,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device or "cpu")
        self.tensors = tuple(t.to(self.device) for t in dataset.tensors)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device, non_blocking=True)
        for start in range(0, n, self.batch_size):
            if order is None:
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                index = order[start : start + self.batch_size]
                yield tuple(t[index] for t in self.tensors)


# ----------------------------------------------------------------------------- in memory


def _standardised(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits scaled by the training split's mean and std, so val leaks nothing."""
    mean, std = train.mean(), train.std().clamp_min(1e-6)
    return (train - mean) / std, (val - mean) / std


def _digits(spec: DataSpec, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    size = spec.image_size
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)),
        test_size=spec.val_fraction,
        stratify=digits.target,
        random_state=seed,
    )
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    train_x, val_x = _standardised(images[train_idx], images[val_idx])
    return DataBundle(
        train=TensorDataset(train_x, labels[train_idx]),
        val=TensorDataset(val_x, labels[val_idx]),
        num_classes=10,
        name="digits",
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


# ------------------------------------------------------------------------------- on disk


def _resize(size: int, native: int) -> list[Callable]:
    return [] if size == native else [T.Resize(size)]


def _cifar(cls: type[datasets.CIFAR10], num_classes: int) -> Callable[[DataSpec, int], DataBundle]:
    def load(spec: DataSpec, seed: int) -> DataBundle:
        root = Path(spec.root).expanduser() if spec.root else DEFAULT_ROOT
        size, tail = spec.image_size, [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
        train_tf = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *_resize(size, 32), *tail]
        )
        val_tf = T.Compose([*_resize(size, 32), *tail])

        def both() -> tuple[Dataset, Dataset]:
            train = cls(root, train=True, transform=train_tf)
            return train, cls(root, train=False, transform=val_tf)

        try:
            train, val = both()
        except RuntimeError:  # not there yet: one bounded attempt to download
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                cls(root, train=True, download=True)
                train, val = both()
            except (OSError, RuntimeError) as err:
                raise SESearchError(
                    f"data.dataset: {spec.dataset} is not under {root} and could not be "
                    f"downloaded ({type(err).__name__}: {err}); without internet, put "
                    f"{cls.base_folder} under {root} (data.root), or use dataset: digits"
                ) from None
            finally:
                socket.setdefaulttimeout(previous)
        return DataBundle(train=train, val=val, num_classes=num_classes, name=spec.dataset)

    return load


def _imagefolder(spec: DataSpec, seed: int) -> DataBundle:
    layout = "train/<class>/<image> and val/<class>/<image>, the same classes in both"
    if spec.root is None:
        raise SESearchError(f"data.root: imagefolder needs data.root, a directory of {layout}")
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
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        val = datasets.ImageFolder(str(root / "val"), transform=val_tf)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise SESearchError(f"data.root: {root}: {err}; data.root must hold {layout}") from None
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))
        raise SESearchError(
            f"data.root: {root}: train/ and val/ hold different classes (only in one: "
            f"{', '.join(only)}); give both splits the same class folders"
        )
    return DataBundle(train=train, val=val, num_classes=len(train.classes), name="imagefolder")


#: Loaders by ``data.dataset`` name; each is ``(spec, seed) -> DataBundle``.
DATASETS: dict[str, Callable[[DataSpec, int], DataBundle]] = {
    "digits": _digits,
    "synthetic": _synthetic,
    "cifar10": _cifar(datasets.CIFAR10, 10),
    "cifar100": _cifar(datasets.CIFAR100, 100),
    "imagefolder": _imagefolder,
}
