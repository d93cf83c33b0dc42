"""Property-based tests (hypothesis) over the research areas: merges (every method in
``core.merge.METHODS`` that needs no data), mixers (every ``core.mixup.MIXERS`` entry that needs
no model), neural-collapse metrics and PPP clustering.

Random shapes, dtypes, one model, one class, constant features, empty inputs and NaN/Inf: each
call either works — and then its output is finite where the input was, with the documented
keys/shapes — or raises ValueError/TypeError whose message names the argument. Never another
exception type.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import cluster, geometry, merge, mixup
from tests.test_properties import expect_clean

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e9])


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "constant":
        t = torch.full(shape, 0.5, dtype=torch.float64)
    elif kind == "zeros":
        t = torch.zeros(shape, dtype=torch.float64)
    elif kind == "nan" and t.numel():
        t.view(-1)[0] = math.nan
    elif kind == "inf" and t.numel():
        t.view(-1)[-1] = math.inf
    return t.to(dtype)


# ----------------------------------------------------------------------------- merges
def _merge_methods() -> list[str]:
    return [n for n in merge.METHODS.names() if "data_dependent" not in merge.METHODS[n].tags]


def _hyper_value(h: Any, draw: st.DrawFn, n: int) -> Any:
    bad = draw(st.booleans()) and draw(st.integers(0, 3)) == 0  # out of range now and then
    if h.kind == "floats":
        lo, hi = h.low if h.low is not None else 0.0, h.high if h.high is not None else 1.0
        k = n if not bad else draw(st.integers(0, n + 1))
        vals = [draw(st.floats(lo, hi)) for _ in range(k)]
        if bad and vals:
            vals[0] = draw(special)
        return vals
    if h.kind == "float":
        if bad:
            return draw(st.one_of(special, st.just("0.5"), st.just(None)))
        return draw(
            st.floats(h.low if h.low is not None else -1, h.high if h.high is not None else 1)
        )
    if h.kind == "int":
        return (
            draw(st.integers(-2, 3))
            if bad
            else draw(st.integers(int(h.low or 0), int(min(h.high or 4, 4))))
        )
    if h.kind == "choice":
        return draw(st.sampled_from([*h.choices, "bogus"] if bad else list(h.choices)))
    if h.kind == "bool":
        return draw(st.booleans())
    return h.default


@pytest.mark.parametrize("method", _merge_methods())
@SETTINGS
@given(data=st.data())
def test_merge_never_crashes(method: str, data: st.DataObject) -> None:
    from core.merge import METHODS, merge

    entry = METHODS[method]
    n = data.draw(
        st.integers(0, 3) if "two_models" not in entry.tags else st.sampled_from([1, 2, 2, 3])
    )
    shape = tuple(data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    dtype = data.draw(
        st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])
    )
    kind = data.draw(st.sampled_from(["normal", "normal", "constant", "zeros", "nan", "inf"]))
    models = [
        {
            "w": _tensor(shape, dtype, i, kind if i == 0 else "normal"),
            "b": _tensor((shape[0],), dtype, 100 + i, "normal"),
            "count": torch.tensor(7),
        }
        for i in range(n)
    ]
    if n and data.draw(st.integers(0, 9)) == 0:  # a mismatched model
        models[-1] = {**models[-1], "w": torch.zeros(shape[0] + 1)}
    base = None
    if "needs_base" in entry.tags or data.draw(st.booleans()):
        base = {
            "w": _tensor(shape, dtype, 50, "normal"),
            "b": _tensor((shape[0],), dtype, 51, "normal"),
            "count": torch.tensor(3),
        }
    hyper = {
        h.name: _hyper_value(h, data.draw, n) for h in entry.params if data.draw(st.booleans())
    }
    originals = [{k: v.clone() for k, v in m.items()} for m in models]
    names = ("models", "base", "method", "weights", *[h.name for h in entry.params], "generator")
    ok, out = expect_clean(
        lambda: merge(
            method, models, base=base, generator=torch.Generator().manual_seed(0), **hyper
        ),
        names,
    )
    for m, o in zip(models, originals, strict=True):  # inputs untouched
        for k in o:
            assert torch.equal(m[k].isnan(), o[k].isnan()) and torch.equal(
                m[k].nan_to_num(), o[k].nan_to_num()
            ), k
    if not ok:
        return
    assert all(bool(torch.isfinite(m["w"]).all()) for m in models), "NaN/Inf merged silently"
    assert set(out) == set(models[0])
    for k, v in models[0].items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype, k
    assert torch.equal(out["count"], (base or models[0])["count"])


# ----------------------------------------------------------------------------- mixers
def _mixers() -> list[str]:
    return [n for n in mixup.MIXERS.names() if "model" not in mixup.MIXERS[n].tags]


@pytest.mark.parametrize("name", _mixers())
@SETTINGS
@given(data=st.data())
def test_mixer_never_crashes(name: str, data: st.DataObject) -> None:
    from core.mixup import MIXERS, mix

    n = data.draw(st.integers(0, 5))
    c = data.draw(st.sampled_from([1, 3]))
    h = data.draw(st.sampled_from([1, 2, 7, 8]))
    ndim = data.draw(st.sampled_from([4, 4, 4, 2, 3]))
    shape = (n, c, h, h)[:ndim] if ndim != 2 else (n, c * h * h)
    kind = data.draw(st.sampled_from(["normal", "constant", "nan", "inf"]))
    x = _tensor(shape, torch.float32, 0, kind)
    n_classes = data.draw(st.sampled_from([1, 2, 10]))
    y = data.draw(st.sampled_from(["int", "soft", "bad"]))
    if y == "int":
        yv = torch.randint(0, n_classes, (n,), generator=torch.Generator().manual_seed(1))
    elif y == "soft":
        yv = torch.full((n, n_classes), 1.0 / n_classes)
    else:
        yv = torch.arange(n + 1)
    alpha = data.draw(st.one_of(st.floats(0.05, 4.0), special))
    lam = data.draw(st.one_of(st.none(), st.floats(0, 1), special))
    hyper: dict[str, Any] = {}
    for hp in MIXERS[name].params:
        if hp.name != "alpha" and data.draw(st.booleans()):
            hyper[hp.name] = _hyper_value(hp, data.draw, 1)
    x0 = x.clone()
    ok, res = expect_clean(
        lambda: mix(
            name,
            x,
            yv,
            alpha=alpha,
            lam=lam,
            generator=torch.Generator().manual_seed(2),
            n_classes=n_classes if y == "int" else None,
            **hyper,
        ),
        (
            "x",
            "shape",
            "y",
            "alpha",
            "lam",
            "n_classes",
            "generator",
            *{part for hp in MIXERS[name].params for part in (hp.name, hp.name.split("_")[0])},
        ),
    )
    assert torch.equal(x.nan_to_num(), x0.nan_to_num()), "x was modified"
    if not ok:
        return
    assert res.x.shape == x.shape and res.y.shape[0] == n
    if kind == "normal" or x.numel() == 0:
        assert bool(torch.isfinite(res.x).all()) and bool(torch.isfinite(res.y).all())
        assert torch.allclose(res.y.sum(1), torch.ones(n), atol=1e-4)


# ----------------------------------------------------------------------------- neural collapse
@SETTINGS
@given(
    n=st.integers(0, 12),
    d=st.integers(1, 5),
    n_classes=st.integers(1, 4),
    kind=st.sampled_from(["normal", "constant", "zeros", "nan", "inf"]),
    labels_kind=st.sampled_from(["ok", "float", "short", "negative", "2d"]),
)
def test_neural_collapse_never_crashes(
    n: int, d: int, n_classes: int, kind: str, labels_kind: str
) -> None:
    x = _tensor((n, d), torch.float32, 3, kind)
    labels = torch.arange(n) % n_classes
    if labels_kind == "float":
        labels = labels.float()
    elif labels_kind == "short":
        labels = labels[:-1]
    elif labels_kind == "negative" and n:
        labels = labels - 1
    elif labels_kind == "2d":
        labels = labels[:, None]
    ok, res = expect_clean(lambda: geometry.neural_collapse(x, labels), ("features", "labels"))
    if ok:
        assert set(res) >= {"nc1", "nc2_equinorm", "nc2_equiangular"}
        if kind == "normal":
            # metrics that need a classifier (nc3, nc4, ...) are NaN without one, by design
            assert all(
                not math.isnan(res[k]) for k in ("nc1", "nc2_equinorm", "nc2_equiangular")
            ), res


# ----------------------------------------------------------------------------- clustering
# identical points make KMeans warn (fewer distinct points than clusters): a warning, not a crash
@pytest.mark.filterwarnings("ignore::core._warnings.MixmergeWarning")
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(0, 30),
    d=st.integers(1, 3),
    kind=st.sampled_from(["normal", "constant", "nan", "inf"]),
    k_max=st.sampled_from([-1, 0, 1, 2, 3, 50]),
)
def test_ppp_never_crashes(n: int, d: int, kind: str, k_max: int) -> None:
    x = _tensor((n, d), torch.float32, 4, kind)
    ok, res = expect_clean(lambda: cluster.ppp(x, k_max=k_max, n_components=None), ("x", "k_max"))
    if ok:
        assert len(res.labels) == n and 1 <= res.k <= max(k_max, 1)
