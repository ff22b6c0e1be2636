"""Batched preprocessing and augmentation: crops and flips on whole batches, each image its own
draw, the draws a function of the loader's seed alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from se_search.data.batches import BatchPipeline, random_crop, random_flip
from se_search.data.loaders import AUGMENT_SEED, TensorLoader


def _images(n: int = 16, channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randint(1, 256, (n, channels, size, size), dtype=torch.uint8)


def test_random_crop_takes_each_images_window_at_its_drawn_offset() -> None:
    images, padding = _images(n=32, channels=3), 2
    cropped = random_crop(images, padding, torch.Generator().manual_seed(5))
    offsets = torch.randint(
        0, 2 * padding + 1, (2, 32), generator=torch.Generator().manual_seed(5)
    )
    padded = F.pad(images, (padding,) * 4)
    for i, (dy, dx) in enumerate(offsets.T.tolist()):
        assert torch.equal(cropped[i], padded[i, :, dy : dy + 8, dx : dx + 8])
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    assert len({tuple(o) for o in offsets.T.tolist()}) > 5  # images draw their own offsets
    assert (cropped == 0).any()  # some padding shows: pixels were all >= 1
    assert torch.equal(random_crop(images, 0, torch.Generator()), images)


def test_random_flip_flips_about_half_each_image_by_its_own_draw() -> None:
    images = _images(n=200)
    flipped = random_flip(images, torch.Generator().manual_seed(1))
    same = [torch.equal(a, b) for a, b in zip(flipped, images)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 60 < sum(mirrored) < 140
    again = random_flip(images, torch.Generator().manual_seed(1))
    assert torch.equal(flipped, again)


def test_the_pipeline_normalises_and_gives_three_channels() -> None:
    images = _images(n=64)
    pipeline = BatchPipeline(mean=(0.5,), std=(0.25,), crop_padding=2, flip=True)
    out = pipeline(images, augment=False, generator=torch.Generator())
    expected = (images.float() / 255 - 0.5) / 0.25
    assert out.shape == (64, 3, 8, 8) and out.dtype == torch.float32 and out.is_contiguous()
    assert all(torch.allclose(out[:, c : c + 1], expected) for c in range(3))
    augmented = pipeline(images, augment=True, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(augmented, out)  # the training split is augmented
    black = (0 - 0.5) / 0.25  # padding is black, before normalisation
    assert torch.isclose(augmented, torch.tensor(black)).any()


def test_float_images_are_kept_as_stored_unless_augmented() -> None:
    images = torch.randn(10, 3, 8, 8)
    out = BatchPipeline()(images, augment=False, generator=torch.Generator())
    assert torch.equal(out, images)


def _batches(loader: TensorLoader) -> list[torch.Tensor]:
    return [x for x, _ in loader]


def test_a_loaders_augmentation_depends_on_its_seed_alone() -> None:
    data = TensorDataset(_images(n=40), torch.arange(40))
    pipeline = BatchPipeline(mean=(0.5,), std=(0.2,), crop_padding=2, flip=True)

    def loader(seed: int, augment: bool = True) -> TensorLoader:
        return TensorLoader(
            data, batch_size=16, shuffle=True, seed=seed, pipeline=pipeline, augment=augment
        )

    torch.manual_seed(123)  # the global RNG plays no part
    first = _batches(loader(0))
    torch.manual_seed(456)
    again = _batches(loader(0))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, _batches(loader(1))))
    plain = _batches(loader(0, augment=False))  # the same order, no augmentation
    assert not all(torch.equal(a, b) for a, b in zip(first, plain))
    assert [y.tolist() for _, y in loader(0)] == [y.tolist() for _, y in loader(0, False)]
    assert AUGMENT_SEED > 2**31  # a stream apart from any batch-order seed
