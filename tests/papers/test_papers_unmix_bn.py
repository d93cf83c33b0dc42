"""Un-mixed BatchNorm re-estimation from label-correlated streams (after UnMix-TNS)."""

from __future__ import annotations

import pytest
import torch

from core.data import Dataset
from core.merge.bn import recompute_batchnorm
from core.models import create_model
from core.papers.unmix_bn import bn_stream_study, label_sorted_stream, recompute_batchnorm_unmixed


def _cnn_and_data():
    model = create_model("cnn", width=4, seed=0)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(40)  # (240,) six classes
    x = torch.randn(240, 1, 28, 28, generator=g) + y.view(-1, 1, 1, 1) * 0.5  # class-shifted
    return model, {k: v.clone() for k, v in model.state_dict().items()}, x, y


def test_unmixed_statistics_are_the_pooled_moments_of_each_layer_input() -> None:
    model, sd, x, _ = _cnn_and_data()
    new = recompute_batchnorm_unmixed(model, sd, x, batch_size=32)
    with torch.no_grad():  # independent: the first BN sees conv0(x); pool over (N, H, W)
        h = torch.nn.functional.conv2d(x, sd["trunk.conv0.weight"], padding=1)
        mean = h.mean((0, 2, 3))
        var = h.transpose(0, 1).reshape(h.shape[1], -1).var(1, unbiased=True)
    torch.testing.assert_close(new["trunk.bn0.running_mean"], mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new["trunk.bn0.running_var"], var, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new["trunk.conv0.weight"], sd["trunk.conv0.weight"])


def test_unmixed_is_order_independent_and_cumulative_is_not() -> None:
    model, sd, x, y = _cnn_and_data()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    shuffled, ys = x[perm], y[perm]
    sorted_x = label_sorted_stream(shuffled, ys, classes_per_batch=1, batch_size=40)
    a = recompute_batchnorm_unmixed(model, sd, shuffled, batch_size=40)
    b = recompute_batchnorm(model, sd, sorted_x, batch_size=40, method="unmixed")
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5)
    cum = recompute_batchnorm(model, sd, sorted_x, batch_size=40)  # one class per batch
    # the between-class variance is lost: the cumulative estimate is too small
    assert float(cum["trunk.bn0.running_var"].sum()) < 0.9 * float(a["trunk.bn0.running_var"].sum())


def test_label_sorted_stream() -> None:
    _, _, x, y = _cnn_and_data()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
    x, y = x[perm], y[perm]
    tagged = x.clone()
    tagged[:, 0, 0, 0] = y.float()  # carry the label through the reordering
    one = label_sorted_stream(tagged, y, classes_per_batch=1)
    labels = one[:, 0, 0, 0]
    assert torch.equal(labels, torch.sort(y.float()).values)
    two = label_sorted_stream(tagged, y, classes_per_batch=2, batch_size=40)
    lab2 = two[:, 0, 0, 0]
    assert sorted(lab2.tolist()) == sorted(y.float().tolist())  # a permutation
    for start in range(0, len(lab2), 40):
        assert len(set(lab2[start : start + 40].tolist())) <= 2
    assert len(set(lab2[:40].tolist())) == 2  # mixed within a group
    with pytest.raises(ValueError, match="same length"):
        label_sorted_stream(x, y[:-1])


def test_bad_method_and_models_without_bn() -> None:
    model, sd, x, _ = _cnn_and_data()
    with pytest.raises(ValueError, match="method"):
        recompute_batchnorm(model, sd, x, method="magic")
    mlp = create_model("mlp", width=16, depth=1)
    msd = mlp.state_dict()
    out = recompute_batchnorm(mlp, msd, x, method="unmixed")
    assert all(torch.equal(out[k], msd[k]) for k in msd)


@pytest.mark.slow
def test_stream_study_rows() -> None:
    model, sd, x, y = _cnn_and_data()
    data = Dataset("toy", x, y, x[::3], y[::3], 6, tuple("abcdef"))
    res = bn_stream_study(model, sd, data, classes_per_batch=(1,), n_examples=200, batch_size=40)
    streams = [(r["stream"], r["method"]) for r in res.rows]
    assert streams == [
        ("no recompute", "stored"),
        ("shuffled", "cumulative"),
        ("shuffled", "unmixed"),
        ("label-sorted, 1/batch", "cumulative"),
        ("label-sorted, 1/batch", "unmixed"),
    ]
    by = {(r["stream"], r["method"]): r["accuracy"] for r in res.rows}
    # unmixed does not depend on the stream order
    assert by[("shuffled", "unmixed")] == by[("label-sorted, 1/batch", "unmixed")]


def test_merged_pair_figure_and_recipe() -> None:
    from core.figures.papers import bn_stream_data, bn_stream_figure
    from core.notebook_export import notebook_for
    from core.papers.unmix_bn import StreamStudy, merged_pair

    model, sd_a, _, _ = _cnn_and_data()
    sd_b = create_model("cnn", width=4, seed=1).state_dict()
    mid = merged_pair(model, sd_a, sd_b, align="naive")
    torch.testing.assert_close(
        mid["trunk.conv0.weight"], (sd_a["trunk.conv0.weight"] + sd_b["trunk.conv0.weight"]) / 2
    )
    with pytest.raises(ValueError, match="align"):
        merged_pair(model, sd_a, sd_b, align="zipit")
    rows = [
        {"stream": "no recompute", "classes_per_batch": 0, "method": "stored", "accuracy": 0.5},
        {"stream": "shuffled", "classes_per_batch": 0, "method": "cumulative", "accuracy": 0.8},
        {"stream": "shuffled", "classes_per_batch": 0, "method": "unmixed", "accuracy": 0.8},
    ]
    fig = bn_stream_figure(StreamStudy(rows, "toy"))
    assert [t.name for t in fig.data] == ["batch statistics (cumulative)", "unmixed"]
    assert len(bn_stream_data(StreamStudy(rows))) == 3
    nb = notebook_for({"kind": "bn_stream_study", "args": {"models": ["a", "b"], "task": "t"}})
    assert "bn_stream_study" in "\n".join(c.source for c in nb.cells)
