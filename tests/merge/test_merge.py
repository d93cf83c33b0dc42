"""core.merge front door: validation, integer buffers, registry metadata, and the contract
every registered method keeps (parametrized over the whole registry)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from core._registry import Registry
from core.merge import METHODS, TAGS, TENSOR_METHODS, MethodEntry, merge, method_entry


def _sd(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "fc.weight": torch.randn(4, 3, generator=g) * scale,
        "fc.bias": torch.randn(4, generator=g) * scale,
        "bn.num_batches_tracked": torch.tensor(seed + 7),
    }


def test_average_equal_weights_is_mean() -> None:
    a, b, c = _sd(0), _sd(1), _sd(2)
    out = merge("average", [a, b, c])
    expect = (a["fc.weight"] + b["fc.weight"] + c["fc.weight"]) / 3
    torch.testing.assert_close(out["fc.weight"], expect)


def test_integer_buffers_copied_from_base_or_first() -> None:
    a, b, base = _sd(0), _sd(1), _sd(5)
    assert int(merge("average", [a, b])["bn.num_batches_tracked"]) == 7
    out = merge("task_arithmetic", [a, b], base=base)
    assert int(out["bn.num_batches_tracked"]) == 12
    assert out["bn.num_batches_tracked"].dtype == torch.int64


def test_unknown_method_and_hyperparameter_are_refused() -> None:
    a = _sd(0)
    with pytest.raises(ValueError, match="unknown merge method 'nope'"):
        merge("nope", [a])
    with pytest.raises(ValueError, match="unknown hyperparameter.*'lam'"):
        merge("average", [a], lam=0.3)


def test_needs_base_and_incompatible_models_are_refused() -> None:
    a, b = _sd(0), _sd(1)
    with pytest.raises(ValueError, match="needs base"):
        merge("task_arithmetic", [a, b])
    b2 = dict(b)
    b2["fc.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="shape"):
        merge("average", [a, b2])


def test_nan_inputs_and_bad_weights_are_refused() -> None:
    a, b = _sd(0), _sd(1)
    bad = dict(b)
    bad["fc.bias"] = torch.full((4,), float("nan"))
    with pytest.raises(ValueError, match="NaN/Inf"):
        merge("average", [a, bad])
    with pytest.raises(ValueError, match="one entry per model"):
        merge("average", [a, b], weights=[1.0])


@pytest.mark.parametrize("name", METHODS.names())
def test_registry_metadata(name: str) -> None:
    entry = METHODS[name]
    assert entry.paper.startswith("https://arxiv.org/abs/"), entry.paper
    assert entry.tags <= TAGS
    for h in entry.params:
        assert h.help, f"{name}.{h.name} has no help text"
        if h.kind in ("float", "int") and h.default is not None:
            assert h.low is not None and h.high is not None
            assert h.low <= h.default <= h.high
    if "per_tensor" in entry.tags:
        assert name in TENSOR_METHODS


@pytest.mark.parametrize("name", METHODS.names())
def test_signature_defaults_agree_with_hyper_metadata(name: str) -> None:
    """The defaults are written once as keyword defaults; the sliders' Hyper repeats them, so
    every Hyper must name a keyword-only argument with the same default."""
    entry = METHODS[name]
    sig = inspect.signature(entry.fn)
    for h in entry.params:
        p = sig.parameters.get(h.name)
        assert p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY, (name, h.name)
        assert p.default is not inspect.Parameter.empty, (name, h.name)
        assert p.default == h.default and type(p.default) is type(h.default), (name, h.name)


@pytest.mark.parametrize("name", METHODS.names())
def test_entry_hooks_follow_the_tags(name: str) -> None:
    """A per_tensor method carries its kernel, a data_dependent one its prepare hook."""
    entry = method_entry(name)
    assert ("per_tensor" in entry.tags) == (entry.tensor is not None)
    assert ("data_dependent" in entry.tags) == (entry.prepare is not None)
    assert (name in TENSOR_METHODS) == (entry.tensor is not None)
    if entry.tensor is not None:
        assert TENSOR_METHODS[name] is entry.tensor


def test_entry_fields_are_checked() -> None:
    reg: Registry[Any] = Registry("test method", entry=MethodEntry)

    def fn(models: Any, *, base: Any = None, generator: Any = None) -> Any:
        return models[0]

    reg.register("plain")(fn)
    with pytest.raises(ValueError, match="no per_tensor tag"):
        reg.attach("plain", tensor=fn)
    with pytest.raises(ValueError, match="no data_dependent tag"):
        reg.attach("plain", prepare=lambda modules, data: {})
    with pytest.raises(TypeError, match="unknown entry field"):
        reg.attach("plain", kernel=fn)
    reg.register("kernel", tags=("per_tensor",), tensor=fn)(fn)
    assert reg["kernel"].tensor is fn  # type: ignore[attr-defined]
    with pytest.raises(KeyError, match="no per-tensor kernel"):
        TENSOR_METHODS["greedy_soup"]
