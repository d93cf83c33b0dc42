"""AppTest: Home and Model Zoo on broken, read-only and orphaned workspaces show a message and
the way out (never a traceback), and Repair brings the models back."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.zoo import Zoo
from tests.zoo.test_zoo_trust import (
    BROKEN_FOLDERS,
    BROKEN_INDEX,
    _checkpoint,
    _two_models,
    read_only,
)

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGES = {"home": None, "zoo": "pages/1_Model_Zoo.py"}


def _open(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    if PAGES[page]:
        at.switch_page(PAGES[page]).run()
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(e.value for e in [*at.error, *at.warning, *at.info, *at.success])


@pytest.mark.parametrize("page", list(PAGES))
@pytest.mark.parametrize("fault", list(BROKEN_INDEX))
def test_broken_index_shows_the_way_out_and_repair_works(
    empty_workspace: Path, monkeypatch, page: str, fault: str
) -> None:
    _two_models(empty_workspace)
    _checkpoint(empty_workspace)
    BROKEN_INDEX[fault](empty_workspace)
    at = _open(page)
    assert not at.exception, at.exception
    assert any("index.sqlite" in e.value and "damaged" in e.value for e in at.error), _texts(at)
    at.button(key=f"{page}.repair").click().run()
    assert not at.exception, at.exception
    assert "Index repaired" in _texts(at) and "recovered 2" in _texts(at), _texts(at)
    assert [r.id for r in Zoo(empty_workspace).list()] == ["a", "b"]
    if page == "zoo":
        assert {"a", "b"} <= set(at.dataframe[0].value["id"])


@pytest.mark.parametrize("page", list(PAGES))
@pytest.mark.parametrize("fault", list(BROKEN_FOLDERS))
def test_broken_workspace_folder_shows_a_message(
    tmp_path: Path, monkeypatch, page: str, fault: str
) -> None:
    make, _ = BROKEN_FOLDERS[fault]
    ws = make(tmp_path / "ws")
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = _open(page)
    assert not at.exception, at.exception
    assert any("cannot be used" in e.value for e in at.error), _texts(at)
    assert "Settings" in _texts(at)


@pytest.mark.parametrize("page", list(PAGES))
def test_read_only_workspace_is_listed_with_a_note(empty_workspace: Path, page: str) -> None:
    _two_models(empty_workspace)
    with read_only(empty_workspace):
        at = _open(page)
        assert not at.exception, at.exception
        assert "read-only" in _texts(at), _texts(at)
        assert not at.error, _texts(at)
        if page == "home":
            assert not any(b.label == "Build default zoo" for b in at.button)
            assert {m.label: m.value for m in at.metric}["Models in the zoo"] == "2"
        else:
            assert {"a", "b"} <= set(at.dataframe[0].value["id"])


def test_orphaned_checkpoints_are_pointed_out_and_repaired(empty_workspace: Path) -> None:
    _two_models(empty_workspace)
    _checkpoint(empty_workspace)
    (empty_workspace / "index.sqlite").write_bytes(b"")
    at = _open("home")
    assert not at.exception
    assert "2 checkpoint(s)" in _texts(at), _texts(at)
    at.button(key="home.repair").click().run()
    assert {m.label: m.value for m in at.metric}["Models in the zoo"] == "2"
