"""Training ERM and mixers with one seed; models and run record stored in the zoo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.mixup.training import MixMethod, load_runs, train_mixers
from core.train import TrainConfig
from core.zoo import Zoo


def test_train_mixers_stores_models_and_run(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")
    calls: list[int] = []

    def cb(model: torch.nn.Module, epoch: int) -> dict[str, float]:
        calls.append(epoch)
        return {"epoch_seen": float(epoch)}

    methods = [
        MixMethod(),
        MixMethod("mixup", {"alpha": 0.4}, mix_until_epoch=1),
        MixMethod("manifold_mixup"),
    ]
    rec = train_mixers(
        zoo,
        task="digits",
        methods=methods,
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        n_train=64,
        config=TrainConfig(epochs=2, batch_size=32, seed=3),
        device="cpu",
        epoch_callback=cb,
    )
    assert calls == [1, 2] * 3
    assert set(rec["methods"]) == {"erm", "mixup α=0.4 (off at 1)", "manifold_mixup"}
    assert load_runs(zoo)[rec["run_id"]]["methods"].keys() == rec["methods"].keys()
    for res in rec["methods"].values():
        model_rec = zoo.get(res["model_id"])
        assert model_rec.role == "mixup"
        assert (
            model_rec.recipe["mixer"] == res["mixer"] and model_rec.recipe["run"] == rec["run_id"]
        )
        assert res["history"]["extra"] == [{"epoch_seen": 1.0}, {"epoch_seen": 2.0}]
        assert len(res["history"]["test_accuracy"]) == 2
        assert res["ci"]["low"] <= res["test_accuracy"] <= res["ci"]["high"]
        assert 0 <= res["reliability"]["ece"] <= 1
        assert sum(res["reliability"]["count"]) == len(res["correct"])
    assert (
        zoo.get(rec["methods"]["mixup α=0.4 (off at 1)"]["model_id"]).train_config[
            "mix_until_epoch"
        ]
        == 1
    )
    # ERM and a mixer start from the same initialisation (same seed): same first-epoch data order
    erm = zoo.state_dict(rec["methods"]["erm"]["model_id"])
    assert set(erm) == set(zoo.state_dict(rec["methods"]["manifold_mixup"]["model_id"]))


def test_same_seed_same_model(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")
    kw = dict(
        task="digits",
        methods=[MixMethod("cutmix")],
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        n_train=32,
        config=TrainConfig(epochs=1, batch_size=16),
        device="cpu",
    )
    a = train_mixers(zoo, run_id="a", **kw)
    b = train_mixers(zoo, run_id="b", **kw)
    sa = zoo.state_dict(a["methods"]["cutmix"]["model_id"])
    sb = zoo.state_dict(b["methods"]["cutmix"]["model_id"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_mixers_validates(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")
    with pytest.raises(ValueError, match="methods"):
        train_mixers(zoo, task="digits", methods=[])
    with pytest.raises(ValueError, match="mixer"):
        MixMethod("nope")
    with pytest.raises(ValueError, match="distinct labels"):
        train_mixers(zoo, task="digits", methods=[MixMethod(), MixMethod()])


def test_train_mixers_with_the_decoupled_mixup_loss(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")
    methods = [
        MixMethod("mixup", {"alpha": 1.0}, label="ce"),
        MixMethod("mixup", {"alpha": 1.0}, loss="decoupled", loss_params={"eta": 0.0}, label="dm0"),
        MixMethod("mixup", {"alpha": 1.0}, loss="decoupled", loss_params={"eta": 1.0}),
    ]
    rec = train_mixers(
        zoo,
        task="digits",
        methods=methods,
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        n_train=64,
        config=TrainConfig(epochs=1, batch_size=32, seed=1),
        device="cpu",
    )
    assert set(rec["methods"]) == {"ce", "dm0", "mixup α=1 + DM η=1"}
    sd = {k: zoo.state_dict(v["model_id"]) for k, v in rec["methods"].items()}
    # η = 0 is the soft-target CE: the same model; η = 1 trains a different one
    assert all(torch.allclose(sd["ce"][k], sd["dm0"][k], atol=1e-6) for k in sd["ce"])
    assert any(not torch.allclose(sd["ce"][k], sd["mixup α=1 + DM η=1"][k]) for k in sd["ce"])
    model_rec = zoo.get(rec["methods"]["mixup α=1 + DM η=1"]["model_id"])
    assert model_rec.recipe["loss"] == "decoupled" and model_rec.recipe["loss_params"] == {
        "eta": 1.0
    }


def test_mix_method_checks_the_loss() -> None:
    with pytest.raises(ValueError, match="loss"):
        MixMethod("mixup", loss="focal")
    with pytest.raises(ValueError, match="loss_params"):
        MixMethod("mixup", loss_params={"eta": 1.0})
    with pytest.raises(ValueError, match="eta"):
        MixMethod("mixup", loss="decoupled", loss_params={"eta": -1.0})
    with pytest.raises(TypeError):
        MixMethod("mixup", loss="decoupled", loss_params={"gamma": 1.0})
