"""A small sparse mixture-of-experts MLP (Switch / Mixtral-style top-k routing).

The trunk embeds the flattened image into ``width`` units, then applies ``depth`` residual MoE
blocks ``h <- h + MoE(h)``. Each MoE block has a linear router over ``n_experts`` experts and
keeps the ``top_k`` largest router logits per input; their softmax (over the chosen k) weighs
the chosen experts' outputs. An expert is a two-layer MLP ``fc2(relu(fc1(h)))`` with
``expert_width`` hidden units. Every input is one token (the classifiers here see one vector per
image), so "tokens" below are inputs.

State-dict keys: ``trunk.embed.weight/bias``, ``trunk.moe{i}.router.weight``,
``trunk.moe{i}.experts.{e}.fc{1,2}.weight/bias``, ``trunk.moe{i}.slot_of`` (buffer), then
``head.*``.

Merging experts (MC-SMoE) keeps the router's ``n_experts`` outputs and binds several router
entries to one stored expert: ``slot_of[e]`` is the stored expert (slot) that router entry
``e`` uses. A fresh model has one slot per entry (``slot_of = arange``); a merged one has fewer
slots (``create_model("moe", n_slots=...)``). Two chosen entries bound to one slot add their gate weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .classifier import Classifier


class Expert(nn.Module):
    """``fc2(relu(fc1(h)))``: width -> hidden -> width."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, h: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(h)))


class MoELayer(nn.Module):
    """Top-k routed experts. ``n_slots`` stored experts serve ``n_experts`` router entries.

    Forward modes (for analyses; training uses the default):

    * ``route="topk"``: the usual top-k gate (softmax over the chosen logits);
    * ``route="rank"``: only the expert ranked ``rank`` (0 = best) by the router, gate 1
      (SCMoE's weak activation);
    * ``route="dense"``: softmax over all logits (every expert active).

    Every slot is evaluated on every input (the models are tiny; this keeps the code short and
    makes unchosen experts' outputs available). The last router logits are kept in
    ``last_logits`` for routing statistics.
    """

    def __init__(self, width: int, hidden: int, n_experts: int, top_k: int, n_slots: int | None):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in [1, n_experts={n_experts}], got {top_k}")
        n_slots = n_experts if n_slots is None else n_slots
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(width, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(width, hidden) for _ in range(n_slots))
        self.register_buffer("slot_of", torch.arange(n_experts) % n_slots)
        self.route = "topk"
        self.rank = 0
        self.last_logits: Tensor | None = None
        self.last_balance: Tensor | None = None

    def gates(self, logits: Tensor) -> Tensor:
        """(N, E) gate weight of every router entry for the current ``route``."""
        if self.route == "dense":
            return torch.softmax(logits, dim=-1)
        if self.route == "rank":
            idx = logits.argsort(dim=-1, descending=True)[:, self.rank : self.rank + 1]  # (N, 1)
            return torch.zeros_like(logits).scatter(1, idx, 1.0)
        top, idx = logits.topk(self.top_k, dim=-1)  # (N, k)
        return torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, dim=-1))

    def forward(self, h: Tensor) -> Tensor:
        logits = self.router(h)  # (N, E)
        self.last_logits = logits.detach()
        gate = self.gates(logits)  # (N, E)
        self.last_balance = None
        if self.training:  # Switch load balancing: E * sum_e (share dispatched) * (mean prob)
            share = (gate > 0).float().mean(0) / self.top_k  # (E,)
            self.last_balance = self.n_experts * (share * torch.softmax(logits, -1).mean(0)).sum()
        slot_of = self.slot_of
        assert isinstance(slot_of, Tensor)
        onehot = torch.zeros(self.n_experts, len(self.experts), dtype=h.dtype, device=h.device)
        onehot[torch.arange(self.n_experts, device=h.device), slot_of] = 1.0  # (E, S)
        slot_gate = gate @ onehot  # (N, S)
        out = torch.stack([e(h) for e in self.experts], 1)  # (N, S, D)
        return torch.einsum("ns,nsd->nd", slot_gate, out)


class MoETrunk(nn.Module):
    """embed + ReLU, then ``depth`` residual MoE blocks."""

    def __init__(self, d_in: int, width: int, blocks: list[MoELayer]):
        super().__init__()
        self.flatten = nn.Flatten()
        self.embed = nn.Linear(d_in, width)
        for i, b in enumerate(blocks):
            self.add_module(f"moe{i}", b)
        self.depth = len(blocks)

    def moe_layers(self) -> list[MoELayer]:
        """The MoE blocks in order."""
        return [getattr(self, f"moe{i}") for i in range(self.depth)]

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.embed(self.flatten(x)))
        for block in self.moe_layers():
            h = h + block(h)
        return h


class MoEClassifier(Classifier):
    """A :class:`Classifier` whose training loss adds the Switch load-balancing term
    (``BALANCE_COEF`` x the mean over blocks of E * sum_e f_e P_e, Fedus et al. 2021)."""

    def auxiliary_loss(self) -> Tensor | None:
        """The load-balancing loss of the last training forward pass (None in eval mode);
        reading it clears it."""
        blocks = self.trunk.moe_layers()  # type: ignore[operator]
        terms = [b.last_balance for b in blocks if b.last_balance is not None]
        for b in blocks:  # read once: no graph is kept on the module (deepcopy stays possible)
            b.last_balance = None
        if not self.training or not terms:
            return None
        return BALANCE_COEF * torch.stack(terms).mean()


BALANCE_COEF = 0.01  # Switch Transformer's alpha


def build_moe(
    *,
    width: int = 64,
    depth: int = 1,
    n_experts: int = 8,
    top_k: int = 2,
    expert_width: int = 64,
    n_slots: int = 0,
    n_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    n_heads: int = 1,
) -> Classifier:
    """A sparse MoE classifier (see module doc); ``n_slots`` 0 = one stored expert per router
    entry (more than 0: a merged layout with that many stored experts per block)."""
    d_in = in_channels * image_size * image_size
    slots = None if n_slots == 0 else n_slots
    if slots is not None and slots > n_experts:
        raise ValueError(f"n_slots must be at most n_experts={n_experts}, got {n_slots}")
    blocks = [MoELayer(width, expert_width, n_experts, top_k, slots) for _ in range(depth)]
    return MoEClassifier(MoETrunk(d_in, width, blocks), width, n_classes, n_heads)


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """The MoE blocks of a :func:`build_moe` model, in order."""
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, MoETrunk):
        raise TypeError(f"model must be a core.models 'moe' classifier, got {type(model).__name__}")
    return trunk.moe_layers()


def set_route(model: nn.Module, route: str, rank: int = 0) -> None:
    """Set every MoE block's forward mode (``"topk"``, ``"rank"``, ``"dense"``)."""
    if route not in ("topk", "rank", "dense"):
        raise ValueError(f"route must be 'topk', 'rank' or 'dense', got {route!r}")
    for layer in moe_layers(model):
        if route == "rank" and not 0 <= rank < layer.n_experts:
            raise ValueError(f"rank must be in [0, {layer.n_experts}), got {rank}")
        layer.route, layer.rank = route, rank


__all__ = [
    "BALANCE_COEF",
    "Expert",
    "MoEClassifier",
    "MoELayer",
    "MoETrunk",
    "build_moe",
    "moe_layers",
    "set_route",
]
