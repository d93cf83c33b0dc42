"""Every page driven with bad input through AppTest: no exception escapes, errors are shown.

Bad input: an empty workspace, a workspace path that is a file, a workspace holding a single
model (the default zoo's models missing), widgets pushed to their extremes (every number input
and slider at its minimum, then its maximum; the last option of every select box; hostile text
in every text input).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.models import create_model
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
# the workbench pages (the papers pages 10 and 11 have their own tests) and the Merge Search page
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("[0-9]_*.py")) + [
    "pages/12_Merge_Search.py"
]
HOSTILE_TEXT = "../../../../etc/passwd\x00 <script>alert(1)</script>"


def _open(page: str | None, timeout: float = 300) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    if page is not None and not at.exception:
        at.switch_page(page).run()
    return at


def _no_exception(at: AppTest, what: str) -> None:
    assert not at.exception, f"{what}: {[e.value for e in at.exception]}"


def _messages(at: AppTest) -> list[str]:
    return [m.value for m in [*at.error, *at.warning, *at.info]]


@pytest.mark.parametrize("page", [None, *PAGES])
def test_empty_workspace(empty_workspace: Path, page: str | None) -> None:
    at = _open(page)
    _no_exception(at, f"{page} on an empty workspace")
    # the gallery (photos), clustering (raw task images) and figures pages work without models
    if page not in (
        None,
        "pages/4_Mixup_Gallery.py",
        "pages/7_Clustering.py",
        "pages/8_Figures.py",
    ):
        # pages that need models say so (and how to get them)
        assert _messages(at), f"{page} shows nothing on an empty workspace"


@pytest.mark.parametrize("page", [None, *PAGES])
def test_workspace_path_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str | None
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(blocker))
    at = _open(page)
    _no_exception(at, f"{page} with a workspace that is a file")
    assert any("not a folder" in e.value or "is a file" in e.value for e in at.error), _messages(at)


@pytest.fixture
def one_model_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws1"
    Zoo(ws).add(
        create_model("mlp", width=16),
        arch="mlp",
        arch_kwargs={"width": 16},
        task="digits",
        name="lonely",
    )
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    return ws


@pytest.mark.parametrize("page", PAGES)
def test_one_model_only(one_model_workspace: Path, page: str) -> None:
    at = _open(page)
    _no_exception(at, f"{page} with a single model")


def _push(at: AppTest, end: str) -> None:
    """Set every number input and slider to its ``end`` ("min" or "max"), every select box to
    its last option and every text input to hostile text (widgets not disabled)."""
    for w in at.number_input:
        if not w.disabled:
            v = w.min if end == "min" else w.max
            if v is not None:
                w.set_value(v)
    for w in at.slider:
        if not w.disabled:
            lo, hi = w.min, w.max
            v = lo if end == "min" else hi
            w.set_value((v, v) if isinstance(w.value, tuple) else v)
    for w in at.selectbox:
        if not w.disabled and w.options:
            w.set_value(w.options[-1] if end == "max" else w.options[0])
    for w in at.text_input:
        if not w.disabled and "Workspace" not in w.label:
            w.set_value(HOSTILE_TEXT)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_widgets_at_their_extremes(workspace_env: Path, page: str) -> None:
    # at their max the widgets ask for the largest computations (Interpolation: 51 points on
    # every path): correctness, not speed, is checked here, so a loaded machine gets time
    at = _open(page, timeout=900)
    _no_exception(at, page)
    before = sorted(p.name for p in (workspace_env / "models").iterdir())
    for end in ("min", "max"):
        _push(at, end)
        at.run()
        _no_exception(at, f"{page} with widgets at their {end}")
        # press every enabled button that does not write or delete (those are tested elsewhere)
        for b in at.button:
            if not b.disabled and not any(
                w in b.label for w in ("Delete", "Save", "Train", "Build", "Import", "Store", "Run")
            ):
                b.click()
                at.run()
                _no_exception(at, f"{page}: button {b.label!r} with widgets at their {end}")
                break
    assert sorted(p.name for p in (workspace_env / "models").iterdir()) == before
    escaped = [p for p in Path("/etc").glob("passwd.*")]
    assert not escaped
