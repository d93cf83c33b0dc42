"""ZipIt! (Stoica et al., arXiv 2305.03053): greedy zipping, merge / unmerge, partial zipping."""

from __future__ import annotations

import pytest
import torch

from core.align import apply_permutation, random_permutation, spec_for
from core.align.zipit import ZippedMLP, feature_correlation, zip_features, zipit
from core.models import create_model


def _mlp(seed: int, width: int = 16, depth: int = 2):
    m = create_model("mlp", width=width, depth=depth, image_size=8, seed=seed)
    return m, {k: v.clone() for k, v in m.state_dict().items()}


def _reference_zipit(sims: torch.Tensor, r: float = 0.5, a: float = 0.3, b: float = 0.125):
    """The authors' ``match_tensors_zipit`` (gstoica27/ZipIt matching_functions.py), transcribed
    with its column removal, as an independent implementation."""

    def remove_col(x, idx):
        return torch.cat([x[:, :idx], x[:, idx + 1 :]], dim=-1)

    sims = sims.clone()
    n_all = sims.shape[0]
    remainder = int(n_all * (1 - r) + 1e-4)
    pm = torch.eye(n_all, n_all, dtype=sims.dtype)
    torch.diagonal(sims)[:] = -torch.inf
    num_models = int(1 / (1 - r) + 0.5)
    Om = n_all // num_models
    original_model = torch.zeros(n_all).long()
    for i in range(num_models):
        original_model[i * Om : (i + 1) * Om] = i
    to_remove = pm.shape[1] - remainder
    budget = torch.zeros(num_models).long() + int((to_remove // num_models) * b + 1e-4)
    while pm.shape[1] > remainder:
        best_idx = sims.reshape(-1).argmax()
        row_idx = best_idx % sims.shape[1]
        col_idx = best_idx // sims.shape[1]
        if col_idx < row_idx:
            row_idx, col_idx = col_idx, row_idx
        row_origin = original_model[row_idx]
        col_origin = original_model[col_idx]
        pm[:, row_idx] += pm[:, col_idx]
        pm = remove_col(pm, col_idx)
        sims[:, row_idx] = torch.minimum(sims[:, row_idx], sims[:, col_idx])
        sims[:, row_idx] *= a
        sims = remove_col(sims, col_idx)
        sims[row_idx, :] = torch.minimum(sims[row_idx, :], sims[col_idx, :])
        sims[row_idx, :] *= a
        sims = remove_col(sims.T, col_idx).T
        row_origin, col_origin = original_model[row_idx], original_model[col_idx]
        original_model = remove_col(original_model[None, :], col_idx)[0]
        if row_origin == col_origin:
            origin = original_model[row_idx].item()
            budget[origin] -= 1
            if budget[origin] <= 0:
                selector = original_model == origin
                sims[selector[:, None] & selector[None, :]] = -torch.inf
    return pm


def test_hand_worked_pairs_merge_across_models() -> None:
    corr = torch.eye(4, dtype=torch.float64)
    corr[0, 3] = corr[3, 0] = 0.9  # A0 ~ B1
    corr[1, 2] = corr[2, 1] = 0.8  # A1 ~ B0
    corr[0, 1] = corr[1, 0] = 0.1
    z = zip_features(corr)
    groups = sorted(tuple(torch.nonzero(z.unmerge[:, g]).flatten().tolist()) for g in range(2))
    assert groups == [(0, 3), (1, 2)]
    assert z.n_across == 2 and z.n_within == (0, 0)
    torch.testing.assert_close(z.merge.sum(1), torch.ones(2))
    assert set(z.merge.flatten().tolist()) == {0.0, 0.5}


def test_matches_the_reference_implementation_on_real_features() -> None:
    torch.manual_seed(0)
    _, sd_a = _mlp(0, width=24)
    _, sd_b = _mlp(1, width=24)
    x = torch.randn(300, 1, 8, 8)
    fa = torch.relu(x.flatten(1) @ sd_a["trunk.fc0.weight"].T + sd_a["trunk.fc0.bias"])
    fb = torch.relu(x.flatten(1) @ sd_b["trunk.fc0.weight"].T + sd_b["trunk.fc0.bias"])
    corr = feature_correlation(fa, fb)
    ref = _reference_zipit(corr.float())
    ours = zip_features(corr).unmerge
    assert ours.shape == ref.shape == (48, 24)
    torch.testing.assert_close(ours, ref.float())
    # the reference's covariance-based correlation (CovarianceMetric + compute_correlation)
    f = torch.cat([fa, fb], 1).double()
    cov = f.T @ f / len(f) - torch.outer(f.mean(0), f.mean(0))
    std = cov.diagonal().sqrt()
    torch.testing.assert_close(corr, cov / torch.outer(std, std).clamp_min(1e-7))


def test_within_model_budget_and_alpha() -> None:
    # A0 ~ A1 and B0 ~ B1 most correlated: within-model merges, limited by the budget
    corr = torch.eye(8, dtype=torch.float64)
    for i, j in ((0, 1), (2, 3), (4, 5), (6, 7)):
        corr[i, j] = corr[j, i] = 0.95
    for i in range(4):
        corr[i, 4 + i] = corr[4 + i, i] = 0.5
    z = zip_features(corr, beta=0.0)
    # budget int((4 // 2) * 0) = 0: the first same-model merge of each model disables the rest
    assert z.n_within == (1, 1)
    assert z.unmerge.shape == (8, 4)
    z_free = zip_features(corr, beta=1.0)  # budget 2 per model: all four within merges
    assert z_free.n_within == (2, 2) and z_free.n_across == 0
    with pytest.raises(ValueError, match="corr"):
        zip_features(torch.eye(3))
    with pytest.raises(ValueError, match="alpha"):
        zip_features(corr, alpha=2.0)


def test_zipping_a_permuted_copy_gives_back_the_same_function() -> None:
    # (seed 1, depth 2: no dead unit on these inputs; a dead unit has no twin to find, and
    # ZipIt! then zips it with anything, as the reference does)
    model, sd_a = _mlp(1, depth=2)
    spec = spec_for(model)
    sd_b = apply_permutation(
        spec, random_permutation(spec, generator=torch.Generator().manual_seed(1)), sd_a
    )
    x = torch.randn(400, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    res = zipit(model, sd_a, sd_b, x)
    assert res.state_dict is not None and res.stop_at == 2
    assert all(z.n_across == 16 for z in res.layers)  # every unit found its twin
    model.load_state_dict(sd_a)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), model(x), atol=1e-4, rtol=1e-4)
    # partial zipping: first layer shared, later layers and heads separate, same function
    part = zipit(model, sd_a, sd_b, x, stop_at=1)
    assert part.state_dict is None and isinstance(part.model, ZippedMLP)
    with torch.no_grad():
        torch.testing.assert_close(part.model(x), model(x), atol=1e-4, rtol=1e-4)
        assert len(part.model.branches(x)) == 2


def test_different_models_zip_and_inputs_stay_untouched() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    before = {k: v.clone() for k, v in sd_b.items()}
    x = torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = zipit(model, sd_a, sd_b, x)
    assert res.state_dict is not None
    assert {k: v.shape for k, v in res.state_dict.items()} == {k: v.shape for k, v in sd_a.items()}
    for k in before:
        torch.testing.assert_close(sd_b[k], before[k])
    # layer 0 of the zip is the mean of the merged rows (hand check on group 0)
    z = res.layers[0]
    members = torch.nonzero(z.unmerge[:, 0]).flatten()
    rows = torch.cat([sd_a["trunk.fc0.weight"], sd_b["trunk.fc0.weight"]])[members]
    torch.testing.assert_close(res.state_dict["trunk.fc0.weight"][0], rows.mean(0))
    with pytest.raises(ValueError, match="stop_at"):
        zipit(model, sd_a, sd_b, x, stop_at=5)
    cnn = create_model("cnn", width=4, seed=0)
    with pytest.raises(ValueError, match="MLP"):
        zipit(cnn, cnn.state_dict(), cnn.state_dict(), x)
    with pytest.raises(ValueError, match="batches"):
        zipit(model, sd_a, sd_b, [])
