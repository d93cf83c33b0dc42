"""Contract tests run over every registered merge method (a new method is tested the moment it
is registered): keys/shapes/dtypes kept, inputs untouched, same seed -> same output, integer
buffers copied, one model returns itself where that is meaningful, and every method runs on
the tiny zoo's fine-tuned MLPs. Data-dependent methods get their inputs from their own
``prepare`` hook, so the suite has no switch on method names."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from core.merge import (
    METHODS,
    PER_TASK_METHODS,
    TENSOR_METHODS,
    MergeData,
    ModuleFactory,
    TaskMerge,
    merge,
    merge_per_task,
    method_entry,
)
from core.params import StateDict, clone


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.fc(x))))


def _models(n: int = 3) -> tuple[nn.Module, StateDict, list[StateDict]]:
    torch.manual_seed(0)
    net = Tiny()
    base = clone(net.state_dict())
    g = torch.Generator().manual_seed(1)
    models = []
    for i in range(n):
        sd = {
            k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v + i
            for k, v in base.items()
        }
        sd["bn.running_var"] = sd["bn.running_var"].abs() + 0.5
        models.append(sd)
    return net, base, models


def _merge_data(net: nn.Module, models: list[StateDict], base: StateDict | None) -> MergeData:
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(3))
    return MergeData(
        models=models,
        base=base,
        names=[f"model{i}" for i in range(len(models))],
        train=lambda i: (x, y),
        unlabeled=lambda: [x],
        evaluate=lambda sd: -float(sum(v.float().abs().sum() for v in sd.values())),
        hyperparameters={},
    )


def _modules(net: nn.Module) -> ModuleFactory:
    def modules(sd: Any = None) -> nn.Module:
        m = copy.deepcopy(net).eval()
        if sd is not None:
            m.load_state_dict(sd)
        return m

    return modules


# Fewer optimisation steps than the defaults, to keep the contract suite fast.
FAST = {"adamerging": {"steps": 3}, "wudi": {"steps": 20}}


def _data_args(name: str, net: nn.Module, models: list[StateDict]) -> dict[str, Any]:
    """The method's data-derived arguments from its own prepare hook (no switch on names)."""
    entry = method_entry(name)
    if entry.prepare is None:
        return dict(FAST.get(name, {}))
    data = _merge_data(net, models, net.state_dict())
    hyper = {**entry.defaults(), **FAST.get(name, {})}
    data = dataclasses.replace(data, hyperparameters=hyper)
    return {**entry.prepare(_modules(net), data), **FAST.get(name, {})}


def _run(name: str, models: list[StateDict], base: StateDict, net: nn.Module, seed: int = 0):
    kw = _data_args(name, net, models)
    if "two_models" in METHODS[name].tags:
        models = models[:2]
    b = base if "needs_base" in METHODS[name].tags else None
    return merge(name, models, base=b, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("name", METHODS.names())
def test_keys_shapes_dtypes_and_integer_buffers(name: str) -> None:
    net, base, models = _models()
    out = _run(name, models, base, net)
    assert list(out) == list(models[0])
    for k, v in out.items():
        assert v.shape == models[0][k].shape and v.dtype == models[0][k].dtype, k
        assert torch.isfinite(v.float()).all(), k
    ref = base if "needs_base" in METHODS[name].tags else None
    expect = ref["bn.num_batches_tracked"] if ref is not None else None
    got = out["bn.num_batches_tracked"]
    if expect is not None:
        assert torch.equal(got, expect)
    else:
        assert int(got) in {int(m["bn.num_batches_tracked"]) for m in models}


@pytest.mark.parametrize("name", METHODS.names())
def test_inputs_untouched_and_seeded(name: str) -> None:
    net, base, models = _models()
    before = [clone(m) for m in models], clone(base)
    a = _run(name, models, base, net, seed=5)
    b = _run(name, models, base, net, seed=5)
    for m, m0 in zip(models, before[0], strict=True):
        assert all(torch.equal(m[k], m0[k]) for k in m)
    assert all(torch.equal(base[k], before[1][k]) for k in base)
    assert all(torch.equal(a[k], b[k]) for k in a)


# Methods for which merging one fine-tuned model alone must return it: every method whose
# one-model case is the identity (TIES/DARE/breadcrumbs/PCB sparsify by design; SLERP, NuSLERP,
# NearSwap and Arcee Fusion need 2: tests/merge/test_merge_mergekit.py merges those with themselves).
IDENTITY = {
    "average": {},
    "task_arithmetic": {"scale": 1.0},
    "ties": {"density": 1.0},
    "dare": {"drop": 0.0, "scale": 1.0},
    "dare_ties": {"drop": 0.0, "density": 1.0},
    "breadcrumbs": {"density": 1.0, "gamma": 0.0},
    "model_stock": {},
    "fisher": {},
    "regmean": {"alpha": 1.0},
    "greedy_soup": {},
    "della": {"density": 1.0},
    "della_linear": {"density": 1.0},
    "breadcrumbs_ties": {"density": 1.0, "gamma": 0.0},
    "sce": {},
    "ram": {"epsilon": 0.0},
    "multislerp": {},
    "karcher": {},
    "magmax": {"scale": 1.0},
    "tsv": {"scale": 1.0},
    "wudi": {"scale": 1.0, "steps": 5},
    "emr": {},
    "tall_masks": {},
    "consensus": {"k": 0, "scale": 1.0},
    "regmean_pp": {"alpha": 1.0},
    "localize_stitch": {"density": 1.0, "masks": None},
}


@pytest.mark.parametrize("name", sorted(IDENTITY))
def test_one_model_with_weight_one_returns_it(name: str) -> None:
    net, base, models = _models(1)
    kw = {**_data_args(name, net, models), **IDENTITY[name]}
    b = base if "needs_base" in METHODS[name].tags else None
    out = merge(name, models, base=b, **kw)
    for k, v in models[0].items():
        if v.is_floating_point():
            torch.testing.assert_close(out[k], v, atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.slow  # the session's tiny zoo takes minutes to build on a shared 2-core machine
@pytest.mark.parametrize("name", METHODS.names())
def test_runs_on_tiny_zoo_finetunes(name: str, tiny_zoo: Any) -> None:
    ids = ["mlp-ft-mnist", "mlp-ft-mnist_inverted", "mlp-ft-mnist_rotated"]
    models = [tiny_zoo.state_dict(i) for i in ids]
    base = tiny_zoo.state_dict("mlp-base")
    net = tiny_zoo.load_model("mlp-base")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    kw = dict(FAST.get(name, {}))
    entry = method_entry(name)
    if entry.prepare is not None:
        data = MergeData(
            models=models,
            base=base,
            names=ids,
            train=lambda i: (x, y),
            unlabeled=lambda: [x],
            evaluate=lambda sd: -float(sd["head.bias"].abs().sum()),
            hyperparameters={**entry.defaults(), **kw},
        )
        kw = {**entry.prepare(_modules(net), data), **kw}
    if "two_models" in METHODS[name].tags:
        models = models[:2]
    b = base if "needs_base" in METHODS[name].tags else None
    out = merge(name, models, base=b, generator=torch.Generator().manual_seed(0), **kw)
    net.load_state_dict(out)
    assert torch.isfinite(net(x)).all()


@pytest.mark.parametrize("name", sorted(PER_TASK_METHODS))
def test_per_task_structure(name: str) -> None:
    """Methods with one model per task: the registered function returns the shared model, each
    task's model has the base's keys/shapes/dtypes and integer buffers, inputs stay untouched,
    and one fine-tuned model alone is returned by ``for_task(0)``."""
    assert "per_task" in METHODS[name].tags and "needs_base" in METHODS[name].tags
    net, base, models = _models()
    before = [clone(m) for m in models]
    res = merge_per_task(name, models, base=base)
    assert isinstance(res, TaskMerge) and res.n_tasks == len(models)
    shared = merge(name, models, base=base)
    for k, v in res.shared_model().items():
        torch.testing.assert_close(shared[k], v, msg=k)
    for t in range(res.n_tasks):
        sd = res.for_task(t)
        assert list(sd) == list(base)
        for k, v in sd.items():
            assert v.shape == base[k].shape and v.dtype == base[k].dtype, k
        assert torch.equal(sd["bn.num_batches_tracked"], base["bn.num_batches_tracked"])
        assert 0.0 <= res.density(t) <= 1.0
    for m, m0 in zip(models, before, strict=True):
        assert all(torch.equal(m[k], m0[k]) for k in m)
    one = merge_per_task(name, models[:1], base=base)
    for k, v in models[0].items():
        if v.is_floating_point():
            torch.testing.assert_close(one.for_task(0)[k], v, atol=1e-6, rtol=1e-6, msg=k)
    with pytest.raises(ValueError, match="task"):
        res.for_task(len(models))


def test_per_tensor_methods_allocate_on_the_inputs_device() -> None:
    """Every temporary is made on the inputs' device (checked with shape-only "meta" tensors;
    a CPU allocation inside a kernel fails here as it would on CUDA)."""
    extra = {"fisher": {"fishers": "ones"}, "ties": {"threshold": [0.0, 0.0]}}
    checked = 0
    for name, fn in sorted(TENSOR_METHODS.items()):
        xs = [torch.empty(6, 5, device="meta") for _ in range(2)]
        kw = dict(extra.get(name, {}))
        if kw.get("fishers") == "ones":
            kw["fishers"] = [torch.empty(6, 5, device="meta") for _ in range(2)]
        try:
            out = fn(xs, torch.empty(6, 5, device="meta"), **kw)
        except RuntimeError as err:
            assert "device" not in str(err), f"{name}: {err}"
            continue  # data-dependent (.item()) methods cannot run on meta tensors
        assert out.device.type == "meta", name
        checked += 1
    assert checked >= 5
