"""The task-vector protocol and the merging benchmark on tiny settings: heads, the router,
fine-tuning, the resumable suite zoo, the results JSON, the command line and the page."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.benchmark import protocol as P
from core.benchmark.report import (
    CLIP_VIT_B32,
    check_results,
    load_results,
    results_table,
    shape_checks,
    store_results,
)
from core.benchmark.run import BenchmarkSettings, applicable_methods, prepare, run_benchmark
from core.benchmark.zoo_build import build_suite_zoo, finetune_id, load_suite_zoo
from core.data.suites import SuiteSizes, load_task
from core.merge import merge
from core.zoo import Zoo

TINY_SIZES = SuiteSizes(train=16, val=8, test=8)
TINY = P.SuiteConfig(
    "vision",
    tasks=("faces", "textures"),
    sizes=TINY_SIZES,
    resolution=32,
    steps=2,
    batch_size=4,
    normalize_features=True,  # as the default vision config
)
CHEAP = BenchmarkSettings(adamerging_steps=1, fisher_examples=2, gram_examples=4, n_boot=200)
FEW = ["task_arithmetic", "average", "ties"]


@pytest.fixture(scope="module")
def vision_zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    zoo = Zoo(tmp_path_factory.mktemp("suite_ws"))
    build_suite_zoo(zoo, TINY, device="cpu")
    return zoo


@pytest.fixture(scope="module")
def few_results(vision_zoo: Zoo) -> dict[str, Any]:
    return run_benchmark(
        vision_zoo, "vision", quick=True, methods=FEW, device="cpu", settings=CHEAP
    )


def made_up_results() -> dict[str, Any]:
    """A results record with hand-set numbers (for the figure and the page)."""
    rows = []
    for m, acc in (
        ("pretrained", 0.5),
        ("individual", 0.9),
        ("task_arithmetic", 0.7),
        ("ties", 0.75),
    ):
        rows.append(
            {
                "method": m,
                "hyperparameters": {"scale": 0.3} if m == "task_arithmetic" else {},
                "val_avg": acc,
                "test_avg": acc,
                "test_avg_ci": [acc - 0.05, acc + 0.04],
                "normalized": acc / 0.9,
                "per_task": {"faces": acc - 0.1, "textures": acc + 0.1},
            }
        )
    return {"suite": "vision", "quick": True, "rows": rows, "skipped": {"slerp": "2 models"}}


# ---------------------------------------------------------------------------- heads
def test_probe_head_folds_the_scaler_into_one_linear_layer() -> None:
    """The folded head's argmax equals scikit-learn's prediction on the standardised features."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    for n_classes in (2, 4):
        y = torch.from_numpy(rng.integers(0, n_classes, 120))
        f = torch.randn(120, 6) * torch.tensor([1, 5, 0.1, 2, 3, 1]) + y[:, None].float()
        head = P.probe_head(f[:80], y[:80], f[80:], y[80:], n_classes, cs=(0.5,))
        mu, sd = f[:80].double().mean(0), f[:80].double().std(0, unbiased=False) + 1e-6
        clf = LogisticRegression(C=0.5, max_iter=500, random_state=0)
        clf.fit(((f[:80].double() - mu) / sd).numpy(), y[:80].numpy())
        want = clf.predict(((f[80:].double() - mu) / sd).numpy())
        got = (f[80:] @ head.weight.T + head.bias).argmax(1).numpy()
        assert np.array_equal(got, want)
        assert head.weight.shape == (n_classes, 6) and head.info["C"] == 0.5


def test_probe_head_global_scaling_uses_one_std_for_every_feature() -> None:
    """``scaling="global"`` equals scikit-learn on features centred per feature and divided by
    one number (the RMS of the centred features); it differs from per-feature scaling."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    y = torch.from_numpy(rng.integers(0, 3, 150))
    f = torch.randn(150, 5) * torch.tensor([1, 8, 0.05, 2, 3]) + y[:, None].float()
    head = P.probe_head(f[:100], y[:100], f[100:], y[100:], 3, cs=(0.3,), scaling="global")
    ft = f[:100].double()
    mu = ft.mean(0)
    sd = float(((ft - mu) ** 2).mean().sqrt()) + 1e-6
    clf = LogisticRegression(C=0.3, max_iter=500, random_state=0)
    clf.fit(((ft - mu) / sd).numpy(), y[:100].numpy())
    want = clf.predict(((f[100:].double() - mu) / sd).numpy())
    got = (f[100:] @ head.weight.T + head.bias).argmax(1).numpy()
    assert np.array_equal(got, want)
    assert head.info["scaling"] == "global"
    # the low-variance feature (std 0.05) gets a large weight only under per-feature scaling
    per = P.probe_head(f[:100], y[:100], f[100:], y[100:], 3, cs=(0.3,))
    assert per.weight[:, 2].abs().max() > 5 * head.weight[:, 2].abs().max()
    with pytest.raises(ValueError, match="scaling"):
        P.probe_head(f[:100], y[:100], f[100:], y[100:], 3, scaling="per_class")


def test_suite_config_probe_scaling_is_validated_and_read_back() -> None:
    cfg = P.SuiteConfig("vision", tasks=("mnist", "faces"), probe_scaling="global")
    assert P.SuiteConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["probe_scaling"]  # a zoo stored before the option existed was built per feature
    assert P.SuiteConfig.from_dict(old).probe_scaling == "per_feature"
    with pytest.raises(ValueError, match="probe_scaling"):
        P.SuiteConfig("vision", probe_scaling="none")
    assert P.default_config("vision").probe_scaling == "global"


def test_unit_norm_features_option_is_validated_and_read_back() -> None:
    assert P.default_config("vision").normalize_features is True
    assert P.SuiteConfig("vision").normalize_features is False
    with pytest.raises(ValueError, match="normalize_features applies to the vision backbone"):
        P.SuiteConfig("text", normalize_features=True)
    with pytest.raises(TypeError, match="normalize_features must be a bool, got int 1"):
        P.SuiteConfig("vision", normalize_features=1)  # type: ignore[arg-type]
    old = P.SuiteConfig("vision").to_dict()
    del old["normalize_features"]  # a suite zoo stored before the option existed
    assert P.SuiteConfig.from_dict(old).normalize_features is False
    assert P.backbone_kwargs(P.default_config("vision")) == {"normalize_features": True}
    assert P.backbone_kwargs(P.SuiteConfig("text")) == {}
    with pytest.raises(TypeError, match="config must be a SuiteConfig, got str"):
        P.new_backbone("vision")  # type: ignore[arg-type]


def test_unit_norm_trunk_gives_the_raw_features_direction() -> None:
    raw = P.new_backbone(P.SuiteConfig("vision")).trunk.eval()
    unit = P.new_backbone(P.default_config("vision")).trunk.eval()
    assert torch.equal(  # the option changes the forward pass, not the weights
        torch.cat([v.flatten() for v in raw.state_dict().values() if v.is_floating_point()]),
        torch.cat([v.flatten() for v in unit.state_dict().values() if v.is_floating_point()]),
    )
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f_raw, f_unit = raw(x), unit(x)
    assert (f_raw.norm(dim=1) - 1).abs().max() > 0.1  # raw pooled features are not unit norm
    torch.testing.assert_close(f_unit.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(f_unit, torch.nn.functional.normalize(f_raw, dim=-1))


def test_label_head_is_scaled_unit_label_embeddings() -> None:
    trunk = P.new_backbone(P.SuiteConfig("text")).trunk
    head = P.label_head(trunk, ["animals", "plants", "games"], scale=20.0, max_length=8)
    assert head.weight.shape == (3, 384)
    assert torch.allclose(head.weight.norm(dim=1), torch.full((3,), 20.0), atol=1e-4)
    assert torch.equal(head.bias, torch.zeros(3))
    # zero-shot: a plant's gloss is nearest to "plants"
    from core.models.minilm import tokenize

    with torch.no_grad():
        e = trunk(tokenize(["a flowering shrub with green leaves"], max_length=16))
    assert int((e @ head.weight.T).argmax()) == 1


def test_router_picks_each_tasks_head() -> None:
    trunk = P.new_backbone(P.default_config("vision")).trunk.eval()
    heads = [P.Head(torch.randn(c, 1280), torch.randn(c)) for c in (3, 5)]
    router = P.TaskRouter(trunk, heads, "vision").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = trunk(x)
        for k, h in enumerate(heads):
            want = f @ h.weight.T + h.bias
            assert torch.allclose(router(P.tag_inputs("vision", x, k)), want, atol=1e-4)
            fixed = P.TaskRouter(trunk, heads, "vision", task=k).eval()
            assert torch.allclose(fixed(x), want, atol=1e-4)


@pytest.mark.slow
def test_finetune_changes_only_the_backbone_and_is_seeded() -> None:
    task = load_task("faces", sizes=TINY_SIZES, resolution=32)
    cfg = P.SuiteConfig(
        "vision", tasks=("faces",), sizes=TINY_SIZES, resolution=32, steps=2, batch_size=4
    )
    runs = []
    for _ in range(2):
        model = P.new_backbone(cfg)
        head = P.make_head(model.trunk, task, cfg)
        model.head = head.linear()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        hist = P.finetune(model, task, cfg, device="cpu")
        after = model.state_dict()
        assert torch.equal(after["head.weight"], before["head.weight"])  # head fixed
        assert not torch.equal(after["trunk.stem.weight"], before["trunk.stem.weight"])
        assert torch.equal(
            after["trunk.stem_bn.running_mean"], before["trunk.stem_bn.running_mean"]
        )
        assert len(hist["loss"]) == 2
        runs.append(after)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])  # same seed, same weights


def test_config_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="suite"):
        P.SuiteConfig("audio")
    with pytest.raises(ValueError, match="tasks must be among"):
        P.SuiteConfig("vision", tasks=("fortunes",))
    with pytest.raises(ValueError, match="lr"):
        P.SuiteConfig("vision", lr=0.0)
    cfg = P.SuiteConfig.from_dict(TINY.to_dict())
    assert cfg == TINY


# ---------------------------------------------------------------------------- zoo
@pytest.mark.slow
def test_unit_norm_suite_stores_the_option_and_every_reader_applies_it(vision_zoo: Zoo) -> None:
    """Each stored model carries ``normalize_features``; the benchmark's trunk, a loaded model
    and a merge far from the base all give unit-norm features, so a task vector cannot make
    the heads confident by growing the features (AdaMerging's entropy)."""
    for mid in ("vision-base", *(finetune_id("vision", t) for t in TINY.task_names)):
        assert vision_zoo.get(mid).arch_kwargs["normalize_features"] is True
        assert vision_zoo.load_model(mid).trunk.normalize_features is True
    ctx = prepare(vision_zoo, "vision", device="cpu", settings=CHEAP)
    assert ctx.trunk.normalize_features is True
    far = merge("task_arithmetic", ctx.finetunes, base=ctx.base, scale=3.0)
    ctx.trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in far.items()})
    f = P.features(ctx.trunk, "vision", ctx.tasks[0].x_val)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(len(f)))
    model = vision_zoo.load_model(finetune_id("vision", "faces"))
    want = ctx.evaluate(P.trunk_state(model.state_dict()), "val")["faces"]
    x, y = ctx.tasks[0].split("val")
    with torch.no_grad():
        got = model.eval()(P.backbone_input("vision", x)).argmax(1) == y
    assert torch.equal(got, want)


@pytest.mark.slow
def test_suite_zoo_is_stored_and_resumes(vision_zoo: Zoo) -> None:
    built = load_suite_zoo(vision_zoo, "vision")
    assert set(built.finetunes) == {"faces", "textures"}
    rec = built.finetunes["faces"]
    assert (
        rec.role == "finetune" and rec.base_id == "vision-base" and rec.arch == "efficientnet_lite0"
    )
    assert rec.metrics["head"]["kind"] == "linear_probe"
    created = {n: r.created for n, r in built.finetunes.items()}
    stages: list[str] = []
    again = build_suite_zoo(
        vision_zoo, TINY, device="cpu", progress=lambda i: stages.append(i["stage"])
    )
    assert {n: r.created for n, r in again.finetunes.items()} == created
    assert stages.count("cached") == 2 and "finetune" not in stages
    model = vision_zoo.load_model(finetune_id("vision", "faces"))
    assert model.head.weight.shape == (2, 1280)


@pytest.mark.slow
def test_a_deleted_finetune_is_rebuilt_alone(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path)
    cfg = P.SuiteConfig(
        "vision", tasks=("faces",), sizes=TINY_SIZES, resolution=32, steps=1, batch_size=4
    )
    build_suite_zoo(zoo, cfg, device="cpu")
    zoo.delete(finetune_id("vision", "faces"))
    with pytest.raises(KeyError, match="zoo build --suite vision"):
        load_suite_zoo(zoo, "vision")
    stages: list[str] = []
    build_suite_zoo(zoo, cfg, device="cpu", progress=lambda i: stages.append(i["stage"]))
    assert "finetune" in stages and "faces" in load_suite_zoo(zoo, "vision").finetunes
    with pytest.raises(KeyError, match="not built"):
        load_suite_zoo(Zoo(tmp_path / "other"), "vision")


# ---------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_results_json_has_the_issue_shape(few_results: dict[str, Any], tmp_path: Path) -> None:
    res = check_results(few_results)
    methods = [r["method"] for r in res["rows"]]
    assert methods[:2] == ["pretrained", "individual"] and set(FEW) <= set(methods)
    for r in res["rows"]:
        assert set(r) >= {
            "method",
            "hyperparameters",
            "val_avg",
            "test_avg",
            "test_avg_ci",
            "normalized",
            "per_task",
        }
        assert set(r["per_task"]) == {"faces", "textures"}
        lo, hi = r["test_avg_ci"]
        assert lo <= r["test_avg"] <= hi
        assert r["test_avg"] == pytest.approx(np.mean(list(r["per_task"].values())))
        if r["method"] != "task_arithmetic":
            assert 0 <= r["mcnemar_vs_task_arithmetic"]["p_value"] <= 1
    ind = next(r for r in res["rows"] if r["method"] == "individual")
    assert ind["normalized"] == pytest.approx(1.0)
    ta = next(r for r in res["rows"] if r["method"] == "task_arithmetic")
    assert ta["hyperparameters"]["scale"] in (0.3, 0.5, 1.0)
    assert max(t["val_avg"] for t in res["searched"]["task_arithmetic"]) == ta["val_avg"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    assert load_results(path)["suite"] == "vision"
    table = results_table(res)
    assert list(table["method"])[0] == max(res["rows"], key=lambda r: r["test_avg"])["method"]
    assert set(shape_checks(res)) >= {"ties >= task_arithmetic", "pretrained < every merge"}


@pytest.mark.slow
def test_protocol_identities(vision_zoo: Zoo) -> None:
    """Task arithmetic at λ = 0 is the pretrained backbone; averaging one model is that model."""
    from core.benchmark.run import _merge, _val_avg

    ctx = prepare(vision_zoo, "vision", device="cpu", settings=CHEAP)
    pre = ctx.evaluate(ctx.base, "val")
    ta0 = ctx.evaluate(_merge(ctx, "task_arithmetic", {"scale": 0.0}), "val")
    assert all(torch.equal(pre[n], ta0[n]) for n in ctx.names)
    ta1 = _merge(ctx, "task_arithmetic", {"scale": 1.0, "weights": [1.0, 0.0]})
    assert all(
        torch.allclose(ta1[k], ctx.finetunes[0][k], atol=1e-6)
        for k in ta1
        if ta1[k].is_floating_point()
    )
    assert 0.0 <= _val_avg(ctx, ctx.base) <= 1.0


def test_methods_that_do_not_apply_are_listed_with_a_reason() -> None:
    status = applicable_methods(6)
    assert "2 models" in (status["slerp"] or "")
    assert status["task_arithmetic"] is None and status["regmean"] is None
    assert applicable_methods(2)["slerp"] is None


@pytest.mark.slow
def test_every_applicable_method_runs(vision_zoo: Zoo) -> None:
    res = run_benchmark(vision_zoo, "vision", quick=True, device="cpu", settings=CHEAP)
    ran = {r["method"] for r in res["rows"]}
    want = {m for m, why in applicable_methods(2).items() if why is None}
    assert ran == want | {"pretrained", "individual"}
    assert {"regmean", "fisher", "adamerging", "greedy_soup"} <= ran
    check_results(res)


@pytest.mark.slow
def test_benchmark_command_writes_and_stores_results(vision_zoo: Zoo, tmp_path: Path) -> None:
    from core.cli import main

    out = tmp_path / "out" / "results.json"
    rc = main(
        [
            "benchmark",
            "vision",
            "--quick",
            "--out",
            str(out),
            "--workspace",
            str(vision_zoo.root),
            "--device",
            "cpu",
            "--methods",
            "task_arithmetic,average",
        ]
    )
    assert rc == 0
    res = load_results(out)
    assert [r["method"] for r in res["rows"]] == [
        "pretrained",
        "individual",
        "task_arithmetic",
        "average",
    ]
    from core.benchmark.report import stored_results

    assert stored_results(vision_zoo)["vision-quick"]["rows"] == res["rows"]
    assert (
        main(["benchmark", "vision", "--out", str(tmp_path), "--workspace", str(vision_zoo.root)])
        == 2
    )
    assert (
        main(["benchmark", "vision", "--out", str(out), "--workspace", str(tmp_path / "empty")])
        == 2
    )
    assert (
        main(
            [
                "benchmark",
                "vision",
                "--out",
                str(out),
                "--workspace",
                str(vision_zoo.root),
                "--methods",
                "nope",
            ]
        )
        == 2
    )


def test_check_results_rejects_malformed_records() -> None:
    assert check_results(made_up_results())["suite"] == "vision"
    bad = made_up_results()
    bad["rows"][0]["test_avg_ci"] = [0.9, 1.0]
    bad["rows"][0]["test_avg"] = 0.1
    with pytest.raises(ValueError, match="outside its CI"):
        check_results(bad)
    with pytest.raises(ValueError, match="suite"):
        check_results({"suite": "audio", "rows": []})
    with pytest.raises(ValueError, match="lacks"):
        check_results({"suite": "vision", "rows": [{"method": "x"}]})


# ---------------------------------------------------------------------------- figure and page
def test_benchmark_figure_shows_every_row_with_its_ci() -> None:
    from core.figures.benchmark import benchmark_figure

    few_results = made_up_results()
    fig = benchmark_figure(few_results)
    bars = fig.data[0]
    assert len(bars.y) == len(few_results["rows"])
    i = list(bars.y).index("task_arithmetic")
    row = next(r for r in few_results["rows"] if r["method"] == "task_arithmetic")
    assert bars.x[i] == pytest.approx(100 * row["test_avg"])
    assert bars.error_x.array[i] == pytest.approx(100 * (row["test_avg_ci"][1] - row["test_avg"]))
    ref = fig.data[1]
    assert (
        dict(zip(ref.y, ref.x, strict=True))["task_arithmetic"] == CLIP_VIT_B32["task_arithmetic"]
    )


def test_benchmark_page_and_its_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from core.figures import figure_data
    from core.notebook_export import notebook_for
    from tests.helpers.app import record_figures

    seen = record_figures(monkeypatch)
    ws = tmp_path / "ws"
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    root = Path(__file__).resolve().parents[2]
    at = AppTest.from_file(str(root / "app.py"), default_timeout=120).run()
    at.switch_page("pages/9_Benchmark.py").run()
    assert not at.exception and any("No benchmark results" in i.value for i in at.info)
    store_results(Zoo(ws), made_up_results())
    at.switch_page("pages/9_Benchmark.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    fig, recipe = seen["benchmark.figure"]
    assert recipe == {"kind": "benchmark_results", "args": {"suite": "vision", "quick": True}}
    nb = notebook_for(recipe, workspace=ws)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "streamlit" not in src
    ns: dict[str, Any] = {}
    for cell in nb.cells[1:-1]:
        if cell.cell_type == "code":
            exec(cell.source, ns)  # noqa: S102 - our own generated notebook
    assert figure_data(ns["fig"]).equals(figure_data(fig))


@pytest.mark.slow
def test_a_suite_built_with_another_config_is_never_replaced_silently(tmp_path: Path) -> None:
    from core.benchmark.zoo_build import ensure_no_conflict, suite_conflicts

    zoo = Zoo(tmp_path / "ws")
    cfg = P.SuiteConfig(
        "vision", tasks=("faces",), sizes=TINY_SIZES, resolution=32, steps=1, batch_size=4
    )
    build_suite_zoo(zoo, cfg, device="cpu")
    before = {mid: zoo.get(mid).sha256 for mid in ("vision-base", "vision-ft-faces")}
    other = dataclasses.replace(cfg, steps=2)
    conflicts = suite_conflicts(zoo, other)
    assert set(conflicts) == {"vision-base", "vision-ft-faces"}
    assert conflicts["vision-ft-faces"] == {"steps": (1, 2)}
    assert suite_conflicts(zoo, cfg) == {}
    with pytest.raises(ValueError, match=r"another configuration.*steps: stored 1, requested 2"):
        build_suite_zoo(zoo, other, device="cpu")
    assert {mid: zoo.get(mid).sha256 for mid in before} == before  # nothing replaced
    with pytest.raises(ValueError, match="overwrite"):
        ensure_no_conflict(zoo, other)
    build_suite_zoo(zoo, other, device="cpu", overwrite=True)
    assert zoo.get("vision-ft-faces").train_config["suite_config"]["steps"] == 2


def test_the_command_line_refuses_to_replace_a_suite(tmp_path: Path, capsys: Any) -> None:
    from core.benchmark.cli import build_suite_command
    from core.benchmark.protocol import default_config
    from core.benchmark.zoo_build import LAYOUT_VERSION
    from core.models import create_model

    zoo = Zoo(tmp_path / "ws")
    stored = dataclasses.replace(default_config("text"), steps=1).to_dict()
    model = create_model("mlp", width=16, depth=1, seed=0)
    for mid, role in (("text-base", "base"), ("text-ft-fortunes", "finetune")):
        zoo.add(
            model,
            arch="mlp",
            arch_kwargs={"width": 16, "depth": 1},
            task="fortunes",
            role=role,
            name=mid,
            train_config={"suite_config": stored, "layout": LAYOUT_VERSION},
        )
    shas = [zoo.get(m).sha256 for m in ("text-base", "text-ft-fortunes")]
    assert build_suite_command("text", str(zoo.root), "cpu", steps=3) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "steps: stored 1, requested 3" in err
    assert [zoo.get(m).sha256 for m in ("text-base", "text-ft-fortunes")] == shas
