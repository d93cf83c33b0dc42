"""Forms built from registry metadata: a new merge method (or mixer) needs no UI code.

``hyperparameter_form(entry, key_prefix, n_models)`` draws one widget per
:class:`core._registry.Hyper` of a registry entry and returns the chosen values by name:

* ``float`` / ``int`` with a range -> slider, without -> number input;
* ``bool`` -> checkbox; ``choice`` -> selectbox; ``str`` -> text input;
* ``floats`` (one value per model) -> one slider per model, returned as a list.

Widget keys are ``"<key_prefix>.<name>"`` (``"<key_prefix>.<name>.<i>"`` per model), so a
hyperparameter that two methods share (``scale``) keeps its value when the method changes,
and tests can drive the widgets by key. A kept value that the new method's range or choices
do not allow is dropped first, so the widget falls back to its default instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import streamlit as st

from core._registry import Entry, Hyper

KINDS = ("float", "int", "bool", "choice", "floats", "str")

LABELS = {"scale": "λ (scale)", "t": "t (interpolation)", "drop": "drop rate p"}


def hyperparameter_form(
    entry: Entry[Any],
    key_prefix: str,
    n_models: int,
    *,
    labels: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    columns: int = 3,
) -> dict[str, Any]:
    """Draw the widgets of ``entry.params`` and return ``{name: value}``.

    Args:
        entry: a registry entry (``core.merge.METHODS[name]`` or any other registry's).
        key_prefix: widget key prefix, e.g. ``"merge"`` (gives ``"merge.scale"``).
        n_models: number of models, for ``floats`` hyperparameters (one slider each).
        labels: a label per model for the per-model sliders (default "model 1", ...).
        exclude: hyperparameter names the page sets itself (not drawn, not returned).
        columns: scalar widgets per row.

    Raises:
        TypeError: ``entry`` has no Hyper params.
        ValueError: bad prefix, model count, labels, or a Hyper of unknown kind.
    """
    params = getattr(entry, "params", None)
    if not isinstance(params, tuple) or not all(isinstance(p, Hyper) for p in params):
        raise TypeError(f"entry must be a registry Entry with Hyper params, got {entry!r}")
    if not isinstance(key_prefix, str) or not key_prefix:
        raise ValueError(f"key_prefix must be a non-empty string, got {key_prefix!r}")
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 1:
        raise ValueError(f"n_models must be an int >= 1, got {n_models!r}")
    names = list(labels) if labels is not None else [f"model {i + 1}" for i in range(n_models)]
    if len(names) != n_models:
        raise ValueError(f"labels must have n_models={n_models} entries, got {len(names)}")
    check_columns = max(1, int(columns))
    for p in params:
        if p.kind not in KINDS:
            raise ValueError(f"hyperparameter {p.name!r} has kind {p.kind!r}; expected {KINDS}")

    shown = [p for p in params if p.name not in set(exclude)]
    scalars = [p for p in shown if p.kind != "floats"]
    values: dict[str, Any] = {}
    for start in range(0, len(scalars), check_columns):
        row = scalars[start : start + check_columns]
        for col, p in zip(st.columns(check_columns), row, strict=False):
            with col:
                key = f"{key_prefix}.{p.name}"
                narrowed = _narrowed(p, values, key)
                if narrowed is None:  # the other value leaves a single allowed value
                    st.caption(f"{_label(p)}: {p.low} (fixed by {p.sum_limit[0]})")  # type: ignore[index]
                    values[p.name] = p.low
                else:
                    values[p.name] = _scalar_widget(narrowed, key)
    for p in shown:
        if p.kind == "floats":
            values[p.name] = _per_model_widgets(p, f"{key_prefix}.{p.name}", names)
    return values


def _narrowed(p: Hyper, values: dict[str, Any], key: str) -> Hyper | None:
    """``p`` with its upper bound lowered to honour ``p.sum_limit`` given the values drawn so
    far (a kept value above the new bound is clamped to it); None when only ``p.low`` is left."""
    if p.sum_limit is None or p.sum_limit[0] not in values or p.low is None or p.high is None:
        return p
    other, total = p.sum_limit
    room = float(total) - float(values[other])
    step = float(p.step) if p.step else (float(p.high) - float(p.low)) / 100
    high = min(float(p.high), float(p.low) + math.floor((room - float(p.low)) / step + 1e-9) * step)
    high = round(high, 12)
    if high <= float(p.low):
        return None
    kept = st.session_state.get(key)
    default = min(float(p.default), high) if isinstance(p.default, int | float) else p.default
    if isinstance(kept, float) and kept > high:
        # clamp: forget the kept value and start the narrowed slider at its new top (setting
        # the state directly would trip Streamlit's default-plus-state warning)
        del st.session_state[key]
        default = high
    return replace(p, high=high, default=default)


def _label(p: Hyper) -> str:
    return LABELS.get(p.name, p.name.replace("_", " "))


def _drop_invalid(key: str, ok: bool) -> None:
    """Forget a kept widget value that the current widget would reject."""
    if not ok and key in st.session_state:
        del st.session_state[key]


def _number_ok(value: Any, p: Hyper, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer and not isinstance(value, int):
        return False
    if not integer and not isinstance(value, float):
        return False
    lo = -math.inf if p.low is None else p.low
    hi = math.inf if p.high is None else p.high
    return bool(lo <= value <= hi)


def _scalar_widget(p: Hyper, key: str) -> Any:
    help_ = p.help or None
    kept = st.session_state.get(key)
    if p.kind in ("float", "int"):
        integer = p.kind == "int"
        if kept is not None:
            _drop_invalid(key, _number_ok(kept, p, integer))
        cast = int if integer else float
        default = cast(p.default if p.default is not None else (p.low or 0))
        step = cast(p.step) if p.step else (1 if integer else None)
        if p.low is not None and p.high is not None:
            if step is None:
                step = (float(p.high) - float(p.low)) / 100
            return st.slider(
                _label(p),
                min_value=cast(p.low),
                max_value=cast(p.high),
                value=default,
                step=step,
                key=key,
                help=help_,
            )
        return st.number_input(
            _label(p),
            min_value=None if p.low is None else cast(p.low),
            max_value=None if p.high is None else cast(p.high),
            value=default,
            step=step,
            key=key,
            help=help_,
        )
    if p.kind == "bool":
        if kept is not None:
            _drop_invalid(key, isinstance(kept, bool))
        return st.checkbox(_label(p), value=bool(p.default), key=key, help=help_)
    if p.kind == "choice":
        options = list(p.choices)
        if kept is not None:
            _drop_invalid(key, kept in options)
        index = options.index(p.default) if p.default in options else 0
        return st.selectbox(_label(p), options, index=index, key=key, help=help_)
    if kept is not None:
        _drop_invalid(key, isinstance(kept, str))
    return st.text_input(
        _label(p), value="" if p.default is None else str(p.default), key=key, help=help_
    )


def default_weight(p: Hyper, n_models: int) -> list[float]:
    """Initial per-model values of a ``floats`` hyperparameter: its default list, its scalar
    default repeated, or 1 clipped to the slider range."""
    if isinstance(p.default, Sequence) and len(p.default) == n_models:
        return [float(v) for v in p.default]
    one = float(p.default) if isinstance(p.default, int | float) else 1.0
    lo = -math.inf if p.low is None else float(p.low)
    hi = math.inf if p.high is None else float(p.high)
    return [min(max(one, lo), hi)] * n_models


def _per_model_widgets(p: Hyper, key: str, names: Sequence[str]) -> list[float]:
    st.caption(f"{_label(p)} — {p.help}" if p.help else _label(p))
    defaults = default_weight(p, len(names))
    lo = -10.0 if p.low is None else float(p.low)
    hi = 10.0 if p.high is None else float(p.high)
    step = float(p.step) if p.step else (hi - lo) / 100
    out: list[float] = []
    cols = st.columns(min(len(names), 4))
    for i, (name, default) in enumerate(zip(names, defaults, strict=True)):
        k = f"{key}.{i}"
        kept = st.session_state.get(k)
        if kept is not None:
            _drop_invalid(k, isinstance(kept, float) and lo <= kept <= hi)
        with cols[i % len(cols)]:
            out.append(
                float(st.slider(name, min_value=lo, max_value=hi, value=default, step=step, key=k))
            )
    return out


def default_width(arch: str) -> int:
    """The default ``width`` of a registered architecture (its factory's signature)."""
    import inspect

    from core.models import ARCHITECTURES

    if arch not in ARCHITECTURES.names():
        raise ValueError(f"arch must be one of {ARCHITECTURES.names()}, got {arch!r}")
    param = inspect.signature(ARCHITECTURES[arch].fn).parameters.get("width")
    if param is None or not isinstance(param.default, int):
        return 16
    return min(max(param.default, 4), 512)


def method_description(entry: Any) -> str:
    """One readable sentence about a registered method: its docstring's first line, or, when
    that line is an argument note (code spans, no full stop), its module's first paragraph."""
    import sys

    doc = str(getattr(entry, "doc", "") or "").strip()
    if doc and "``" not in doc and doc.endswith("."):
        return doc
    module = sys.modules.get(getattr(getattr(entry, "fn", None), "__module__", "") or "")
    head = (getattr(module, "__doc__", None) or "").strip().split("\n\n")[0]
    head = " ".join(head.split())
    return (head or doc).replace("``", "`")


def progress_bar(label: str) -> tuple[Any, Callable[[int, int], None]]:
    """A progress bar and the ``(done, total)`` callback that drives it (its text: ``label``
    and the count)."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    bar = st.progress(0.0, text=label)

    def advance(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label} {done}/{total}")

    return bar, advance
