"""Orthogonal Adaptation (Po et al., "Orthogonal Adaptation for Modular Customization of
Diffusion Models", CVPR 2024, arXiv 2312.02432) on a suite zoo.

Each task gets a low-rank residual on the pretrained weights, ΔWᵢ = s · Bᵢ Aᵢ (LoRA's form),
trained on that task alone; the adapters are then merged by *summing* them,
W = W₀ + Σᵢ ΔWᵢ, with no tuning. Ordinary LoRAs interfere when summed: task j's residual
answers to task i's inputs. The paper's fix: every task's down-projection Aᵢ is taken from one
shared orthogonal basis — disjoint sets of its rows, so Aᵢ Aⱼᵀ = 0 for i ≠ j — and *kept fixed*;
only Bᵢ is trained. Then Bⱼ Aⱼ x vanishes for any x in the span of Aᵢ's rows, the subspace task
i's adapter reads, and the sum keeps each task's behaviour there.

Variants (``variant``):

* ``"orthogonal"`` — the paper's method: Aᵢ = rows [i·r, (i+1)·r) of one random orthogonal
  matrix Q (in × in, from the QR decomposition of a seeded Gaussian matrix, signs fixed by R's
  diagonal), fixed; Bᵢ trained from zero.
* ``"lora"`` — the baseline the paper compares against: ordinary LoRA, Aᵢ initialised as PEFT
  does (Kaiming-uniform, a = √5) and trained with Bᵢ (zero init).
* ``"random_fixed"`` — the ablation that separates "fixed" from "orthogonal": Aᵢ independent
  random Gaussian rows of unit norm, fixed, Bᵢ trained. In high dimension random bases are
  already nearly orthogonal (|⟨a, a'⟩| ≈ 1/√in), which the paper notes.

Where adapters go: every ``nn.Linear`` and every pointwise (1 × 1, ungrouped) ``nn.Conv2d`` of
the backbone with at least ``n_tasks · rank`` input features (an orthogonal basis of ``in``
rows holds at most ``in / rank`` tasks) — MiniLM's attention and MLP projections, Lite0's
pointwise convolutions. Heads stay the suite's fixed heads (:mod:`core.benchmark.protocol`);
training uses the suite's schedule (AdamW, warm-up then cosine, its batch size and seed) with
the adapters' own learning rate and step count. ``scale`` is LoRA's α / r.

Reported: per task, test accuracy of the pretrained backbone, of its own adapter alone, and of
the summed adapters; ``kept`` = summed / alone. The claim reproduced is the paper's: summed
orthogonal adapters keep more of each task than summed ordinary LoRAs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_int, check_range
from ..zoo import Zoo

VARIANTS = ("orthogonal", "lora", "random_fixed")
VARIANT_LABELS = {
    "orthogonal": "orthogonal (fixed A)",
    "lora": "LoRA (A trained)",
    "random_fixed": "random fixed A",
}
Progress = Callable[[int, int], None] | None  # (done, total) steps


# ------------------------------------------------------------------------------------ bases
def orthogonal_bases(in_features: int, rank: int, n_tasks: int, *, seed: int = 0) -> list[Tensor]:
    """``n_tasks`` matrices (rank, in_features) whose rows are disjoint rows of one random
    orthogonal matrix: each has orthonormal rows and Aᵢ Aⱼᵀ = 0 for i ≠ j."""
    check_int("in_features", in_features, 1)
    check_int("rank", rank, 1)
    check_int("n_tasks", n_tasks, 1)
    if n_tasks * rank > in_features:
        raise ValueError(
            f"n_tasks * rank must be <= in_features for mutually orthogonal bases, got "
            f"{n_tasks} * {rank} > {in_features}"
        )
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(in_features, in_features, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))  # Haar-distributed, unique
    return [q[i * rank : (i + 1) * rank].float().contiguous() for i in range(n_tasks)]


def random_bases(in_features: int, rank: int, n_tasks: int, *, seed: int = 0) -> list[Tensor]:
    """Independent Gaussian (rank, in_features) matrices with unit-norm rows."""
    check_int("in_features", in_features, 1)
    check_int("rank", rank, 1)
    check_int("n_tasks", n_tasks, 1)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_tasks):
        a = torch.randn(rank, in_features, generator=gen)
        out.append(a / a.norm(dim=1, keepdim=True))
    return out


def lora_init(in_features: int, rank: int, *, seed: int = 0) -> Tensor:
    """PEFT's LoRA A initialisation: Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in)."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=gen) * 2 - 1) * bound


def adaptable_layers(trunk: nn.Module, min_in: int) -> dict[str, nn.Module]:
    """Name -> module of every ``nn.Linear`` and ungrouped, unpadded 1 × 1 ``nn.Conv2d`` of
    ``trunk`` with at least ``min_in`` input features."""
    out: dict[str, nn.Module] = {}
    for name, mod in trunk.named_modules():
        if isinstance(mod, nn.Linear) and mod.in_features >= min_in:
            out[name] = mod
        elif (
            isinstance(mod, nn.Conv2d)
            and mod.kernel_size == (1, 1)
            and mod.groups == 1
            and mod.padding == (0, 0)
            and mod.in_channels >= min_in
        ):
            out[name] = mod
    return out


def _in_out(mod: nn.Module) -> tuple[int, int]:
    if isinstance(mod, nn.Linear):
        return mod.in_features, mod.out_features
    assert isinstance(mod, nn.Conv2d)
    return mod.in_channels, mod.out_channels


class LowRankAdapters(nn.Module):
    """Residuals s · B A on named layers of a backbone, applied by forward hooks (the
    backbone's modules and state dict stay as they are)."""

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        bases: Mapping[str, Tensor],
        *,
        train_a: bool,
        scale: float,
    ):
        super().__init__()
        self.names = list(layers)
        self.scale = float(scale)
        self.a = nn.ParameterList()
        self.b = nn.ParameterList()
        self._layers = dict(layers)
        for name in self.names:
            a = bases[name]
            _, out = _in_out(layers[name])
            self.a.append(nn.Parameter(a.clone(), requires_grad=train_a))
            self.b.append(nn.Parameter(torch.zeros(out, a.shape[0])))
        self._hooks: list[Any] = []

    def attach(self) -> LowRankAdapters:
        self.detach()
        for i, name in enumerate(self.names):
            self._hooks.append(self._layers[name].register_forward_hook(self._hook(i)))
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, i: int) -> Callable[..., Tensor]:
        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            x = inputs[0]
            a, b = self.a[i].to(x.dtype), self.b[i].to(x.dtype)  # half-precision backbones
            if isinstance(mod, nn.Conv2d):
                h = nn.functional.conv2d(x, a[:, :, None, None], stride=mod.stride)
                r = nn.functional.conv2d(h, b[:, :, None, None])
            else:
                r = nn.functional.linear(nn.functional.linear(x, a), b)
            return out + self.scale * r.to(out.dtype)

        return hook

    @torch.no_grad()
    def deltas(self) -> dict[str, Tensor]:
        """Layer name -> ΔW = s · B A in the layer's weight shape."""
        out = {}
        for i, name in enumerate(self.names):
            w = self._layers[name].weight
            out[name] = (self.scale * self.b[i] @ self.a[i]).reshape(w.shape).to(w.dtype)
        return out


# ------------------------------------------------------------------------------------ study
@dataclass
class OrthoStudy:
    """The study's result: test accuracies per variant and task (``alone``: the task's own
    adapter on the pretrained backbone; ``summed``: every adapter added), ``pretrained`` per
    task, ``overlap`` per variant (mean over adapted layers and task pairs of
    ‖Aᵢ Aⱼᵀ‖_F / (‖Aᵢ‖_F ‖Aⱼ‖_F) after training), the training loss histories."""

    suite: str
    tasks: list[str]
    variants: list[str]
    rank: int
    n_layers: int
    pretrained: dict[str, float] = field(default_factory=dict)
    alone: dict[str, dict[str, float]] = field(default_factory=dict)
    summed: dict[str, dict[str, float]] = field(default_factory=dict)
    overlap: dict[str, float] = field(default_factory=dict)
    losses: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def kept(self, variant: str) -> dict[str, float]:
        """Per task: summed accuracy / the adapter's own accuracy."""
        return {t: self.summed[variant][t] / max(self.alone[variant][t], 1e-12) for t in self.tasks}

    def summary(self) -> list[dict[str, Any]]:
        """One row per variant: mean alone, summed, kept and the basis overlap."""
        return [
            {
                "variant": v,
                "alone": float(np.mean([self.alone[v][t] for t in self.tasks])),
                "summed": float(np.mean([self.summed[v][t] for t in self.tasks])),
                "kept": float(np.mean(list(self.kept(v).values()))),
                "overlap": self.overlap[v],
            }
            for v in self.variants
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _bases(
    variant: str, layers: Mapping[str, nn.Module], rank: int, n_tasks: int, seed: int
) -> list[dict[str, Tensor]]:
    """Per task: layer name -> its A (rank, in)."""
    per_task: list[dict[str, Tensor]] = [{} for _ in range(n_tasks)]
    for j, (name, mod) in enumerate(layers.items()):
        n_in, _ = _in_out(mod)
        s = seed * 100_003 + j
        if variant == "orthogonal":
            mats = orthogonal_bases(n_in, rank, n_tasks, seed=s)
        elif variant == "random_fixed":
            mats = random_bases(n_in, rank, n_tasks, seed=s)
        else:
            mats = [lora_init(n_in, rank, seed=s * 31 + i) for i in range(n_tasks)]
        for i in range(n_tasks):
            per_task[i][name] = mats[i]
    return per_task


def _overlap(adapters: Sequence[LowRankAdapters]) -> float:
    vals = []
    for li in range(len(adapters[0].names)):
        mats = [ad.a[li].detach() for ad in adapters]
        for i in range(len(mats)):
            for j in range(i + 1, len(mats)):
                num = float((mats[i] @ mats[j].T).norm())
                vals.append(num / max(float(mats[i].norm() * mats[j].norm()), 1e-12))
    return float(np.mean(vals)) if vals else 0.0


def orthogonal_adaptation_study(
    zoo: Zoo,
    suite: str,
    *,
    variants: Sequence[str] = VARIANTS,
    rank: int = 4,
    steps: int | None = None,
    lr: float = 1e-3,
    scale: float = 1.0,
    test_per_task: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress = None,
) -> OrthoStudy:
    """Train one adapter per task and variant on the built suite zoo ``suite``, sum them, and
    score alone and summed on test.

    Args:
        zoo: the workspace zoo holding ``<suite>-base`` and ``<suite>-ft-<task>`` (their heads).
        suite: "vision" or "text".
        variants: any of :data:`VARIANTS`.
        rank: the adapters' rank r (every adapted layer needs n_tasks · r input features).
        steps: training steps per adapter (None: the suite's fine-tuning steps).
        lr: the adapters' AdamW peak learning rate.
        scale: s in ΔW = s · B A.
        test_per_task: stratified test examples per task (None: all).
        seed: seed of the bases and of the training order.
        device: where the backbone runs.
        progress: ``progress(done, total)`` after every training step.
    """
    from ..benchmark.protocol import Head, evaluate_backbone, finetune, new_backbone, trunk_state
    from ..benchmark.zoo_build import base_id, finetune_id, load_suite_zoo
    from ..data.suites import load_task
    from ..device import resolve_device
    from ..models import Classifier
    from ..suite_lab import stratified_subset

    if isinstance(variants, str) or not isinstance(variants, Sequence) or not variants:
        raise ValueError(f"variants must be a non-empty list among {VARIANTS}, got {variants!r}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad or len(set(variants)) != len(variants):
        raise ValueError(f"variants must be distinct names among {VARIANTS}, got {list(variants)}")
    check_int("rank", rank, 1, 1024)
    if steps is not None:
        check_int("steps", steps, 1, 1_000_000)
    check_range("lr", lr, 0.0, 1.0, low_inclusive=False)
    check_range("scale", scale, 0.0, 1e4, low_inclusive=False)
    if test_per_task is not None:
        check_int("test_per_task", test_per_task, 1)
    check_int("seed", seed, 0, 2**31 - 1)
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    dev = resolve_device(device)
    sz = load_suite_zoo(zoo, suite)
    cfg = sz.config
    tasks = [
        load_task(t, sizes=cfg.sizes, resolution=cfg.resolution, max_length=cfg.max_length)
        for t in cfg.task_names
    ]
    if test_per_task is not None:
        subsets = [stratified_subset(t.y_test, test_per_task, seed=seed) for t in tasks]
        tasks = [
            dataclasses.replace(t, x_test=t.x_test[i], y_test=t.y_test[i])
            for t, i in zip(tasks, subsets, strict=True)
        ]
    base_sd = trunk_state(zoo.state_dict(base_id(suite)))
    heads = []
    for t in cfg.task_names:
        sd = zoo.state_dict(finetune_id(suite, t))
        heads.append(Head(sd["head.weight"].float(), sd["head.bias"].float()))
    n = len(tasks)
    train_cfg = dataclasses.replace(cfg, lr=lr, steps=steps or cfg.steps, seed=seed)
    model = new_backbone(cfg, pretrained=False)
    trunk_base = {k.removeprefix("trunk."): v for k, v in base_sd.items()}
    model.trunk.load_state_dict(trunk_base)
    model.to(dev)
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    layers = adaptable_layers(model.trunk, n * rank)
    if not layers:
        raise ValueError(
            f"no layer of the {suite} backbone has n_tasks * rank = {n * rank} input features: "
            "lower rank"
        )
    pre = evaluate_backbone(model.trunk, None, heads, tasks, "test", device=dev)
    study = OrthoStudy(
        suite=suite,
        tasks=list(cfg.task_names),
        variants=list(variants),
        rank=rank,
        n_layers=len(layers),
        pretrained={t: float(c.float().mean()) for t, c in pre.items()},
        settings={"steps": train_cfg.steps, "lr": lr, "scale": scale, "seed": seed},
    )
    total, done = len(variants) * n * train_cfg.steps, 0
    for variant in variants:
        bases = _bases(variant, layers, rank, n, seed)
        trained: list[LowRankAdapters] = []
        study.losses[variant] = {}
        study.alone[variant] = {}
        for i, task in enumerate(tasks):
            model.trunk.load_state_dict(trunk_base)  # evaluation below loads merged weights
            ad = LowRankAdapters(layers, bases[i], train_a=variant == "lora", scale=scale).to(dev)
            classifier = Classifier(model.trunk, model.feature_dim, heads[i].weight.shape[0])
            with torch.no_grad():
                classifier.head.weight.copy_(heads[i].weight)
                classifier.head.bias.copy_(heads[i].bias)
            classifier.trunk.add_module("_adapters", ad)  # finetune trains trunk parameters
            ad.attach()

            def step(info: dict[str, Any]) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total)

            try:
                hist = finetune(classifier, task, train_cfg, device=dev, progress=step)
            finally:
                ad.detach()
                del classifier.trunk._adapters
            study.losses[variant][task.name] = hist["loss"]
            trained.append(ad)
            alone = _with_deltas(base_sd, [ad])
            acc = evaluate_backbone(model.trunk, alone, [heads[i]], [task], "test", device=dev)
            study.alone[variant][task.name] = float(acc[task.name].float().mean())
        summed = _with_deltas(base_sd, trained)
        accs = evaluate_backbone(model.trunk, summed, heads, tasks, "test", device=dev)
        study.summed[variant] = {t: float(c.float().mean()) for t, c in accs.items()}
        study.overlap[variant] = _overlap(trained)
    return study


def _with_deltas(
    base_sd: Mapping[str, Tensor], adapters: Sequence[LowRankAdapters]
) -> dict[str, Tensor]:
    """The backbone state dict (``trunk.`` keys) with every adapter's ΔW added."""
    sd = {k: v.clone() for k, v in base_sd.items()}
    for ad in adapters:
        for name, d in ad.deltas().items():
            key = f"trunk.{name}.weight"
            sd[key] = sd[key] + d.to(sd[key].device, sd[key].dtype)
    return sd


__all__ = [
    "VARIANTS",
    "VARIANT_LABELS",
    "LowRankAdapters",
    "OrthoStudy",
    "adaptable_layers",
    "lora_init",
    "orthogonal_adaptation_study",
    "orthogonal_bases",
    "random_bases",
]
