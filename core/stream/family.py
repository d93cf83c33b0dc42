"""mergekit's names and parameters for the mergekit-family methods of the streaming engine.

Each mergekit method maps onto a per-tensor kernel of :data:`core.merge.TENSOR_METHODS` with
mergekit's parameter names and defaults, so an existing config keeps its meaning:

==================  ======================  ==================================================
mergekit            core.merge              parameters (mergekit default)
==================  ======================  ==================================================
della               della                   weight (1), density (1), epsilon (0.15), lambda
                                            (1), normalize (true), rescale (true: L1)
della_linear        della_linear            as della, normalize (false)
breadcrumbs_ties    breadcrumbs_ties        weight, density (1), gamma (0.01), lambda,
                                            normalize (false); ranked per tensor
sce                 sce                     select_topk (1)
ram / ramplus_tl    ram                     epsilon (1e-5); ramplus_tl: r (0.1), alpha (0.2)
nuslerp             nuslerp                 weight, nuslerp_flatten (true), nuslerp_row_wise
multislerp          multislerp              weight, normalize_weights (true)
karcher             karcher                 max_iter (10), tol (1e-5); the base is one input
nearswap            nearswap                t (required); base_model + one model
arcee_fusion        arcee_fusion            base_model + one model
==================  ======================  ==================================================

Workbench extensions (ignored by mergekit): ``della_rescale: prob`` for DELLA's per-entry
1/p rescale (the paper; ``l1`` and ``none`` are mergekit's ``rescale: true/false``), ``scope: row`` for Breadcrumbs-TIES' per-row ranking (the reference
code), ``disjoint: sum`` for SCE's plain Σ η τ, ``overlap: global`` for RAM+ with the paper's
whole-model overlap ratio (``ramplus_tl`` counts per tensor; the global ratio is counted in a
first streaming pass, :func:`core.stream.thresholds.ram_global_ratios`). DELLA takes one
``density``/``epsilon`` per model, as mergekit. ``passthrough`` and ``slices:`` are planned by
:mod:`core.stream.slices`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..merge import METHODS
from .st_io import StreamError

if TYPE_CHECKING:
    from .config import MergeConfig

# the mergekit names that family_call handles -> core.merge method (the registry entries'
# ``mergekit`` field says which method runs each)
FAMILY_NAMES = (
    "della",
    "della_linear",
    "breadcrumbs_ties",
    "sce",
    "ram",
    "ramplus_tl",
    "nuslerp",
    "multislerp",
    "karcher",
    "nearswap",
    "arcee_fusion",
)
FAMILY_ALIASES: dict[str, str] = {
    mk: entry.name
    for entry in METHODS.entries()
    for mk in getattr(entry, "mergekit", ())
    if mk in FAMILY_NAMES
}
FAMILY_NEEDS_BASE = {
    "della",
    "della_linear",
    "breadcrumbs_ties",
    "sce",
    "ram",
    "ramplus_tl",
    "nearswap",
    "arcee_fusion",
}
# parameter checks, merged into core.stream.config's tables: (low, high, low inclusive, high
# inclusive, meaning) for numbers, flags, and choices
FAMILY_NUMBERS: dict[str, tuple[float | None, float | None, bool, bool, str]] = {
    "select_topk": (0, 1, False, True, "the fraction of entries SCE selects by variance"),
    "r": (0, None, True, True, "RAM+'s rescaling strength"),
    "alpha": (0, None, True, True, "RAM+'s bound on the overlap ratio"),
    "max_iter": (1, None, True, True, "Karcher's iterations at most"),
    "tol": (0, None, False, True, "Karcher's tolerance"),
}
FAMILY_FLAGS = ("nuslerp_flatten", "nuslerp_row_wise", "normalize_weights")
FAMILY_CHOICES: dict[str, tuple[str, ...]] = {
    "scope": ("tensor", "row"),
    "della_rescale": ("l1", "prob", "none"),
    "overlap": ("tensor", "global"),
}
# methods whose base model is one of the merged inputs (first), not a task-vector origin
BASE_AS_INPUT = {"nearswap", "arcee_fusion", "karcher"}
# mergekit's number of models besides the base
ARITY = {"nuslerp": 2, "nearswap": 1, "arcee_fusion": 1}


def check_arity(cfg: MergeConfig) -> None:
    """Raise StreamError when a family method gets the wrong number of models."""
    need = ARITY.get(cfg.merge_method)
    n = len(cfg.merged_models())
    if need is not None and n != need:
        with_base = " besides base_model" if cfg.base is not None else ""
        raise StreamError(f"{cfg.merge_method} merges exactly {need} model(s){with_base}, got {n}")
    if cfg.merge_method == "multislerp" and "eps" in cfg.parameters:
        if float(cfg.parameters["eps"]) != 1e-8:
            raise StreamError(f"multislerp: eps is fixed at 1e-8 here, got {cfg.parameters['eps']}")


def family_call(cfg: MergeConfig, name: str, t: float) -> tuple[str, dict[str, Any], bool]:
    """The kernel, its keyword arguments and whether it takes the base tensor, for one tensor
    of a mergekit-family config (``t``: normalised layer depth for gradient parameters)."""
    from .config import parameter

    mk = cfg.merge_method
    models = cfg.merged_models()

    def g(key: str, default: Any) -> Any:
        return parameter(cfg, None, key, name, t, default)

    def per(key: str, default: Any) -> list[Any]:
        return [parameter(cfg, m, key, name, t, default) for m in models]

    def one(key: str, default: float) -> float:
        values = [float(x) for x in per(key, default)]
        if len(set(values)) != 1:
            raise StreamError(f"{mk}: {key} must be the same for every model here, got {values}")
        return values[0]

    def each(key: str, default: float) -> float | list[float]:
        """One value, or one per model where the models' values differ (DELLA)."""
        values = [float(x) for x in per(key, default)]
        return values[0] if len(set(values)) == 1 else values

    method = FAMILY_ALIASES[mk]
    if mk in ("della", "della_linear"):
        w = [float(x) for x in per("weight", 1.0)]
        rule = g("della_rescale", None) or ("l1" if g("rescale", True) else "none")
        hyper: dict[str, Any] = {
            "density": each("density", 1.0),
            "epsilon": each("epsilon", 0.15),
            "scale": float(g("lambda", 1.0)),
            "rescale": str(rule),
        }
        normalize = bool(g("normalize", mk == "della"))
        if mk == "della":
            hyper["disjoint"] = "mean" if normalize else "sum"
        elif normalize and abs(sum(w)) >= 1e-8:
            w = [x / sum(w) for x in w]
        hyper["weights"] = w
        return method, hyper, True
    if mk == "breadcrumbs_ties":
        density = one("density", 1.0)
        return (
            method,
            {
                "weights": [float(x) for x in per("weight", 1.0)],
                "density": density,
                "gamma": 0.0 if density >= 1.0 else one("gamma", 0.01),  # mergekit: no pruning
                "scale": float(g("lambda", 1.0)),
                "scope": str(g("scope", "tensor")),
                "disjoint": "mean" if g("normalize", False) else "sum",
            },
            True,
        )
    if mk == "sce":
        hyper = {"density": float(g("select_topk", 1.0)), "disjoint": str(g("disjoint", "mean"))}
        return method, hyper, True
    if mk in ("ram", "ramplus_tl"):
        hyper = {"epsilon": float(g("epsilon", 1e-5))}
        if mk == "ramplus_tl":
            # overlap: global is the paper's whole-model ratio (a first streaming pass,
            # core.stream.thresholds.ram_global_ratios, fills in rho)
            rescale = "global" if g("overlap", "tensor") == "global" else "tensor"
            hyper.update(rescale=rescale, r=float(g("r", 0.1)), alpha=float(g("alpha", 0.2)))
        return method, hyper, True
    if mk == "nuslerp":
        hyper = {
            "weights": [float(x) for x in per("weight", 1.0)],
            "flatten": bool(g("nuslerp_flatten", True)),
            "row_wise": bool(g("nuslerp_row_wise", False)),
        }
        return method, hyper, cfg.base is not None
    if mk == "multislerp":
        hyper = {
            "weights": [float(x) for x in per("weight", 1.0)],
            "normalize": bool(g("normalize_weights", True)),
        }
        return method, hyper, cfg.base is not None
    if mk == "karcher":
        return method, {"max_iter": int(g("max_iter", 10)), "tol": float(g("tol", 1e-5))}, False
    if mk == "nearswap":
        t_value = g("t", None)
        if t_value is None:
            raise StreamError("nearswap needs the parameter t (mergekit requires it), got none")
        return method, {"t": float(t_value)}, False
    return method, {}, False  # arcee_fusion
