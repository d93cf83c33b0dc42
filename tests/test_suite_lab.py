"""Live merging, the validation-tuned comparison, interpolation and features on a suite zoo
(tiny settings: two vision tasks, 32 px, a few fine-tuning steps)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.benchmark import protocol as P
from core.benchmark.zoo_build import build_suite_zoo, finetune_id
from core.data.suites import SuiteSizes
from core.merge import merge
from core.suite_lab import SuiteLab, fingerprint, lab_for, stratified_subset
from core.zoo import Zoo

TINY = P.SuiteConfig(
    "vision",
    tasks=("faces", "textures"),
    sizes=SuiteSizes(train=16, val=12, test=12),
    resolution=32,
    steps=2,
    batch_size=4,
)

pytestmark = pytest.mark.slow  # building the tiny zoo takes ~20 s on 2 cores


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    z = Zoo(tmp_path_factory.mktemp("suite_lab_ws"))
    build_suite_zoo(z, TINY, device="cpu")
    return z


@pytest.fixture(scope="module")
def lab(zoo: Zoo) -> SuiteLab:
    return SuiteLab(zoo, "vision", split="val", n_per_task=None, device="cpu")


def _direct(lab: SuiteLab, sd: dict[str, torch.Tensor]) -> dict[str, float]:
    """core.benchmark's own scoring of a backbone on the full validation splits."""
    res = P.evaluate_backbone(
        P.new_backbone(lab.config, pretrained=False).trunk, sd, lab.heads, lab.suite_tasks, "val"
    )
    return {t: float(c.float().mean()) for t, c in res.items()}


# ---------------------------------------------------------------------------- subsets
def test_stratified_subset_keeps_class_shares() -> None:
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_subset(y, 20, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert torch.bincount(y[idx]).tolist() == [12, 6, 2]
    assert torch.equal(idx, stratified_subset(y, 20, seed=3))
    assert not torch.equal(idx, stratified_subset(y, 20, seed=4))
    rare = torch.tensor([0] * 98 + [1] * 2)
    assert set(rare[stratified_subset(rare, 5)].tolist()) == {0, 1}  # every class present
    assert len(stratified_subset(y, 500)) == 100
    with pytest.raises(ValueError, match="n must be"):
        stratified_subset(y, 0)
    with pytest.raises(TypeError, match="y must be"):
        stratified_subset(y.float(), 5)


def test_lab_subsets_are_stratified(zoo: Zoo) -> None:
    small = SuiteLab(zoo, "vision", n_per_task=6, device="cpu")
    for task, y in zip(small.suite_tasks, small.eval_y, strict=True):
        full = torch.bincount(task.y_val, minlength=task.n_classes).float()
        got = torch.bincount(y, minlength=task.n_classes).float()
        assert len(y) == min(6, len(task.y_val))
        assert torch.all((got - 6 * full / full.sum()).abs() <= 1.0)


# ---------------------------------------------------------------------------- live merge
@pytest.mark.parametrize(
    ("method", "hyper"),
    [
        ("task_arithmetic", {"scale": 0.7, "weights": [1.0, 0.5]}),
        ("ties", {"density": 0.2, "scale": 1.3}),
        ("average", {}),
    ],
)
def test_merged_scores_match_benchmark_evaluation(
    lab: SuiteLab, method: str, hyper: dict[str, object]
) -> None:
    res = lab.run(method, hyper)
    base = lab.base if method != "average" else None
    sd = merge(method, lab.finetunes, base=base, **hyper)
    assert res.per_task == pytest.approx(_direct(lab, sd))
    assert res.average == pytest.approx(sum(res.per_task.values()) / 2)
    assert res.individual == pytest.approx(
        {t: _direct(lab, lab.finetunes[k])[t] for k, t in enumerate(lab.tasks)}
    )
    assert res.pretrained == pytest.approx(_direct(lab, lab.base))
    assert res.to_dict()["n_per_task"] == {
        t: len(y) for t, y in zip(lab.tasks, lab.eval_y, strict=True)
    }


def test_scale_moves_reuse_the_merged_task_vector(lab: SuiteLab) -> None:
    a = lab.merge("ties", {"density": 0.3, "scale": 0.5})
    n = len(lab._merged_tv)
    b = lab.merge("ties", {"density": 0.3, "scale": 1.5})
    assert len(lab._merged_tv) == n  # the λ move did not merge again
    want = merge("ties", lab.finetunes, base=lab.base, density=0.3, scale=1.5)
    for k in lab.float_keys:
        assert torch.allclose(b[k], want[k], atol=1e-5)
        assert torch.allclose(a[k] - lab.base[k], (b[k] - lab.base[k]) / 3, atol=1e-5)


def test_weights_by_task_name_and_progress(lab: SuiteLab) -> None:
    seen: list[tuple[int, int, str]] = []
    by_name = lab.run(
        "task_arithmetic",
        {"scale": 1.0, "weights": {"faces": 1.0, "textures": 0.0}},
        progress=lambda d, n, m: seen.append((d, n, m)),
    )
    assert by_name.per_task["faces"] == pytest.approx(by_name.individual["faces"])
    assert [d for d, _, _ in seen] == [1, 2, 3] and all(n == 3 for _, n, _ in seen)


def test_bn_recompute_changes_statistics_only(lab: SuiteLab) -> None:
    sd = lab.merge("task_arithmetic", {"scale": 0.5})
    new = lab.recompute_bn(sd)
    x = lab.bn_inputs()
    assert len(x) == sum(min(lab.bn_examples, len(t.y_train)) for t in lab.suite_tasks)
    from core.merge import recompute_batchnorm

    trunk = P.new_backbone(lab.config, pretrained=False).trunk
    want = recompute_batchnorm(trunk, {k[6:]: v for k, v in sd.items()}, x)
    key = "trunk.stem_bn.running_mean"
    assert torch.allclose(new[key], want[key[6:]], atol=1e-5)
    assert not torch.allclose(new[key], sd[key])
    assert torch.equal(new["trunk.stem.weight"], sd["trunk.stem.weight"])
    res = lab.run("task_arithmetic", {"scale": 0.5}, recompute_bn=True)
    assert res.recompute_bn and res.per_task == pytest.approx(_direct(lab, new))


def test_errors_name_their_argument(zoo: Zoo, lab: SuiteLab) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        lab.run("no_such_method")
    with pytest.raises(ValueError, match="hyperparameters of 'ties' must be among"):
        lab.run("ties", {"lam": 1.0})
    with pytest.raises(ValueError, match="weights must have 2 entries"):
        lab.run("task_arithmetic", {"weights": [1.0]})
    with pytest.raises(ValueError, match="weights must name tasks"):
        lab.run("task_arithmetic", {"weights": {"mnist": 1.0}})
    with pytest.raises(ValueError, match="does not run on the slider path"):
        lab.run("fisher")
    with pytest.raises(TypeError, match="recompute_bn must be a bool"):
        lab.run("average", recompute_bn=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be one of"):
        SuiteLab(zoo, "vision", split="train")
    with pytest.raises(ValueError, match="suite must be one of"):
        SuiteLab(zoo, "audio")
    with pytest.raises(ValueError, match="n_per_task must be"):
        SuiteLab(zoo, "vision", n_per_task=0)
    with pytest.raises(TypeError, match="zoo must be"):
        SuiteLab("ws", "vision")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="zoo build --suite text"):
        SuiteLab(zoo, "text")


def test_cache_invalidates_when_a_model_is_replaced(zoo: Zoo, tmp_path: Path) -> None:
    zoo = Zoo(shutil.copytree(zoo.root, tmp_path / "ws"))  # the shared zoo stays as built
    first = lab_for(zoo, "vision", n_per_task=4)
    assert lab_for(zoo, "vision", n_per_task=4) is first
    before = first.run("task_arithmetic", {"scale": 1.0, "weights": [1.0, 0.0]})
    fid = finetune_id("vision", "faces")
    old = zoo.get(fid)
    model = zoo.load_model(fid)
    with torch.no_grad():  # a different fine-tune: the pretrained backbone under the same id
        model.trunk.load_state_dict(P.new_backbone(first.config).trunk.state_dict())
    zoo.add(
        model,
        arch=old.arch,
        arch_kwargs=old.arch_kwargs,
        task=old.task,
        role=old.role,
        name=fid,
        parent_id=old.parent_id,
        base_id=old.base_id,
        train_config=old.train_config,
        metrics=old.metrics,
        replace=True,
    )
    assert first.is_stale() and fingerprint(zoo, "vision") != first.fingerprint
    second = lab_for(zoo, "vision", n_per_task=4)
    assert second is not first and not second.is_stale()
    after = second.run("task_arithmetic", {"scale": 1.0, "weights": [1.0, 0.0]})
    assert after.individual["faces"] == pytest.approx(after.pretrained["faces"])
    assert torch.allclose(
        second.task_vectors[0]["trunk.stem.weight"],
        torch.zeros_like(second.base["trunk.stem.weight"]),
    )
    assert before.method == after.method


# ---------------------------------------------------------------------------- comparison
def test_validation_tuned_comparison_reuses_the_benchmark(zoo: Zoo) -> None:
    from core.benchmark.report import stored_results
    from core.benchmark.run import QUICK_GRIDS, BenchmarkSettings
    from core.suite_lab import comparison_rows, validation_tuned_comparison

    seen: list[str] = []
    res = validation_tuned_comparison(
        zoo,
        "vision",
        methods=["task_arithmetic", "average"],
        settings=BenchmarkSettings(n_boot=200),
        progress=lambda d, n, m: seen.append(m),
    )
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"pretrained", "individual", "task_arithmetic", "average"}
    ta = rows["task_arithmetic"]
    assert ta["hyperparameters"] in QUICK_GRIDS["task_arithmetic"]
    assert ta["val_avg"] == max(t["val_avg"] for t in res["searched"]["task_arithmetic"])
    # the tuned test accuracy is the lab's score of that λ on the full test splits
    test_lab = SuiteLab(zoo, "vision", split="test", n_per_task=None)
    assert test_lab.run("task_arithmetic", ta["hyperparameters"]).per_task == pytest.approx(
        ta["per_task"]
    )
    lo, hi = ta["test_avg_ci"]
    assert lo <= ta["test_avg"] <= hi
    assert stored_results(zoo)["vision-quick"]["rows"] == res["rows"]
    table = comparison_rows(res)
    assert [r["method"] for r in table[:2]] == ["pretrained", "individual"]
    assert table[2]["test_avg"] >= table[3]["test_avg"] and any(
        "task_arithmetic" in m for m in seen
    )
    with pytest.raises(ValueError, match="methods must be among"):
        validation_tuned_comparison(zoo, "vision", methods=["nope"])
    with pytest.raises(TypeError, match="methods must be a sequence"):
        validation_tuned_comparison(zoo, "vision", methods="ties")


# ---------------------------------------------------------------------------- interpolation
def test_interpolation_endpoints_and_bn_reset(zoo: Zoo) -> None:
    import torch.nn.functional as F

    from core.merge import recompute_batchnorm
    from core.suite_views import suite_interpolation

    naive = suite_interpolation(
        zoo, "vision", "pretrained", "faces", n_points=3, n_examples=8, recompute_bn=False
    )
    assert naive.t == [0.0, 0.5, 1.0] and set(naive.splits) == {"train", "val"}
    assert naive.meta["task"] == "faces" and not naive.recompute_bn
    lab = SuiteLab(zoo, "vision", n_per_task=8)
    k = lab.tasks.index("faces")
    want = {t: float(c.float().mean()) for t, c in lab.predict(lab.base).items()}
    assert naive.accuracy["val"][0] == pytest.approx(want["faces"])
    assert naive.accuracy["val"][-1] == pytest.approx(lab.references()["individual"]["faces"])
    reset = suite_interpolation(
        zoo, "vision", "pretrained", "faces", n_points=3, n_examples=8, bn_examples=16
    )
    assert reset.recompute_bn  # the default for Lite0
    task = lab.suite_tasks[k]
    x_tr = P.backbone_input("vision", task.x_train[stratified_subset(task.y_train, 16)])
    trunk = P.new_backbone(lab.config, pretrained=False).trunk
    sd = recompute_batchnorm(trunk, {k_[6:]: v for k_, v in lab.base.items()}, x_tr)
    trunk.load_state_dict(sd)
    with torch.no_grad():
        logits = trunk.eval()(lab.eval_x[k]) @ lab.heads[k].weight.T + lab.heads[k].bias
    assert reset.loss["val"][0] == pytest.approx(
        float(F.cross_entropy(logits, lab.eval_y[k])), rel=1e-4
    )
    assert reset.loss["val"][0] != pytest.approx(naive.loss["val"][0], rel=1e-6)
    ft = suite_interpolation(zoo, "vision", "faces", "textures", n_points=2, n_examples=8)
    assert ft.meta["task"] == "textures" and ft.label.startswith("faces")
    with pytest.raises(ValueError, match="model_b must be one of"):
        suite_interpolation(zoo, "vision", "pretrained", "mnist")
    with pytest.raises(ValueError, match="must differ"):
        suite_interpolation(zoo, "vision", "faces", "faces")
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        suite_interpolation(zoo, "vision", "pretrained", "faces", split="train")


# ---------------------------------------------------------------------------- features
def test_features_fit_geometry_and_clustering(zoo: Zoo) -> None:
    from core.cluster import ppp
    from core.geometry import neural_collapse
    from core.suite_views import nc_across_finetuning, suite_features

    f = suite_features(zoo, "vision", "pretrained", "textures", split="val", n_examples=12)
    task = next(t for t in SuiteLab(zoo, "vision").suite_tasks if t.name == "textures")
    assert f.features.shape == (len(f.labels), 1280) and f.features.dtype == torch.float32
    assert torch.equal(f.labels, task.y_val[f.indices])
    direct = P.features(P.new_backbone(TINY).trunk, "vision", task.x_val[f.indices])
    assert torch.allclose(f.features, direct, atol=1e-4)
    assert f.classifier[0].shape == (task.n_classes, 1280)
    nc = neural_collapse(f.features, f.labels, f.classifier)
    assert {"nc1", "nc2_equinorm", "nc3", "nc4"} <= set(nc)
    assert ppp(f.features, k_max=3, n_components=4).k in (2, 3)
    across = nc_across_finetuning(zoo, "vision", "textures", split="val", n_examples=12)
    assert list(across) == ["pretrained", "textures"]
    assert across["pretrained"]["nc1"] == pytest.approx(nc["nc1"])
    assert across["textures"]["nc1"] != pytest.approx(nc["nc1"], rel=1e-9)
    with pytest.raises(ValueError, match="task must be one of"):
        suite_features(zoo, "vision", "pretrained", "mnist")
    with pytest.raises(ValueError, match="model must be one of"):
        suite_features(zoo, "vision", "nope", "faces")
