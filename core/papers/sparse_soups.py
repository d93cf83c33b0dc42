"""Sparse Model Soups (Zimmer, Spiegel, Pokutta, "Sparse Model Soups: A Recipe for Improved
Pruning via Model Averaging", ICLR 2024, arXiv 2306.16788; reference code ZIB-IOL/SMS).

Variant implemented (the paper's Algorithm 1 with uniform souping, ``ensemble_by = seed``):

1. start from a trained dense model ``theta``;
2. for each of ``cycles`` prune-retrain phases (iterative magnitude pruning, IMP):
   a. prune: global unstructured magnitude pruning of every weight matrix / conv kernel
      (biases, norms and BatchNorm statistics are kept) to the cycle's sparsity
      ``1 - (1 - prune_fraction) ** cycle``; the mask is computed from ``theta`` and always
      contains the previous cycle's zeros;
   b. retrain ``n_ingredients`` copies of the pruned ``theta`` under the same mask, each with a
      different seed (data order), with gradients of pruned weights masked to zero, so every
      copy keeps exactly the mask;
   c. soup: the uniform average of the copies; the mask is shared, so the average has exactly
      the same zeros (the paper re-applies the mask of the last model; here it is checked);
      BatchNorm statistics of the soup are re-estimated on training data when the model has
      BatchNorm;
   d. the soup is the starting point of the next phase.

Headline claim: at every sparsity the soup is more accurate than each of its ingredients (and
than the IMP model, which is one ingredient continued alone), and as sparse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from .._checks import check_int, check_range
from ..data import Dataset
from ..merge.bn import recompute_batchnorm
from ..params import StateDict, check_state_dict
from ..train import TrainConfig, evaluate, train

Progress = Callable[[int, int], None] | None


def prunable_keys(sd: Mapping[str, Tensor]) -> list[str]:
    """Keys pruned by IMP: weight tensors with at least 2 dimensions (linear and conv)."""
    return [k for k, v in sd.items() if k.endswith("weight") and v.ndim >= 2]


def magnitude_mask(
    sd: Mapping[str, Tensor],
    sparsity: float,
    *,
    keys: list[str] | None = None,
    previous: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Global magnitude mask: keep the ``1 - sparsity`` fraction of largest-|w| entries.

    Args:
        sd: state dict whose weights are ranked (not modified).
        sparsity: fraction of the entries of ``keys`` set to zero, in [0, 1).
        keys: tensors that are pruned (default :func:`prunable_keys`).
        previous: an earlier mask; entries it removed stay removed (IMP is monotone).

    Returns:
        key -> bool mask (True = kept), one per pruned key.
    """
    sd = check_state_dict("sd", sd)
    check_range("sparsity", sparsity, 0.0, 1.0, high_inclusive=False)
    keys = prunable_keys(sd) if keys is None else keys
    missing = [k for k in keys if k not in sd]
    if not keys or missing:
        raise ValueError(f"keys must name weights of sd, got {keys!r} (missing {missing})")
    scores = []
    for k in keys:
        s = sd[k].detach().abs().float().flatten()
        if previous is not None and k in previous:
            s = torch.where(previous[k].flatten(), s, torch.full_like(s, -1.0))  # pruned stay out
        scores.append(s)
    flat = torch.cat(scores)  # (P,) all prunable entries
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_prune > 0:
        order = torch.argsort(flat, stable=True)  # smallest first; ties by position
        keep[order[:n_prune]] = False
    out, start = {}, 0
    for k in keys:
        n = sd[k].numel()
        out[k] = keep[start : start + n].reshape(sd[k].shape)
        start += n
    return out


def apply_mask(sd: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> StateDict:
    """A copy of ``sd`` with masked-out entries set to zero."""
    return {k: (v * mask[k].to(v.dtype) if k in mask else v.clone()) for k, v in sd.items()}


def sparsity_of(sd: Mapping[str, Tensor], keys: list[str]) -> float:
    """Fraction of exact zeros over the tensors ``keys``."""
    zeros = sum(int((sd[k] == 0).sum()) for k in keys)
    return zeros / max(1, sum(sd[k].numel() for k in keys))


def masked_retrain(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    mask: Mapping[str, Tensor],
    data: Dataset,
    config: TrainConfig,
    *,
    device: str = "cpu",
) -> StateDict:
    """Retrain a copy of ``model`` loaded with ``sd`` while pruned weights stay exactly zero.

    Gradients of pruned entries are masked to zero (with weight decay 0, Adam and SGD then never
    move them); the mask is applied once more at the end so a non-zero weight decay cannot leak.
    """
    work = copy.deepcopy(model)
    work.load_state_dict(apply_mask(sd, mask))
    params = dict(work.named_parameters())
    handles = []
    for k, m in mask.items():
        if k not in params:
            raise ValueError(f"mask key {k!r} is not a parameter of the model")
        keep = m.to(params[k].device, params[k].dtype)
        handles.append(params[k].register_hook(lambda g, keep=keep: g * keep))
    try:
        train(work, data.x_train, data.y_train, config, n_classes=data.n_classes, device=device)
    finally:
        for h in handles:
            h.remove()
    out = {k: v.detach().cpu().clone() for k, v in work.state_dict().items()}
    return apply_mask(out, mask)


@dataclass(frozen=True)
class SoupConfig:
    """Sparse Model Soups settings (tiny defaults for the workbench's MLPs)."""

    cycles: int = 3  # prune-retrain phases
    prune_fraction: float = 0.5  # fraction of the remaining weights pruned per phase
    n_ingredients: int = 3  # retrained copies per phase (different seeds)
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-3))
    bn_examples: int = 2000  # training inputs for the soup's BatchNorm re-estimation

    def __post_init__(self) -> None:
        check_int("cycles", self.cycles, 1, 20)
        check_range(
            "prune_fraction",
            self.prune_fraction,
            0.0,
            1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        check_int("n_ingredients", self.n_ingredients, 2, 32)
        check_int("bn_examples", self.bn_examples, 1)
        if not isinstance(self.retrain, TrainConfig):
            raise TypeError(f"retrain must be a TrainConfig, got {type(self.retrain).__name__}")


@dataclass
class SoupCycle:
    """One prune-retrain phase.

    Attributes:
        cycle: 1-based phase number.
        target_sparsity: the phase's pruning target.
        ingredient_accuracy: test accuracy of each retrained copy.
        ingredient_sparsity: measured fraction of zeros of each copy.
        soup_accuracy: test accuracy of the uniform soup.
        soup_sparsity: measured fraction of zeros of the soup.
        pruned_accuracy: test accuracy right after pruning, before retraining.
    """

    cycle: int
    target_sparsity: float
    ingredient_accuracy: list[float]
    ingredient_sparsity: list[float]
    soup_accuracy: float
    soup_sparsity: float
    pruned_accuracy: float

    @property
    def best_ingredient(self) -> float:
        return max(self.ingredient_accuracy)


@dataclass
class SoupResult:
    """A Sparse Model Soups run: the dense start, one record per phase, the final soup."""

    dense_accuracy: float
    cycles: list[SoupCycle]
    soup: StateDict
    task: str = ""


def sparse_model_soup(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    data: Dataset,
    config: SoupConfig = SoupConfig(),
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: Progress = None,
) -> SoupResult:
    """Run Sparse Model Soups from the trained dense weights ``sd`` on ``data``.

    Args:
        model: the architecture (not modified).
        sd: trained dense state dict (not modified).
        data: task with train (retraining, BN) and test (reported accuracy) splits.
        config: phases, pruning rate, ingredients and retraining hyperparameters.
        seed: ingredient ``i`` of phase ``c`` trains with seed ``seed + 1000 c + i``.
        device: where retraining runs.
        progress: called as ``(done, total)`` after each retrained copy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    sd = check_state_dict("sd", sd)
    if not isinstance(config, SoupConfig):
        raise TypeError(f"config must be a SoupConfig, got {type(config).__name__}")
    check_int("seed", seed, 0)
    keys = prunable_keys(sd)
    work = copy.deepcopy(model).cpu()

    def accuracy(state: Mapping[str, Tensor]) -> float:
        work.load_state_dict(state)
        return evaluate(work, data.x_test, data.y_test, device="cpu").accuracy

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    bn_x = data.x_train[: config.bn_examples]
    current = {k: v.detach().cpu().clone() for k, v in sd.items()}
    dense = accuracy(current)
    mask: dict[str, Tensor] | None = None
    total, done = config.cycles * config.n_ingredients, 0
    cycles: list[SoupCycle] = []
    for c in range(1, config.cycles + 1):
        target = 1.0 - (1.0 - config.prune_fraction) ** c
        mask = magnitude_mask(current, target, keys=keys, previous=mask)
        pruned = apply_mask(current, mask)
        ingredients: list[StateDict] = []
        for i in range(config.n_ingredients):
            cfg = replace(config.retrain, seed=seed + 1000 * c + i)
            ingredients.append(masked_retrain(model, pruned, mask, data, cfg, device=device))
            done += 1
            if progress is not None:
                progress(done, total)
        soup = {
            k: torch.stack([s[k].float() for s in ingredients]).mean(0).to(pruned[k].dtype)
            for k in pruned
        }
        if has_bn:
            soup = recompute_batchnorm(model, soup, bn_x)
        cycles.append(
            SoupCycle(
                cycle=c,
                target_sparsity=target,
                ingredient_accuracy=[accuracy(s) for s in ingredients],
                ingredient_sparsity=[sparsity_of(s, keys) for s in ingredients],
                soup_accuracy=accuracy(soup),
                soup_sparsity=sparsity_of(soup, keys),
                pruned_accuracy=accuracy(pruned),
            )
        )
        current = soup
    return SoupResult(dense, cycles, current, data.name)


__all__ = [
    "SoupConfig",
    "SoupCycle",
    "SoupResult",
    "apply_mask",
    "magnitude_mask",
    "masked_retrain",
    "prunable_keys",
    "sparse_model_soup",
    "sparsity_of",
]
