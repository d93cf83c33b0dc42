"""Shared fixtures: a tiny zoo in a temporary workspace, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.device import configure_threads
from core.zoo import Zoo, ZooPlan, ensure_default

ROOT = Path(__file__).resolve().parent.parent

# A plan with the default zoo's ids and structure but a few steps per model (seconds, not a minute).
TINY_PLAN = ZooPlan(
    base_kwargs={"width": 64, "depth": 2},
    base_per_task=300,
    base_epochs=1,
    finetune_epochs=1,
    independent=(
        ("mlp", {"width": 64, "depth": 2}, 1, 1e-3),
        ("cnn", {"width": 8}, 1, 1e-2),
        ("resnet20", {"width": 4}, 1, 1e-2),
    ),
    max_steps=25,
)


def pytest_configure(config: pytest.Config) -> None:
    configure_threads()
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def tiny_zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding a tiny default-shaped zoo (same ids as the real default zoo)."""
    root = tmp_path_factory.mktemp("workspace")
    ensure_default(Zoo(root), TINY_PLAN, device="cpu")
    return root


@pytest.fixture
def tiny_zoo(tiny_zoo_dir: Path) -> Zoo:
    return Zoo(tiny_zoo_dir)


@pytest.fixture
def workspace_env(tiny_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MIXMERGE_WORKSPACE at the tiny zoo (for AppTest runs)."""
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(tiny_zoo_dir))
    return tiny_zoo_dir


@pytest.fixture
def empty_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    return ws


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MIXMERGE_SKIP_SLOW") == "1":
        skip = pytest.mark.skip(reason="MIXMERGE_SKIP_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
