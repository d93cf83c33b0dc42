"""Importing checkpoints: odd tensors, damaged files and compression bombs give a clear message
that names the user's file, or import correctly; nothing is inflated before its size is known.

The same list of bad files runs through ``core.zoo.import_checkpoint`` and through the Model
Zoo page's upload (AppTest).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from core.io import CheckpointError
from core.models import create_model
from core.zoo import Zoo, import_checkpoint

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
KW = {"width": 16}


def _sd() -> dict[str, torch.Tensor]:
    return create_model("mlp", seed=0, **KW).state_dict()


def _pt(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _tied() -> bytes:
    sd = _sd()
    keys = [k for k, v in sd.items() if v.dim() == 1]
    a, b = keys[0], next(k for k in keys[1:] if sd[k].shape == sd[keys[0]].shape)
    sd[b] = sd[a]  # two names, one storage (weight tying)
    return _pt(sd)


def _with(key_fn) -> bytes:
    sd = _sd()
    first = next(iter(sd))
    sd[first] = key_fn(sd[first])
    return _pt(sd)


def _deflated(extra_mb: int) -> bytes:
    """A real state dict plus ``extra_mb`` MB of zeros, every record deflate-compressed."""
    sd = dict(_sd())
    sd["extra"] = torch.zeros(extra_mb * 2**18)
    src = zipfile.ZipFile(io.BytesIO(_pt(sd)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _truncated() -> bytes:
    b = _pt(_sd())
    return b[: len(b) // 2]


# name -> (file name, bytes, words the message must hold); None: imports fine
BAD_FILES: dict[str, tuple[str, bytes, str | None]] = {
    "tied tensors": ("tied.pt", _tied(), None),
    "float16": ("half.pt", _pt({k: v.half() for k, v in _sd().items()}), None),
    "sparse tensor": ("sparse.pt", _with(lambda v: v.to_sparse()), "sparse"),
    "meta tensor": ("meta.pt", _with(lambda v: torch.empty_like(v, device="meta")), "meta tensor"),
    "complex tensor": ("complex.pt", _with(lambda v: torch.complex(v, v)), "complex"),
    "int8 tensor": ("int8.pt", _with(lambda v: v.to(torch.int8)), "torch.int8"),
    "random bytes": ("random.pt", os.urandom(4096), "neither a torch zip archive nor a pickle"),
    "random bytes after a pickle mark": ("rnd.bin", b"\x80" + os.urandom(4095), "damaged"),
    "truncated": ("cut.pt", _truncated(), "truncated"),
    "empty file": ("empty.ckpt", b"", "neither"),
    "a zip that is not torch": ("z.pth", b"", "without data.pkl"),
    "deflate bomb": ("bomb.pt", _deflated(64), "unpacks to"),
    "random safetensors": ("r.safetensors", os.urandom(300), "not a valid safetensors"),
    "wrong width": (
        "wide.safetensors",
        save(create_model("mlp", width=32).state_dict()),
        "does not fit",
    ),
    "not a state dict": ("list.pt", _pt([1, 2, 3]), "does not contain a state dict"),
}
_z = io.BytesIO()
with zipfile.ZipFile(_z, "w") as _zf:
    _zf.writestr("hello.txt", "hi")
BAD_FILES["a zip that is not torch"] = ("z.pth", _z.getvalue(), "without data.pkl")


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_import_gives_a_clear_message_naming_the_file(tmp_path: Path, case: str) -> None:
    fname, data, words = BAD_FILES[case]
    z = Zoo(tmp_path)
    if words is None:
        rec = import_checkpoint(z, data, fname, arch="mlp", arch_kwargs=KW, task="mnist")
        m = z.load_model(rec.id)
        assert rec.n_params == sum(p.numel() for p in m.state_dict().values())
        return
    with pytest.raises(CheckpointError) as info:
        import_checkpoint(z, data, fname, arch="mlp", arch_kwargs=KW, task="mnist")
    msg = str(info.value)
    assert fname in msg and words in msg, msg
    assert "upload-" not in msg and "Errno" not in msg
    if case != "random bytes after a pickle mark":
        assert "run code" not in msg, msg
    assert len(z) == 0 and z.orphans() == []


def test_bomb_is_refused_before_anything_is_inflated(tmp_path: Path, monkeypatch) -> None:
    """Only the pickle is read (to the meta device) before the size check refuses the file."""
    fname, data, _ = BAD_FILES["deflate bomb"]
    assert len(data) < 2**20  # 64 MB of tensors in well under 1 MB
    seen: list[object] = []
    real = torch.load

    def spy(*a, **k):
        seen.append(k.get("map_location"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CheckpointError, match="unpacks to 64"):
        import_checkpoint(Zoo(tmp_path), data, fname, arch="mlp", arch_kwargs=KW, task="mnist")
    assert seen == [], seen  # the archive's directory alone refused it
    # a file whose directory is honest but whose pickle declares more than the limit
    with pytest.raises(CheckpointError, match="declares|unpacks to"):
        from core.io import load_checkpoint_bytes

        load_checkpoint_bytes(data, fname, max_bytes=2**20)
    assert "cpu" not in seen


def test_default_ids_are_reserved_for_the_default_zoo(tmp_path: Path) -> None:
    data = save(_sd())
    with pytest.raises(ValueError, match="'mlp-base' is reserved"):
        import_checkpoint(
            Zoo(tmp_path),
            data,
            "m.safetensors",
            arch="mlp",
            arch_kwargs=KW,
            task="mnist",
            name="mlp-base",
        )


def test_zoo_page_import_of_every_bad_file_shows_a_message(empty_workspace: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/1_Model_Zoo.py").run()
    assert not at.exception
    clear = 0
    for case, (fname, data, words) in BAD_FILES.items():
        at.file_uploader(key="zoo.upload").set_value((fname, data, "application/octet-stream"))
        at.run()
        at.selectbox(key="zoo.imp_arch").set_value("mlp").run()
        at.number_input(key="zoo.imp_width").set_value(16).run()
        at.text_input(key="zoo.imp_name").set_value(case.replace(" ", "-")).run()
        at.button(key="zoo.import").click().run()
        assert not at.exception, (case, at.exception)
        if words is None:
            assert any("Imported" in s.value for s in at.success), (
                case,
                [e.value for e in at.error],
            )
        else:
            errors = [e.value for e in at.error]
            assert any(fname in e and words in e for e in errors), (case, errors)
            clear += 1
    print(
        f"{len(BAD_FILES)} files uploaded: {clear} refused with a clear message, "
        f"{len(BAD_FILES) - clear} imported"
    )
    assert not list(Zoo(empty_workspace).tmp_dir.iterdir())
