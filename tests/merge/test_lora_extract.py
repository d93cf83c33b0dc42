"""LoRA extraction: the truncated SVD against its definition (Eckart–Young, energy), PEFT
loading the exported adapter and reproducing B·A·scale, and mergekit's extraction function
(through the reference fixture, see tests/helpers/mergekit_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from core.merge.lora_extract import LoraExtraction, extract_lora, save_peft_adapter


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc = nn.Linear(16, 6)  # its name is a suffix-free sibling of fc1
        self.emb = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        h = torch.relu(self.fc1(h))
        return self.head(torch.relu(self.fc(h)) + self.emb.weight[:1])


def _pair(seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    net = Net()
    base = {k: v.detach().clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    tuned = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    return net, base, tuned


def test_factors_are_the_eckart_young_truncation_with_its_energy() -> None:
    _, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=4)
    assert set(ex.layers) == {"conv", "fc1", "fc", "emb", "head"}  # shapes only: emb too
    for name, layer in ex.layers.items():
        tau = (tuned[f"{name}.weight"] - base[f"{name}.weight"]).reshape(
            base[f"{name}.weight"].shape[0], -1
        )
        u, s, vh = torch.linalg.svd(tau.double(), full_matrices=False)
        r = min(4, s.numel())
        best = (u[:, :r] * s[:r]) @ vh[:r]
        got = layer.delta().reshape(tau.shape).double()
        torch.testing.assert_close(got, best, atol=1e-5, rtol=1e-5)  # float32 SVD
        assert layer.rank == r
        energy = float(s[:r].square().sum() / s.square().sum())
        assert layer.energy == pytest.approx(energy, rel=1e-5)
        # the energy is the complement of the squared relative error
        err = float((tau.double() - got).square().sum() / tau.double().square().sum())
        assert layer.energy == pytest.approx(1 - err, abs=1e-5)
        # balanced split: A Aᵀ = Bᵀ B = diag(σ)
        a = layer.a.reshape(r, -1).double()
        b = layer.b.reshape(b_rows := layer.b.shape[0], r).double()
        assert b_rows == tau.shape[0]
        torch.testing.assert_close(a @ a.T, torch.diag(s[:r]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.T @ b, torch.diag(s[:r]), atol=1e-5, rtol=1e-4)
    assert "conv.bias" in ex.skipped and "fc.bias" in ex.skipped


def test_full_rank_recovers_the_fine_tune_and_zero_delta_keeps_all_energy() -> None:
    _, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=1000)
    merged = ex.apply(base)
    for name in ex.layers:
        k = f"{name}.weight"
        torch.testing.assert_close(merged[k], tuned[k], atol=1e-5, rtol=1e-5)
        assert ex.layers[name].energy == pytest.approx(1.0, abs=1e-6)
    same = extract_lora(base, base, rank=2)
    assert all(layer.energy == 1.0 for layer in same.layers.values())
    assert same.skipped == ()


def test_model_restricts_to_linear_and_conv_layers() -> None:
    net, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=2, model=net)
    assert set(ex.layers) == {"conv", "fc1", "fc", "head"}
    assert "emb.weight" in ex.skipped
    with pytest.raises(ValueError, match="nn.Linear or nn.Conv2d"):
        extract_lora(base, tuned, rank=2, model=net, keys=["emb.weight"])


@pytest.mark.parametrize("rank", [2, 5])
def test_peft_loads_the_adapter_and_reproduces_b_a_scale(tmp_path: Path, rank: int) -> None:
    peft = pytest.importorskip("peft")
    net, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=rank, model=net)
    folder = save_peft_adapter(ex, tmp_path / "adapter")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == rank and cfg["lora_alpha"] == rank
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    assert "base_model.model.fc1.lora_A.weight" in keys
    assert "base_model.model.conv.lora_B.weight" in keys
    torch.manual_seed(3)
    fresh = Net()
    fresh.load_state_dict(base)
    model = peft.PeftModel.from_pretrained(fresh, str(folder))
    lora_layers = {n: m for n, m in model.named_modules() if hasattr(m, "get_delta_weight")}
    assert set(lora_layers) == {f"base_model.model.{n}" for n in ex.layers}
    for name, layer in ex.layers.items():
        mod = lora_layers[f"base_model.model.{name}"]
        assert mod.scaling["default"] == 1.0  # α/r with α = r (per layer: alpha_pattern)
        torch.testing.assert_close(mod.get_delta_weight("default"), layer.delta())
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    ref = Net()
    ref.load_state_dict(ex.apply(base))
    torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
    merged = model.merge_and_unload().state_dict()
    for name in ex.layers:
        torch.testing.assert_close(merged[f"{name}.weight"], ex.apply(base)[f"{name}.weight"])


def test_small_layers_get_their_own_rank_in_the_config(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    net, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=5, model=net)
    assert ex.layers["head"].rank == 3  # head is 3 x 6
    folder = save_peft_adapter(ex, tmp_path / "a")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["rank_pattern"] == {"^head": 3} and cfg["alpha_pattern"] == {"^head": 3}
    fresh = Net()
    fresh.load_state_dict(base)
    model = peft.PeftModel.from_pretrained(fresh, str(folder))
    head = dict(model.named_modules())["base_model.model.head"]
    assert head.r["default"] == 3
    fc = dict(model.named_modules())["base_model.model.fc"]
    assert fc.r["default"] == 5  # the ^head key does not leak onto other modules


def test_save_refuses_to_overwrite_and_leaves_no_partial_folder(tmp_path: Path) -> None:
    _, base, tuned = _pair()
    ex = extract_lora(base, tuned, rank=2)
    target = tmp_path / "out"
    save_peft_adapter(ex, target)
    with pytest.raises(ValueError, match="overwrite=True"):
        save_peft_adapter(ex, target)
    save_peft_adapter(ex, target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        save_peft_adapter(ex, tmp_path / "file", overwrite=True)
    with pytest.raises(ValueError, match="no layer"):
        save_peft_adapter(LoraExtraction(layers={}, rank=2, skipped=()), tmp_path / "e")


def test_bad_input_is_named() -> None:
    _, base, tuned = _pair()
    with pytest.raises(TypeError, match="rank"):
        extract_lora(base, tuned, rank=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rank"):
        extract_lora(base, tuned, rank=0)
    with pytest.raises(ValueError, match="not in the state dict"):
        extract_lora(base, tuned, rank=2, keys=["nope.weight"])
    with pytest.raises(ValueError, match="2-d"):
        extract_lora(base, tuned, rank=2, keys=["fc.bias"])
    with pytest.raises(TypeError, match="keys"):
        extract_lora(base, tuned, rank=2, keys="fc.weight")  # type: ignore[arg-type]
    bad = dict(tuned)
    bad["fc.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError):
        extract_lora(base, bad, rank=2)
