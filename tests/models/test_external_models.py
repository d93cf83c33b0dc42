"""Bring your own model: Hugging Face folders, timm names, module:factory callables, user data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from core.cli import main
from core.data.user_data import check_data_fits, load_eval_data, load_text_csv
from core.merge import merge
from core.models import create_model
from core.models.external import (
    ExternalUnavailable,
    detect_kind,
    import_external,
    load_external,
    parse_source,
    task_vector_set,
)
from core.zoo import Zoo


def _bert(folder: Path, *, seed: int, hidden: int = 8, base: Path | None = None) -> Path:
    """A tiny BertModel saved as a Hugging Face folder; with ``base``, its weights + noise."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    torch.manual_seed(seed)
    model = BertModel(cfg)
    if base is not None:
        model = BertModel.from_pretrained(str(base), local_files_only=True)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(folder), safe_serialization=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


@pytest.fixture(scope="module")
def hf_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("hf")
    base = _bert(root / "base", seed=0)
    fts = [_bert(root / f"ft{i}", seed=10 + i, base=base) for i in range(2)]
    return base, fts


def test_hf_base_and_finetunes_form_a_task_vector_set(hf_set, tmp_path: Path) -> None:
    base, fts = hf_set
    assert detect_kind(str(base)) == "hf"
    zoo = Zoo(tmp_path / "ws")
    recs = import_external(
        zoo,
        [parse_source(str(f)) for f in fts],
        base=parse_source(str(base)),
        names=["ft-a", "ft-b"],
        base_name="bert-base",
        tasks=["a", "b"],
    )
    assert [r.id for r in recs] == ["bert-base", "ft-a", "ft-b"]
    assert [r.role for r in recs] == ["base", "finetune", "finetune"]
    assert recs[1].base_id == "bert-base" and recs[0].arch == "external"
    theta0, models = task_vector_set(zoo, "bert-base", ["ft-a", "ft-b"])
    merged = merge("task_arithmetic", models, base=theta0, scale=1.0)
    key = "encoder.layer.0.attention.self.query.weight"
    want = theta0[key] + (models[0][key] - theta0[key]) + (models[1][key] - theta0[key])
    assert torch.allclose(merged[key], want, atol=1e-6)
    # the zoo rebuilds the architecture from the stored config, without the folder
    from transformers import BertModel

    ref = BertModel.from_pretrained(str(fts[0]), local_files_only=True)
    rebuilt = zoo.load_model("ft-a")
    assert torch.equal(rebuilt.state_dict()[key], ref.state_dict()[key])


def test_mismatched_finetune_is_named_and_nothing_is_written(hf_set, tmp_path: Path) -> None:
    base, fts = hf_set
    wide = _bert(tmp_path / "wide", seed=3, hidden=12)
    zoo = Zoo(tmp_path / "ws")
    with pytest.raises(ValueError, match="wide"):
        import_external(
            zoo,
            [parse_source(str(fts[0])), parse_source(str(wide))],
            base=parse_source(str(base)),
            names=["ok", "wide"],
        )
    assert zoo.list() == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        detect_kind(str(tmp_path / "empty"))
    (tmp_path / "nows").mkdir()
    (tmp_path / "nows" / "config.json").write_text((base / "config.json").read_text())
    with pytest.raises(ValueError, match="safetensors"):
        load_external(parse_source(str(tmp_path / "nows")))


def test_factory_with_weights_and_image_data(tmp_path: Path) -> None:
    kwargs = {"name": "mlp", "width": 16, "depth": 1}
    model = create_model(**kwargs, seed=1)
    weights = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    g = np.random.default_rng(0)
    npz = tmp_path / "data.npz"
    np.savez(npz, x=g.random((40, 28, 28)).astype(np.float32), y=np.arange(40) % 10)
    src = parse_source("core.models:create_model", weights=str(weights), kwargs=kwargs)
    assert src.kind == "factory"
    zoo = Zoo(tmp_path / "ws")
    (rec,) = import_external(zoo, [src], names=["my-mlp"], data=str(npz))
    assert rec.role == "imported"
    got = zoo.state_dict("my-mlp")
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    many = tmp_path / "many.npz"
    np.savez(many, x=g.random((40, 28, 28)).astype(np.float32), y=np.arange(40) % 12)
    with pytest.raises(ValueError, match="10 outputs but the data has 12 classes"):
        import_external(zoo, [src], names=["other"], data=str(many))
    assert [r.id for r in zoo.list()] == ["my-mlp"]


def test_factory_and_source_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no attribute"):
        load_external(parse_source("torch.nn:NoSuchLayer"))
    with pytest.raises(ValueError, match="not callable"):
        load_external(parse_source("math:pi"))
    with pytest.raises(ValueError, match="nn.Module"):
        load_external(parse_source("builtins:dict"))
    with pytest.raises(ValueError, match="keyword arguments"):
        load_external(parse_source("torch.nn:Linear", kwargs={"widht": 3}))
    with pytest.raises(ValueError, match="neither"):
        detect_kind("not a source")
    lin = torch.nn.Linear(4, 3)
    bad = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(5, 4), "bias": torch.zeros(3)}, str(bad))
    src = parse_source(
        "torch.nn:Linear", weights=str(bad), kwargs={"in_features": 4, "out_features": 3}
    )
    with pytest.raises(ValueError, match="other shapes"):
        load_external(src)
    ok = load_external(
        parse_source("torch.nn:Linear", kwargs={"in_features": 4, "out_features": 3})
    )
    assert set(ok.state_dict) == set(lin.state_dict())


def test_timm_names_need_timm() -> None:
    src = parse_source("timm:resnet18")
    assert src.kind == "timm" and src.source == "resnet18"
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(ExternalUnavailable, match="pip install timm"):
            load_external(src)
    else:  # pragma: no cover - timm is not installed here
        assert load_external(src).state_dict


def test_text_csv_and_a_model_without_logits(hf_set, tmp_path: Path) -> None:
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label,extra\na good film,pos,x\na bad film,neg,y\ngood,pos,z\n")
    data = load_text_csv(csv)
    assert data.class_names == ("neg", "pos") and data.labels.tolist() == [1, 0, 1]
    assert isinstance(load_eval_data(csv), type(data))
    (tmp_path / "bad.csv").write_text("sentence,label\nhi,1\n")
    with pytest.raises(ValueError, match="'text' and 'label'"):
        load_text_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("text,label\n,1\n")
    with pytest.raises(ValueError, match="line 2"):
        load_text_csv(tmp_path / "empty.csv")
    base, _ = hf_set
    loaded = load_external(parse_source(str(base)))
    with pytest.raises(ValueError, match="without logits"):
        check_data_fits(loaded.model, data, source=loaded.source)


def test_cli_imports_a_set_and_reports_errors(hf_set, tmp_path: Path, capsys) -> None:
    base, fts = hf_set
    ws = str(tmp_path / "ws")
    argv = ["zoo", "import-external", *map(str, fts), "--base", str(base), "--workspace", ws]
    assert main([*argv, "--names", "x", "y", "--base-name", "b"]) == 0
    out = capsys.readouterr().out
    assert "b " in out and "finetune" in out
    assert main([*argv, "--names", "x", "y", "--base-name", "b"]) == 2  # ids exist
    assert "already in the zoo" in capsys.readouterr().err
    assert main(["zoo", "import-external", "nothing:here.at_all", "--workspace", ws]) == 2
