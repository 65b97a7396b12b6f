"""Offline datasets as DataLoaders: scikit-learn's 8x8 digits (embedded, the default), an ImageFolder-style
directory (read with PIL, no torchvision) and MNIST IDX files from a path. Nothing is downloaded.

Images become float tensors (N, C, H, W) in [0, 1], then standardised per channel with the training split's
mean and standard deviation. Splits are deterministic for a given seed. Training loaders shuffle with torch's
global generator, so a caller that seeds it per epoch (lba_train.train does) gets a reproducible order.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from lba_core import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class DataBundle:
    """Training and validation loaders plus what a model needs to know about the inputs."""

    name: str
    train: DataLoader
    val: DataLoader
    input_shape: tuple[int, int, int]
    classes: int


def _split(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(count)
    val_count = max(1, round(count * val_fraction))
    if val_count >= count:
        raise ConfigError(f"{count} samples are too few to split off a validation set")
    return order[val_count:], order[:val_count]


def make_bundle(
    name: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    batch_size: int = 64,
) -> DataBundle:
    """Standardise (N, C, H, W) images in [0, 1] with the training statistics and wrap them in loaders."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    mean = train_images.mean(axis=(0, 2, 3), keepdims=True)
    std = train_images.std(axis=(0, 2, 3), keepdims=True)
    std = np.where(std > 0, std, 1.0)

    def dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
        inputs = torch.from_numpy(((images - mean) / std).astype(np.float32))
        return TensorDataset(inputs, torch.from_numpy(labels.astype(np.int64)))

    classes = int(max(train_labels.max(), val_labels.max())) + 1
    return DataBundle(
        name=name,
        train=DataLoader(dataset(train_images, train_labels), batch_size=batch_size, shuffle=True),
        val=DataLoader(dataset(val_images, val_labels), batch_size=batch_size, shuffle=False),
        input_shape=tuple(int(size) for size in train_images.shape[1:]),
        classes=classes,
    )


def load_digits_data(batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0) -> DataBundle:
    """scikit-learn's 1,797 8x8 digits (bundled with scikit-learn), split deterministically by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0)[:, None, :, :]
    train, val = _split(len(images), val_fraction, seed)
    return make_bundle("digits", images[train], digits.target[train], images[val], digits.target[val], batch_size)


def _read_folder_images(root: Path, class_names: list[str], size: tuple[int, int] | None, mode: str | None):
    from PIL import Image

    images, labels = [], []
    for label, class_name in enumerate(class_names):
        for path in sorted((root / class_name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(path) as image:
                images.append(image.copy())
            labels.append(label)
    if not images:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    mode = mode or ("L" if all(image.mode in ("1", "L", "I", "I;16", "F") for image in images) else "RGB")
    size = size or images[0].size[::-1]
    arrays = []
    for image in images:
        image = image.convert(mode)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]))
        array = np.asarray(image, dtype=np.float64) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(arrays), np.asarray(labels)


def load_image_folder(
    path: str | Path,
    batch_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
) -> DataBundle:
    """``path/<class>/<image>`` (classes in sorted order), or ``path/train/<class>/...`` plus ``path/val/...``.

    Images are converted to ``mode`` (PIL; default: "L" if every image is greyscale, else "RGB") and resized to
    ``size`` (height, width; default: the first image's size).
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"image folder {root} does not exist or is not a directory")
    if (root / "train").is_dir() and (root / "val").is_dir():
        class_names = sorted(entry.name for entry in (root / "train").iterdir() if entry.is_dir())
        train_images, train_labels = _read_folder_images(root / "train", class_names, size, mode)
        height, width = train_images.shape[2:]
        image_mode = "L" if train_images.shape[1] == 1 else "RGB"
        val_images, val_labels = _read_folder_images(root / "val", class_names, (height, width), image_mode)
        return make_bundle(f"imagefolder:{root}", train_images, train_labels, val_images, val_labels, batch_size)
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if len(class_names) < 2:
        raise ConfigError(f"image folder {root} needs at least two class sub-directories, found {class_names}")
    images, labels = _read_folder_images(root, class_names, size, mode)
    train, val = _split(len(images), val_fraction, seed)
    return make_bundle(f"imagefolder:{root}", images[train], labels[train], images[val], labels[val], batch_size)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format; ``.gz`` is read transparently) as a NumPy array."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ConfigError(f"{path} is not an IDX file (bad magic number)")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = 4 + 4 * dims + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ConfigError(f"{path}: IDX header promises {expected} bytes, the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * dims).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem.replace("-idx", ".idx"), stem + ".gz", stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"MNIST file {stem}[.gz] not found in {root}")


def load_mnist(path: str | Path, batch_size: int = 64, seed: int = 0, val_fraction: float = 0.2) -> DataBundle:
    """MNIST-style IDX files in ``path``: ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (optionally
    ``.gz``); the ``t10k-*`` pair is the validation set when present, else ``val_fraction`` of the training set."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"MNIST directory {root} does not exist")
    images = read_idx(_find_idx(root, "train-images-idx3-ubyte")).astype(np.float64)[:, None] / 255.0
    labels = read_idx(_find_idx(root, "train-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ConfigError(f"{root}: {len(images)} training images but {len(labels)} labels")
    try:
        val_images = read_idx(_find_idx(root, "t10k-images-idx3-ubyte")).astype(np.float64)[:, None] / 255.0
        val_labels = read_idx(_find_idx(root, "t10k-labels-idx1-ubyte"))
    except ConfigError:
        train, val = _split(len(images), val_fraction, seed)
        return make_bundle(f"mnist:{root}", images[train], labels[train], images[val], labels[val], batch_size)
    return make_bundle(f"mnist:{root}", images, labels, val_images, val_labels, batch_size)


def load_data(spec: str = "digits", batch_size: int = 64, seed: int = 0) -> DataBundle:
    """``digits``, ``imagefolder:PATH`` or ``mnist:PATH``."""
    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        return load_digits_data(batch_size=batch_size, seed=seed)
    if kind == "imagefolder" and path:
        return load_image_folder(path, batch_size=batch_size, seed=seed)
    if kind == "mnist" and path:
        return load_mnist(path, batch_size=batch_size, seed=seed)
    raise ConfigError(f"unknown data spec {spec!r}: use digits, imagefolder:PATH or mnist:PATH")
