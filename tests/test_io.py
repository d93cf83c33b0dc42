from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core.io import CheckpointError, check_against, load_checkpoint, load_into
from core.models import create_model


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_safetensors_and_weights_only_torch(tmp_path: Path) -> None:
    m = create_model("mlp", width=16, depth=1)
    save_file(m.state_dict(), tmp_path / "a.safetensors")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, tmp_path / "b.pt"
    )
    for name in ("a.safetensors", "b.pt"):
        sd = load_checkpoint(tmp_path / name)
        assert check_against(m, sd).ok
        load_into(create_model("mlp", width=16, depth=1), sd)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)  # type: ignore[attr-defined]
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"w": evil}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_mismatch_message_lists_keys_and_shapes(tmp_path: Path) -> None:
    sd = create_model("mlp", width=32, depth=2).state_dict()
    sd.pop("trunk.fc1.bias")
    sd["extra.weight"] = torch.zeros(1)
    rep = check_against(create_model("mlp", width=16, depth=2), sd)
    msg = rep.message()
    assert "missing keys (1): trunk.fc1.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "trunk.fc0.weight has (32, 784), expected (16, 784)" in msg
    with pytest.raises(CheckpointError, match="missing keys"):
        load_into(create_model("mlp", width=16, depth=2), sd)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "x.safetensors")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="checkpoint must end in"):
        load_checkpoint(tmp_path / "x.txt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        load_checkpoint(tmp_path / "list.pt")
    m = create_model("mlp", width=16, depth=1)
    sd = m.state_dict()
    sd["head.bias"] = torch.full_like(sd["head.bias"], float("nan"))
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        load_into(m, sd)
