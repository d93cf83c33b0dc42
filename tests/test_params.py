from __future__ import annotations

import pytest
import torch

from core import params
from core.models import create_model


def _sds():
    a = create_model("cnn", width=4, seed=0).state_dict()
    b = create_model("cnn", width=4, seed=1).state_dict()
    return a, b


def test_task_vector_round_trip_and_int_buffers() -> None:
    a, b = _sds()
    b["trunk.bn0.num_batches_tracked"] = torch.tensor(7)
    tv = params.task_vector(a, b)
    assert "trunk.bn0.num_batches_tracked" not in tv
    back = params.apply_task_vector(a, tv, 1.0)
    assert params.allclose({k: v for k, v in back.items() if k in tv}, {k: b[k] for k in tv})
    assert back["trunk.bn0.num_batches_tracked"].dtype == torch.int64
    assert int(back["trunk.bn0.num_batches_tracked"]) == int(a["trunk.bn0.num_batches_tracked"])


def test_inputs_untouched_and_lerp_endpoints() -> None:
    a, b = _sds()
    a0, b0 = params.clone(a), params.clone(b)
    mid = params.lerp(a, b, 0.5)
    assert params.allclose(params.lerp(a, b, 0.0), a) and params.allclose(params.lerp(a, b, 1.0), b)
    ws = params.weighted_sum([a, b], [0.5, 0.5])
    assert params.allclose(mid, ws)
    assert params.allclose(a, a0, atol=0) and params.allclose(b, b0, atol=0)


def test_flatten_unflatten() -> None:
    a, _ = _sds()
    vec = params.flatten(a)
    assert vec.ndim == 1 and vec.numel() == params.n_params(a)
    assert params.allclose(params.unflatten(vec, a), a)
    with pytest.raises(ValueError, match="vec must be 1-D"):
        params.unflatten(vec[:-1], a)


def test_incompatible_state_dicts_are_listed() -> None:
    a = create_model("mlp", width=16, depth=1).state_dict()
    b = create_model("mlp", width=32, depth=1).state_dict()
    with pytest.raises(ValueError, match=r"does not match .* in shape/dtype: \['trunk.fc0.weight"):
        params.task_vector(a, b)
    c = create_model("mlp", width=16, depth=2).state_dict()
    with pytest.raises(ValueError, match="unexpected"):
        params.check_compatible([a, c])
    with pytest.raises(TypeError, match="must be a state dict"):
        params.task_vector([1], a)  # type: ignore[arg-type]


def test_combine_task_vectors_is_base_plus_weighted_task_vectors() -> None:
    from core.params import combine_task_vectors

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g), "n": torch.tensor(3)}
    tvs = [{"w": torch.randn(4, 3, generator=g)} for _ in range(3)]
    out = combine_task_vectors(base, tvs, [0.5, 0.0, -2.0], ["w"])
    assert torch.allclose(out["w"], base["w"] + 0.5 * tvs[0]["w"] - 2.0 * tvs[2]["w"])
    assert out["n"] is base["n"]  # entries outside keys are the base's
    assert torch.equal(combine_task_vectors(base, tvs, [0.0] * 3, ["w"])["w"], base["w"])
    with pytest.raises(ValueError, match="coefficients must have 3 entries, got 2"):
        combine_task_vectors(base, tvs, [1.0, 1.0], ["w"])
