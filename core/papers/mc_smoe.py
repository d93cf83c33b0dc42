"""MC-SMoE: merge the experts of a sparse MoE, then compress them (Li, Zhang, Yadav, Sung, Cheng,
Bansal, Chen, "Merge, Then Compress: Demystify Efficient SMoE with Hints from Its Routing
Policy", ICLR 2024, arXiv 2310.01334; reference code UNITES-Lab/MC-SMoE, ``mcsmoe/merging``).

The steps, per MoE block of a :mod:`core.models.moe` model, with the reference's definitions:

1. **Routing statistics** on calibration inputs: the *activation frequency* of router entry e
   (how often e is among an input's top-k choices, normalised to sum 1) and the *router-logit
   similarity* of two entries: ``(cos(l_i, l_j) + 1) / 2`` of their logit columns over the
   inputs (the reference's ``similarity_base="router-logits"``, ``similarity_fn="cosine"``).
2. **Grouping** into ``n_groups`` groups (``group_experts_into_clusters_by_routing_guided``):
   the ``n_groups`` most frequently used entries are the *dominant* experts, one per group;
   every other entry joins the group of its most similar dominant expert.
3. **Merging** each group (``_merge_mlp_experts_by_usage_frequency_weighting`` with
   ``permute=True``): every member is first permuted onto the dominant expert (weight matching
   of the hidden units over fc1 rows, fc1 bias and fc2 columns, :func:`core.align.weight_matching`),
   then the group is averaged with weights proportional to the members' activation frequencies.
   The router is unchanged; all entries of a group are bound to the merged expert
   (``slot_of``), so a merged block stores ``n_groups`` experts.
4. **Compression** of each merged expert weight (after LoSparse, Li et al. 2023, as the
   reference's ``low_rank_decomposition``): ``W ~ L R + S`` with ``L R`` the best rank-r
   approximation (SVD), ``r = ceil(rank_fraction * H * W / (H + W))`` (the reference's
   ``parameter_ratio``), and ``S`` the residual ``W - L R`` keeping its ``sparse_density``
   largest-magnitude entries.

Variant implemented here: one token per input (the workbench's classifiers), the same number of
groups in every block (the reference also offers a global per-layer allocation), the dominant
expert is the group's reference for permutation (the reference uses the group's lowest index),
one-shot magnitude pruning of the residual (LoSparse prunes it iteratively while fine-tuning),
and no knowledge-distillation fine-tuning after merging (the paper's M-SMoE recovers with KD);
so the numbers are the merge itself. Memory is the number of stored values (float32): low-rank
factors plus the non-zeros of S count for a compressed weight.

Baselines in the study (as in the paper's ablations): uniform averaging within the same groups,
frequency-weighted averaging without permutation, random grouping merged exactly as M-SMoE
(permutation + frequency weights: the paper's grouping ablation, where only the grouping
differs), and keeping only the dominant experts (every other router entry bound to its group's
dominant expert unmerged: expert pruning). Random grouping is drawn ``random_draws`` times; its
row is the mean over the draws.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_range, check_tensor
from ..align import weight_matching
from ..align.permute import apply_permutation
from ..align.spec import PermutationSpec
from ..data import Dataset
from ..data.subset import stratified_subset
from ..models.moe import moe_layers
from ..params import StateDict, check_state_dict
from ..stats import bootstrap_ci
from ..train import evaluate

Progress = Callable[[int, int], None] | None
WEIGHTINGS = ("frequency", "uniform")
GROUPINGS = ("routing", "random")


@dataclass
class RoutingStats:
    """Per MoE block: ``frequency`` (E,) top-k selection shares (sum 1), ``similarity`` (E, E)
    router-logit similarity in [0, 1] (1 on the diagonal), and ``n_inputs``."""

    frequency: list[Tensor]
    similarity: list[Tensor]
    n_inputs: int = 0


def routing_statistics(model: nn.Module, x: Tensor, *, batch_size: int = 512) -> RoutingStats:
    """Activation frequencies and router-logit similarities of every MoE block on inputs ``x``.

    Args:
        model: a ``moe`` classifier (not modified; evaluated in eval mode on a copy).
        x: (N, ...) calibration inputs.
        batch_size: inputs per forward pass.
    """
    check_tensor("x", x, floating=True, finite=True, min_len=2)
    check_int("batch_size", batch_size, 1)
    work = copy.deepcopy(model).cpu().eval()
    layers = moe_layers(work)
    logits: list[list[Tensor]] = [[] for _ in layers]
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            work(x[start : start + batch_size])
            for i, layer in enumerate(layers):
                assert layer.last_logits is not None
                logits[i].append(layer.last_logits)
    freq, sim = [], []
    for layer, parts in zip(layers, logits, strict=True):
        lg = torch.cat(parts).double()  # (N, E)
        chosen = lg.topk(layer.top_k, dim=-1).indices  # (N, k)
        counts = torch.bincount(chosen.flatten(), minlength=layer.n_experts).double()
        freq.append((counts / counts.sum()).float())
        unit = lg / lg.norm(dim=0, keepdim=True).clamp_min(1e-12)  # columns of unit length
        sim.append(((unit.T @ unit + 1) / 2).float())  # (E, E)
    return RoutingStats(freq, sim, len(x))


def group_experts(frequency: Tensor, similarity: Tensor, n_groups: int) -> Tensor:
    """Routing-guided grouping: (E,) group labels; group g's dominant expert is the g-th most
    frequently used entry, every other entry joins its most similar dominant expert.

    Args:
        frequency: (E,) activation frequencies.
        similarity: (E, E) similarities.
        n_groups: groups (1..E).
    """
    check_tensor("frequency", frequency, ndim=1, floating=True, finite=True)
    n = len(frequency)
    check_tensor("similarity", similarity, ndim=2, floating=True, finite=True)
    if tuple(similarity.shape) != (n, n):
        raise ValueError(f"similarity must have shape ({n}, {n}), got {tuple(similarity.shape)}")
    check_int("n_groups", n_groups, 1, n)
    order = torch.argsort(frequency, descending=True, stable=True)  # (E,)
    cores = order[:n_groups]
    labels = torch.empty(n, dtype=torch.int64)
    labels[cores] = torch.arange(n_groups)
    for e in order[n_groups:].tolist():
        labels[e] = labels[cores[torch.argmax(similarity[e, cores])]]
    return labels


def random_groups(n_experts: int, n_groups: int, *, generator: torch.Generator) -> Tensor:
    """The random-grouping baseline: (E,) labels of a uniformly random partition of the
    ``n_experts`` entries into ``n_groups`` non-empty groups (a random permutation: its first
    ``n_groups`` entries found the groups, every other entry joins a uniformly random group).

    Args:
        n_experts: router entries (E >= 1).
        n_groups: groups (1..E).
        generator: the source of randomness.
    """
    check_int("n_experts", n_experts, 1)
    check_int("n_groups", n_groups, 1, n_experts)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    order = torch.randperm(n_experts, generator=generator)  # (E,)
    labels = torch.empty(n_experts, dtype=torch.int64)
    labels[order[:n_groups]] = torch.arange(n_groups)
    rest = order[n_groups:]
    labels[rest] = torch.randint(n_groups, (len(rest),), generator=generator)
    return labels


def dominant_experts(frequency: Tensor, labels: Tensor) -> list[int]:
    """The most used entry of each group, in label order."""
    out = []
    for g in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == g).flatten()
        out.append(int(members[torch.argmax(frequency[members])]))
    return out


def _expert_spec(hidden: int) -> PermutationSpec:
    return PermutationSpec(
        {"fc1.weight": ("P", None), "fc1.bias": ("P",), "fc2.weight": (None, "P")},
        {"P": hidden},
    )


def merge_expert_group(
    experts: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    *,
    reference: int = 0,
    permute: bool = True,
) -> StateDict:
    """One expert from a group: every member permuted onto ``experts[reference]`` (weight
    matching of hidden units) when ``permute``, then averaged with ``weights`` (normalised).

    Args:
        experts: state dicts with ``fc1.weight`` (H, D), ``fc1.bias`` (H,), ``fc2.weight``
            (D, H), ``fc2.bias`` (D,).
        weights: one non-negative weight per expert, not all zero.
        reference: index of the member the others are aligned to.
        permute: align before averaging.
    """
    if not experts:
        raise ValueError("experts must list at least one expert, got none")
    if len(weights) != len(experts):
        raise ValueError(f"weights must have {len(experts)} entries, got {len(weights)}")
    check_int("reference", reference, 0, len(experts) - 1)
    w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights}")
    sds = [check_state_dict(f"experts[{i}]", e) for i, e in enumerate(experts)]
    ref = sds[reference]
    spec = _expert_spec(int(ref["fc1.weight"].shape[0]))
    aligned = []
    for i, sd in enumerate(sds):
        if permute and i != reference:
            perm = weight_matching(spec, ref, sd, generator=torch.Generator().manual_seed(0))
            sd = apply_permutation(spec, perm, sd)
        aligned.append(sd)
    w = w / w.sum()
    return {
        k: sum(float(wi) * sd[k].double() for wi, sd in zip(w, aligned, strict=True)).to(  # type: ignore[union-attr]
            ref[k].dtype
        )
        for k in ref
    }


def _expert_sd(sd: Mapping[str, Tensor], block: int, slot: int) -> StateDict:
    prefix = f"trunk.moe{block}.experts.{slot}."
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


@dataclass
class MergedMoE:
    """A merged MoE: ``sd`` for ``create_model("moe", **arch_kwargs)`` (``n_slots`` set),
    ``labels`` (E,) per block, and the dominant experts per block."""

    sd: StateDict
    arch_kwargs: dict[str, Any]
    labels: list[Tensor]
    dominant: list[list[int]]


def merge_experts(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    stats: RoutingStats,
    n_groups: int,
    *,
    weighting: str = "frequency",
    permute: bool = True,
    prune: bool = False,
    grouping: str = "routing",
    generator: torch.Generator | None = None,
) -> MergedMoE:
    """M-SMoE: group every block's experts by routing statistics and merge each group.

    Args:
        model: the ``moe`` architecture (its ``spec`` gives the keyword arguments).
        sd: its state dict, one stored expert per router entry (not modified).
        stats: :func:`routing_statistics` of ``sd`` on calibration inputs.
        n_groups: merged experts per block.
        weighting: "frequency" (activation-frequency weights, M-SMoE) or "uniform".
        permute: align members onto the dominant expert before averaging.
        prune: keep each group's dominant expert unmerged (expert pruning baseline).
        grouping: "routing" (routing-guided groups, M-SMoE) or "random" (:func:`random_groups`,
            the baseline; needs ``generator``).
        generator: randomness of ``grouping="random"``.
    """
    sd = check_state_dict("sd", sd)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("grouping", grouping, GROUPINGS)
    if grouping == "random" and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator for grouping='random', got {generator!r}"
        )
    layers = moe_layers(model)
    if len(stats.frequency) != len(layers):
        raise ValueError(f"stats must cover {len(layers)} MoE blocks, got {len(stats.frequency)}")
    n_experts = layers[0].n_experts
    check_int("n_groups", n_groups, 1, n_experts)
    for i, layer in enumerate(layers):
        if len(layer.experts) != n_experts or not torch.equal(
            sd[f"trunk.moe{i}.slot_of"], torch.arange(n_experts)
        ):
            raise ValueError(f"sd block {i} is already merged; merge the unmerged model")
    spec = getattr(model, "spec", None)
    if spec is None or spec.name != "moe":
        raise ValueError("model must come from create_model('moe', ...)")
    out: StateDict = {k: v.clone() for k, v in sd.items() if ".experts." not in k}
    all_labels, all_dominant = [], []
    for i in range(len(layers)):
        freq = stats.frequency[i]
        if grouping == "random":
            assert generator is not None
            labels = random_groups(n_experts, n_groups, generator=generator)
        else:
            labels = group_experts(freq, stats.similarity[i], n_groups)
        dominant = dominant_experts(freq, labels)
        for g, core in enumerate(dominant):
            members = torch.nonzero(labels == g).flatten().tolist()
            if prune:
                merged = {k: v.clone() for k, v in _expert_sd(sd, i, core).items()}
            else:
                weights = [float(freq[m]) if weighting == "frequency" else 1.0 for m in members]
                if sum(weights) <= 0:  # a group of never-used experts: plain average
                    weights = [1.0] * len(members)
                merged = merge_expert_group(
                    [_expert_sd(sd, i, m) for m in members],
                    weights,
                    reference=members.index(core),
                    permute=permute,
                )
            for k, v in merged.items():
                out[f"trunk.moe{i}.experts.{g}.{k}"] = v
        out[f"trunk.moe{i}.slot_of"] = labels.clone()
        all_labels.append(labels)
        all_dominant.append(dominant)
    kwargs = {**spec.kwargs, "n_slots": n_groups}
    return MergedMoE(out, kwargs, all_labels, all_dominant)


def low_rank_plus_sparse(
    w: Tensor, *, rank_fraction: float = 0.15, sparse_density: float = 0.1
) -> tuple[Tensor, int]:
    """LoSparse-style ``W ~ L R + S`` (see module doc): the reconstruction and the number of
    stored values (``r * (H + W)`` + non-zeros of S).

    Args:
        w: (H, W) weight.
        rank_fraction: the low-rank part's share of ``H * W`` parameters (0 = no low-rank part).
        sparse_density: fraction of the residual's entries kept in S (0 = none, 1 = exact).
    """
    check_tensor("w", w, ndim=2, floating=True, finite=True)
    check_range("rank_fraction", rank_fraction, 0.0, 1.0)
    check_range("sparse_density", sparse_density, 0.0, 1.0)
    h, wd = w.shape
    rank = min(math.ceil(rank_fraction * h * wd / (h + wd)), min(h, wd))
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    low = (u[:, :rank] * s[:rank]) @ vh[:rank]  # (H, W)
    resid = w.double() - low
    n_keep = int(round(sparse_density * resid.numel()))
    sparse = torch.zeros_like(resid)
    if n_keep > 0:
        idx = resid.abs().flatten().topk(n_keep).indices
        sparse.view(-1)[idx] = resid.view(-1)[idx]
    return (low + sparse).to(w.dtype), rank * (h + wd) + n_keep


def compress_experts(
    sd: Mapping[str, Tensor], *, rank_fraction: float = 0.15, sparse_density: float = 0.1
) -> tuple[StateDict, int]:
    """Every expert weight matrix replaced by its low-rank + sparse reconstruction; returns the
    new state dict and the number of stored values of all expert weights and biases."""
    sd = check_state_dict("sd", sd)
    out: StateDict = {}
    stored = 0
    for k, v in sd.items():
        if ".experts." in k and k.endswith(".weight"):
            out[k], n = low_rank_plus_sparse(
                v, rank_fraction=rank_fraction, sparse_density=sparse_density
            )
            stored += n
        else:
            out[k] = v.clone()
            if ".experts." in k:
                stored += v.numel()
    return out, stored


def stored_values(sd: Mapping[str, Tensor], expert_values: int | None = None) -> int:
    """Stored floating-point values of ``sd`` (buffers of integers excluded); the expert part
    replaced by ``expert_values`` when given (compressed experts)."""
    total = sum(v.numel() for v in sd.values() if v.is_floating_point())
    if expert_values is not None:
        total += expert_values - sum(
            v.numel() for k, v in sd.items() if ".experts." in k and v.is_floating_point()
        )
    return total


@dataclass
class MCSMoEStudy:
    """Rows: method, n_groups, compressed, stored (values), memory_kb (float32), accuracy,
    low, high (95% bootstrap CI), draws (merges averaged: ``random_draws`` for random grouping,
    else 1), draw_min, draw_max (their lowest and highest accuracy). ``frequency`` per block of
    the unmerged model."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    frequency: list[list[float]] = field(default_factory=list)
    task: str = ""


METHODS: dict[str, dict[str, Any]] = {
    "M-SMoE (permute + frequency)": {"weighting": "frequency", "permute": True},
    "frequency, no permutation": {"weighting": "frequency", "permute": False},
    "uniform average + permute": {"weighting": "uniform", "permute": True},
    "random groups (permute + frequency)": {
        "grouping": "random",
        "weighting": "frequency",
        "permute": True,
    },
    "dominant experts only (prune)": {"prune": True},
}


def mc_smoe_study(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    data: Dataset,
    *,
    group_counts: Sequence[int] = (6, 4, 2, 1),
    rank_fraction: float = 0.15,
    sparse_density: float = 0.1,
    n_examples: int = 2000,
    seed: int = 0,
    random_draws: int = 5,
    progress: Progress = None,
) -> MCSMoEStudy:
    """Memory vs accuracy as experts are merged (each method, each group count), and MC-SMoE
    (M-SMoE then low-rank + sparse compression).

    Args:
        model: the ``moe`` architecture (never modified).
        sd: its trained state dict (unmerged).
        data: task: ``n_examples`` training inputs give the routing statistics; the test split
            scores.
        group_counts: merged experts per block (each in 1..n_experts).
        rank_fraction, sparse_density: compression of the merged experts.
        n_examples: calibration inputs.
        seed: seed of the calibration subset, the random groupings and the bootstrap.
        random_draws: random groupings averaged per group count (>= 1).
        progress: called as ``(done, total)`` (one step per row).
    """
    sd = check_state_dict("sd", sd)
    layers = moe_layers(model)
    if not group_counts:
        raise ValueError("group_counts must list at least one group count, got none")
    for g in group_counts:
        check_int("group_counts", g, 1, layers[0].n_experts)
    check_int("n_examples", n_examples, 2)
    check_int("seed", seed, 0)
    check_int("random_draws", random_draws, 1)
    from ..models import create_model

    rows = stratified_subset(data.y_train, n_examples, random_state=seed, key="routing")
    stats = routing_statistics(model, data.x_train[rows])  # training sets are class-sorted
    study = MCSMoEStudy(frequency=[f.tolist() for f in stats.frequency], task=data.name)
    total = 1 + len(group_counts) * (len(METHODS) + 1)
    done = 0

    def correct(state: StateDict, kw: dict) -> Tensor:
        net = create_model("moe", seed=None, **kw).eval()
        net.load_state_dict(state)
        return evaluate(net, data.x_test, data.y_test, device="cpu").correct

    def add(method: str, groups: int, merges: list[tuple[StateDict, dict]], values=None) -> None:
        """One row: the test accuracy of ``merges`` (the mean over them when several)."""
        nonlocal done
        hits = [correct(state, kw) for state, kw in merges]
        per_draw = [int(h.sum()) / h.numel() for h in hits]
        draw = torch.arange(len(hits)).repeat_interleave(len(hits[0]))
        ci = bootstrap_ci(
            torch.cat(hits), n_boot=1000, random_state=seed, groups=draw if len(hits) > 1 else None
        )
        stored = stored_values(merges[0][0], values)
        study.rows.append(
            {
                "method": method,
                "n_groups": groups,
                "compressed": values is not None,
                "stored": stored,
                "memory_kb": stored * 4 / 1024,
                "accuracy": ci.estimate,
                "low": ci.low,
                "high": ci.high,
                "draws": len(hits),
                "draw_min": min(per_draw),
                "draw_max": max(per_draw),
            }
        )
        done += 1
        if progress is not None:
            progress(done, total)

    base_kw: dict[str, Any] = dict(model.spec.kwargs)  # type: ignore[union-attr,arg-type]
    add("full SMoE", layers[0].n_experts, [(dict(sd), base_kw)])
    for g in group_counts:
        merged = None
        for name, options in METHODS.items():
            gen = torch.Generator().manual_seed(seed * 1000 + g)
            n = random_draws if options.get("grouping") == "random" else 1
            ms = [merge_experts(model, sd, stats, g, **options, generator=gen) for _ in range(n)]
            merged = ms[0] if name.startswith("M-SMoE") else merged
            add(name, g, [(m.sd, m.arch_kwargs) for m in ms])
        assert merged is not None
        small, values = compress_experts(
            merged.sd, rank_fraction=rank_fraction, sparse_density=sparse_density
        )
        add("MC-SMoE (merge + compress)", g, [(small, merged.arch_kwargs)], values)
    return study


__all__ = [
    "METHODS",
    "MCSMoEStudy",
    "MergedMoE",
    "RoutingStats",
    "compress_experts",
    "dominant_experts",
    "group_experts",
    "low_rank_plus_sparse",
    "mc_smoe_study",
    "merge_expert_group",
    "merge_experts",
    "random_groups",
    "routing_statistics",
    "stored_values",
]
