"""Benchmark task suites: every source exists and matches its pin, splits are seeded, stratified
and disjoint, patch tasks never share pixels across splits, and missing sources say how to
install them."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DatasetUnavailable
from core.data import suites as S

TINY = S.SuiteSizes(train=40, val=20, test=20)


@pytest.mark.parametrize("suite", list(S.SUITES))
def test_every_source_is_installed_and_pinned(suite: str) -> None:
    status = S.check_sources(suite)
    assert [s.task for s in status] == list(S.SUITES[suite])
    bad = [s.message for s in status if not s.ok]
    assert not bad, bad
    assert len(S.SUITES["vision"]) >= 6 and len(S.SUITES["text"]) >= 4


@pytest.mark.parametrize("name", [n for s in S.SUITES.values() for n in s])
def test_tasks_load_split_and_shape(name: str) -> None:
    task = S.load_task(name, sizes=TINY, resolution=32, max_length=24)
    for split in ("train", "val", "test"):
        x, y = task.split(split)
        assert len(x) == len(y) > 0
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < task.n_classes
        if task.suite == "vision":
            assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        else:
            assert x.dtype == torch.int64 and x.shape[1] == 24
    c = task.n_classes  # every class gets at least one example per split
    assert len(task.y_train) <= 40 + c and len(task.y_val) <= 20 + c and len(task.y_test) <= 20 + c
    if task.suite == "text":
        assert len(task.label_texts) == task.n_classes
    assert task.sources and all(len(sha) == 64 for _, sha in task.sources)
    again = S._load_task_cached.__wrapped__(
        name, TINY, 32 if task.suite == "vision" else 0, 24 if task.suite == "text" else 0
    )
    assert torch.equal(again.x_test, task.x_test) and torch.equal(again.y_train, task.y_train)


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    y = np.repeat(np.arange(4), [100, 100, 50, 10])
    sizes = S.SuiteSizes(train=100, val=40, test=60)
    idx = S.split_indices(y, sizes, seed=3)
    sets = [set(idx[k].tolist()) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(idx["test"]) == pytest.approx(60, abs=2) and len(idx["val"]) == pytest.approx(
        39, abs=2
    )
    for k in ("train", "val", "test"):  # class shares follow the pool (100:100:50:10)
        counts = np.bincount(y[idx[k]], minlength=4)
        assert (
            counts[0] == pytest.approx(counts[1], abs=1) and counts[0] > counts[2] > counts[3] >= 1
        )
    again = S.split_indices(y, sizes, seed=3)
    assert all(np.array_equal(idx[k], again[k]) for k in idx)
    other = S.split_indices(y, sizes, seed=4)
    assert not np.array_equal(idx["test"], other["test"])
    small = S.split_indices(np.repeat([0, 1], 100), S.SuiteSizes(10_000, 10_000, 10_000))
    assert (len(small["test"]), len(small["val"]), len(small["train"])) == (50, 30, 120)


def test_patch_splits_come_from_disjoint_bands() -> None:
    """A synthetic image whose value is its position along the long axis: train crops see only
    the first 60 %, validation the next 15 %, test the last 25 %."""
    h, w = 64, 400
    ramp = np.tile(np.linspace(0, 255, w, dtype=np.float64), (h, 1))
    img = np.repeat(ramp[..., None], 3, axis=-1).astype(np.uint8)
    parts = S._patches([img, img], S.SuiteSizes(20, 10, 10), resolution=16, gray=False)
    lo_hi = {k: (int(v[0].min()), int(v[0].max())) for k, v in parts.items()}
    assert lo_hi["train"][1] <= 0.6 * 255 + 2
    assert 0.6 * 255 - 2 <= lo_hi["val"][0] and lo_hi["val"][1] <= 0.75 * 255 + 2
    assert lo_hi["test"][0] >= 0.75 * 255 - 2
    assert parts["train"][0].shape == (20, 3, 16, 16)


def test_missing_source_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIXMERGE_WORDNET_DIR", str(tmp_path / "nowhere"))
    S._load_task_cached.cache_clear()
    with pytest.raises(DatasetUnavailable, match="apt-get install wordnet-base"):
        S.load_task("wordnet_nouns", sizes=TINY)
    status = {s.task: s for s in S.check_sources("text")}
    assert not status["wordnet_nouns"].ok and "wordnet-base" in status["wordnet_nouns"].message
    assert status["fortunes"].ok
    S._load_task_cached.cache_clear()


def test_changed_source_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "fortunes"
    folder.mkdir()
    for cat, _ in S.FORTUNE_FILES:
        (folder / cat).write_text("A quotation that is long enough to count.\n%\n")
    monkeypatch.setenv("MIXMERGE_FORTUNES_DIR", str(folder))
    S._load_task_cached.cache_clear()
    with pytest.raises(DatasetUnavailable, match="expected the pinned"):
        S.load_task("fortunes", sizes=TINY)
    S._load_task_cached.cache_clear()


def test_numpy_pickles_load_without_running_code(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = tmp_path / "good.gz"
    with gzip.open(good, "wb") as f:
        pickle.dump(arr, f)
    assert np.array_equal(S.read_numpy_pickle(good), arr)

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        S.read_numpy_pickle(bad)
    assert not (tmp_path / "pwned").exists()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown suite task 'svhn'"):
        S.load_task("svhn")
    with pytest.raises(ValueError, match="resolution"):
        S.load_task("mnist", resolution=4)
    with pytest.raises(TypeError, match="sizes must be a SuiteSizes"):
        S.load_task("mnist", sizes=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train"):
        S.SuiteSizes(train=0)
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        S.load_suite("vision", tasks=["wordnet_nouns"])
    with pytest.raises(ValueError, match="x must be"):
        S.image_input(torch.zeros(2, 3, 8, 8))


def test_image_input_matches_the_backbone_preprocessing() -> None:
    from core.models.efficientnet_lite import MEAN, STD

    x = torch.tensor([[[[0, 255]]] * 3], dtype=torch.uint8)  # (1, 3, 1, 2)
    out = S.image_input(x)
    assert torch.allclose(out[0, :, 0, 0], -torch.tensor(MEAN) / torch.tensor(STD))
    assert torch.allclose(out[0, 0, 0, 1], torch.tensor((255 / 255 - 127 / 255) / (128 / 255)))
