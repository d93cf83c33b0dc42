"""DualMix (core.mixup.papers.dualmix): the online class-incremental stream, the reservoir
buffer, the two mixes, seen-class accuracy, the ER identity and the study record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.data import get_task
from core.mixup.papers import dualmix as dm
from core.mixup.papers import headline, random_subset
from tests.helpers.studies import check_study_round_trip

TINY = dm.DualMixConfig(
    task="digits", n_train=200, buffer_size=20, width=4, eval_every=5, n_eval=100
)


# ---------------------------------------------------------------------------- the stream
def test_task_classes_are_disjoint_equal_increments() -> None:
    assert dm.task_classes(range(10), 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert dm.task_classes([3, 1, 2, 0], 2) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="n_tasks must divide"):
        dm.task_classes(range(10), 3)


def test_stream_presents_disjoint_increments_each_example_once() -> None:
    y = torch.arange(10).repeat_interleave(23)[torch.randperm(230)]
    stream = dm.class_incremental_stream(y, 5, 7, torch.Generator().manual_seed(0))
    assert len(stream) == 5
    order = torch.cat([b for task in stream for b in task])
    assert sorted(order.tolist()) == list(range(230))  # each example exactly once
    for t, batches in enumerate(stream):
        labels = torch.cat([y[b] for b in batches])
        assert set(labels.tolist()) == {2 * t, 2 * t + 1}  # this task's classes only
        assert len(labels) == 46
        assert all(len(b) == 7 for b in batches[:-1]) and 1 <= len(batches[-1]) <= 7
    # shuffled within a task, and the seed fixes the order
    again = dm.class_incremental_stream(y, 5, 7, torch.Generator().manual_seed(0))
    assert all(
        torch.equal(a, b)
        for ta, tb in zip(stream, again, strict=True)
        for a, b in zip(ta, tb, strict=True)
    )
    first = torch.cat(stream[0])
    assert not torch.equal(first, first.sort().values)
    with pytest.raises(ValueError, match="y must be"):
        dm.class_incremental_stream(torch.rand(5), 1, 2, torch.Generator())


def test_training_sees_each_stream_example_once() -> None:
    ds = get_task("digits")
    x, y = random_subset(ds.x_train, ds.y_train, 103, 0)
    cfg = dm.DualMixConfig(task="digits", batch_size=10, buffer_size=8, width=4, eval_every=3)
    _, log = dm.train_stream(cfg, "er", x, y, ds.x_test[:50], ds.y_test[:50], 10, seed=0)
    per_task = torch.bincount(y, minlength=10).view(5, 2).sum(1)
    assert log["steps"] == [sum(math.ceil(int(n) / 10) for n in per_task)]
    assert log["task_end"] == torch.cumsum(per_task, 0).tolist()  # one pass, in task order
    assert log["seen"][-1] == 103


# ---------------------------------------------------------------------------- reservoir buffer
def test_reservoir_respects_its_capacity_and_keeps_what_it_saw() -> None:
    buf = dm.ReservoirBuffer(6, (1, 2, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.arange(40).float().view(40, 1, 1, 1).expand(40, 1, 2, 2)
    y = torch.arange(40) % 3
    for i in range(0, 40, 4):
        buf.add(x[i : i + 4], y[i : i + 4], g)
        assert len(buf) == min(i + 4, 6) and buf.seen == i + 4
    ids = buf.ids.tolist()
    assert len(set(ids)) == 6 and all(0 <= k < 40 for k in ids)
    for slot, k in enumerate(ids):  # each slot holds the example it says, with its label
        assert float(buf.x[slot, 0, 0, 0]) == k and int(buf.y[slot]) == k % 3
    xs, ys = buf.sample(4, g)
    assert len(xs) == 4 and len(set(xs[:, 0, 0, 0].tolist())) == 4  # without replacement
    assert set(xs[:, 0, 0, 0].long().tolist()) <= set(ids)
    assert len(buf.sample(50, g)[0]) == 6
    empty = dm.ReservoirBuffer(3, (1,))
    assert len(empty.sample(5, g)[0]) == 0
    with pytest.raises(ValueError, match="capacity"):
        dm.ReservoirBuffer(0, (1,))


def test_reservoir_inclusion_probability_is_uniform() -> None:
    """After N examples each is stored with probability capacity / N, early or late: the
    inclusion frequency of every stream position over many trials is within 4.5 binomial SDs
    of 5/20 (a keep-the-latest or keep-the-first buffer is far outside)."""
    cap, n, trials = 5, 20, 4000
    hits = torch.zeros(n)
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(n, 1)
    y = torch.zeros(n, dtype=torch.long)
    for _ in range(trials):
        buf = dm.ReservoirBuffer(cap, (1,))
        for i in range(0, n, 3):
            buf.add(x[i : i + 3], y[i : i + 3], g)
        hits[buf.ids] += 1
    freq = hits / trials
    p = cap / n
    sd = math.sqrt(p * (1 - p) / trials)
    assert float((freq - p).abs().max()) < 4.5 * sd, freq
    # and chi-square over the positions (19 df: the 0.999 quantile is 43.8)
    chi2 = float(((hits - trials * p) ** 2 / (trials * p)).sum()) * n / (n - cap)
    assert chi2 < 43.8


# ---------------------------------------------------------------------------- the mixes
def test_enmix_mixes_inputs_and_labels_with_one_ratio() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 6, 6, generator=g)
    y1 = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 4).float()
    xm, tm, lam, perm = dm.enmix_batch(x, y1, 1.0, 0, g)  # no shift: plain pair mixup
    assert bool(((lam >= 0) & (lam <= 1)).all()) and sorted(perm.tolist()) == list(range(8))
    assert torch.allclose(xm, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm])
    assert torch.allclose(tm, lam[:, None] * y1 + (1 - lam[:, None]) * y1[perm])
    assert torch.allclose(tm.sum(1), torch.ones(8))
    # with the augmentation, each side is a shifted copy: same pixel mass when nothing falls off
    xc = torch.zeros(2, 1, 10, 10)
    xc[:, :, 4:6, 4:6] = 1.0
    xs = dm.random_shift(xc, 2, g)
    assert torch.allclose(xs.sum((1, 2, 3)), xc.sum((1, 2, 3)))
    assert not torch.equal(dm.random_shift(xc.repeat(20, 1, 1, 1), 2, g), xc.repeat(20, 1, 1, 1))
    with pytest.raises(ValueError, match="x must be"):
        dm.enmix_batch(x[:, 0], y1, 1.0, 0, g)


def test_adaptive_label_ratio_definition() -> None:
    lam = torch.tensor([0.0, 0.3, 0.5, 0.8, 1.0])
    same = torch.full((5,), 40)
    assert torch.allclose(dm.adaptive_label_ratio(lam, same, same), lam)  # no imbalance: λ
    n_new, n_old = torch.full((5,), 90), torch.full((5,), 10)
    got = dm.adaptive_label_ratio(lam, n_new, n_old)
    ref = lam / 90 / (lam / 90 + (1 - lam) / 10)
    assert torch.allclose(got, ref)
    assert got[0] == 0 and got[-1] == 1  # the ends stay pure
    assert bool((got[1:-1] < lam[1:-1]).all())  # labels lean to the rarer (old) class
    with pytest.raises(ValueError, match="counts >= 1"):
        dm.adaptive_label_ratio(lam, same * 0, same)


def test_adpmix_pairs_new_with_old_and_adapts_labels() -> None:
    g = torch.Generator().manual_seed(0)
    x_new, x_old = torch.randn(6, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    y_new, y_old = torch.tensor([4, 5, 4, 5, 4, 5]), torch.tensor([0, 1, 2, 3])
    counts = torch.tensor([2, 2, 3, 3, 50, 50, 0, 0, 0, 0])
    xm, t, lam, lam_y = dm.adpmix_batch(x_new, y_new, x_old, y_old, counts, 10, 1.0, g)
    assert len(xm) == 4  # min(new, old) pairs
    assert torch.allclose(
        xm, lam.view(-1, 1, 1, 1) * x_new[:4] + (1 - lam.view(-1, 1, 1, 1)) * x_old
    )
    assert torch.allclose(lam_y, dm.adaptive_label_ratio(lam, counts[y_new[:4]], counts[y_old]))
    assert torch.allclose(t[torch.arange(4), y_new[:4]], lam_y)
    assert torch.allclose(t[torch.arange(4), y_old], 1 - lam_y)
    assert torch.allclose(t.sum(1), torch.ones(4))


# ---------------------------------------------------------------------------- measuring
def test_seen_class_accuracy_counts_only_seen_classes() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 0, 0, 0])  # classes 2, 3 all wrong
    assert dm.seen_class_accuracy(pred, y, [0, 1]) == pytest.approx(0.75)
    other = pred.clone()
    other[4:] = torch.tensor([2, 2, 3, 3])  # unseen classes' predictions do not count
    assert dm.seen_class_accuracy(other, y, [0, 1]) == pytest.approx(0.75)
    assert dm.seen_class_accuracy(other, y, [0, 1, 2, 3]) == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="seen must name"):
        dm.seen_class_accuracy(pred, y, [7])


def test_forgetting_definition() -> None:
    acc = [[0.9], [0.5, 0.8], [0.2, 0.6, 0.7]]
    assert dm.forgetting(acc) == pytest.approx(((0.9 - 0.2) + (0.8 - 0.6)) / 2)
    assert dm.forgetting([[0.4]]) == 0.0
    with pytest.raises(ValueError, match="lower-triangular"):
        dm.forgetting([[0.4, 0.2]])


# ---------------------------------------------------------------------------- the ER identity
def _digits(n: int = 150) -> tuple[torch.Tensor, ...]:
    ds = get_task("digits")
    x, y = random_subset(ds.x_train, ds.y_train, n, 0)
    return x, y, ds.x_test[:60], ds.y_test[:60]


def test_mix_prob_zero_is_bit_identical_to_er() -> None:
    x, y, xe, ye = _digits()
    cfg = dm.DualMixConfig(task="digits", buffer_size=16, width=4, eval_every=4)
    er, log_er = dm.train_stream(cfg, "er", x, y, xe, ye, 10, seed=3)
    off, log_off = dm.train_stream(cfg, "dualmix", x, y, xe, ye, 10, seed=3, mix_prob=0.0)
    on, log_on = dm.train_stream(cfg, "dualmix", x, y, xe, ye, 10, seed=3, mix_prob=1.0)
    for k, v in er.state_dict().items():
        assert torch.equal(v, off.state_dict()[k]), k
    assert log_off["acc_seen"] == log_er["acc_seen"] and log_off["mixed_steps"] == [0]
    assert log_on["mixed_steps"] == log_on["steps"]
    assert any(not torch.equal(v, on.state_dict()[k]) for k, v in er.state_dict().items())
    _, log_half = dm.train_stream(cfg, "dualmix", x, y, xe, ye, 10, seed=3, mix_prob=0.5)
    assert 0 < log_half["mixed_steps"][0] < log_half["steps"][0]


# ---------------------------------------------------------------------------- the study
def test_config_validation() -> None:
    with pytest.raises(ValueError, match="mix_prob"):
        dm.DualMixConfig(mix_prob=1.5)
    with pytest.raises(ValueError, match="arch"):
        dm.DualMixConfig(arch="vit")
    with pytest.raises(ValueError, match="buffer_size"):
        dm.DualMixConfig(buffer_size=0)
    with pytest.raises(ValueError, match="n_tasks must divide"):
        dm.run_dualmix(dm.DualMixConfig(task="digits", n_tasks=3), seeds=(0,))
    with pytest.raises(TypeError, match="config"):
        dm.run_dualmix({"task": "digits"}, seeds=(0,))  # type: ignore[arg-type]


def test_dualmix_run_seeded_stored_drawn(tmp_path: Path) -> None:
    progress: list[dict] = []
    a = dm.run_dualmix(TINY, seeds=(0,), progress=progress.append)
    assert a["methods"] == ["er", "dualmix"] and a["tasks"] == dm.task_classes(range(10), 5)
    s = a["summary"]["dualmix"]
    assert {"accuracy", "minus_er", "avg_acc", "forgetting"} <= set(s)
    log = a["logs"]["dualmix"][0]
    assert len(log["acc_matrix"]) == 5 and all(0 <= v <= 1 for v in log["acc_seen"])
    assert progress and progress[-1]["fraction"] == pytest.approx(1.0)
    rows = headline(a)
    assert [r["method"] for r in rows] == ["er", "dualmix"] and "− er" in rows[1]
    check_study_round_trip(tmp_path, "dualmix", a, dm.run_dualmix, TINY)


@pytest.mark.slow
def test_mix_paper_notebook_redraws_and_retrains_the_dualmix_figure(tmp_path: Path) -> None:
    """The page's recipe ({"kind": "mix_paper", "args": {"run": id}}) exports a notebook that
    redraws the stored DualMix figure, and with rerun=True streams it again to the same data."""
    import io

    import nbformat
    import pandas as pd
    from nbclient import NotebookClient

    from core.figures import figure_data
    from core.figures.mix_papers import FIGURES
    from core.mixup.papers import store_run
    from core.notebook_export import notebook_for
    from core.zoo import Zoo

    zoo = Zoo(tmp_path / "ws")
    rec = dm.run_dualmix(TINY, seeds=(0,))
    rid = store_run(zoo, "dualmix", rec)
    want = pd.read_csv(io.StringIO(figure_data(FIGURES["dualmix"](rec)).to_csv(index=False)))
    for rerun_flag in (False, True):
        nb = notebook_for(
            {"kind": "mix_paper", "args": {"run": rid, "rerun": rerun_flag}}, workspace=zoo.root
        )
        out = tmp_path / f"fig{int(rerun_flag)}.csv"
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"from core.figures import figure_data as _fd\n"
                f"_fd(fig).to_csv({str(out)!r}, index=False)"
            )
        )
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
        pd.testing.assert_frame_equal(pd.read_csv(out), want)
