"""Tiny suite configurations for tests that need a built suite zoo (about 20-30 s to build on
2 cores: a few fine-tuning steps on a dozen examples per task at 32 px)."""

from __future__ import annotations

from core.benchmark import protocol as P
from core.data.suites import SuiteSizes

TINY_VISION_3 = P.SuiteConfig(
    "vision",
    tasks=("faces", "textures", "mnist"),
    sizes=SuiteSizes(train=16, val=12, test=12),
    resolution=32,
    steps=2,
    batch_size=4,
    normalize_features=True,  # as the default vision config
)
