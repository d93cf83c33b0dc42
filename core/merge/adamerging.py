"""AdaMerging: learn merge coefficients by entropy minimisation on unlabeled inputs.

Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024,
arXiv:2310.02575.

θ(λ) = θ₀ + Σₖ λₖ τₖ (task-wise, one λ per task) or θ₀ + Σₖ λₖ,ₗ τₖ,ₗ (layer-wise, one λ per
task per state-dict tensor). The λ start at ``init`` (0.3), are clamped to [0, 1] in the
forward pass and after every step, and minimise the Shannon entropy of the merged model's
predictions on unlabeled batches (mean over the batch, summed over the tasks' inputs) with
Adam. The model is evaluated with ``torch.func.functional_call``, so it is never modified and
gradients reach only λ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_range, check_tensor
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory

MODE = Hyper(
    "mode",
    "choice",
    "task",
    choices=("task", "layer"),
    help="one coefficient per task, or per task and tensor",
)
STEPS = Hyper("steps", "int", 100, 0, 1000, 10, help="Adam steps on the entropy")
LR = Hyper("lr", "float", 1e-3, 1e-4, 1e-1, 1e-4, help="Adam learning rate")
INIT = Hyper("init", "float", 0.3, 0.0, 1.0, 0.05, help="initial coefficient (the paper's prior)")
BATCH = Hyper("batch_size", "int", 16, 1, 512, 1, help="unlabeled examples per task per step")


@dataclass(frozen=True)
class AdaMergingResult:
    """Outcome of :func:`adamerging_coefficients`.

    Attributes:
        state_dict: θ₀ + Σ λ τ with the learned (clamped) coefficients.
        coefficients: (K,) task-wise or (K, L) layer-wise λ in [0, 1].
        keys: the L parameter names the layer-wise columns refer to (floating buffers such as
            BatchNorm statistics follow each task's mean coefficient).
        entropy: loss before each step (length ``steps``) and after the last one.
    """

    state_dict: StateDict
    coefficients: Tensor
    keys: tuple[str, ...]
    entropy: tuple[float, ...]


@METHODS.register(
    "adamerging",
    title="AdaMerging",
    paper="https://arxiv.org/abs/2310.02575",
    params=(MODE, STEPS, LR, INIT, BATCH),
    tags=("needs_base", "data_dependent"),
)
def adamerging(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    model: nn.Module,
    x: Tensor | Sequence[Tensor],
    mode: str = "task",
    steps: int = 100,
    lr: float = 1e-3,
    init: float = 0.3,
    batch_size: int = 16,
) -> StateDict:
    """AdaMerging; ``model`` gives the architecture, ``x`` the unlabeled inputs (one tensor,
    or one per task). Use :func:`adamerging_coefficients` for the learned λ."""
    assert base is not None  # merge() checks needs_base
    return adamerging_coefficients(
        model,
        base,
        models,
        x,
        mode=mode,
        steps=steps,
        lr=lr,
        init=init,
        batch_size=batch_size,
        generator=generator,
    ).state_dict


def adamerging_coefficients(
    model: nn.Module,
    base: StateDict,
    models: Sequence[StateDict],
    x: Tensor | Sequence[Tensor],
    *,
    mode: str = "task",
    steps: int = 100,
    lr: float = 1e-3,
    init: float = 0.3,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> AdaMergingResult:
    """Learn the AdaMerging coefficients.

    Args:
        model: a module whose state dict matches ``base`` (used through functional_call only).
        base: θ₀.
        models: K fine-tuned state dicts.
        x: unlabeled inputs, one (N, ...) tensor or a list with one per task.
        mode: "task" or "layer".
        steps: Adam steps (0 returns task arithmetic with λ = init).
        lr: Adam learning rate.
        init: initial λ in [0, 1].
        batch_size: examples drawn (seeded by ``generator``) per input tensor per step.
        generator: seeds the batch draws.
    """
    check_choice("mode", mode, ("task", "layer"))
    check_int("steps", steps, 0)
    check_range("lr", lr, 0.0, None, low_inclusive=False)
    check_range("init", init, 0.0, 1.0)
    check_int("batch_size", batch_size, 1)
    xs = [x] if isinstance(x, Tensor) else list(x)
    for i, xi in enumerate(xs):
        check_tensor(f"x[{i}]", xi, floating=True, finite=True, min_len=1)
    names = {k for k, _ in model.named_parameters()}
    keys = tuple(k for k, v in base.items() if v.is_floating_point() and k in names)
    floats = [k for k, v in base.items() if v.is_floating_point()]
    taus = {k: torch.stack([m[k].detach() - base[k].detach() for m in models]) for k in floats}
    shape = (len(models),) if mode == "task" else (len(models), len(keys))
    lam = torch.full(shape, float(init), requires_grad=True)  # (K,) or (K, L)
    opt = torch.optim.Adam([lam], lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    was_training = model.training
    model.eval()
    history = []
    try:
        for _ in range(steps):
            loss = _entropy_loss(model, base, taus, keys, lam, xs, batch_size, generator)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                lam.clamp_(0.0, 1.0)
            history.append(float(loss.detach()))
        with torch.no_grad():
            history.append(
                float(_entropy_loss(model, base, taus, keys, lam, xs, batch_size, generator))
            )
    finally:
        model.train(was_training)
    coef = lam.detach().clamp(0.0, 1.0)
    merged = _merged(base, taus, keys, coef)
    return AdaMergingResult(
        state_dict={k: v.detach().clone() for k, v in merged.items()},
        coefficients=coef.clone(),
        keys=keys,
        entropy=tuple(history),
    )


def _merged(
    base: StateDict, taus: dict[str, Tensor], keys: tuple[str, ...], lam: Tensor
) -> StateDict:
    """θ₀ + Σₖ λ τₖ for every floating key; integer buffers from base."""
    out = dict(base)
    for j, k in enumerate(keys):
        c = (lam if lam.ndim == 1 else lam[:, j]).clamp(0.0, 1.0).to(taus[k].dtype)  # (K,)
        out[k] = base[k] + torch.tensordot(c, taus[k], dims=1)  # (*shape)
    return out


def _entropy_loss(
    model: nn.Module,
    base: StateDict,
    taus: dict[str, Tensor],
    keys: tuple[str, ...],
    lam: Tensor,
    xs: list[Tensor],
    batch_size: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Σ over input tensors of the mean prediction entropy on a random batch."""
    params = _merged(base, taus, keys, lam)
    loss = torch.zeros(())
    for xi in xs:
        idx = torch.randperm(xi.shape[0], generator=generator)[:batch_size]  # (B,)
        logits = torch.func.functional_call(model, params, (xi[idx],))  # (B, C)
        logp = F.log_softmax(logits, dim=-1)  # (B, C)
        loss = loss + (-(logp.exp() * logp).sum(dim=-1)).mean()
    return loss


def prepare_adamerging(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """AdaMerging's data: the architecture and the unlabeled inputs of every task (test-time
    adaptation, as in the paper)."""
    return {"model": modules(None), "x": data.unlabeled()}


METHODS.attach("adamerging", prepare=prepare_adamerging)
