"""The zoo never lists a model without its file, never overwrites a checkpoint it does not own,
keeps a broken or read-only workspace usable, and imports only what it can store faithfully.

Each test feeds a class of bad inputs (races, damaged workspaces, odd dtypes, odd default-zoo
states); every one must give a clear message (a ``ValueError`` / ``KeyError`` naming the thing
and the way out) or work.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from core.models import create_model
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
MLP = {"width": 16, "depth": 1}


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    return create_model("mlp", seed=seed, **MLP).state_dict()


def _add(z: Zoo, name: str, **kw) -> object:
    return z.add(_sd(), arch="mlp", arch_kwargs=MLP, task="mnist", name=name, **kw)


def _listed_without_file(z: Zoo) -> list[str]:
    """Ids in the index whose checkpoint is missing, read under the write lock (so a delete or
    an add in another process is either wholly before or wholly after this check)."""
    with z.transaction() as con:
        rows = con.execute("SELECT id, file FROM models").fetchall()
        return [r[0] for r in rows if not (z.root / r[1]).is_file()]


# ----------------------------------------------------------------------------- item 2: races
def test_delete_then_add_of_the_same_name_keeps_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that lost files: another process adds the same name right after
    delete's transaction commits and before delete removed the file."""
    z, other = Zoo(tmp_path), Zoo(tmp_path)
    _add(z, "x")
    orig = z._connect
    fired: list[object] = []

    class Con:  # the delete's connection; the other writer gets the lock the moment it commits
        def __init__(self, con) -> None:
            self.con = con

        def execute(self, sql: str, *args):
            out = self.con.execute(sql, *args)
            if sql.strip().upper() == "COMMIT" and not fired:
                fired.append(_add(other, "x"))
            return out

        def __getattr__(self, name: str):
            return getattr(self.con, name)

    @contextlib.contextmanager
    def connect():
        with orig() as con:
            yield Con(con)

    monkeypatch.setattr(z, "_connect", connect)
    z.delete("x")
    monkeypatch.undo()
    assert fired, "the concurrent add did not run"
    assert _listed_without_file(z) == []
    assert [r.id for r in z.list()] == ["x"]
    z.state_dict("x", verify=True)


_RACER = """
import os, sys, time
from core.models import create_model
from core.zoo import Zoo
ws, role, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
z = Zoo(ws)
sd = create_model("mlp", seed=0, width=16, depth=1).state_dict()
open(f"{ws}/ready-{role}", "w").close()
while not os.path.exists(f"{ws}/go"):  # both start together (imports take a while)
    time.sleep(0.01)
end, n, bad = time.time() + seconds, 0, 0
while time.time() < end:
    if role == "add":
        rec = z.add(sd, arch="mlp", arch_kwargs={"width": 16, "depth": 1}, task="t", name="x")
        with z.transaction() as con:  # under the lock: the record, if still listed, has its file
            row = con.execute("SELECT file FROM models WHERE id=?", (rec.id,)).fetchone()
            if row is not None and not (z.root / row[0]).is_file():
                bad += 1
    else:
        for mid in ("x", "x-2", "x-3"):
            try:
                z.delete(mid)
            except KeyError:
                pass
    n += 1
print(n, bad)
"""


@pytest.mark.slow  # 3 s of racing, plus two interpreters importing torch
def test_two_processes_adding_and_deleting_one_name_never_lose_a_listed_file(
    tmp_path: Path,
) -> None:
    """Two real processes for a few seconds: one adds ``x`` in a loop, the other deletes it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    Zoo(tmp_path)  # create the workspace before both start
    seconds = "3"
    procs = {
        role: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_RACER), str(tmp_path), role, seconds],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("add", "delete")
    }
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{r}").exists() for r in procs) and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    out = {}
    for role, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr[-2000:]
        out[role] = tuple(map(int, stdout.split()))
    n_adds, bad = out["add"]
    print(f"{n_adds} adds raced {out['delete'][0]} delete rounds: {bad} listed without a file")
    assert n_adds >= 5 and out["delete"][0] >= 5, out  # both really ran side by side
    assert bad == 0
    z = Zoo(tmp_path)
    assert _listed_without_file(z) == []
    listed = {z.root / r.file for r in z.list()}
    on_disk = set(z.models_dir.glob("*.safetensors"))
    assert on_disk == listed, "a checkpoint on disk is not in the index (or the other way)"


# ----------------------------------------------------------------------------- item 5: orphans
def _two_models(ws: Path) -> Zoo:
    z = Zoo(ws)
    z.add(
        _sd(1),
        arch="mlp",
        arch_kwargs=MLP,
        task="mnist",
        name="a",
        role="finetune",
        seed=3,
        metrics={"test_accuracy": 0.75},
        note="kept",
    )
    z.add(_sd(2), arch="mlp", arch_kwargs=MLP, task="digits", name="b")
    return z


def _digest(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_emptied_index_never_overwrites_an_orphaned_checkpoint(tmp_path: Path) -> None:
    z = _two_models(tmp_path)
    before = {p.name: _digest(p) for p in z.models_dir.glob("*.safetensors")}
    (tmp_path / "index.sqlite").write_bytes(b"")  # emptied (a sync tool, a bad copy)
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    z = Zoo(tmp_path)
    assert z.list() == []
    assert sorted(p.name for p in z.orphans()) == ["a.safetensors", "b.safetensors"]
    new = _add(z, "a")  # the same name again
    assert new.id != "a"
    replaced = z.add(_sd(5), arch="mlp", arch_kwargs=MLP, task="mnist", name="b", replace=True)
    assert replaced.id == "b"
    after = {p.name: _digest(p) for p in z.models_dir.glob("*.safetensors")}
    assert after["a.safetensors"] == before["a.safetensors"]
    kept = [n for n, d in after.items() if d == before["b.safetensors"]]
    assert kept, "the orphaned checkpoint b was overwritten"
    # repair lists the orphans again, with the metadata they were stored with
    report = z.repair()
    assert "a" in report.recovered and kept[0].removesuffix(".safetensors") in report.recovered
    a = z.get("a")
    assert (a.arch, a.arch_kwargs, a.task, a.role, a.seed, a.note) == (
        "mlp",
        MLP,
        "mnist",
        "finetune",
        3,
        "kept",
    )
    assert a.metrics["test_accuracy"] == 0.75
    for r in z.list():
        z.load_model(r.id)
        z.state_dict(r.id, verify=True)
    assert z.orphans() == []


def test_repair_command_rebuilds_a_corrupt_index(tmp_path: Path, capsys) -> None:
    from core.cli import main

    _two_models(tmp_path)
    (tmp_path / "index.sqlite").write_bytes(os.urandom(4096))
    assert main(["zoo", "list", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "index.sqlite" in err and "zoo repair" in err and "Traceback" not in err
    assert main(["zoo", "repair", "--workspace", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recovered 2" in out and "index.sqlite.damaged-" in out, out
    assert [r.id for r in Zoo(tmp_path).list()] == ["a", "b"]
    assert list(tmp_path.glob("index.sqlite.damaged-*")), "the damaged index was not kept"
    assert main(["zoo", "list", "--workspace", str(tmp_path)]) == 0


def test_repair_skips_files_it_cannot_vouch_for(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    z = _two_models(tmp_path)
    (z.models_dir / "junk.safetensors").write_bytes(os.urandom(100))
    save_file({"w": torch.zeros(2)}, str(z.models_dir / "foreign.safetensors"))  # no metadata
    meta = {"arch": "mlp", "arch_kwargs": '{"width": 32, "depth": 1}', "task": "t"}
    save_file(_sd(), str(z.models_dir / "wrong-shape.safetensors"), metadata=meta)
    (tmp_path / "index.sqlite").write_bytes(b"")
    report = Zoo(tmp_path).repair()
    assert sorted(report.recovered) == ["a", "b"]
    assert sorted(report.skipped) == [
        "foreign.safetensors",
        "junk.safetensors",
        "wrong-shape.safetensors",
    ]
    assert all(report.skipped.values())  # each with its reason
    assert [r.id for r in Zoo(tmp_path).list()] == ["a", "b"]


# ----------------------------------------------------------------------------- item 15: workspaces
def _checkpoint(ws: Path) -> None:
    """Fold the WAL into the main file and remove it (the index is one file after this)."""
    import sqlite3

    con = sqlite3.connect(ws / "index.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (ws / extra).unlink(missing_ok=True)


def _truncate(ws: Path) -> None:
    db = ws / "index.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def _other_schema(ws: Path) -> None:
    import sqlite3

    db = ws / "index.sqlite"
    db.unlink()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE models (id TEXT, size INTEGER)")
    con.execute("INSERT INTO models VALUES ('a', 1)")
    con.commit()
    con.close()


def _bad_json(ws: Path) -> None:
    with Zoo(ws).transaction() as con:
        con.execute("UPDATE models SET metrics='{not json' WHERE id='a'")


def _replace_with_dir(p: Path) -> None:
    p.unlink()
    p.mkdir()
    (p / "x").write_text("x")


BROKEN_INDEX = {
    "random bytes": lambda ws: (ws / "index.sqlite").write_bytes(os.urandom(8192)),
    "truncated": _truncate,
    "header only": lambda ws: (ws / "index.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(84)),
    "a folder": lambda ws: _replace_with_dir(ws / "index.sqlite"),
    "another program's database": _other_schema,
    "a row with bad JSON": _bad_json,
}


@pytest.mark.parametrize("fault", list(BROKEN_INDEX))
def test_broken_index_gives_a_message_and_repair_recovers(
    tmp_path: Path, fault: str, capsys
) -> None:
    from core.cli import main
    from core.zoo import WorkspaceError

    _two_models(tmp_path)
    _checkpoint(tmp_path)
    BROKEN_INDEX[fault](tmp_path)
    with pytest.raises(WorkspaceError, match=r"index\.sqlite.*zoo repair"):
        Zoo(tmp_path).list()
    assert main(["zoo", "list", "--workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "zoo repair" in err and "Traceback" not in err, err
    assert main(["zoo", "repair", "--workspace", str(tmp_path)]) == 0, capsys.readouterr().err
    z = Zoo(tmp_path)
    assert [r.id for r in z.list()] == ["a", "b"]
    assert z.get("a").metrics["test_accuracy"] == 0.75
    z.load_model("a")


def _models_is_a_file(ws: Path) -> Path:
    ws.mkdir()
    (ws / "models").write_text("not a folder")
    return ws


def _under_a_file(ws: Path) -> Path:
    ws.write_text("a file")
    return ws / "inner"


def _is_a_file(ws: Path) -> Path:
    ws.write_text("a file")
    return ws


BROKEN_FOLDERS = {
    "models is a file": (_models_is_a_file, "models"),
    "workspace under a file": (_under_a_file, "is a file"),
    "workspace is a file": (_is_a_file, "must be a folder"),
}


@pytest.mark.parametrize("fault", list(BROKEN_FOLDERS))
def test_broken_workspace_folder_gives_a_message(tmp_path: Path, fault: str, capsys) -> None:
    from core.cli import main
    from core.zoo import WorkspaceError

    make, words = BROKEN_FOLDERS[fault]
    ws = make(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match=words):
        Zoo(ws)
    for action in ("list", "repair"):
        assert main(["zoo", action, "--workspace", str(ws)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` made read-only for real: a read-only bind mount (root), else chmod."""
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
        if ok.returncode != 0:
            pytest.skip("cannot make a read-only mount here")
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
            yield
        finally:
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], check=True)  # a file still open
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)


def test_read_only_workspace_is_listed_and_merged_from(tmp_path: Path, capsys) -> None:
    from core.cli import main
    from core.merge import merge
    from core.zoo import WorkspaceError

    ws = tmp_path / "ws"
    _two_models(ws)
    with read_only(ws):
        z = Zoo(ws)
        assert z.read_only
        assert [r.id for r in z.list()] == ["a", "b"]
        merged = merge("average", [z.state_dict("a"), z.state_dict("b", verify=True)])
        z.load_model("a").load_state_dict(merged)
        assert main(["zoo", "list", "--workspace", str(ws)]) == 0
        assert "a" in capsys.readouterr().out
        for write in (
            lambda: _add(z, "c"),
            lambda: z.delete("a"),
            lambda: z.update_metrics("a", {"x": 1}),
            lambda: z.put_record("k", "v", {}),
            lambda: z.repair(),
        ):
            with pytest.raises(WorkspaceError, match="read-only"):
                write()
        assert main(["zoo", "repair", "--workspace", str(ws)]) == 2
        assert "read-only" in capsys.readouterr().err
    assert [r.id for r in Zoo(ws).list()] == ["a", "b"]


# ----------------------------------------------------------------------------- item 10: default zoo
def test_default_build_rebuilds_a_model_whose_file_was_deleted(
    tiny_zoo_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from core.zoo import default_zoo_ids, ensure_default
    from tests.conftest import TINY_PLAN

    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    z = Zoo(ws)
    gone = z.get("mlp-ft-digits")
    (ws / gone.file).unlink()
    assert "mlp-ft-digits" not in {r.id for r in z.list()}
    recs = ensure_default(z, TINY_PLAN, device="cpu")
    assert [r.id for r in recs] == default_zoo_ids(TINY_PLAN)
    assert {r.id for r in z.list()} >= set(default_zoo_ids(TINY_PLAN))
    z.load_model("mlp-ft-digits")
    assert z.get("mlp-ft-digits").created >= gone.created


CLASHES = {
    "another architecture under the base id": ("mlp-base", "cnn", {"width": 16}, "imported"),
    "a fine-tune id held by an import": (
        "mlp-ft-mnist",
        "mlp",
        {"width": 64, "depth": 2},
        "imported",
    ),
    "another width under an independent id": ("cnn-mnist-s1", "cnn", {"width": 16}, "independent"),
}


@pytest.mark.parametrize("clash", list(CLASHES))
def test_default_build_refuses_foreign_models_under_default_ids_before_training(
    tmp_path: Path, clash: str
) -> None:
    from core.zoo import ensure_default
    from tests.conftest import TINY_PLAN

    mid, arch, kwargs, role = CLASHES[clash]
    z = Zoo(tmp_path)
    z.add(
        create_model(arch, **kwargs),
        arch=arch,
        arch_kwargs=kwargs,
        task="mnist",
        name=mid,
        role=role,
    )
    calls: list[dict] = []
    with pytest.raises(ValueError, match=f"'{mid}' is a {role} {arch}.*another name"):
        ensure_default(z, TINY_PLAN, device="cpu", progress=calls.append)
    assert calls == [], "training started before the clash was found"
    assert [r.id for r in z.list()] == [mid]


# ----------------------------------------------------------------------------- item 9: dtypes
CONVERTED = [torch.float16, torch.bfloat16, torch.float64]
REFUSED = {
    "int8": lambda v: (v * 10).to(torch.int8),
    "int64": lambda v: (v * 10).to(torch.int64),
    "bool": lambda v: v > 0,
    "complex64": lambda v: torch.complex(v, v),
    "float64 beyond float32": lambda v: v.double() * 1e300,
}


@pytest.mark.parametrize("dtype", CONVERTED, ids=str)
def test_floating_imports_are_stored_in_the_architecture_dtype_and_merge(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    from core.merge import merge

    z = Zoo(tmp_path)
    ref = _sd(1)
    rec = z.add({k: v.to(dtype) for k, v in ref.items()}, arch="mlp", arch_kwargs=MLP, task="t")
    stored = z.state_dict(rec.id, verify=True)
    assert {v.dtype for v in stored.values()} == {torch.float32}
    assert rec.n_params == sum(v.numel() for v in ref.values())
    for k, v in ref.items():
        torch.testing.assert_close(stored[k], v.to(dtype).float())
    other = z.add(_sd(2), arch="mlp", arch_kwargs=MLP, task="t")
    merged = merge("ties", [stored, z.state_dict(other.id)], base=_sd(0), density=0.5)
    z.add(merged, arch="mlp", arch_kwargs=MLP, task="t", role="merged")


def test_integer_buffers_of_another_width_are_converted(tmp_path: Path) -> None:
    sd = create_model("cnn", width=16).state_dict()
    nbt = [k for k in sd if k.endswith("num_batches_tracked")]
    assert nbt
    sd = {k: v.to(torch.int32) if k in nbt else v for k, v in sd.items()}
    rec = Zoo(tmp_path).add(sd, arch="cnn", arch_kwargs={"width": 16}, task="t")
    assert Zoo(tmp_path).state_dict(rec.id)[nbt[0]].dtype == torch.int64


@pytest.mark.parametrize("kind", list(REFUSED))
def test_integer_bool_complex_and_overflowing_imports_are_refused(
    tmp_path: Path, kind: str
) -> None:
    from core.io import CheckpointError

    z = Zoo(tmp_path)
    sd = _sd(1)
    first = next(iter(sd))
    sd[first] = REFUSED[kind](sd[first])
    with pytest.raises(CheckpointError, match=f"{first}.*(is|overflows)"):
        z.add(sd, arch="mlp", arch_kwargs=MLP, task="t")
    assert len(z) == 0 and z.orphans() == []
