"""From stored images to a network's input, a whole batch at a time, on the training device.

In-memory data sets (digits, the MNIST family, CIFAR) keep their images as one tensor (uint8
where the source is) and a :class:`BatchPipeline` turns each batch into normalised float
images with the backbone's 3 channels, applying the training split's augmentation with tensor
ops on the whole batch: a random crop after zero padding and a random horizontal flip, each
image drawing its own offsets and flip from the loader's seeded generator, so the draws
depend on the seed alone. No per-image Python and no PIL in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BatchPipeline", "random_crop", "random_flip"]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` ([N, C, H, W]) cropped back to H x W at a random offset after
    ``padding`` zeros on every side (the CIFAR recipe of He et al. 2016)."""
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    offsets = offsets.to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # [N, W]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # [N, H, W, C] gathered per image, back to [N, C, H, W]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(
        0, 3, 1, 2
    )


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``images`` flipped left to right with probability ½."""
    flip = torch.rand(len(images), generator=generator).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True, kw_only=True)
class BatchPipeline:
    """What a batch of stored images goes through: for the training split, cropped (after
    zero padding, as torchvision's ``RandomCrop`` pads) and flipped; then scaled and
    normalised (uint8 images: ``(x / 255 - mean) / std`` per channel; float images are
    stored normalised) and repeated to ``channels`` when grey."""

    mean: tuple[float, ...] = ()  # per stored channel, of x / 255; () for float images
    std: tuple[float, ...] = ()
    channels: int = 3
    crop_padding: int = 0
    flip: bool = False

    def __call__(
        self, images: torch.Tensor, *, augment: bool, generator: torch.Generator
    ) -> torch.Tensor:
        if augment:  # on the stored images: fewer bytes, and zero padding is black
            images = random_crop(images, self.crop_padding, generator)
            if self.flip:
                images = random_flip(images, generator)
        if images.dtype == torch.uint8:
            mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
            images = (images.float().div_(255) - mean) / std
        if images.shape[1] != self.channels:
            images = images.expand(-1, self.channels, -1, -1)
        return images.contiguous()

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.flip
