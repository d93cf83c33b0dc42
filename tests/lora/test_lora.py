"""LoRA adapters: import from PEFT folders made here with ``peft``, merge with core methods and
with PEFT's ``add_weighted_adapter`` types (compared with PEFT's own results), export back.

Tolerances: float32 factors, 1e-5 absolute/relative (PEFT and core run the same float32 ops;
differences come only from summation order)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from core.lora import (
    COMBINATION_TYPES,
    LoraAdapter,
    adapter_from_delta,
    applicable_methods,
    combine_adapters,
    load_adapter,
    merge_adapters,
    merge_into_base,
    save_adapter,
)
from core.merge import merge

TOL = {"atol": 1e-5, "rtol": 1e-5}
# PEFT warns about its own 1-D lora_B.bias tensors when saving lora_bias adapters
pytestmark = pytest.mark.filterwarnings("ignore:Adapter 'default'.*invalid shape")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc = nn.Linear(6, 8)
        self.conv = nn.Conv2d(2, 6, 3)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.emb(x))))


def _base() -> Net:
    torch.manual_seed(0)
    return Net()


def _make(tmp: Path, name: str, seed: int, **cfg) -> Path:
    torch.manual_seed(seed)
    config = LoraConfig(
        r=cfg.pop("r", 4),
        lora_alpha=cfg.pop("lora_alpha", 8),
        target_modules=cfg.pop("target_modules", ["emb", "fc", "conv", "head"]),
        init_lora_weights=False,
        **cfg,
    )
    model = get_peft_model(copy.deepcopy(_base()), config)
    folder = tmp / name
    model.save_pretrained(folder)
    return folder


def _peft_delta(folder: Path, base: nn.Module) -> dict[str, torch.Tensor]:
    merged = PeftModel.from_pretrained(copy.deepcopy(base), folder).merge_and_unload()
    before = base.state_dict()
    return {k: v - before[k] for k, v in merged.state_dict().items()}


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"use_rslora": True},
        {"alpha_pattern": {"fc": 3}, "rank_pattern": {"head": 2}},
        {"lora_bias": True, "target_modules": ["fc", "conv", "head"]},
    ],
)
def test_import_equals_peft_merge_and_unload(tmp_path: Path, cfg: dict) -> None:
    base = _base()
    folder = _make(tmp_path, "a", 1, **copy.deepcopy(cfg))
    ad = load_adapter(folder, base=base.state_dict())
    assert set(ad.layers) == set(cfg.get("target_modules", ["emb", "fc", "conv", "head"]))
    want = _peft_delta(folder, base)
    got = ad.delta()
    for k, v in want.items():
        torch.testing.assert_close(got.get(k, torch.zeros_like(v)), v, **TOL, msg=k)


def test_import_fan_in_fan_out_conv1d(tmp_path: Path) -> None:
    from transformers.pytorch_utils import Conv1D

    class Gpt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn = Conv1D(9, 6)  # weight (in=6, out=9)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c_attn(x)

    torch.manual_seed(0)
    base = Gpt()
    torch.manual_seed(3)
    cfg = LoraConfig(
        r=3, lora_alpha=6, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False
    )
    get_peft_model(copy.deepcopy(base), cfg).save_pretrained(tmp_path / "g")
    ad = load_adapter(tmp_path / "g", base=base.state_dict())
    assert ad.layers["c_attn"].fan_in_fan_out
    want = _peft_delta(tmp_path / "g", base)
    torch.testing.assert_close(ad.delta()["c_attn.weight"], want["c_attn.weight"], **TOL)
    out = save_adapter(
        adapter_from_delta(ad.delta(), ad.kinds, rank=3, fan_in_fan_out=True), tmp_path / "g2"
    )
    torch.testing.assert_close(
        _peft_delta(out, base)["c_attn.weight"], want["c_attn.weight"], **TOL
    )


def _peft_combined(
    folders: list[Path], weights: list[float], ctype: str, seed: int, **kw
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    model = PeftModel.from_pretrained(copy.deepcopy(_base()), folders[0], adapter_name="a0")
    for i, f in enumerate(folders[1:], 1):
        model.load_adapter(f, adapter_name=f"a{i}")
    gen = torch.Generator().manual_seed(seed)
    real = torch.bernoulli

    def seeded(x: torch.Tensor, *a, **k) -> torch.Tensor:  # PEFT's draws through one generator
        return real(x, generator=gen)

    with mock.patch.object(torch, "bernoulli", seeded):
        model.add_weighted_adapter(
            [f"a{i}" for i in range(len(folders))], weights, "mix", combination_type=ctype, **kw
        )
    net = model.base_model.model
    out = {}
    for name in ("fc", "head", "conv"):
        layer = getattr(net, name)
        out[name] = (layer.lora_A["mix"].weight.detach(), layer.lora_B["mix"].weight.detach())
    out["emb"] = (
        net.emb.lora_embedding_A["mix"].detach(),
        net.emb.lora_embedding_B["mix"].detach(),
    )
    return out


@pytest.mark.parametrize("ctype", COMBINATION_TYPES)
def test_combination_types_equal_peft_add_weighted_adapter(tmp_path: Path, ctype: str) -> None:
    folders = [_make(tmp_path, f"a{i}", 10 + i) for i in range(3)]
    weights = [1.0, -0.5, 0.7]
    kw: dict = {"density": 0.6} if ctype not in ("svd", "linear", "cat") else {}
    if ctype.endswith("svd"):
        kw["svd_rank"] = 5
    ref = _peft_combined(folders, weights, ctype, seed=4, **kw)
    base = _base().state_dict()
    ads = [load_adapter(f, base=base) for f in folders]
    got = combine_adapters(
        ads, weights, ctype, generator=torch.Generator().manual_seed(4), order=base, **kw
    )
    for name, (a, b) in ref.items():
        torch.testing.assert_close(got.layers[name].a, a, **TOL, msg=f"{ctype} {name} A")
        torch.testing.assert_close(got.layers[name].b, b, **TOL, msg=f"{ctype} {name} B")


def test_exact_types_reproduce_the_weighted_sum(tmp_path: Path) -> None:
    folders = [_make(tmp_path, f"a{i}", 20 + i) for i in range(2)]
    ads = [load_adapter(f) for f in folders]
    want = {k: 0.3 * ads[0].delta()[k] - 1.2 * ads[1].delta()[k] for k in ads[0].delta()}
    cat = combine_adapters(ads, [0.3, -1.2], "cat").delta()
    svd = combine_adapters(ads, [0.3, -1.2], "svd", svd_rank=8).delta()
    ta = merge_adapters(ads, "task_arithmetic", scale=1.0, weights=[0.3, -1.2])
    for k, v in want.items():
        for got in (cat, svd, ta):
            torch.testing.assert_close(got[k], v, **TOL, msg=k)
    one = combine_adapters(ads[:1], [-1.0], "ties", density=0.5).delta()  # one adapter: linear
    for k, v in ads[0].delta().items():
        torch.testing.assert_close(one[k], -v, **TOL, msg=k)


@pytest.mark.parametrize("method", applicable_methods(3))
def test_every_applicable_core_method_merges_adapters(tmp_path: Path, method: str) -> None:
    folders = [_make(tmp_path, f"a{i}", 30 + i, target_modules=["fc", "head"]) for i in range(3)]
    folders.append(_make(tmp_path, "other", 40, target_modules=["fc"]))  # a subset of modules
    ads = [load_adapter(f) for f in folders[1:]]
    kw = (
        {"evaluate": lambda sd: -float(sum(v.abs().sum() for v in sd.values()))}
        if method == "greedy_soup"
        else {}
    )
    out = merge_adapters(ads, method, generator=torch.Generator().manual_seed(0), **kw)
    assert set(out) == {"fc.weight", "head.weight"}
    assert all(torch.isfinite(v).all() for v in out.values())
    if method == "ties":
        deltas = [a.delta() for a in ads]
        zeros = {k: torch.zeros_like(v) for k, v in deltas[0].items()}
        filled = [{k: d.get(k, zeros[k]) for k in zeros} for d in deltas]
        ref = merge("ties", filled, base=zeros)
        assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_export_round_trip_and_truncation(tmp_path: Path) -> None:
    base = _base()
    ads = [load_adapter(_make(tmp_path, f"a{i}", 50 + i), base=base.state_dict()) for i in range(2)]
    delta = merge_adapters(ads, "ties", density=0.5, trim="tensor")
    full = save_adapter(adapter_from_delta(delta, ads[0].kinds, rank=64), tmp_path / "full")
    exported = _peft_delta(full, base)
    for k, v in delta.items():
        torch.testing.assert_close(exported[k], v, **TOL, msg=k)
    low = adapter_from_delta(delta, ads[0].kinds, rank=2)
    for path, layer in low.layers.items():
        w = delta[f"{path}.weight"]
        mat = w.flatten(1) if layer.kind == "conv" else (w.T if layer.kind == "embedding" else w)
        s = torch.linalg.svdvals(mat)
        err = torch.linalg.matrix_norm(
            low.delta()[f"{path}.weight"].reshape(
                mat.shape if layer.kind != "embedding" else w.shape
            )
            - (w if layer.kind == "embedding" else mat)
        )
        assert float(err) == pytest.approx(float(s[2:].norm()), rel=1e-4, abs=1e-6)  # Eckart–Young
    merged_sd = merge_into_base(base.state_dict(), delta)
    peft_like = {k: base.state_dict()[k] + delta.get(k, 0) for k in base.state_dict()}
    for k in merged_sd:
        torch.testing.assert_close(merged_sd[k], peft_like[k], **TOL)
    cfg = json.loads((full / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["use_rslora"] is False


def test_bias_export_round_trip(tmp_path: Path) -> None:
    base = _base()
    ad = load_adapter(
        _make(tmp_path, "b", 60, lora_bias=True, target_modules=["fc"]), base=base.state_dict()
    )
    out = save_adapter(adapter_from_delta(ad.delta(), ad.kinds, rank=4), tmp_path / "b2")
    want = ad.delta()
    got = _peft_delta(out, base)
    torch.testing.assert_close(got["fc.bias"], want["fc.bias"], **TOL)
    torch.testing.assert_close(got["fc.weight"], want["fc.weight"], **TOL)


def _write(folder: Path, config: dict | str | None, tensors: dict | None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "adapter_config.json").write_text(
            config if isinstance(config, str) else json.dumps(config)
        )
    if tensors is not None:
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


GOOD = {"peft_type": "LORA", "r": 2, "lora_alpha": 4}
A = {
    "base_model.model.fc.lora_A.weight": torch.ones(2, 6),
    "base_model.model.fc.lora_B.weight": torch.ones(8, 2),
}


@pytest.mark.parametrize(
    ("config", "tensors", "match"),
    [
        (None, A, "adapter_config.json"),
        ("{not json", A, "not valid JSON"),
        ("[1, 2]", A, "JSON object"),
        ({**GOOD, "peft_type": "IA3"}, A, "peft_type"),
        ({**GOOD, "use_dora": True}, A, "DoRA"),
        ({**GOOD, "r": 0}, A, "r must be"),
        (GOOD, None, "adapter_model"),
        (
            GOOD,
            {**A, "base_model.model.fc.lora_magnitude_vector": torch.ones(8)},
            "not a LoRA factor",
        ),
        (GOOD, {"base_model.model.fc.lora_A.weight": torch.ones(2, 6)}, "needs both"),
        (GOOD, {**A, "base_model.model.fc.lora_B.weight": torch.ones(8, 3)}, "do not form"),
    ],
)
def test_bad_adapter_folders_are_refused(tmp_path: Path, config, tensors, match: str) -> None:
    folder = _write(tmp_path / "bad", config, tensors)
    with pytest.raises(ValueError, match=match):
        load_adapter(folder)


def test_base_mismatch_corrupt_file_and_overwrite_guard(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ok", GOOD, A)
    with pytest.raises(ValueError, match="no '<path>.weight'"):
        load_adapter(folder, base={"other.weight": torch.zeros(8, 6)})
    with pytest.raises(ValueError, match="shape"):
        load_adapter(folder, base={"fc.weight": torch.zeros(6, 8)})
    ad = load_adapter(
        folder, base={"model.fc.weight": torch.zeros(8, 6)} | {"fc.weight": torch.zeros(8, 6)}
    )
    assert list(ad.layers) == ["fc"]
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_adapter(folder)
    with pytest.raises(ValueError, match="not a folder"):
        load_adapter(tmp_path / "missing")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("x")
    good = load_adapter(_write(tmp_path / "ok2", GOOD, A))
    with pytest.raises(ValueError, match="not an adapter folder"):
        save_adapter(good, plain)
    assert (plain / "keep.txt").read_text() == "x"
    save_adapter(good, tmp_path / "ok2")  # an adapter folder is replaced
    assert load_adapter(tmp_path / "ok2").layers["fc"].rank == 2


def test_combine_validates(tmp_path: Path) -> None:
    ads = [load_adapter(_write(tmp_path / f"x{i}", GOOD, A)) for i in range(2)]
    with pytest.raises(ValueError, match="combination_type"):
        combine_adapters(ads, [1, 1], "mean")
    with pytest.raises(ValueError, match="needs density"):
        combine_adapters(ads, [1, 1], "ties")
    with pytest.raises(ValueError, match="one number per adapter"):
        combine_adapters(ads, [1], "svd")
    with pytest.raises(ValueError, match="method must be one of"):
        merge_adapters(ads, "fisher")
    wide = load_adapter(
        _write(
            tmp_path / "w",
            {**GOOD, "r": 3},
            {
                "base_model.model.fc.lora_A.weight": torch.ones(3, 6),
                "base_model.model.fc.lora_B.weight": torch.ones(8, 3),
            },
        )
    )
    with pytest.raises(ValueError, match="one rank"):
        combine_adapters([ads[0], wide], [1, 1], "linear")
    assert combine_adapters([ads[0], wide], [1, 1], "cat").layers["fc"].rank == 5
    assert isinstance(combine_adapters(ads, [1, 1], "svd"), LoraAdapter)
