"""Property-based tests (hypothesis): bad input never crashes the foundation.

Over core.params, core.zoo ids and core.io, with random shapes, dtypes, empty and degenerate
inputs and NaN/Inf: each call either works (and then its result is checked against an
independent float64 computation) or raises ValueError/TypeError whose message names the
argument — never another exception type.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core import params as P
from core.io import CheckpointError, load_checkpoint
from core.models import create_model
from core.zoo import Zoo, slugify

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
ALL_DTYPES = [*FLOAT_DTYPES, torch.int64, torch.int32, torch.bool]


def expect_clean(fn: Callable[[], Any], names: tuple[str, ...]) -> tuple[bool, Any]:
    """Run ``fn``: (True, result) when it works; (False, err) for a ValueError/TypeError whose
    message names one of ``names``; anything else fails the test."""
    try:
        return True, fn()
    except (ValueError, TypeError) as err:
        msg = str(err)
        assert msg, f"{type(err).__name__} without a message"
        assert any(n in msg for n in names), f"message does not name any of {names}: {msg!r}"
        return False, err


# ----------------------------------------------------------------------------- strategies
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
special = st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e30, -1e-30])
numbers = st.one_of(st.floats(-3, 3, allow_nan=False), special)


@st.composite
def tensors(
    draw: st.DrawFn, shape: tuple[int, ...] | None = None, dtype: Any = None
) -> torch.Tensor:
    shape = draw(shapes) if shape is None else shape
    dtype = draw(st.sampled_from(ALL_DTYPES)) if dtype is None else dtype
    n = math.prod(shape)
    vals = draw(st.lists(numbers, min_size=n, max_size=n))
    t = torch.tensor(vals, dtype=torch.float64).reshape(shape)
    if dtype == torch.bool:
        return t.nan_to_num(0.0) > 0
    if not dtype.is_floating_point:
        return t.nan_to_num(0.0, 0.0, 0.0).clamp(-100, 100).to(dtype)
    return t.to(dtype)


@st.composite
def state_dicts(draw: st.DrawFn, like: dict[str, torch.Tensor] | None = None) -> dict:
    if like is not None:
        return {k: draw(tensors(tuple(v.shape), v.dtype)) for k, v in like.items()}
    keys = draw(
        st.lists(
            st.sampled_from(
                ["a.weight", "a.bias", "bn.running_mean", "bn.num_batches_tracked", "x"]
            ),
            unique=True,
            max_size=4,
        )
    )
    return {k: draw(tensors()) for k in keys}


def finite(sd: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point())


def same_layout(out: dict, ref: dict) -> None:
    assert list(out) == list(ref)
    for k in ref:
        assert out[k].shape == ref[k].shape and out[k].dtype == ref[k].dtype, k


def frozen(sd: dict) -> dict:
    return {k: v.clone() for k, v in sd.items()}


def unchanged(sd: dict, copy: dict) -> None:
    for k in copy:
        assert torch.equal(sd[k], copy[k]) or (
            sd[k].is_floating_point() and torch.equal(sd[k].isnan(), copy[k].isnan())
        ), f"input {k} was modified"


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    return torch.allclose(a.double(), b.double(), rtol=tol, atol=tol, equal_nan=True)


# ----------------------------------------------------------------------------- core.params
@SETTINGS
@given(data=st.data())
def test_task_vector_and_apply(data: st.DataObject) -> None:
    base = data.draw(state_dicts())
    tuned = data.draw(st.one_of(state_dicts(like=base), state_dicts()))
    scale = data.draw(numbers)
    b0, t0 = frozen(base), frozen(tuned)
    ok, tv = expect_clean(lambda: P.task_vector(base, tuned), ("base", "tuned"))
    unchanged(base, b0)
    unchanged(tuned, t0)
    if not ok:
        return
    assert set(tv) == {k for k, v in base.items() if v.is_floating_point()}
    ok, out = expect_clean(lambda: P.apply_task_vector(base, tv, scale), ("scale", "base", "tv"))
    if not ok:
        assert not math.isfinite(scale) or not tv, out
        return
    same_layout(out, base)
    for k, v in base.items():
        if v.is_floating_point() and finite(base) and finite(tuned) and scale == 1.0:
            assert close(out[k], tuned[k], v.dtype), k
        if not v.is_floating_point():
            assert torch.equal(out[k], v)


@SETTINGS
@given(data=st.data())
def test_lerp_matches_float64(data: st.DataObject) -> None:
    a = data.draw(state_dicts())
    b = data.draw(st.one_of(state_dicts(like=a), state_dicts()))
    t = data.draw(st.one_of(numbers, st.just("0.5"), st.none()))
    a0 = frozen(a)
    ok, out = expect_clean(lambda: P.lerp(a, b, t), ("a", "b", "t"))  # type: ignore[arg-type]
    unchanged(a, a0)
    if not ok:
        return
    assert isinstance(t, float) and math.isfinite(t)
    same_layout(out, a)
    for k, v in a.items():
        if v.is_floating_point() and finite(a) and finite(b) and abs(t) <= 3:
            want = (1 - t) * v.double() + t * b[k].double()
            if bool(torch.isfinite(want).all()):
                big = float(want.abs().max()) if want.numel() else 0.0
                assert close(out[k], want, v.dtype) or big > 1e4, k
        elif not v.is_floating_point():
            assert torch.equal(out[k], v)


@SETTINGS
@given(data=st.data())
def test_weighted_sum(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 3))
    first = data.draw(state_dicts())
    sds = [first] + [data.draw(st.one_of(state_dicts(like=first), state_dicts())) for _ in range(n)]
    weights = data.draw(
        st.one_of(
            st.lists(numbers, min_size=len(sds), max_size=len(sds)),
            st.lists(numbers, max_size=5),
            st.just(0.5),
            st.lists(st.just("w"), min_size=len(sds), max_size=len(sds)),
        )
    )
    ok, out = expect_clean(lambda: P.weighted_sum(sds, weights), ("weights", "models", "sds"))  # type: ignore[arg-type]
    if not ok:
        return
    assert all(math.isfinite(w) for w in weights)  # type: ignore[union-attr]
    same_layout(out, first)
    for k, v in first.items():
        if v.is_floating_point() and all(finite(s) for s in sds):
            want = sum(float(w) * s[k].double() for w, s in zip(weights, sds, strict=True))  # type: ignore[arg-type]
            if (
                bool(torch.isfinite(torch.as_tensor(want)).all())
                and float(torch.as_tensor(want).abs().max() if v.numel() else 0) < 1e4
            ):
                assert close(out[k], torch.as_tensor(want), v.dtype), k


@SETTINGS
@given(sd=state_dicts(), junk=st.sampled_from([None, 3, "x", [1, 2], {"k": 1}]))
def test_flatten_unflatten_round_trip(sd: dict, junk: Any) -> None:
    ok, vec = expect_clean(lambda: P.flatten(sd), ("sd",))
    if ok:
        back = P.unflatten(vec, sd)
        same_layout(back, sd)
        for k in sd:
            assert (
                torch.equal(back[k].isnan(), sd[k].isnan()) if sd[k].is_floating_point() else True
            )
        expect_clean(lambda: P.unflatten(vec[:-1] if len(vec) else vec[:0], sd), ("vec", "like"))
        expect_clean(lambda: P.unflatten(vec, sd, keys=["nope"]), ("keys",))
        expect_clean(lambda: P.flatten(sd, keys=["nope"]), ("keys",))
    # wrong types anywhere: a clean TypeError/ValueError naming the argument
    for fn, names in [
        (lambda: P.flatten(junk), ("sd",)),
        (lambda: P.unflatten(junk, sd), ("vec", "like")),
        (lambda: P.n_params(junk), ("sd",)),
        (lambda: P.clone(junk), ("sd",)),
        (lambda: P.scale(sd, junk), ("factor", "a")),
        (lambda: P.check_compatible(junk), ("sds", "state dict")),
        (lambda: P.add(sd, junk), ("a", "b")),
        (lambda: P.task_vector(junk, sd), ("base", "tuned")),
        (lambda: P.allclose(junk, sd), ("a", "b")),
    ]:
        ok, _ = expect_clean(fn, names)
        assert not ok or (junk == 3 and fn is not None)  # only 3 (as a factor) is valid here


# ----------------------------------------------------------------------------- core.zoo ids
@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(), max_size=300))
def test_slugify_is_always_a_safe_file_name(text: str) -> None:
    s = slugify(text)
    assert 1 <= len(s) <= 80
    assert set(s) <= set(string.ascii_letters + string.digits + "_.-")
    assert not s.startswith((".", "-")) and s not in (".", "..")


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    z = Zoo(tmp_path_factory.mktemp("ws"))
    z.add(
        create_model("mlp", width=16, depth=1),
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        task="mnist",
        name="m",
    )
    return z


@SETTINGS
@given(
    model_id=st.one_of(
        st.text(max_size=50),
        st.none(),
        st.integers(),
        st.lists(st.integers(), max_size=2),
        st.sampled_from(["../m", "m/../m", "m\x00", "m'; DROP TABLE models; --", "M", " m"]),
    )
)
def test_zoo_lookups_with_any_id(small_zoo: Zoo, model_id: Any) -> None:
    assert (model_id in small_zoo) is (model_id == "m")
    for fn in (small_zoo.get, small_zoo.state_dict, small_zoo.load_model, small_zoo.delete):
        if model_id == "m" and fn == small_zoo.delete:
            continue
        try:
            fn(model_id)
        except KeyError as err:  # a missing id (the documented lookup error)
            assert isinstance(model_id, str), err
            assert repr(model_id) in str(err) or "model_id" in str(err)
        except TypeError as err:
            assert not isinstance(model_id, str) and "model_id" in str(err)
        else:
            assert model_id == "m"
    assert [r.id for r in small_zoo.list()] == ["m"]


# ----------------------------------------------------------------------------- core.io
@pytest.fixture(scope="module")
def good_blobs() -> dict[str, bytes]:
    import io

    from safetensors.torch import save

    sd = create_model("mlp", width=16, depth=1).state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    return {".safetensors": save(sd), ".pt": buf.getvalue()}


@SETTINGS
@given(
    suffix=st.sampled_from([".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".txt", ""]),
    how=st.sampled_from(["random", "truncate", "flip"]),
    data=st.data(),
)
def test_load_checkpoint_on_corrupt_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    good_blobs: dict[str, bytes],
    suffix: str,
    how: str,
    data: st.DataObject,
) -> None:
    good = good_blobs[".safetensors" if suffix == ".safetensors" else ".pt"]
    if how == "random":
        blob = data.draw(st.binary(max_size=2000))
    elif how == "truncate":
        blob = good[: data.draw(st.integers(0, len(good) - 1))]
    else:
        pos = data.draw(st.integers(0, min(len(good) - 1, 4000)))
        blob = good[:pos] + bytes([good[pos] ^ data.draw(st.integers(1, 255))]) + good[pos + 1 :]
    f = tmp_path_factory.mktemp("ck") / f"model{suffix}"
    f.write_bytes(blob)
    try:
        sd = load_checkpoint(f)
    except CheckpointError as err:
        assert f.name in str(err) or "checkpoint" in str(err)
    else:  # a flip in a tensor's payload still loads: it must be a plain state dict
        assume(how == "flip")
        assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())


@pytest.mark.parametrize("bad", [None, 3, b"x.pt", ["a.pt"]])
def test_load_checkpoint_argument_type(bad: Any) -> None:
    with pytest.raises(TypeError, match="path"):
        load_checkpoint(bad)


def test_load_checkpoint_on_a_folder(tmp_path: Path) -> None:
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "d.pt")
