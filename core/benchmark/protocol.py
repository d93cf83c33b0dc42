"""The task-vector protocol on a real pretrained backbone.

Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023 (arXiv:2212.04089), followed by
TIES, AdaMerging and FusionBench: every task gets a classification head fixed *before*
fine-tuning, only the backbone is fine-tuned, and a merged backbone is scored with every task's
own head. Heads here:

* images — a linear probe on the pretrained backbone's features (multinomial logistic
  regression, its C chosen on the validation split), the LP-FT recipe (Kumar et al., ICLR 2022,
  arXiv:2202.10054): CLIP's zero-shot heads have no counterpart for an ImageNet classifier;
* text — the label texts' embeddings, scaled (``text_scale``), as CLIP's zero-shot heads are
  the class prompts' embeddings: logits = s · ⟨e(x), e(label)⟩ of unit vectors.

:class:`TaskRouter` puts one backbone in front of every task's head, so that the merge methods
that call a model (AdaMerging, Fisher, RegMean's Gram matrices) see the right head per task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_range
from ..data.suites import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_RESOLUTION,
    SUITES,
    SuiteSizes,
    SuiteTask,
    image_input,
)
from ..device import configure_threads, resolve_device
from ..models import Classifier, create_model
from ..params import StateDict

BACKBONE = {"vision": "efficientnet_lite0", "text": "minilm"}
PROBE_SCALINGS = ("per_feature", "global")
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SuiteConfig:
    """Everything that defines a suite's zoo (stored with it; the benchmark reads it back)."""

    suite: str
    tasks: tuple[str, ...] = ()  # empty: every task of the suite
    sizes: SuiteSizes = field(default_factory=SuiteSizes)
    resolution: int = DEFAULT_RESOLUTION  # image side (vision)
    max_length: int = DEFAULT_MAX_LENGTH  # tokens per text (text)
    steps: int = 250  # fine-tuning steps per task
    batch_size: int = 32
    lr: float = 1e-4  # AdamW peak learning rate, linear warm-up then cosine to 0
    warmup: float = 0.1  # fraction of steps spent warming up
    weight_decay: float = 0.0
    seed: int = 0
    text_scale: float = 20.0  # logit scale of label-embedding heads
    probe_cs: tuple[float, ...] = (0.01, 0.1, 1.0)  # logistic-regression C grid (vision)
    # how the probe standardises features before the regression: "per_feature" (each feature
    # by its own std, sklearn's StandardScaler) or "global" (one std for all features)
    probe_scaling: str = "per_feature"
    # unit-L2-norm backbone features (vision): heads then see the features' direction only, as
    # CLIP's zero-shot heads do; MiniLM's sentence embeddings are unit norm already
    normalize_features: bool = False

    def __post_init__(self) -> None:
        check_choice("suite", self.suite, list(SUITES))
        bad = [t for t in self.tasks if t not in SUITES[self.suite]]
        if bad:
            raise ValueError(f"tasks must be among {list(SUITES[self.suite])}, got {bad}")
        if not isinstance(self.sizes, SuiteSizes):
            raise TypeError(f"sizes must be a SuiteSizes, got {type(self.sizes).__name__}")
        check_int("resolution", self.resolution, 16, 512)
        check_int("max_length", self.max_length, 8, 256)
        check_int("steps", self.steps, 0, 1_000_000)
        check_int("batch_size", self.batch_size, 1, 4096)
        check_range("lr", self.lr, 0.0, 1.0, low_inclusive=False)
        check_range("warmup", self.warmup, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_range("text_scale", self.text_scale, 0.0, 1000.0, low_inclusive=False)
        if not self.probe_cs:
            raise ValueError("probe_cs must hold at least one C value")
        check_choice("probe_scaling", self.probe_scaling, list(PROBE_SCALINGS))
        if not isinstance(self.normalize_features, bool):
            raise TypeError(
                "normalize_features must be a bool, got "
                f"{type(self.normalize_features).__name__} {self.normalize_features!r}"
            )
        if self.normalize_features and self.suite != "vision":
            raise ValueError(
                "normalize_features applies to the vision backbone only (MiniLM's features are "
                f"unit norm already), got normalize_features=True for suite {self.suite!r}"
            )

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.tasks or SUITES[self.suite]

    @property
    def arch(self) -> str:
        return BACKBONE[self.suite]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks"] = list(self.task_names)
        d["probe_cs"] = list(self.probe_cs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SuiteConfig:
        d = dict(d)
        d["sizes"] = SuiteSizes(**d["sizes"])
        d["tasks"] = tuple(d.get("tasks", ()))
        d["probe_cs"] = tuple(d.get("probe_cs", (1.0,)))
        d.setdefault("probe_scaling", "per_feature")  # zoos stored before the option existed
        d.setdefault("normalize_features", False)
        return cls(**d)


DEFAULT_CONFIGS = {
    # LFW faces (binary, pretrained probe at 98 %) is left out of the default: its task vector
    # collapses the others when added (docs/DECISIONS.md, "Vision suite without faces").
    # Unit-norm features: with raw pooled features a task vector grows their norm and the
    # heads' confidence with it, so entropy (AdaMerging) falls as accuracy falls
    # (docs/DECISIONS.md, "Unit-norm vision features").
    "vision": SuiteConfig(
        "vision",
        tasks=("mnist", "fashion", "animal", "digits", "textures", "photos"),
        resolution=32,
        steps=200,
        batch_size=32,
        lr=1e-4,
        probe_scaling="global",
        normalize_features=True,
    ),
    "text": SuiteConfig("text", steps=150, batch_size=16, lr=5e-5),
}


def default_config(suite: str) -> SuiteConfig:
    """The suite's default (full) configuration."""
    check_choice("suite", suite, list(SUITES))
    return DEFAULT_CONFIGS[suite]


# ---------------------------------------------------------------------------------- inputs
def backbone_input(suite: str, x: Tensor) -> Tensor:
    """Stored task inputs -> the backbone's input: normalised float images, or token ids with
    all-padding columns dropped."""
    if suite == "vision":
        return image_input(x)
    from ..models.minilm import trim_padding

    return trim_padding(x.long())


@torch.no_grad()
def features(
    trunk: nn.Module,
    suite: str,
    x: Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Backbone features (N, D) of stored inputs, in evaluation mode, on ``device``; CPU out."""
    dev = resolve_device(device)
    was = trunk.training
    trunk.eval()
    try:
        out = [
            trunk(backbone_input(suite, x[i : i + batch_size]).to(dev)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        trunk.train(was)
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class Head:
    """A fixed linear head: logits = features @ weight.T + bias."""

    weight: Tensor  # (C, D)
    bias: Tensor  # (C,)
    info: dict[str, Any] = field(default_factory=dict)

    def linear(self) -> nn.Linear:
        lin = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            lin.bias.copy_(self.bias)
        lin.requires_grad_(False)
        return lin


def probe_head(
    f_train: Tensor,
    y_train: Tensor,
    f_val: Tensor,
    y_val: Tensor,
    n_classes: int,
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    scaling: str = "per_feature",
) -> Head:
    """Multinomial logistic regression on standardised features, C picked on validation
    accuracy, folded back into one linear layer over the raw features.

    ``scaling="per_feature"`` divides each centred feature by its own std (sklearn's
    StandardScaler); ``"global"`` divides all of them by one number, the RMS of the centred
    features. Per-feature scaling multiplies the head's weight on a feature by 1/σ_j, so the
    features the pretrained backbone barely varies get the largest weights, and a small change
    of the backbone along them (fine-tuning, then merging) moves the logits most. With one
    global σ the head weighs features as the backbone scales them.
    """
    from sklearn.linear_model import LogisticRegression

    check_choice("scaling", scaling, list(PROBE_SCALINGS))
    if len(f_train) != len(y_train) or len(f_val) != len(y_val):
        raise ValueError("features and labels must have the same length")
    xt = f_train.double().numpy()
    mu = xt.mean(0)
    if scaling == "per_feature":
        sd = xt.std(0) + 1e-6
    else:
        sd = np.full(xt.shape[1], float(np.sqrt(((xt - mu) ** 2).mean())) + 1e-6)
    zt, zv = (xt - mu) / sd, (f_val.double().numpy() - mu) / sd
    yt, yv = y_train.numpy(), y_val.numpy()
    best: tuple[float, float, Any] | None = None
    for c in cs:
        clf = LogisticRegression(C=float(c), max_iter=500, random_state=seed)
        clf.fit(zt, yt)
        acc = float((clf.predict(zv) == yv).mean())
        if best is None or acc > best[0]:
            best = (acc, float(c), clf)
    assert best is not None
    acc, c, clf = best
    w = np.zeros((n_classes, xt.shape[1]))
    b = np.full(n_classes, -1e4)  # classes absent from the training split are never predicted
    if len(clf.classes_) == 2:  # sklearn's binary form: one row for class 1
        w[clf.classes_[1]], b[clf.classes_[1]] = clf.coef_[0] / 2, clf.intercept_[0] / 2
        w[clf.classes_[0]], b[clf.classes_[0]] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
    else:
        w[clf.classes_], b[clf.classes_] = clf.coef_, clf.intercept_
    weight = w / sd  # (C, D): w·(f − μ)/σ = (w/σ)·f − (w/σ)·μ
    bias = b - weight @ mu
    return Head(
        torch.from_numpy(weight).float(),
        torch.from_numpy(bias).float(),
        {"kind": "linear_probe", "C": c, "val_accuracy": acc, "scaling": scaling},
    )


def label_head(
    trunk: nn.Module, label_texts: Sequence[str], *, scale: float, max_length: int
) -> Head:
    """scale · the unit embeddings of the label texts (rows), zero bias."""
    from ..models.minilm import tokenize

    emb = features(trunk, "text", tokenize(list(label_texts), max_length=max_length))
    emb = F.normalize(emb, dim=-1)
    return Head(scale * emb, torch.zeros(len(label_texts)), {"kind": "label_text", "scale": scale})


def make_head(
    trunk: nn.Module, task: SuiteTask, config: SuiteConfig, *, device: str | torch.device = "cpu"
) -> Head:
    """The task's fixed head from the pretrained ``trunk`` (probe for images, label texts for
    text)."""
    if task.suite == "text":
        return label_head(
            trunk.to(resolve_device(device)),
            task.label_texts,
            scale=config.text_scale,
            max_length=config.max_length,
        )
    f_tr = features(trunk, "vision", task.x_train, device=device)
    f_va = features(trunk, "vision", task.x_val, device=device)
    return probe_head(
        f_tr,
        task.y_train,
        f_va,
        task.y_val,
        task.n_classes,
        cs=config.probe_cs,
        seed=config.seed,
        scaling=config.probe_scaling,
    )


# ---------------------------------------------------------------------------------- fine-tuning
class TrainingCancelled(RuntimeError):
    """``should_stop`` asked the fine-tuning to stop."""


def finetune(
    model: Classifier,
    task: SuiteTask,
    config: SuiteConfig,
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model.trunk`` in place on ``task``'s training split; the head stays fixed.

    AdamW (β = 0.9, 0.999), ``config.steps`` steps of ``config.batch_size`` examples drawn
    without replacement epoch by epoch from a generator seeded by ``config.seed``, linear
    warm-up over ``warmup`` of the steps then cosine decay to 0. Returns the loss history.
    """
    configure_threads()
    dev = resolve_device(device)
    model.to(dev)
    model.head.requires_grad_(False)
    params = [p for p in model.trunk.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = config.steps
    warm = max(1, int(round(config.warmup * total)))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(task.y_train)
    perm, pos = torch.randperm(n, generator=gen), 0
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    try:
        for step in range(total):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"fine-tuning on {task.name} cancelled at step {step}")
            if pos + config.batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos : pos + config.batch_size]
            pos += len(idx)
            xb = backbone_input(task.suite, task.x_train[idx]).to(dev, non_blocking=True)
            yb = task.y_train[idx].to(dev)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress({"step": step + 1, "steps": total, "loss": losses[-1]})
    finally:
        model.eval()
        model.head.requires_grad_(True)
    return {"loss": losses, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------- evaluation
class TaskRouter(nn.Module):
    """One backbone (``trunk``) in front of every task's fixed head (``heads.<k>``).

    ``task`` fixes the head; with ``task=None`` each input carries its task index in an extra
    last channel (images: (N, 4, S, S)) or column (token ids as floats: (N, L + 1)), as made
    by :func:`tag_inputs`, so that one call per task-batch picks the right head. Token ids
    travel as floats because the merge methods' data arguments are float tensors (ids up to
    2**24 are exact in float32).
    """

    def __init__(
        self, trunk: nn.Module, heads: Sequence[Head], suite: str, task: int | None = None
    ):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(h.linear() for h in heads)
        self.suite = suite
        self.task = task

    def forward(self, x: Tensor) -> Tensor:
        k = self.task
        if k is None:
            k = int(x.reshape(x.shape[0], -1)[0, -1])
            x = x[:, :-1] if self.suite == "vision" else x[:, :-1]
        if self.suite == "text":
            x = x.long()
        return self.heads[k](self.trunk(x))


def tag_inputs(suite: str, x: Tensor, task: int) -> Tensor:
    """Backbone inputs with the task index appended (see :class:`TaskRouter`)."""
    if suite == "vision":
        tag = torch.full_like(x[:, :1], float(task))  # (N, 1, S, S)
        return torch.cat([x, tag], dim=1)
    return torch.cat([x.float(), torch.full((x.shape[0], 1), float(task))], dim=1)


def router_inputs(suite: str, x: Tensor) -> Tensor:
    """Stored inputs -> float inputs a fixed-task :class:`TaskRouter` accepts."""
    xb = backbone_input(suite, x)
    return xb.float()


@torch.no_grad()
def evaluate_backbone(
    trunk: nn.Module,
    trunk_sd: Mapping[str, Tensor] | None,
    heads: Sequence[Head],
    tasks: Sequence[SuiteTask],
    split: str,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Tensor]:
    """Per-sample correctness on ``split`` of every task, scored with the task's own head.

    Args:
        trunk: the backbone module (its weights are replaced by ``trunk_sd`` if given).
        trunk_sd: backbone state dict with ``trunk.`` keys (a merged backbone), or None.
        heads: one fixed head per task, in ``tasks`` order.

    Returns:
        Task name -> (N,) bool.
    """
    dev = resolve_device(device)
    if trunk_sd is not None:
        trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in trunk_sd.items()})
    trunk.to(dev).eval()
    out = {}
    for task, head in zip(tasks, heads, strict=True):
        x, y = task.split(split)
        w, b = head.weight.to(dev), head.bias.to(dev)
        preds = []
        for i in range(0, len(x), batch_size):
            f = trunk(backbone_input(task.suite, x[i : i + batch_size]).to(dev))
            preds.append((f.float() @ w.T + b).argmax(1).cpu())
        out[task.name] = torch.cat(preds) == y
    return out


def trunk_state(sd: Mapping[str, Tensor]) -> StateDict:
    """The backbone part (``trunk.*`` keys) of a stored model's state dict."""
    return {k: v for k, v in sd.items() if k.startswith("trunk.")}


def backbone_kwargs(config: SuiteConfig) -> dict[str, Any]:
    """Architecture keyword arguments ``config`` fixes for its suite's backbone (beyond
    ``n_classes`` and ``pretrained``)."""
    if not isinstance(config, SuiteConfig):
        raise TypeError(f"config must be a SuiteConfig, got {type(config).__name__}")
    return {"normalize_features": True} if config.normalize_features else {}


def new_backbone(config: SuiteConfig, *, pretrained: bool = True) -> Classifier:
    """``config``'s suite backbone as that suite's zoo stores it (pretrained unless told
    otherwise)."""
    kw: dict[str, Any] = {"pretrained": pretrained, **backbone_kwargs(config)}
    return create_model(BACKBONE[config.suite], seed=0, **kw)


__all__ = [
    "BACKBONE",
    "DEFAULT_CONFIGS",
    "Head",
    "SuiteConfig",
    "TaskRouter",
    "TrainingCancelled",
    "backbone_input",
    "backbone_kwargs",
    "default_config",
    "evaluate_backbone",
    "features",
    "finetune",
    "label_head",
    "make_head",
    "new_backbone",
    "probe_head",
    "router_inputs",
    "tag_inputs",
    "trunk_state",
]
