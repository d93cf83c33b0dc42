"""Unsafe files are refused, uploads are validated, user-typed names cannot escape the workspace.

Checkpoints that carry code are built here for real (pickles whose ``__reduce__`` calls
``os.system`` or ``Path.touch``) and fed to ``core.io`` and to the Model Zoo page's upload
(AppTest's ``file_uploader`` drives the page's real import path). A marker file shows whether
anything ran.
"""

from __future__ import annotations

import io
import os
import pickle
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from core.io import TORCH_SUFFIXES, CheckpointError, load_checkpoint
from core.models import create_model
from core.zoo import Zoo, slugify

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


class _Touch:
    """Unpickling this calls ``Path(marker).touch()``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class _Shell:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _evil_bytes(kind: str, marker: Path) -> bytes:
    """A checkpoint whose unpickling would create ``marker``.

    ``kind``: "torch-touch" / "torch-shell" (torch.save zip, the realistic attack: a real
    state dict plus a payload entry) or "raw-shell" (a legacy plain pickle).
    """
    payload = _Touch(marker) if kind == "torch-touch" else _Shell(marker)
    sd: dict[str, object] = dict(create_model("mlp", width=16, depth=1).state_dict())
    sd["payload"] = payload
    buf = io.BytesIO()
    if kind.startswith("torch"):
        torch.save(sd, buf)
    else:
        pickle.dump(sd, buf, protocol=2)
    return buf.getvalue()


@pytest.mark.parametrize("suffix", TORCH_SUFFIXES)
@pytest.mark.parametrize("kind", ["torch-touch", "torch-shell", "raw-shell"])
def test_pickle_carrying_code_is_refused_and_nothing_runs(
    tmp_path: Path, suffix: str, kind: str
) -> None:
    marker = tmp_path / "pwned"
    f = tmp_path / f"evil{suffix}"
    f.write_bytes(_evil_bytes(kind, marker))
    # sanity: the file really carries code (a plain unpickle would run it)
    if kind == "torch-touch":
        with zipfile.ZipFile(f) as z:
            assert any(n.endswith("data.pkl") for n in z.namelist())
    with pytest.raises(CheckpointError, match="refused") as err:
        load_checkpoint(f)
    assert f.name in str(err.value) and "safetensors" in str(err.value)
    assert not marker.exists(), "code in the checkpoint ran"


def test_safetensors_with_garbage_header_is_refused(tmp_path: Path) -> None:
    good = save(dict(create_model("mlp", width=16, depth=1).state_dict()))
    bad = (10**12).to_bytes(8, "little") + good[8:]  # header length pointing past the end
    (tmp_path / "a.safetensors").write_bytes(bad)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "b.safetensors")
    (tmp_path / "c.pt").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "c.pt")


# ----------------------------------------------------------------------------- page upload
def _zoo_page(ws: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/1_Model_Zoo.py").run()
    assert not at.exception
    return at


def _upload(at: AppTest, name: str, content: bytes, *, arch: str = "mlp", width: int = 16) -> None:
    at.file_uploader(key="zoo.upload").set_value((name, content, "application/octet-stream"))
    at.run()
    at.selectbox(key="zoo.imp_arch").set_value(arch).run()
    at.number_input(key="zoo.imp_width").set_value(width).run()
    at.button(key="zoo.import").click().run()


@pytest.mark.parametrize("kind", ["torch-touch", "torch-shell"])
def test_zoo_page_refuses_evil_upload(empty_workspace: Path, kind: str) -> None:
    marker = empty_workspace.parent / "pwned"
    at = _zoo_page(empty_workspace)
    _upload(at, "evil.pt", _evil_bytes(kind, marker))
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("refused" in e for e in errors), errors
    assert not marker.exists(), "code in the uploaded checkpoint ran"
    z = Zoo(empty_workspace)
    assert len(z) == 0
    assert not list(z.tmp_dir.iterdir()), "the upload's temporary file was left behind"
    # the session stays usable: a good upload right after works
    good = save({k: v.contiguous() for k, v in create_model("mlp", width=16).state_dict().items()})
    at.text_input(key="zoo.imp_name").set_value("good").run()
    _upload(at, "good.safetensors", good)
    assert not at.exception
    assert any("Imported **good**" in s.value for s in at.success), [e.value for e in at.error]
    assert [r.id for r in Zoo(empty_workspace).list()] == ["good"]


def test_zoo_page_import_validates_before_storing(empty_workspace: Path) -> None:
    at = _zoo_page(empty_workspace)
    m = create_model("mlp", width=16)
    blob = save({k: v.contiguous() for k, v in m.state_dict().items()})
    # wrong architecture width: refused with the key/shape report, nothing stored
    _upload(at, "m.safetensors", blob, width=32)
    assert not at.exception
    assert any("does not fit" in e.value for e in at.error), [e.value for e in at.error]
    assert len(Zoo(empty_workspace)) == 0
    # NaN weights: refused
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first][0] = float("nan")
    _upload(at, "nan.safetensors", save(sd), width=16)
    assert any("NaN" in e.value for e in at.error), [e.value for e in at.error]
    assert len(Zoo(empty_workspace)) == 0
    # garbage bytes with a checkpoint suffix
    _upload(at, "junk.pth", b"\x00" * 100, width=16)
    assert not at.exception and at.error
    assert len(Zoo(empty_workspace)) == 0
    # a name that tries to escape the workspace is slugified into models/
    at.text_input(key="zoo.imp_name").set_value("../../../../tmp/escape").run()
    _upload(at, "m.safetensors", blob, width=16)
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]
    z = Zoo(empty_workspace)
    (rec,) = z.list()
    assert "/" not in rec.id and ".." not in rec.id
    assert (z.root / rec.file).resolve().parent == z.models_dir.resolve()
    z.state_dict(rec.id, verify=True)


def test_upload_size_limit_is_set() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    limit_mb = cfg["server"]["maxUploadSize"]
    # big enough for the largest checkpoint the registry architectures make at the page's
    # maximum width (an mlp of width 2048 is ~40 MB), small enough not to invite abuse
    assert 64 <= limit_mb <= 1024, limit_mb
    big = create_model("mlp", width=2048)
    mb = sum(v.numel() * v.element_size() for v in big.state_dict().values()) / 2**20
    assert mb < limit_mb


# ----------------------------------------------------------------------------- path traversal
@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "..",
        ".",
        "/abs/path",
        "a/../../b",
        "..\\..\\win",
        "\x00evil",
        "",
        "  ",
        "models/../../x",
        "~/.ssh/id_rsa",
        "a" * 500,
        "név ünicode ✓",
        "-.-",
        ".hidden",
    ],
)
def test_slugify_never_escapes(name: str) -> None:
    s = slugify(name)
    assert s and len(s) <= 80
    assert "/" not in s and "\\" not in s and "\x00" not in s
    assert not s.startswith(".") and s not in (".", "..")
    root = Path("/ws/models")
    assert (root / f"{s}.safetensors").resolve().parent == root


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil", "..", "a/../../b"])
def test_zoo_add_and_delete_stay_inside_workspace(tmp_path: Path, name: str) -> None:
    ws = tmp_path / "ws"
    z = Zoo(ws)
    m = create_model("mlp", width=16, depth=1)
    rec = z.add(m, arch="mlp", arch_kwargs={"width": 16, "depth": 1}, task="mnist", name=name)
    assert (ws / rec.file).resolve().parent == z.models_dir.resolve()
    assert not any(p.is_file() for p in tmp_path.iterdir() if p != ws)
    with pytest.raises(KeyError):
        z.delete(name if name != rec.id else "../" + name)
    z.delete(rec.id)
    assert len(z) == 0


def test_tampered_index_cannot_read_or_delete_outside(tmp_path: Path) -> None:
    """A workspace from someone else may hold an index whose file column points outside it."""
    ws = tmp_path / "ws"
    z = Zoo(ws)
    m = create_model("mlp", width=16, depth=1)
    rec = z.add(m, arch="mlp", arch_kwargs={"width": 16, "depth": 1}, task="mnist", name="m")
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes((ws / rec.file).read_bytes())
    with z.transaction() as con:
        con.execute("UPDATE models SET file=? WHERE id=?", ("../victim.safetensors", rec.id))
    assert [r.id for r in z.list()] == []  # not listed
    with pytest.raises(ValueError, match="outside"):
        z.state_dict(rec.id)
    z.delete(rec.id)  # drops the row, never touches the file outside
    assert victim.exists() and rec.id not in z
