"""MC-SMoE (Li et al., ICLR 2024): routing statistics, grouping, permutation-aligned
frequency-weighted merging, low-rank + sparse compression, and the study."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from core.data import get_task
from core.models import create_model
from core.models.moe import moe_layers, set_route
from core.papers.mc_smoe import (
    METHODS,
    compress_experts,
    dominant_experts,
    group_experts,
    low_rank_plus_sparse,
    mc_smoe_study,
    merge_expert_group,
    merge_experts,
    random_groups,
    routing_statistics,
    stored_values,
)

KW = dict(width=16, depth=2, n_experts=4, top_k=2, expert_width=8, image_size=8)


def _model(seed: int = 0):
    return create_model("moe", seed=seed, **KW).eval()


def test_moe_forward_is_the_top_k_gate_by_hand() -> None:
    m = _model()
    x = torch.randn(5, 1, 8, 8)
    layer = moe_layers(m)[0]
    h = torch.relu(m.trunk.embed(x.flatten(1)))
    logits = layer.router(h)
    top, idx = logits.topk(2, dim=-1)
    g = torch.softmax(top, -1)
    want = torch.zeros_like(h)
    for n in range(5):
        for j in range(2):
            want[n] += g[n, j] * layer.experts[int(idx[n, j])](h[n : n + 1])[0]
    assert torch.allclose(layer(h), want, atol=1e-6)
    set_route(m, "rank", rank=1)  # only the second-ranked expert, gate 1
    got = layer(h)
    for n in range(5):
        assert torch.allclose(got[n], layer.experts[int(idx[n, 1])](h[n : n + 1])[0], atol=1e-6)
    with pytest.raises(ValueError, match="route"):
        set_route(m, "nope")


def test_balance_loss_only_in_training_and_cleared() -> None:
    m = _model().train()
    m(torch.randn(6, 1, 8, 8))
    aux = m.auxiliary_loss()
    assert aux is not None and aux.requires_grad and float(aux.detach()) > 0
    assert m.auxiliary_loss() is None  # read once
    m.eval()(torch.randn(6, 1, 8, 8))
    assert m.auxiliary_loss() is None


def test_routing_statistics_definitions() -> None:
    m = _model()
    x = torch.randn(40, 1, 8, 8)
    st = routing_statistics(m, x)
    assert len(st.frequency) == 2 and st.n_inputs == 40
    m(x)
    logits = moe_layers(m)[0].last_logits
    counts = torch.bincount(logits.topk(2, -1).indices.flatten(), minlength=4).float()
    assert torch.allclose(st.frequency[0], counts / 80)
    cos = torch.nn.functional.cosine_similarity(logits[:, 0], logits[:, 1], dim=0)
    assert st.similarity[0][0, 1] == pytest.approx(float((cos + 1) / 2), abs=1e-5)
    assert torch.allclose(st.similarity[0].diagonal(), torch.ones(4), atol=1e-5)


def test_group_experts_routing_guided() -> None:
    freq = torch.tensor([0.1, 0.4, 0.3, 0.2])
    sim = torch.tensor(
        [[1, 0.2, 0.9, 0.1], [0.2, 1, 0.3, 0.8], [0.9, 0.3, 1, 0.4], [0.1, 0.8, 0.4, 1.0]]
    )
    labels = group_experts(freq, sim, 2)
    # dominant: 1 (label 0) and 2 (label 1); 3 is closest to 1, 0 to 2
    assert labels.tolist() == [1, 0, 1, 0]
    assert group_experts(freq, sim, 4).tolist() == [3, 0, 1, 2]
    assert group_experts(freq, sim, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="n_groups"):
        group_experts(freq, sim, 5)


def test_dominant_experts_are_the_most_frequently_routed() -> None:
    m = _model()
    x = torch.randn(60, 1, 8, 8)
    st = routing_statistics(m, x)
    for g in (1, 2, 3):
        merged = merge_experts(m, m.state_dict(), st, g)
        for block in range(2):
            freq = st.frequency[block]
            top = freq.topk(g).indices.tolist()  # the g most used router entries lead
            assert sorted(merged.dominant[block]) == sorted(top)
            labels = merged.labels[block]
            for lead in top:  # each leads its own group and is its most used member
                members = labels == labels[lead]
                assert freq[lead] == freq[members].max()
    labels = torch.tensor([0, 1, 0, 1])
    assert dominant_experts(torch.tensor([0.1, 0.2, 0.6, 0.1]), labels) == [2, 1]


def test_random_groups_is_a_seeded_partition_into_non_empty_groups() -> None:
    seen = set()
    for seed in range(40):
        labels = random_groups(6, 3, generator=torch.Generator().manual_seed(seed))
        assert sorted(set(labels.tolist())) == [0, 1, 2]  # every group non-empty
        seen.add(tuple(labels.tolist()))
        again = random_groups(6, 3, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(labels, again)
    assert len(seen) > 20  # random, not one fixed partition
    assert random_groups(4, 4, generator=torch.Generator()).sort().values.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="n_groups"):
        random_groups(4, 5, generator=torch.Generator())
    m = _model()
    st = routing_statistics(m, torch.randn(20, 1, 8, 8))
    with pytest.raises(TypeError, match="generator"):
        merge_experts(m, m.state_dict(), st, 2, grouping="random")
    gen = torch.Generator().manual_seed(3)
    merged = merge_experts(m, m.state_dict(), st, 2, grouping="random", generator=gen)
    want = random_groups(4, 2, generator=torch.Generator().manual_seed(3))
    assert merged.labels[0].tolist() == want.tolist()


def test_merge_group_undoes_a_permutation_and_weights_by_frequency() -> None:
    e = _model().trunk.moe0.experts[0].state_dict()
    p = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    shuffled = {
        "fc1.weight": e["fc1.weight"][p],
        "fc1.bias": e["fc1.bias"][p],
        "fc2.weight": e["fc2.weight"][:, p],
        "fc2.bias": e["fc2.bias"],
    }
    merged = merge_expert_group([e, shuffled], [0.7, 0.3])
    for k in e:
        assert torch.allclose(merged[k], e[k], atol=1e-6), k
    plain = merge_expert_group([e, shuffled], [0.7, 0.3], permute=False)
    assert torch.allclose(plain["fc1.weight"], 0.7 * e["fc1.weight"] + 0.3 * e["fc1.weight"][p])
    with pytest.raises(ValueError, match="weights"):
        merge_expert_group([e, shuffled], [0.0, 0.0])


def test_frequency_weighted_merge_is_the_hand_computation() -> None:
    experts = [_model(seed).trunk.moe0.experts[0].state_dict() for seed in range(3)]
    freq = [0.5, 0.2, 0.1]  # un-normalised: the weights are freq / sum(freq)
    got = merge_expert_group(experts, freq, permute=False)
    for k in experts[0]:
        want = (0.5 * experts[0][k] + 0.2 * experts[1][k] + 0.1 * experts[2][k]) / 0.8
        assert torch.allclose(got[k], want, atol=1e-6), k
    # a member permuted twice over merges back onto the reference with the same weights
    p, q = (torch.randperm(8, generator=torch.Generator().manual_seed(s)) for s in (2, 3))
    e = experts[0]

    def permuted(pi: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "fc1.weight": e["fc1.weight"][pi],
            "fc1.bias": e["fc1.bias"][pi],
            "fc2.weight": e["fc2.weight"][:, pi],
            "fc2.bias": e["fc2.bias"],
        }

    back = merge_expert_group([e, permuted(p), permuted(q)], freq)
    assert all(torch.allclose(back[k], e[k], atol=1e-6) for k in e)
    # in the model: every stored expert is its group's frequency-weighted mean (no permutation)
    m = _model()
    sd = m.state_dict()
    st = routing_statistics(m, torch.randn(50, 1, 8, 8))
    for weighting in ("frequency", "uniform"):
        merged = merge_experts(m, sd, st, 2, weighting=weighting, permute=False)
        for block in range(2):
            labels, freq_b = merged.labels[block], st.frequency[block]
            for g in range(2):
                members = torch.nonzero(labels == g).flatten().tolist()
                w = freq_b[members] if weighting == "frequency" else torch.ones(len(members))
                if w.sum() == 0:
                    continue
                w = w / w.sum()
                for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                    want = sum(
                        float(wi) * sd[f"trunk.moe{block}.experts.{e}.{name}"]
                        for wi, e in zip(w, members, strict=True)
                    )
                    got = merged.sd[f"trunk.moe{block}.experts.{g}.{name}"]
                    assert torch.allclose(got, want, atol=1e-6), (weighting, block, g, name)


def test_merge_experts_binds_groups_and_keeps_function_at_full_count() -> None:
    m = _model()
    sd = m.state_dict()
    x = torch.randn(30, 1, 8, 8)
    st = routing_statistics(m, x)
    full = merge_experts(m, sd, st, 4)
    net = create_model("moe", seed=None, **full.arch_kwargs).eval()
    net.load_state_dict(full.sd)
    assert torch.allclose(net(x), m(x), atol=1e-5)
    two = merge_experts(m, sd, st, 2)
    net2 = create_model("moe", seed=None, **two.arch_kwargs).eval()
    net2.load_state_dict(two.sd)  # two stored experts per block
    assert len(net2.trunk.moe0.experts) == 2
    assert two.sd["trunk.moe0.slot_of"].tolist() == two.labels[0].tolist()
    assert stored_values(two.sd) < stored_values(sd)
    with pytest.raises(ValueError, match="already merged"):
        merge_experts(net2, two.sd, st, 2)
    assert torch.equal(
        sd["trunk.moe0.experts.0.fc1.weight"], m.state_dict()["trunk.moe0.experts.0.fc1.weight"]
    )


def test_low_rank_plus_sparse_limits_and_counts() -> None:
    w = torch.randn(12, 10, generator=torch.Generator().manual_seed(0))
    exact, n = low_rank_plus_sparse(w, rank_fraction=0.0, sparse_density=1.0)
    assert torch.allclose(exact, w, atol=1e-6) and n == 120
    low, n = low_rank_plus_sparse(w, rank_fraction=0.2, sparse_density=0.0)
    r = 2  # ceil(0.2 * 120 / 22)
    u, s, vh = torch.linalg.svd(w)
    assert torch.allclose(low, (u[:, :r] * s[:r]) @ vh[:r], atol=1e-5) and n == r * 22
    both, n = low_rank_plus_sparse(w, rank_fraction=0.2, sparse_density=0.1)
    assert n == r * 22 + 12 and (both - w).norm() < (low - w).norm()
    sd = _model().state_dict()
    small, values = compress_experts(sd, rank_fraction=0.2, sparse_density=0.1)
    assert set(small) == set(sd) and stored_values(small, values) < stored_values(sd)
    with pytest.raises(ValueError, match="sparse_density"):
        low_rank_plus_sparse(w, sparse_density=2.0)


def test_low_rank_plus_sparse_error_is_bounded_by_the_dropped_spectrum() -> None:
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    last = float("inf")
    for rank_fraction in (0.1, 0.3):
        r = math.ceil(rank_fraction * 24 * 16 / 40)
        tail = float((s[r:] ** 2).sum())  # Eckart-Young: the best rank-r error
        low, _ = low_rank_plus_sparse(w, rank_fraction=rank_fraction, sparse_density=0.0)
        assert float(((w - low) ** 2).sum()) == pytest.approx(tail, rel=1e-9)
        resid = (w - low).flatten()
        for density in (0.05, 0.2, 0.5):
            rec, n = low_rank_plus_sparse(w, rank_fraction=rank_fraction, sparse_density=density)
            keep = round(density * w.numel())
            assert n == r * 40 + keep
            # S keeps the largest residual entries: their energy is what it removes
            kept = float((resid.abs().topk(keep).values ** 2).sum())
            err = float(((w - rec) ** 2).sum())
            assert err == pytest.approx(tail - kept, rel=1e-9, abs=1e-12)
            assert err <= tail * (1 - density) + 1e-12  # at least a density share of it
        assert tail < last
        last = tail


def test_memory_accounting_counts_parameters() -> None:
    m = _model()
    sd = m.state_dict()
    d, h, x = 16, 8, 64  # width, expert width, input pixels
    dense = x * d + d  # embed
    per_block = d * 4  # router (no bias)
    expert = h * d + h + d * h + d  # fc1, fc2 with biases
    head = sum(p.numel() for n, p in m.named_parameters() if n.startswith("head."))
    assert stored_values(sd) == sum(p.numel() for p in m.parameters())
    assert stored_values(sd) == dense + 2 * (per_block + 4 * expert) + head
    st = routing_statistics(m, torch.randn(20, 1, 8, 8))
    for g in (3, 2, 1):
        merged = merge_experts(m, sd, st, g)
        net = create_model("moe", seed=None, **merged.arch_kwargs)
        want = dense + 2 * (per_block + g * expert) + head
        assert stored_values(merged.sd) == want == sum(p.numel() for p in net.parameters())
        small, values = compress_experts(merged.sd, rank_fraction=0.25, sparse_density=0.1)
        r = math.ceil(0.25 * h * d / (h + d))
        per_weight = r * (h + d) + round(0.1 * h * d)
        assert values == 2 * g * (2 * per_weight + h + d)
        assert stored_values(small, values) == dense + 2 * per_block + values + head


@pytest.mark.slow
def test_study_rows_and_figure() -> None:
    from core.figures.papers import mc_smoe_data, mc_smoe_figure

    d = get_task("digits")
    data = replace(
        d,
        x_train=d.x_train[:200],
        y_train=d.y_train[:200],
        x_test=d.x_test[:150],
        y_test=d.y_test[:150],
    )
    m = create_model("moe", seed=0, **{**KW, "image_size": 28}).eval()
    calls: list[tuple[int, int]] = []
    study = mc_smoe_study(
        m,
        m.state_dict(),
        data,
        group_counts=(2, 1),
        n_examples=100,
        progress=lambda *a: calls.append(a),
    )
    assert calls[-1] == (13, 13)  # full + 2 group counts x (5 methods + MC-SMoE)
    full = study.rows[0]
    assert full["method"] == "full SMoE" and full["n_groups"] == 4
    for r in study.rows[1:]:
        assert r["memory_kb"] < full["memory_kb"]
        assert r["low"] <= r["accuracy"] <= r["high"]
        assert r["draw_min"] <= r["accuracy"] + 1e-9 and r["accuracy"] <= r["draw_max"] + 1e-9
    rand = [r for r in study.rows if r["method"].startswith("random")]
    assert [r["draws"] for r in rand] == [5, 5]  # the default random_draws, one row each
    merged = [r for r in study.rows if r["method"] in METHODS and r["n_groups"] == 2]
    assert len({r["memory_kb"] for r in merged}) == 1  # equal memory at a group count
    table = mc_smoe_data(study)
    assert len(table) == len(study.rows)
    assert len(mc_smoe_figure(study).data) >= 5


def test_routing_statistics_see_every_class_of_a_sorted_training_set(monkeypatch) -> None:
    import core.papers.mc_smoe as mod

    d = get_task("digits")
    order = torch.argsort(d.y_train, stable=True)  # class-sorted, as the bundled sets are
    sorted_train = {"x_train": d.x_train[order], "y_train": d.y_train[order]}
    data = replace(d, x_test=d.x_test[:50], y_test=d.y_test[:50], **sorted_train)
    seen: list[torch.Tensor] = []
    real = mod.routing_statistics

    def spy(model, x, *a, **k):
        seen.append(x)
        return real(model, x, *a, **k)

    monkeypatch.setattr(mod, "routing_statistics", spy)
    m = create_model("moe", seed=0, **{**KW, "image_size": 28}).eval()
    mc_smoe_study(m, m.state_dict(), data, group_counts=(1,), n_examples=100)
    rows = [int(torch.nonzero((data.x_train == x).flatten(1).all(1))[0]) for x in seen[0]]
    assert len(set(data.y_train[rows].tolist())) == 10
