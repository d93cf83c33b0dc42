"""The Model Zoo's "Import external models" tab: a Hugging Face base and fine-tunes checked up
front (nothing stored by Check), what does not fit named, then imported as a task-vector set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.zoo import Zoo
from tests.models.test_external_models import _bert

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # tiny BERT folders and a full page run: ~10 s on 2 cores


def _tab(ws: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/1_Model_Zoo.py").run()
    assert not at.exception, at.exception
    return at


def _submit(at: Any, button: str, **fields: str) -> Any:
    for key, value in fields.items():
        widget = at.text_area(key=key) if key == "zoo.ext_sources" else at.text_input(key=key)
        widget.input(value)
    at.button(key=f"zoo.ext_{button}").click().run()
    assert not at.exception, at.exception
    return at


def test_import_external_set_is_checked_then_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _bert(tmp_path / "base", seed=0)
    fts = [_bert(tmp_path / f"ft{i}", seed=10 + i, base=base) for i in range(2)]
    other = _bert(tmp_path / "wide", seed=3, hidden=16)
    ws = tmp_path / "ws"
    at = _tab(ws, monkeypatch)
    lines = "\n".join(str(f) for f in fts)
    _submit(at, "check", **{"zoo.ext_base": str(base), "zoo.ext_sources": lines})
    assert not at.error, [e.value for e in at.error]
    assert any(
        "All 3 models load and fit together as a task-vector set" in s.value for s in at.success
    )
    assert len(Zoo(ws).list()) == 0  # Check stores nothing

    bad = f"{fts[0]}\n{tmp_path / 'missing'}\n"
    _submit(at, "check", **{"zoo.ext_sources": bad})
    msg = " ".join(e.value for e in at.error)
    assert "line 2" in msg and "missing" in msg and "nothing was stored" in msg

    _submit(at, "check", **{"zoo.ext_sources": f"{fts[0]}\n{other}"})
    msg = " ".join(e.value for e in at.error)
    assert "do not form a task-vector set" in msg and "wide" in msg

    _submit(
        at,
        "import",
        **{"zoo.ext_sources": lines, "zoo.ext_names": "ft-a ft-b", "zoo.ext_base_name": "bert"},
    )
    assert not at.error, [e.value for e in at.error]
    recs = {r.id: r for r in Zoo(ws).list()}
    assert set(recs) == {"bert", "ft-a", "ft-b"}
    assert recs["bert"].role == "base" and recs["ft-a"].base_id == "bert"
    assert recs["ft-b"].role == "finetune" and recs["ft-b"].arch == "external"
