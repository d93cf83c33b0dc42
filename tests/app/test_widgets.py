"""ui.widgets.hyperparameter_form builds widgets from Hyper metadata (AppTest)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core._registry import Hyper, Registry
from ui.widgets import default_weight


def _form_script() -> None:
    import streamlit as st

    from core._registry import Hyper, Registry
    from ui.widgets import hyperparameter_form

    reg: Registry = Registry("demo")
    reg.register(
        "a",
        params=(
            Hyper("scale", "float", 0.3, 0.0, 2.0, 0.05, help="λ"),
            Hyper("k", "int", 3, 1, 9, 1),
            Hyper("exact", "bool", True),
            Hyper("scope", "choice", "global", choices=("global", "tensor")),
            Hyper("weights", "floats", None, -1.0, 2.0, 0.05),
        ),
    )(lambda: None)
    reg.register(
        "b",
        params=(
            Hyper("scale", "float", 1.0, 0.0, 1.0, 0.1),
            Hyper("scope", "choice", "row", choices=("row", "tensor")),
        ),
    )(lambda: None)
    which = st.radio("method", ["a", "b"], key="demo.method")
    values = hyperparameter_form(reg[which], "demo", 3, labels=["x", "y", "z"])
    st.session_state["demo.values"] = values


def test_form_builds_widgets_from_metadata() -> None:
    at = AppTest.from_function(_form_script).run()
    assert not at.exception
    values = at.session_state["demo.values"]
    assert values == {
        "scale": 0.3,
        "k": 3,
        "exact": True,
        "scope": "global",
        "weights": [1.0, 1.0, 1.0],
    }
    assert at.slider(key="demo.scale").min == 0.0 and at.slider(key="demo.scale").max == 2.0
    assert [at.slider(key=f"demo.weights.{i}").label for i in range(3)] == ["x", "y", "z"]
    at.slider(key="demo.scale").set_value(1.5)
    at.slider(key="demo.weights.1").set_value(0.25)
    at.checkbox(key="demo.exact").uncheck()
    at.selectbox(key="demo.scope").set_value("tensor").run()
    values = at.session_state["demo.values"]
    assert values["scale"] == 1.5 and values["weights"] == [1.0, 0.25, 1.0]
    assert values["exact"] is False and values["scope"] == "tensor"


def test_switching_entry_redraws_and_drops_invalid_values() -> None:
    at = AppTest.from_function(_form_script).run()
    at.slider(key="demo.scale").set_value(1.5).run()
    at.radio(key="demo.method").set_value("b").run()
    assert not at.exception
    values = at.session_state["demo.values"]
    # 1.5 is outside b's range [0, 1] and "global" is not one of b's choices: defaults return
    assert values == {"scale": 1.0, "scope": "row"}
    assert len(at.slider) == 1 and len(at.checkbox) == 0


def test_bad_arguments_are_named() -> None:
    from ui.widgets import hyperparameter_form

    reg: Registry = Registry("demo")
    reg.register("bad", params=(Hyper("x", "matrix"),))(lambda: None)
    with pytest.raises(ValueError, match="kind"):
        hyperparameter_form(reg["bad"], "p", 1)
    with pytest.raises(ValueError, match="n_models"):
        hyperparameter_form(reg["bad"], "p", 0)
    with pytest.raises(ValueError, match="key_prefix"):
        hyperparameter_form(reg["bad"], "", 1)
    with pytest.raises(TypeError, match="entry"):
        hyperparameter_form(object(), "p", 1)  # type: ignore[arg-type]


def test_default_weight() -> None:
    assert default_weight(Hyper("w", "floats", None, 0.0, 0.5), 2) == [0.5, 0.5]
    assert default_weight(Hyper("w", "floats", 0.3, 0.0, 1.0), 3) == [0.3, 0.3, 0.3]
    assert default_weight(Hyper("w", "floats", (0.1, 0.9)), 2) == [0.1, 0.9]


def _breadcrumbs_form() -> None:
    import streamlit as st

    from core.merge import METHODS
    from ui.widgets import hyperparameter_form

    st.session_state["bc.values"] = hyperparameter_form(METHODS["breadcrumbs"], "bc", 2)


def test_sum_limit_narrows_the_dependent_slider_so_no_pair_is_invalid() -> None:
    """Breadcrumbs needs density + γ <= 1: γ's range shrinks as density grows, a kept γ above
    the new bound is clamped, and density 1 leaves γ fixed at 0."""
    from core.merge import merge

    at = AppTest.from_function(_breadcrumbs_form).run()
    assert not at.exception
    assert at.slider(key="bc.gamma").max == 0.5
    at.slider(key="bc.gamma").set_value(0.4).run()
    at.slider(key="bc.density").set_value(0.8).run()
    assert not at.exception
    g = at.slider(key="bc.gamma")
    assert g.max == pytest.approx(0.2) and g.value == pytest.approx(0.2)
    values = at.session_state["bc.values"]
    assert values["density"] + values["gamma"] <= 1.0
    import torch

    models = [{"w": torch.randn(4, 6)} for _ in range(2)]
    merge("breadcrumbs", models, base={"w": torch.zeros(4, 6)}, **values)  # no error
    at.slider(key="bc.density").set_value(1.0).run()
    assert not at.exception
    assert at.session_state["bc.values"]["gamma"] == 0.0
    assert not any(s.key == "bc.gamma" for s in at.slider)


def test_sum_limit_must_name_another_hyperparameter() -> None:
    reg: Registry = Registry("demo")
    bad = Hyper("gamma", "float", 0.0, 0.0, 1.0, 0.1, sum_limit=("densty", 1.0))
    with pytest.raises(ValueError, match="sum_limit of 'gamma'.*densty"):
        reg.register("a", params=(Hyper("density", "float", 0.5, 0.0, 1.0), bad))(lambda: None)
    own = Hyper("gamma", "float", 0.0, 0.0, 1.0, 0.1, sum_limit=("gamma", 1.0))
    with pytest.raises(ValueError, match="sum_limit of 'gamma'"):
        reg.register("b", params=(own,))(lambda: None)


def test_method_description_is_a_sentence_for_every_method() -> None:
    from core.merge import METHODS
    from ui.widgets import method_description

    for name in METHODS.names():
        text = method_description(METHODS[name])
        assert text and "``" not in text and "grams[i]" not in text, (name, text)
    assert method_description(METHODS["regmean"]).startswith("RegMean: merge linear layers")


def test_default_width_follows_the_architecture() -> None:
    from ui.widgets import default_width

    assert default_width("mlp") == 512 and default_width("cnn") == 16
