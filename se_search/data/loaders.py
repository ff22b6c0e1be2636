"""Batches for training: the order of every epoch depends on a seed alone, and an in-memory
data set is held on the training device and batched by indexing, with no per-image Python
(its preprocessing and augmentation run on whole batches: :mod:`se_search.data.batches`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from se_search.data.batches import BatchPipeline

__all__ = ["AUGMENT_SEED", "DEVICE_DATA_BYTES", "Loader", "TensorLoader", "make_loader"]

#: An in-memory data set up to this size is held on the training device (see TensorLoader).
DEVICE_DATA_BYTES = 2 << 30

#: Added to a loader's seed for its augmentation draws: a stream apart from the batch order.
AUGMENT_SEED = 1 << 32


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    pipeline: BatchPipeline | None = None,
    augment: bool = False,
) -> DataLoader | TensorLoader:
    """A loader whose batch order (and augmentation) depends on ``seed`` alone, not on the
    global RNG.

    An in-memory data set (a ``TensorDataset``, as every data set but ``imagefolder`` is) of
    at most :data:`DEVICE_DATA_BYTES` gets a :class:`TensorLoader` that holds it on ``device``
    (the CPU when not given) and runs ``pipeline`` on each batch (with its augmentation when
    ``augment``); anything else a ``DataLoader``, whose generator also seeds the workers, so
    random augmentations in workers repeat too.
    """
    if isinstance(dataset, TensorDataset) and _nbytes(dataset) <= DEVICE_DATA_BYTES:
        return TensorLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, device=device,
            pipeline=pipeline, augment=augment,
        )  # fmt: skip
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
    """Batches of a ``TensorDataset`` (images, labels) held on the training device.

    The tensors are copied to ``device`` once; a batch is then an index into them, on the
    device: no per-sample Python, no collation, no host-to-device copy per step (on a GPU,
    a step never waits for the host). The order of each epoch is ``torch.randperm`` from a
    generator seeded with ``seed``, and the augmentation draws come from a second generator
    seeded from it, so both depend on ``seed`` alone. ``pipeline`` turns each batch of stored
    images into the network's input (:class:`~se_search.data.batches.BatchPipeline`).
    Iterating yields ``(images, labels)`` like a ``DataLoader`` over the same set, the last
    batch smaller.
    """

    def __init__(
        self,
        dataset: TensorDataset,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str | None = None,
        pipeline: BatchPipeline | None = None,
        augment: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device or "cpu")
        self.tensors = tuple(t.to(self.device) for t in dataset.tensors)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.pipeline, self.augment = pipeline, augment
        self.generator = torch.Generator().manual_seed(seed)
        self.draws = torch.Generator().manual_seed(seed + AUGMENT_SEED)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.tensors[0])
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device, non_blocking=True)
        for start in range(0, n, self.batch_size):
            if order is None:
                batch = tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                index = order[start : start + self.batch_size]
                batch = tuple(t[index] for t in self.tensors)
            images, labels = batch  # the data set's (images, labels)
            if self.pipeline is not None:
                images = self.pipeline(images, augment=self.augment, generator=self.draws)
            yield images, labels


#: What :func:`make_loader` returns: both iterate ``(images, labels)`` batches and have a length.
Loader = DataLoader | TensorLoader
