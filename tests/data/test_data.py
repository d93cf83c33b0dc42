from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import (
    DatasetUnavailable,
    available_tasks,
    get_task,
    load_fashion,
    load_photos,
    load_user_dataset,
    mixture,
    read_idx,
)
from core.data.datasets import stratified_split


def test_mnist_is_real_and_split_is_fixed() -> None:
    ds = get_task("mnist")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    assert -1.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    # real digits: background is the minimum value on most pixels, strokes are bright
    assert float((ds.x_train == -1.0).float().mean()) > 0.6
    tr, te = stratified_split(np.repeat(np.arange(3), 10), 0.2)
    tr2, te2 = stratified_split(np.repeat(np.arange(3), 10), 0.2)
    assert (te == te2).all() and len(np.intersect1d(tr, te)) == 0


def test_digits_is_upsampled_to_28() -> None:
    ds = get_task("digits")
    assert ds.x_train.shape[1:] == (1, 28, 28)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    # the 4-pixel border added around the 20x20 digit is background
    assert float(ds.x_train[:, :, :4, :].max()) == -1.0


def test_derived_domains_and_class_splits() -> None:
    base, inv, rot = get_task("mnist"), get_task("mnist_inverted"), get_task("mnist_rotated")
    assert torch.allclose(inv.x_train, -base.x_train, atol=1e-6)
    assert torch.equal(rot.x_train, torch.rot90(base.x_train, 1, (-2, -1)))
    assert torch.equal(inv.y_train, base.y_train)
    lo = get_task("mnist_0-4")
    assert set(lo.y_train.tolist()) == {0, 1, 2, 3, 4} and lo.n_classes == 10


def test_unknown_task_names_the_choices() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("cifar10")


def test_missing_fashion_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MIXMERGE_FASHION_DIR", str(tmp_path))
    load_fashion.cache_clear()
    try:
        with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
            load_fashion()
        assert "fashion" not in available_tasks()
    finally:
        load_fashion.cache_clear()


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_and_npz_user_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 28, 28))
    y = np.arange(40) % 4
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:8])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:8])
    assert (read_idx(tmp_path / "train-images-idx3-ubyte.gz") == x).all()
    ds = load_user_dataset(tmp_path)
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.n_classes == 4
    np.savez(tmp_path / "d.npz", x=rng.random((30, 16, 16, 3)), y=np.arange(30) % 3)
    ds2 = load_user_dataset(tmp_path / "d.npz")
    assert ds2.x_train.shape[1:] == (1, 28, 28) and len(ds2.y_train) + len(ds2.y_test) == 30
    with pytest.raises(ValueError, match="must contain arrays 'x' and 'y'"):
        np.savez(tmp_path / "bad.npz", a=np.zeros(3))
        load_user_dataset(tmp_path / "bad.npz")


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = load_user_dataset(tmp_path)
    assert ds.class_names == ("cat", "dog") and len(ds.y_train) + len(ds.y_test) == 10


def test_photos_and_mixture() -> None:
    photos = load_photos(32)
    assert len(photos) >= 8 and all(p.shape == (3, 32, 32) for p in photos.values())
    x, y = mixture(["mnist", "digits"], n_per_task=50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (100, 1, 28, 28) and y.shape == (100,)
