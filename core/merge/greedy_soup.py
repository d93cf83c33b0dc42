"""Greedy soup: add models to the soup only while held-out accuracy strictly rises.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves accuracy
without increasing inference time", ICML 2022, arXiv:2203.05482.

1. Score every model on held-out data and sort, best first.
2. Start the soup with the best model.
3. For each next model, form the uniform average of the kept models plus it; keep the model
   only if the held-out score strictly increases.

The soup is therefore never worse than the best single model on the held-out data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..params import StateDict
from ._base import METHODS, MergeData, ModuleFactory
from .average import average


@dataclass(frozen=True)
class GreedySoupResult:
    """Outcome of :func:`greedy_soup_search`.

    Attributes:
        state_dict: the soup (uniform average of the kept models).
        kept: indices (into the input list) of the kept models, in the order they were added.
        scores: held-out score of every input model.
        soup_score: held-out score of the soup.
        history: (index tried, candidate score, kept?) for every model after the first.
    """

    state_dict: StateDict
    kept: tuple[int, ...]
    scores: tuple[float, ...]
    soup_score: float
    history: tuple[tuple[int, float, bool], ...]


@METHODS.register(
    "greedy_soup",
    title="Greedy soup",
    paper="https://arxiv.org/abs/2203.05482",
    params=(),
    tags=("data_dependent",),
)
def greedy_soup(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    evaluate: Callable[[StateDict], float],
) -> StateDict:
    """Greedy soup; ``evaluate(state_dict) -> held-out score`` (higher is better). Use
    :func:`greedy_soup_search` to also get which models were kept."""
    return greedy_soup_search(models, evaluate).state_dict


def greedy_soup_search(
    models: Sequence[StateDict], evaluate: Callable[[StateDict], float]
) -> GreedySoupResult:
    """Run the greedy soup and report which models it kept.

    Args:
        models: compatible state dicts.
        evaluate: held-out score of a full state dict (e.g. accuracy on a validation split).

    Returns:
        A :class:`GreedySoupResult`.
    """
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    scores = [_score(evaluate, m, f"models[{i}]") for i, m in enumerate(models)]
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    kept = [order[0]]
    soup, best = dict(models[order[0]]), scores[order[0]]
    history = []
    for i in order[1:]:
        candidate = _soup([models[j] for j in [*kept, i]])
        score = _score(evaluate, candidate, "the candidate soup")
        better = score > best
        history.append((i, score, better))
        if better:
            kept.append(i)
            soup, best = candidate, score
    return GreedySoupResult(
        state_dict={k: v.detach().clone() for k, v in soup.items()},
        kept=tuple(kept),
        scores=tuple(scores),
        soup_score=best,
        history=tuple(history),
    )


def _soup(models: Sequence[StateDict]) -> StateDict:
    """Uniform average of floating tensors; integer buffers from the first (best) model."""
    merged = average(models)
    return {k: merged[k] if k in merged else v.clone() for k, v in models[0].items()}


def _score(evaluate: Callable[[StateDict], float], sd: StateDict, what: str) -> float:
    s = evaluate(sd)
    if isinstance(s, torch.Tensor):
        s = float(s)
    if isinstance(s, bool) or not isinstance(s, int | float) or s != s:
        raise ValueError(f"evaluate must return a number for {what}, got {s!r}")
    return float(s)


def prepare_greedy_soup(modules: ModuleFactory, data: MergeData) -> dict[str, Any]:
    """Greedy soup's data: the held-out score ``evaluate(sd)`` of the caller."""
    return {"evaluate": data.evaluate}


METHODS.attach("greedy_soup", prepare=prepare_greedy_soup)
