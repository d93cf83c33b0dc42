"""Quadratic Bezier curves between two models (Garipov et al., "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018, arXiv 1802.10026).

phi(t) = (1 - t)^2 theta_A + 2 t (1 - t) theta_bend + t^2 theta_B, endpoints fixed. The bend
starts at the midpoint of the line and is trained to minimise E_{t ~ U[0, 1]} L(phi(t)) with one
uniformly drawn t per mini-batch (``torch.func.functional_call``; the caller's model is never
touched). Evaluation along the curve re-estimates BatchNorm statistics at every point, as
Garipov et al.'s ``update_bn`` does, and the straight line is evaluated the same way for
comparison.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._checks import check_int, check_range
from ..data import Dataset
from ..params import StateDict
from ._eval import PrivateNet, ProgressFn, device_of, float_state, prepare_data
from .path import PathResult, evaluate_path


@dataclass
class CurveResult:
    """A trained Bezier curve and the straight line, evaluated the same way.

    Attributes:
        curve: loss/accuracy along the Bezier curve.
        line: loss/accuracy along the straight line.
        bend: the trained bend (control point) as a state dict of parameters.
        train_loss: mini-batch loss of each training step.
    """

    curve: PathResult
    line: PathResult
    bend: StateDict
    train_loss: list[float] = field(default_factory=list)


def bezier_point(a: Tensor, bend: Tensor, b: Tensor, t: float) -> Tensor:
    """phi(t) = (1 - t)^2 a + 2 t (1 - t) bend + t^2 b."""
    return (1 - t) ** 2 * a + 2 * t * (1 - t) * bend + t**2 * b


def bezier_curve(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    steps: int = 400,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    n_points: int = 25,
    generator: torch.Generator,
    recompute_bn: bool | None = None,
    max_examples: int | None = 5000,
    bn_examples: int = 2000,
    device: str | torch.device = "cpu",
    head: int = 0,
    progress: ProgressFn | None = None,
) -> CurveResult:
    """Train a quadratic Bezier curve from ``sd_a`` to ``sd_b`` and evaluate it and the line.

    Args:
        model: the architecture (never modified).
        sd_a: model A (t = 0, fixed).
        sd_b: model B (t = 1, fixed).
        data: a Dataset or split name -> (x, y); training uses the "train" split (else the first).
        steps: optimisation steps (Adam), one t and one mini-batch per step.
        lr: Adam learning rate.
        batch_size: training mini-batch size.
        weight_decay: L2 penalty on phi(t) (Garipov et al.'s regulariser).
        n_points: evaluation points on [0, 1], endpoints included.
        generator: draws t and the mini-batches.
        recompute_bn: BatchNorm reset at every evaluation point (default: when the model has BN).
        max_examples: evaluation examples per split (fixed seeded subset); None for all.
        bn_examples: training examples per BatchNorm reset.
        device: "cpu", "cuda" or "auto".
        head: which head of a multi-head model.
        progress: ``progress(done, total)`` over training steps and evaluation points.

    Returns:
        A :class:`CurveResult`.
    """
    check_int("steps", steps, 0, 1_000_000)
    check_range("lr", lr, 0.0, 10.0, low_inclusive=False)
    check_int("batch_size", batch_size, 1)
    check_range("weight_decay", weight_decay, 0.0, 1.0)
    check_int("n_points", n_points, 2, 10_001)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    dev = device_of(device)
    a, b = float_state([sd_a, sd_b], ["sd_a", "sd_b"], dev)
    evdata = prepare_data(data, max_examples=max_examples, bn_examples=bn_examples, device=dev)
    raw = data if isinstance(data, Mapping) else {"train": (data.x_train, data.y_train)}
    x_tr, y_tr = raw["train"] if "train" in raw else next(iter(raw.values()))
    total = steps + 2 * n_points
    start = time.perf_counter()

    net = copy.deepcopy(model).to(dev).train()
    pnames = [n for n, _ in net.named_parameters()]
    bend = {k: ((a[k] + b[k]) / 2).clone().requires_grad_(True) for k in pnames}
    buffers = {k: v.detach().to(dev).clone() for k, v in net.named_buffers()}  # scratch BN stats
    opt = torch.optim.Adam(list(bend.values()), lr=lr)
    kw = {"head": head} if head else {}
    losses: list[float] = []
    for step in range(steps):
        t = float(torch.rand((), generator=generator))
        idx = torch.randint(0, len(x_tr), (min(batch_size, len(x_tr)),), generator=generator)
        xb, yb = x_tr[idx].to(dev), y_tr[idx].to(dev)
        params = {k: bezier_point(a[k], bend[k], b[k], t) for k in pnames}
        logits = functional_call(net, {**params, **buffers}, (xb,), kw)  # (B, C)
        loss = F.cross_entropy(logits, yb)
        if weight_decay:
            loss = loss + 0.5 * weight_decay * sum(p.pow(2).sum() for p in params.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress(step + 1, total)
    bend_sd = {k: v.detach().clone() for k, v in bend.items()}

    pnet = PrivateNet(model, sd_a, dev)
    bn = pnet.has_bn if recompute_bn is None else bool(recompute_bn)
    ts = torch.linspace(0, 1, n_points, dtype=torch.float64).tolist()

    def on_curve(t: float) -> None:
        pnet.write(
            lambda k, out: out.copy_(
                bezier_point(a[k], bend_sd[k], b[k], t)
                if k in bend_sd
                else torch.lerp(a[k], b[k], t)
            )
        )

    def on_line(t: float) -> None:
        pnet.write(lambda k, out: torch.lerp(a[k], b[k], t, out=out))

    results = []
    for i, (label, write_at) in enumerate((("Bezier curve", on_curve), ("straight line", on_line))):
        t0 = time.perf_counter()

        def prog(done: int, n: int, i: int = i) -> None:
            if progress is not None:
                progress(steps + i * n_points + done, total)

        path_loss, path_acc = evaluate_path(
            pnet, ts, write_at, evdata, recompute_bn=bn, batch_size=2048, head=head, progress=prog
        )
        results.append(
            PathResult(
                t=ts,
                loss=path_loss,
                accuracy=path_acc,
                n_examples=evdata.n_examples,
                n_total=evdata.n_total,
                recompute_bn=bn and pnet.has_bn,
                label=label,
                seconds=time.perf_counter() - t0,
                meta={
                    "kind": "bezier" if i == 0 else "linear",
                    "steps": steps,
                    "lr": lr,
                    "train_seconds": time.perf_counter() - start,
                },
            )
        )
    return CurveResult(curve=results[0], line=results[1], bend=bend_sd, train_loss=losses)
