"""The suite lab path on the text suite (all-MiniLM-L6-v2, label-embedding heads; tiny settings:
two tasks, 16 tokens, one fine-tuning step): live merging scored with each task's own head,
no BatchNorm, features and interpolation."""

from __future__ import annotations

import pytest
import torch

from core.benchmark import protocol as P
from core.benchmark.zoo_build import build_suite_zoo
from core.data.suites import SuiteSizes
from core.merge import merge
from core.suite_lab import SuiteLab
from core.zoo import Zoo

TINY_TEXT = P.SuiteConfig(
    "text",
    tasks=("fortunes", "debian_sections"),
    sizes=SuiteSizes(train=12, val=8, test=8),
    max_length=16,
    steps=1,
    batch_size=4,
)

pytestmark = pytest.mark.slow  # building the tiny text zoo takes ~20 s on 2 cores


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    z = Zoo(tmp_path_factory.mktemp("suite_text_ws"))
    build_suite_zoo(z, TINY_TEXT, device="cpu")
    return z


def test_text_suite_lab_scores_each_task_with_its_own_head(zoo: Zoo) -> None:
    lab = SuiteLab(zoo, "text", split="val", n_per_task=None, device="cpu")
    assert lab.tasks == ["fortunes", "debian_sections"] and not lab.has_batchnorm
    trunk = P.new_backbone(lab.config, pretrained=False).trunk

    def direct(sd: dict[str, torch.Tensor]) -> dict[str, float]:
        res = P.evaluate_backbone(trunk, sd, lab.heads, lab.suite_tasks, "val")
        return {t: float(c.float().mean()) for t, c in res.items()}

    for method, hyper in (("task_arithmetic", {"scale": 0.5}), ("ties", {"density": 0.3})):
        res = lab.run(method, hyper)
        sd = merge(method, lab.finetunes, base=lab.base, **hyper)
        assert res.per_task == pytest.approx(direct(sd))
    assert res.pretrained == pytest.approx(direct(lab.base))
    one = lab.run(
        "task_arithmetic", {"scale": 1.0, "weights": {"fortunes": 1.0, "debian_sections": 0.0}}
    )
    assert one.per_task["fortunes"] == pytest.approx(one.individual["fortunes"])
    # each task has its own label-embedding head: one row per class of that task
    assert [h.weight.shape[0] for h in lab.heads] == [t.n_classes for t in lab.suite_tasks]
    with pytest.raises(ValueError, match="needs a BatchNorm backbone"):
        lab.run("average", recompute_bn=True)


def test_text_suite_features_and_interpolation(zoo: Zoo) -> None:
    from core.suite_views import suite_features, suite_interpolation

    f = suite_features(zoo, "text", "pretrained", "fortunes", split="val", n_examples=8)
    assert f.features.shape == (len(f.labels), 384)
    assert torch.allclose(f.features.norm(dim=1), torch.ones(len(f.labels)), atol=1e-4)
    path = suite_interpolation(zoo, "text", "pretrained", "fortunes", n_points=3, n_examples=8)
    assert not path.recompute_bn  # MiniLM has no BatchNorm
    lab = SuiteLab(zoo, "text", n_per_task=8)
    refs = lab.references()
    assert path.accuracy["val"][0] == pytest.approx(refs["pretrained"]["fortunes"])
    assert path.accuracy["val"][-1] == pytest.approx(refs["individual"]["fortunes"])
