"""Users' own data, by path: an ImageFolder tree, an .npz file with ``x``/``y``, or a folder of
IDX files. Everything is converted to the workbench's common input space (grayscale 28x28,
normalised) unless asked otherwise, and split with a fixed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Dataset, _find_idx, normalize, read_idx, stratified_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _resize(x01: torch.Tensor, image_size: int, grayscale: bool) -> torch.Tensor:
    """(N, C, H, W) in [0,1] -> (N, 1 or 3, image_size, image_size)."""
    if grayscale and x01.shape[1] == 3:
        x01 = 0.299 * x01[:, :1] + 0.587 * x01[:, 1:2] + 0.114 * x01[:, 2:3]
    if not grayscale and x01.shape[1] == 1:
        x01 = x01.expand(-1, 3, -1, -1)
    if x01.shape[-2:] != (image_size, image_size):
        x01 = F.interpolate(
            x01, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x01.clamp(0, 1).contiguous()


def _as_images(x: np.ndarray) -> torch.Tensor:
    """Array (N,H,W), (N,H,W,C), (N,C,H,W) or (N,D) with D a square -> (N,C,H,W) in [0,1]."""
    x = np.asarray(x)
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"x has {x.shape[1]} features per row, which is not a square image")
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)[:, :3]
    elif x.ndim != 4:
        raise ValueError(f"x must have 2, 3 or 4 dimensions, got shape {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.numel() and float(t.max()) > 1.0:
        t = t / 255.0
    return t


def load_user_dataset(
    path: str | Path,
    *,
    image_size: int = 28,
    grayscale: bool = True,
    test_fraction: float = 0.2,
    max_per_class: int | None = None,
) -> Dataset:
    """Load a dataset from ``path``.

    Args:
        path: an ImageFolder tree (``root/<class>/<image>``), an ``.npz`` with arrays ``x`` and
            ``y`` (optionally ``x_test``/``y_test``), or a folder of MNIST-style IDX files.
        image_size: side of the square output images.
        grayscale: convert to one channel (the zoo's architectures take one channel).
        test_fraction: held-out fraction when the data has no split of its own.
        max_per_class: cap per class (ImageFolder only), to keep big folders quick.

    Raises:
        FileNotFoundError, ValueError: with the path and what was expected.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"path does not exist: {p}")
    if p.is_file() and p.suffix == ".npz":
        return _from_npz(p, image_size, grayscale, test_fraction)
    if p.is_dir():
        try:
            _find_idx(p, "train-images-idx3-ubyte")
            return _from_idx(p, image_size, grayscale)
        except FileNotFoundError:
            return _from_folder(p, image_size, grayscale, test_fraction, max_per_class)
    raise ValueError(f"path must be an .npz file or a folder (ImageFolder or IDX files), got {p}")


def _finish(name, xtr, ytr, xte, yte, class_names, image_size, grayscale) -> Dataset:
    n_classes = int(max(int(ytr.max()), int(yte.max())) + 1)
    if class_names is None:
        class_names = tuple(str(i) for i in range(n_classes))
    return Dataset(
        name=name,
        x_train=normalize(_resize(xtr, image_size, grayscale)),
        y_train=torch.as_tensor(ytr, dtype=torch.int64),
        x_test=normalize(_resize(xte, image_size, grayscale)),
        y_test=torch.as_tensor(yte, dtype=torch.int64),
        n_classes=n_classes,
        class_names=tuple(class_names),
        description=f"user data from {name}",
        classes=tuple(int(c) for c in np.unique(np.asarray(ytr))),
    )


def _from_npz(p: Path, image_size: int, grayscale: bool, test_fraction: float) -> Dataset:
    with np.load(p, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise ValueError(f"{p} must contain arrays 'x' and 'y', found {sorted(z.files)}")
        x, y = _as_images(z["x"]), np.asarray(z["y"]).astype(np.int64).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{p}: x has {len(x)} rows but y has {len(y)}")
        if "x_test" in z and "y_test" in z:
            return _finish(
                str(p),
                x,
                y,
                _as_images(z["x_test"]),
                z["y_test"].astype(np.int64),
                None,
                image_size,
                grayscale,
            )
    if y.min() < 0:
        raise ValueError(f"{p}: labels must be >= 0, got min {y.min()}")
    tr, te = stratified_split(y, test_fraction)
    return _finish(str(p), x[tr], y[tr], x[te], y[te], None, image_size, grayscale)


def _from_idx(p: Path, image_size: int, grayscale: bool) -> Dataset:
    xtr = _as_images(read_idx(_find_idx(p, "train-images-idx3-ubyte")))
    ytr = read_idx(_find_idx(p, "train-labels-idx1-ubyte")).astype(np.int64)
    xte = _as_images(read_idx(_find_idx(p, "t10k-images-idx3-ubyte")))
    yte = read_idx(_find_idx(p, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return _finish(str(p), xtr, ytr, xte, yte, None, image_size, grayscale)


def _from_folder(
    p: Path, image_size: int, grayscale: bool, test_fraction: float, max_per_class: int | None
) -> Dataset:
    from PIL import Image

    classes = sorted(d.name for d in p.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(
            f"{p} must contain one sub-folder per class (ImageFolder layout), found none"
        )
    xs, ys = [], []
    for ci, cname in enumerate(classes):
        files = sorted(f for f in (p / cname).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class is not None:
            files = files[:max_per_class]
        for f in files:
            with Image.open(f) as img:
                small = img.convert("L" if grayscale else "RGB").resize((image_size, image_size))
                arr = np.asarray(small, dtype=np.float32) / 255.0
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(ci)
    if not xs:
        raise ValueError(f"{p}: no image files ({sorted(IMAGE_SUFFIXES)}) in the class folders")
    x = torch.from_numpy(np.stack(xs))
    y = np.asarray(ys, dtype=np.int64)
    tr, te = stratified_split(y, test_fraction)
    return _finish(str(p), x[tr], y[tr], x[te], y[te], tuple(classes), image_size, grayscale)
