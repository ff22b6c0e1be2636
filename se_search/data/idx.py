"""The MNIST family (Fashion-MNIST, MNIST, KMNIST) read from its IDX files, offline first.

The four files of each set (``train-images-idx3-ubyte`` and friends, gzipped or not) are looked
for in ``data.root`` when it is set, and only there; otherwise in the folder a Debian package
installs them in (``apt-get install dataset-fashion-mnist``), then in the download cache. Only
when no place has them does torchvision download them into the cache, under a bounded socket
timeout, so an offline machine fails within seconds with the fix in the message.

Files are read straight into uint8 tensors (no PIL, no per-image Python) and validated in full:
a truncated, padded or corrupt file is an error naming the file and the fix, never a silent
misread.
"""

from __future__ import annotations

import gzip
import math
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from se_search.errors import SESearchError

__all__ = [
    "IDX_DATASETS",
    "IDX_FILES",
    "IdxData",
    "IdxDataset",
    "IdxNotFoundError",
    "find_idx_files",
    "load_idx_dataset",
    "read_idx",
]

#: The four files of a data set, by role, as their publishers name them (``.gz`` optional).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

IMAGE_SIZE = 28

#: IDX type codes (the magic number's third byte) and their meaning; se-search reads 0x08.
_TYPE_CODES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

_GZIP_MAGIC = b"\x1f\x8b"

_READ_FIX = (
    "replace it with a good copy (one in the download cache can be deleted, and is downloaded "
    "again), or point data.root at a folder of good IDX files"
)


@dataclass(frozen=True)
class IdxDataset:
    """What se-search knows of one MNIST-family data set.

    ``class_name`` is torchvision's class (``torchvision.datasets.<class_name>``), which also
    names its folder layout ``<root>/<class_name>/raw/``; ``debian_dir`` is where a Debian
    package installs the files, and ``package`` that package, when one exists.
    """

    class_name: str
    debian_dir: Path
    classes: tuple[str, ...]
    package: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


#: The MNIST-family data sets by their se-search name. Only Fashion-MNIST has a Debian package
#: (``apt-cache search mnist``); the other two folders are where an analogous one would go.
IDX_DATASETS: dict[str, IdxDataset] = {
    "fashion-mnist": IdxDataset(
        class_name="FashionMNIST",
        debian_dir=Path("/usr/share/datasets/fashion-mnist"),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        package="dataset-fashion-mnist",
    ),
    "mnist": IdxDataset(
        class_name="MNIST",
        debian_dir=Path("/usr/share/datasets/mnist"),
        classes=tuple(str(digit) for digit in range(10)),
    ),
    "kmnist": IdxDataset(
        class_name="KMNIST",
        debian_dir=Path("/usr/share/datasets/kmnist"),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


@dataclass(frozen=True, eq=False)  # eq: tensors have no single truth value
class IdxData:
    """One data set in memory: images ``[N, 28, 28]`` uint8, labels ``[N]`` int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: Path  # the folder the four files were read from

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class IdxNotFoundError(SESearchError):
    """No place searched holds the four files (``data.root`` unset): the cue to download.

    ``places`` are the folders searched, in order. Never raised for a ``data.root`` that
    lacks them: that is a plain :class:`SESearchError`, since ``data.root`` is used or fails.
    """

    def __init__(self, name: str, places: tuple[Path, ...], states: list[str]) -> None:
        self.name, self.places = name, places
        where = "; ".join(f"{place} ({state})" for place, state in zip(places, states))
        super().__init__(f"data.dataset: {name} is in none of the places searched: {where}")


# ----------------------------------------------------------------------------- reading


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (gzipped when its name ends in ``.gz``) as a uint8 tensor of its shape.

    The whole file is checked: the magic number (two zero bytes, type 0x08, 1 to 4
    dimensions) and the sizes it declares against the bytes it holds, so a truncated or
    padded file is refused rather than misread.

    Raises:
        SESearchError: naming ``path``, what is wrong with it and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise SESearchError(f"{path} is a directory, not an IDX file; {_READ_FIX}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SESearchError(
            f"{path} cannot be read ({type(err).__name__}: {err.strerror or err}); make it "
            f"readable, or {_READ_FIX}"
        ) from None
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise SESearchError(
                f"{path} is not a valid gzip stream ({type(err).__name__}: {err}); {_READ_FIX}"
            ) from None
    shape, offset = _header(path, data)
    declared, held = math.prod(shape), len(data) - offset
    what = "x".join(f"{size:,}" for size in shape)
    if held < declared:
        raise SESearchError(
            f"{path} is truncated: its header declares {what} = {declared:,} bytes of data, the "
            f"file holds {held:,}; {_READ_FIX}"
        )
    if held > declared:
        raise SESearchError(
            f"{path} has {held - declared:,} bytes of trailing garbage after the {declared:,} "
            f"bytes ({what}) its header declares; {_READ_FIX}"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=declared, offset=offset)
    return torch.from_numpy(array.reshape(shape).copy())  # a copy: ``data`` is read-only


def _header(path: Path, data: bytes) -> tuple[tuple[int, ...], int]:
    """The shape an IDX header declares and the payload's offset, or an error naming why not."""
    if len(data) < 4:
        raise SESearchError(
            f"{path} is truncated: it holds {len(data)} bytes, less than the 4-byte IDX magic "
            f"number; {_READ_FIX}"
        )
    zero, zero2, code, ndim = data[:4]
    if zero or zero2:
        hint = ""
        if data[:2] == _GZIP_MAGIC and not path.name.endswith(".gz"):
            hint = " (it is gzip data: give it a .gz suffix, or gunzip it)"
        raise SESearchError(
            f"{path} is not an IDX file: its magic number {data[:4].hex()} does not start with "
            f"two zero bytes{hint}; {_READ_FIX}"
        )
    if code != 0x08:
        kind = _TYPE_CODES.get(code, "unknown")
        raise SESearchError(
            f"{path} holds IDX type 0x{code:02X} ({kind}); se-search reads only type 0x08 "
            f"(unsigned byte), as the MNIST-family files are; {_READ_FIX}"
        )
    if not 1 <= ndim <= 4:
        raise SESearchError(
            f"{path} declares {ndim} dimensions in its magic number; an IDX file of images or "
            f"labels has 1 to 4; {_READ_FIX}"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise SESearchError(
            f"{path} is truncated: its header of {ndim} dimensions needs {offset} bytes, the "
            f"file holds {len(data)}; {_READ_FIX}"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return shape, offset


# ----------------------------------------------------------------------------- finding


def _info(name: str) -> IdxDataset:
    try:
        return IDX_DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(IDX_DATASETS))
        raise SESearchError(
            f"data.dataset: {name!r} is not an IDX data set; use one of {known}"
        ) from None


def _layouts(folder: Path, info: IdxDataset) -> tuple[Path, Path]:
    """The two folders a data set's files may lie in: flat, and torchvision's raw folder."""
    return folder, folder / info.class_name / "raw"


def _in_folder(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The files of each role present in ``folder`` (uncompressed first), and the missing."""
    found, missing = {}, []
    for key, base in IDX_FILES.items():
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.exists():
                found[key] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    return found, missing


def _look(folder: Path, info: IdxDataset) -> tuple[dict[str, Path] | None, list[str]]:
    """The four files in one of ``folder``'s layouts, or None and what the closest lacks."""
    best: list[str] | None = None
    for layout in _layouts(folder, info):
        found, missing = _in_folder(layout)
        if not missing:
            for path in found.values():
                _check_readable(path)
            return found, []
        if best is None or len(missing) < len(best):
            best = missing
    assert best is not None
    return None, best


def _check_readable(path: Path) -> None:
    """Refuse a file that is there but cannot be read, rather than skip it silently."""
    if not path.is_file():
        raise SESearchError(f"{path} is not a regular file (a directory?); {_READ_FIX}")
    if not os.access(path, os.R_OK):
        raise SESearchError(
            f"{path} is not readable (permissions); make it readable, or {_READ_FIX}"
        )


def find_idx_files(name: str, *, root: str | Path | None, cache: Path) -> dict[str, Path]:
    """The four IDX files of data set ``name``, by role (the keys of :data:`IDX_FILES`).

    A folder holds them either directly or in torchvision's ``<folder>/<ClassName>/raw/``,
    each gzipped or not (uncompressed preferred: it reads faster). With ``root`` set, only
    ``root`` is searched, so the data used is the data asked for; otherwise the Debian
    package's folder, then ``cache``. All four come from one folder.

    Raises:
        IdxNotFoundError: ``root`` unset and no place holds the four files (download them).
        SESearchError: ``root`` set and lacking a file, or a file there that is unreadable.
    """
    info = _info(name)
    if root is not None:
        folder = Path(root).expanduser()
        found, missing = _look(folder, info)
        if found is not None:
            return found
        absent = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise SESearchError(
            f"data.root: {folder} {absent} ({name}); put the four IDX files "
            f"({', '.join(IDX_FILES.values())}, each gzipped as .gz or not) directly in "
            f"{folder}, or in torchvision's layout {folder / info.class_name / 'raw'}; or "
            f"unset data.root to use an installed or downloaded copy"
        )
    places = (info.debian_dir, Path(cache).expanduser())
    states = []
    for place in places:
        found, missing = _look(place, info)
        if found is not None:
            return found
        states.append("absent" if not place.is_dir() else f"lacks {', '.join(missing)}")
    raise IdxNotFoundError(name, places, states)


# ----------------------------------------------------------------------------- loading


def load_idx_dataset(
    name: str, *, root: str | Path | None, cache: Path, download_timeout_s: float
) -> IdxData:
    """Data set ``name`` in memory, found by :func:`find_idx_files` or else downloaded.

    The download goes through torchvision into ``cache``, with every network operation
    bounded by ``download_timeout_s`` (the socket default timeout, restored afterwards),
    so an offline machine fails fast. The files read are checked against each other: as
    many labels as images, 28x28 images, labels below the number of classes.

    Raises:
        SESearchError: files missing and not downloadable, or unreadable or inconsistent,
            each naming the file or the places searched, and the fix.
    """
    info = _info(name)
    try:
        files = find_idx_files(name, root=root, cache=cache)
    except IdxNotFoundError as missing:
        _download(info, missing, cache=Path(cache).expanduser(), timeout_s=download_timeout_s)
        files = find_idx_files(name, root=None, cache=cache)
    tensors = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        _check_split(tensors[images], tensors[labels], files[images], files[labels], info)
    return IdxData(
        train_images=tensors["train_images"],
        train_labels=tensors["train_labels"].long(),
        test_images=tensors["test_images"],
        test_labels=tensors["test_labels"].long(),
        classes=info.classes,
        source=files["train_images"].parent,
    )


def _download(
    info: IdxDataset, missing: IdxNotFoundError, *, cache: Path, timeout_s: float
) -> None:
    """torchvision's download of the four files into ``cache``, bounded; or the fix."""
    from torchvision import datasets  # only here: importing it costs a second

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        cls = getattr(datasets, info.class_name)
        cls(cache, train=True, download=True)
        cls(cache, train=False, download=True)
    except (OSError, RuntimeError) as err:
        install = f"apt-get install {info.package}, or " if info.package else ""
        raise SESearchError(
            f"{missing}; it could not be downloaded either ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); without internet, {install}put the four IDX files "
            f"({', '.join(IDX_FILES.values())}, gzipped or not) in a folder and set data.root "
            f"to it"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _check_split(
    images: torch.Tensor,
    labels: torch.Tensor,
    images_path: Path,
    labels_path: Path,
    info: IdxDataset,
) -> None:
    """Refuse a split whose images and labels do not fit each other or the data set."""
    fix = f"the files do not belong together; {_READ_FIX}"
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise SESearchError(
            f"{images_path} holds images of shape {tuple(images.shape)}, not "
            f"[N, {IMAGE_SIZE}, {IMAGE_SIZE}]; {_READ_FIX}"
        )
    if labels.dim() != 1:
        raise SESearchError(
            f"{labels_path} holds labels of shape {tuple(labels.shape)}, not [N]; {_READ_FIX}"
        )
    if len(labels) != len(images):
        raise SESearchError(
            f"{labels_path} holds {len(labels):,} labels for the {len(images):,} images of "
            f"{images_path}; {fix}"
        )
    if len(labels) and int(labels.max()) >= info.num_classes:
        raise SESearchError(
            f"{labels_path} holds label {int(labels.max())}, but the data set has "
            f"{info.num_classes} classes (0 to {info.num_classes - 1}); {fix}"
        )
