"""Streaming merges that must not lose, expose or silently corrupt anything.

Each test feeds ``python -m core merge`` (``core.cli.main``, or ``stream_merge``) one input a
user could get wrong or an attacker could craft: an OUT_DIR that overlaps the inputs, links
and shard names that leave a model folder, NaN/Inf or overflowing values, malformed headers
and indexes, bad parameters. Every one must end in a clear message (exit code 2 from the CLI),
with the inputs untouched and nothing published.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from core._warnings import MixmergeWarning
from core.cli import main
from core.merge import merge
from core.stream import StreamError, model_tensors, read_header, stream_merge
from tests.helpers.stream import files_opened, make_family, opened_outside, read_out, write_sharded
from tests.helpers.stream import merge_config as cfg_of

# ---------------------------------------------------------------------------------------------
# helpers


@dataclass
class Family:
    tmp: Path  # the test's folder: everything a merge could touch lives under it
    root: Path  # the folder holding every input model
    base: dict[str, torch.Tensor]
    fts: list[dict[str, torch.Tensor]]
    bpath: Path
    paths: list[Path]


@pytest.fixture
def fam(tmp_path: Path) -> Family:
    root = tmp_path / "models"
    base, fts, bpath, paths = make_family(root, n_models=2, n_layers=1, width=4)
    return Family(tmp_path, root, base, fts, bpath, paths)


def write_cfg(path: Path, cfg: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def cli(*args: str | Path) -> tuple[int, str, str]:
    """Run ``python -m core`` in-process: (exit code, stdout, stderr). An exception that
    escapes ``main`` fails the calling test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: links as their target, files as their bytes."""
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", p.read_bytes())
    return out


def write_st(path: Path, header: object, data: bytes = b"", raw: bytes | None = None) -> Path:
    """A file with an 8-byte length, the JSON ``header`` (or ``raw`` header bytes) and ``data``."""
    h = raw if raw is not None else json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(h).to_bytes(8, "little") + h + data)
    return path


# ---------------------------------------------------------------------------------------------
# 1. OUT_DIR never overlaps the inputs or the config; --overwrite replaces only merge outputs


def _overlap_cases() -> dict[str, Callable[[Family], tuple[Path, Path, Path, list[str]]]]:
    """name -> fn(fam) giving (config path, OUT_DIR as typed, the input it overlaps, extra
    CLI flags)."""

    def models_cfg(f: Family, models: list[Path] | None = None, base: Path | None = None):
        return write_cfg(
            f.tmp / "cfg" / "merge.yml",
            cfg_of("task_arithmetic", base or f.bpath, models or f.paths),
        )

    def holds_all(f: Family):
        return models_cfg(f), f.root, f.bpath, ["--overwrite"]

    def is_model(f: Family):
        return models_cfg(f), f.paths[0], f.paths[0], ["--overwrite"]

    def is_base(f: Family):
        return models_cfg(f), f.bpath, f.bpath, ["--overwrite"]

    def inside_model(f: Family):
        return models_cfg(f), f.paths[0] / "merged", f.paths[0], []

    def cwd_with_config(f: Family):
        work = f.tmp / "work"
        c = write_cfg(work / "c.yaml", cfg_of("task_arithmetic", f.bpath, f.paths))
        (work / "notes.txt").write_text("my notes")
        return c, work, c, ["--overwrite"]

    def link_to_model(f: Family):
        (f.tmp / "link").symlink_to(f.paths[0], target_is_directory=True)
        return models_cfg(f), f.tmp / "link", f.paths[0], ["--overwrite"]

    def inside_linked_model(f: Family):
        (f.tmp / "link").symlink_to(f.paths[0], target_is_directory=True)
        return models_cfg(f), f.tmp / "link" / "sub", f.paths[0], []

    def model_through_link(f: Family):
        (f.tmp / "mlink").symlink_to(f.paths[1], target_is_directory=True)
        c = models_cfg(f, models=[f.paths[0], f.tmp / "mlink"])
        return c, f.paths[1], f.paths[1], ["--overwrite"]

    def link_to_root(f: Family):
        (f.tmp / "all").symlink_to(f.root, target_is_directory=True)
        return models_cfg(f), f.tmp / "all", f.bpath, ["--overwrite"]

    def holds_single_file(f: Family):
        single = f.tmp / "single"
        single.mkdir()
        save_file(dict(f.fts[0]), str(single / "a.safetensors"))
        c = models_cfg(f, models=[single / "a.safetensors", f.paths[1]])
        return c, single, single / "a.safetensors", ["--overwrite"]

    def config_through_link(f: Family):
        work = f.tmp / "work"
        write_cfg(work / "c.yaml", cfg_of("task_arithmetic", f.bpath, f.paths))
        (f.tmp / "clink").symlink_to(work, target_is_directory=True)
        return f.tmp / "clink" / "c.yaml", work, work / "c.yaml", ["--overwrite"]

    return {
        fn.__name__: fn
        for fn in (
            holds_all,
            is_model,
            is_base,
            inside_model,
            cwd_with_config,
            link_to_model,
            inside_linked_model,
            model_through_link,
            link_to_root,
            holds_single_file,
            config_through_link,
        )
    }


OVERLAP = _overlap_cases()


@pytest.mark.parametrize("case", sorted(OVERLAP))
def test_out_dir_overlapping_an_input_is_refused_before_anything_changes(
    fam: Family, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out, overlapped, flags = OVERLAP[case](fam)
    monkeypatch.chdir(cfg.parent)
    before = snapshot(fam.tmp)
    rc, stdout, err = cli("merge", cfg, out, "--quiet", *flags)
    assert rc == 2, (stdout, err)
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(out.resolve()) in err, err  # both paths named, links resolved
    assert str(overlapped.resolve()) in err, err
    assert snapshot(fam.tmp) == before  # nothing written, nothing removed, no partial folder


def test_overwrite_replaces_only_a_previous_merge_output(fam: Family) -> None:
    cfg = write_cfg(fam.tmp / "c.yml", cfg_of("task_arithmetic", fam.bpath, fam.paths))
    notes = fam.tmp / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    rc, _, err = cli("merge", cfg, notes, "--quiet", "--overwrite")
    assert rc == 2 and "only a previous merge output" in err and str(notes) in err
    assert (notes / "thesis.tex").read_text() == "years of work"

    a_file = fam.tmp / "a_file"
    a_file.write_text("keep")
    rc, _, err = cli("merge", cfg, a_file, "--quiet", "--overwrite")
    assert rc == 2 and "not a folder" in err and a_file.read_text() == "keep"

    empty = fam.tmp / "empty"
    empty.mkdir()
    assert cli("merge", cfg, empty, "--quiet", "--overwrite")[0] == 0
    assert len(read_out(empty)) == len(fam.base)

    prev = fam.tmp / "prev"
    assert cli("merge", cfg, prev, "--quiet")[0] == 0
    (prev / "eval.txt").write_text("scores of the previous merge")
    assert cli("merge", cfg, prev, "--quiet", "--overwrite")[0] == 0
    assert not (prev / "eval.txt").exists() and len(read_out(prev)) == len(fam.base)

    (prev / "results").mkdir()  # a merge output never has folders: someone's data
    (prev / "results" / "run1.csv").write_text("1,2")
    rc, _, err = cli("merge", cfg, prev, "--quiet", "--overwrite")
    assert rc == 2 and "results" in err and (prev / "results" / "run1.csv").exists()

    # a mergekit output (mergekit_config.yml + index) is recognised too
    mk = write_sharded(fam.fts[0], fam.tmp / "mk", extra_files=False)
    (mk / "mergekit_config.yml").write_text("merge_method: linear\n")
    assert cli("merge", cfg, mk, "--quiet", "--overwrite")[0] == 0
    assert (mk / "merge_recipe.json").exists()
    assert [p.name for p in fam.tmp.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


def _make_read_only(d: Path) -> Callable[[], None]:
    """Make folder ``d`` read-only for this process (chmod, or ``chattr +i`` as root): returns
    the undo function, or skips the test where neither works."""
    if os.geteuid() != 0:
        d.chmod(0o555)

        def undo() -> None:
            d.chmod(0o755)
    else:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        res = subprocess.run(["chattr", "+i", str(d)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"chattr +i is not available here: {res.stderr.decode().strip()}")

        def undo() -> None:
            subprocess.run(["chattr", "-i", str(d)], check=True)

    try:
        (d / ".probe").mkdir()
    except OSError:
        return undo
    (d / ".probe").rmdir()
    undo()
    pytest.skip("this file system lets the process write into a read-only folder")


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    undos: list[Callable[[], None]] = []
    yield lambda d: undos.append(_make_read_only(d))
    for undo in reversed(undos):
        undo()


def test_read_only_out_dir_gives_a_message(fam: Family, read_only) -> None:
    cfg = write_cfg(fam.tmp / "c.yml", cfg_of("task_arithmetic", fam.bpath, fam.paths))
    ro = fam.tmp / "ro"
    ro.mkdir()
    read_only(ro)
    rc, _, err = cli("merge", cfg, ro / "out", "--quiet")
    assert rc == 2 and "cannot write" in err and str(ro) in err, err
    # a previous output that cannot be removed is refused before the merge runs
    prev = fam.tmp / "prev"
    assert cli("merge", cfg, prev, "--quiet")[0] == 0
    read_only(prev)
    rc, _, err = cli("merge", cfg, prev, "--quiet", "--overwrite")
    assert rc == 2 and "read-only" in err and str(prev) in err, err
    assert [p.name for p in fam.tmp.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


# ---------------------------------------------------------------------------------------------
# 3. only regular files inside the model folder are copied into the output


def test_tokenizer_source_must_be_one_of_the_models(fam: Family) -> None:
    secrets = fam.tmp / "home" / ".ssh"
    secrets.mkdir(parents=True)
    (secrets / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    cfg = cfg_of("task_arithmetic", fam.bpath, fam.paths)
    cfg["tokenizer_source"] = str(secrets)
    with pytest.raises(StreamError, match="tokenizer_source.*one of the models"):
        stream_merge(cfg, fam.tmp / "out", progress=False)
    assert not (fam.tmp / "out").exists()
    cfg["tokenizer_source"] = str(fam.paths[1])  # a model of the merge: fine
    (fam.paths[1] / "tokenizer.json").write_text('{"from": "ft1"}')
    stream_merge(cfg, fam.tmp / "out", progress=False)
    assert (fam.tmp / "out" / "tokenizer.json").read_text() == '{"from": "ft1"}'


def test_links_and_odd_files_in_a_model_folder_are_not_copied(fam: Family) -> None:
    secret = fam.tmp / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY BYTES")
    src = fam.bpath
    (src / "tokenizer_config.json").symlink_to(secret)  # link out of the folder
    (src / "vocab.json").symlink_to(os.path.relpath(secret, src))  # relative link out
    (src / "merges.txt").symlink_to(fam.paths[0] / "config.json")  # into another model
    (src / "real.model").write_text("sentencepiece")
    (src / "tokenizer.model").symlink_to("real.model")  # link inside the folder: fine
    (src / "sub").mkdir()
    (src / "sub" / "x.txt").write_text("nested")
    os.mkfifo(src / "fifo.json")  # reading it would hang the merge
    cfg = cfg_of("task_arithmetic", fam.bpath, fam.paths)
    with pytest.warns(MixmergeWarning, match="not copied.*tokenizer_config.json"):
        rep = stream_merge(cfg, fam.tmp / "out", progress=False)
    out = fam.tmp / "out"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "real.model", "tokenizer.model"} <= names
    assert not names & {"tokenizer_config.json", "vocab.json", "merges.txt", "sub", "fifo.json"}
    assert (out / "tokenizer.model").read_text() == "sentencepiece"
    assert not (out / "tokenizer.model").is_symlink()
    assert set(rep.skipped_files) == {
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "fifo.json",
    }
    for p in out.iterdir():
        assert b"PRIVATE KEY" not in p.read_bytes()


def _hf_cache_snapshot(root: Path, sd: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face hub cache repo: files in blobs/, the snapshot holds links into it."""
    repo = root / "models--org--toy"
    plain = write_sharded(sd, root / "plain")
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(plain.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.move(str(f), blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    plain.rmdir()
    return snap


def test_hugging_face_cache_snapshots_still_merge(fam: Family) -> None:
    """Links from a hub cache snapshot into its own blobs/ are followed (shards and files)."""
    snap = _hf_cache_snapshot(fam.tmp / "hub", fam.fts[0])
    cfg = cfg_of("task_arithmetic", fam.bpath, [snap, fam.paths[1]])
    cfg["tokenizer_source"] = str(snap)
    stream_merge(cfg, fam.tmp / "out", progress=False)
    assert json.loads((fam.tmp / "out" / "config.json").read_text())["model_type"] == "toy"
    stream_merge(cfg_of("task_arithmetic", fam.bpath, fam.paths), fam.tmp / "ref", progress=False)
    got, want = read_out(fam.tmp / "out"), read_out(fam.tmp / "ref")
    assert len(want) == len(fam.base) and got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k


# ---------------------------------------------------------------------------------------------
# 4. shard names in the index stay inside the model folder


def _with_weight_map(folder: Path, fn: Callable[[dict], object]) -> Path:
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = fn(data["weight_map"])
    index.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "shard",
    [
        "../other/model.safetensors",
        "../../../../../../../../etc/passwd",
        "SECRET_ABS",
        "sub/../../other/model.safetensors",
        "./../other/model.safetensors",
        "LINK_OUT",
    ],
)
def test_shard_names_cannot_leave_the_model_folder(fam: Family, shard: str) -> None:
    other = fam.tmp / "other"
    other.mkdir()
    save_file(dict(fam.fts[1]), str(other / "model.safetensors"))  # a valid safetensors file
    secret = fam.tmp / "secret.safetensors"
    secret.write_bytes(b"root:x:0:0:TOPSECRET" * 4)
    victim = write_sharded(fam.fts[0], fam.tmp / "victim")
    if shard == "SECRET_ABS":
        shard = str(secret)
    if shard == "LINK_OUT":  # a shard inside the folder that is a link out of it
        (victim / "evil.safetensors").symlink_to(other / "model.safetensors")
        shard = "evil.safetensors"
    _with_weight_map(victim, lambda wm: dict.fromkeys(wm, shard))
    with files_opened() as opened, pytest.raises(StreamError) as err:
        model_tensors(victim)
    msg = str(err.value)
    assert "model.safetensors.index.json" in msg and "outside" in msg, msg
    assert "TOPSECRET" not in msg and str(int.from_bytes(b"root:x:0", "little")) not in msg
    assert not opened_outside(opened, victim, fam.tmp)


def test_shards_found_without_an_index_cannot_be_links_out(fam: Family) -> None:
    folder = fam.tmp / "noindex"
    folder.mkdir()
    save_file(dict(fam.fts[1]), str(fam.tmp / "elsewhere.safetensors"))
    (folder / "model.safetensors").symlink_to(fam.tmp / "elsewhere.safetensors")
    with files_opened() as opened, pytest.raises(StreamError, match="outside"):
        model_tensors(folder)
    assert not opened_outside(opened, folder, fam.tmp)


# ---------------------------------------------------------------------------------------------
# 7. NaN/Inf, overlapping offsets, integer models and float16 overflow


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["model", "base", "inf"])
@pytest.mark.parametrize("method", ["task_arithmetic", "ties_global", "linear"])
def test_stream_refuses_nan_and_inf_like_the_in_memory_merge(
    fam: Family, where: str, method: str
) -> None:
    if method == "linear" and where == "base":
        pytest.skip("linear does not read the base model")
    key = "model.layers.0.mlp.up_proj.weight"
    bad = dict(fam.base if where == "base" else fam.fts[0])
    bad[key] = bad[key].clone()
    bad[key][1, 2] = float("inf") if where == "inf" else float("nan")
    path = write_sharded(bad, fam.tmp / "bad")
    models = fam.paths if where == "base" else [path, fam.paths[1]]
    base = path if where == "base" else fam.bpath
    if method == "ties_global":
        cfg = cfg_of("ties", base, models, density=0.5, trim="global")
    else:
        cfg = cfg_of(method, None if method == "linear" else base, models)
    with pytest.raises(StreamError, match=rf"'{key}' has NaN/Inf values") as err:
        stream_merge(cfg, fam.tmp / "out", progress=False)
    assert str(path) in str(err.value)  # names the model
    assert not (fam.tmp / "out").exists()
    assert not [p for p in fam.tmp.iterdir() if ".partial-" in p.name]
    # the in-memory API refuses the same input
    sds = [bad, fam.fts[1]] if where != "base" else fam.fts
    with pytest.raises(ValueError, match=rf"'{key}'\] has NaN/Inf values"):
        merge("task_arithmetic", sds, base=bad if where == "base" else fam.base)


def _relabel(path: Path, edit: Callable[[dict], None]) -> Path:
    """Rewrite the header of a safetensors file (same data bytes)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    return write_st(path, header, raw[8 + n :])


@pytest.mark.parametrize(
    "case",
    ["overlap", "same_range", "gap", "past_end", "trailing_bytes", "inside_other", "reversed"],
)
def test_header_offsets_are_checked_like_the_reference_loader(tmp_path: Path, case: str) -> None:
    from safetensors import safe_open

    f = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(4.0), "b": torch.arange(4.0) + 10, "c": torch.zeros(2)}, str(f))

    def edit(h: dict) -> None:
        a, b, c = (h[k]["data_offsets"] for k in "abc")
        if case == "overlap":  # b starts halfway into a and has a's size
            h["b"]["data_offsets"] = [a[0] + 8, a[0] + 24]
        elif case == "same_range":  # b reads a's bytes: the merge would mix two tensors
            h["b"]["data_offsets"] = list(a)
        elif case == "gap":
            h["c"]["data_offsets"] = [c[0] + 4, c[1] + 4]
        elif case == "past_end":
            h["c"]["data_offsets"] = [c[0] + 8, c[1] + 8]
        elif case == "trailing_bytes":
            pass
        elif case == "inside_other":  # a zero-size tensor placed inside a's range
            h["z"] = {"dtype": "F32", "shape": [0], "data_offsets": [a[0] + 4, a[0] + 4]}
        elif case == "reversed":
            h["c"]["data_offsets"] = [c[1], c[0]]

    _relabel(f, edit)
    if case == "trailing_bytes":
        f.write_bytes(f.read_bytes() + b"\0" * 8)
    with pytest.raises(Exception):  # noqa: B017 - the reference's error types vary by version
        with safe_open(str(f), "pt") as ref:
            [ref.get_tensor(k) for k in ref.keys()]  # noqa: SIM118
    with pytest.raises(StreamError, match="m.safetensors"):
        read_header(f)


def test_integer_tensors_are_never_cast_or_silently_copied(fam: Family) -> None:
    """Integer tensors are copied from the base, never cast to ``dtype``: a model whose
    weights are integer (quantized) is refused rather than copied."""
    q = {k: (v * 20).round().to(torch.int8) for k, v in fam.fts[0].items()}
    qpath = write_sharded(q, fam.tmp / "int8")
    cfg = {**cfg_of("linear", None, [qpath, fam.paths[1]]), "dtype": "float32"}
    with pytest.raises(StreamError, match=r"lm_head.weight.*torch.int8.*torch.float32"):
        stream_merge(cfg, fam.tmp / "out", progress=False)
    q2 = {k: (v * 20).round().to(torch.int8) for k, v in fam.fts[1].items()}
    q2path = write_sharded(q2, fam.tmp / "int8b")
    cfg = {**cfg_of("linear", None, [qpath, q2path]), "dtype": "float32"}
    with pytest.raises(StreamError, match="no floating-point tensor"):
        stream_merge(cfg, fam.tmp / "out", progress=False)
    # an integer weight next to float ones, different in each model: refused, not copied
    a, b = dict(fam.fts[0]), dict(fam.fts[1])
    a["model.codes"] = torch.arange(6, dtype=torch.int32)
    b["model.codes"] = torch.arange(6, dtype=torch.int32).flip(0)
    pa, pb = write_sharded(a, fam.tmp / "ca"), write_sharded(b, fam.tmp / "cb")
    with pytest.raises(StreamError, match="model.codes.*differs"):
        stream_merge(cfg_of("linear", None, [pa, pb]), fam.tmp / "out", progress=False)
    assert not (fam.tmp / "out").exists()
    # counters (one element) are copied from the base, in their own dtype, as core.merge does
    b["model.codes"] = a["model.codes"]
    b["model.step"] = torch.tensor([9], dtype=torch.int64)
    pb = write_sharded(b, fam.tmp / "cb2")
    stream_merge(
        {**cfg_of("linear", None, [pa, pb]), "dtype": "float32"}, fam.tmp / "out", progress=False
    )
    got = read_out(fam.tmp / "out")
    assert got["model.step"].dtype == torch.int64 and int(got["model.step"]) == 7
    assert torch.equal(got["model.codes"], a["model.codes"])


def test_float16_overflow_is_refused_in_both_paths(fam: Family) -> None:
    big = {k: torch.full_like(v, 40000.0, dtype=torch.float16) for k, v in fam.base.items()}
    big["model.step"] = fam.base["model.step"]
    zero = {k: torch.zeros_like(v) for k, v in big.items()}
    overflow = r"tensor '[\w.]+' overflows torch.float16"
    with pytest.raises(ValueError, match=overflow):  # 40000 + 40000 > 65504
        merge("task_arithmetic", [big, big], base=zero, scale=1.0)
    pb, pz = write_sharded(big, fam.tmp / "big"), write_sharded(zero, fam.tmp / "zero")
    with pytest.raises(StreamError, match=overflow):
        stream_merge(cfg_of("task_arithmetic", pz, [pb, pb]), fam.tmp / "out", progress=False)
    assert not (fam.tmp / "out").exists()
    # finite float32 inputs whose merge is stored as float16: the cast overflows
    huge = {
        k: torch.full_like(v, 1e5) if v.is_floating_point() else v for k, v in fam.fts[0].items()
    }
    ph = write_sharded(huge, fam.tmp / "huge")
    cfg = {**cfg_of("linear", None, [ph, ph]), "out_dtype": "float16"}
    with pytest.raises(StreamError, match=overflow):
        stream_merge(cfg, fam.tmp / "out", progress=False)
    # asking for a float32 result merges the float16 models fine
    cfg = {**cfg_of("task_arithmetic", pz, [pb, pb]), "dtype": "float32", "out_dtype": "float32"}
    stream_merge(cfg, fam.tmp / "out", progress=False)
    assert float(read_out(fam.tmp / "out")["lm_head.weight"].max()) == 80000.0


# ---------------------------------------------------------------------------------------------
# 12. every bad config or input gives a message, never a traceback


def _bad_index(f: Family, fn: Callable[[dict], object] | None = None, text: str | None = None):
    folder = write_sharded(f.fts[0], f.tmp / "bad")
    index = folder / "model.safetensors.index.json"
    if text is not None:
        index.write_text(text)
    elif fn is not None:
        index.write_text(json.dumps(fn(json.loads(index.read_text()))))
    return cfg_of("linear", None, [folder, f.paths[1]])


def _bad_header(f: Family, header: object, data: bytes = b"") -> dict:
    path = write_st(f.tmp / "bad.safetensors", header, data)
    return cfg_of("linear", None, [path, path])


def _with(f: Family, method: str = "ties", **params: object) -> dict:
    return cfg_of(method, f.bpath, f.paths, **params)


BAD: dict[str, tuple[Callable[[Family], dict | str | bytes], tuple[str, ...]]] = {
    "method_list": (lambda f: {**_with(f), "merge_method": ["ties"]}, ("merge_method", "['ties']")),
    "method_int": (lambda f: {**_with(f), "merge_method": 3}, ("merge_method",)),
    "dtype_list": (lambda f: {**_with(f), "dtype": ["float32"]}, ("dtype", "['float32']")),
    "weight_map_ints": (
        lambda f: _bad_index(f, lambda i: {**i, "weight_map": dict.fromkeys(i["weight_map"], 1)}),
        ("model.safetensors.index.json", "weight_map", "a number"),
    ),
    "weight_map_lists": (
        lambda f: _bad_index(
            f, lambda i: {**i, "weight_map": {k: [v] for k, v in i["weight_map"].items()}}
        ),
        ("model.safetensors.index.json", "weight_map", "a list"),
    ),
    "weight_map_missing": (
        lambda f: _bad_index(f, lambda i: {"metadata": i["metadata"]}),
        ("model.safetensors.index.json", "weight_map"),
    ),
    "weight_map_not_a_mapping": (
        lambda f: _bad_index(f, lambda i: {**i, "weight_map": ["a", "b"]}),
        ("model.safetensors.index.json", "weight_map"),
    ),
    "weight_map_empty": (
        lambda f: _bad_index(f, lambda i: {**i, "weight_map": {}}),
        ("no tensors",),
    ),
    "index_not_json": (
        lambda f: _bad_index(f, text="{not json"),
        ("model.safetensors.index.json", "not valid JSON"),
    ),
    "index_a_list": (
        lambda f: _bad_index(f, text="[1, 2]"),
        ("model.safetensors.index.json", "JSON object"),
    ),
    "header_a_list": (lambda f: _bad_header(f, [1, 2]), ("bad.safetensors", "JSON object")),
    "header_negative_shape": (
        lambda f: _bad_header(
            f, {"a": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}, b"\0" * 16
        ),
        ("bad.safetensors", "'a'", "shape"),
    ),
    "header_missing_offsets": (
        lambda f: _bad_header(f, {"a": {"dtype": "F32", "shape": [4]}}, b"\0" * 16),
        ("bad.safetensors", "'a'", "data_offsets"),
    ),
    "header_entry_not_object": (
        lambda f: _bad_header(f, {"a": [1, 2, 3]}),
        ("bad.safetensors", "'a'"),
    ),
    "zero_tensors": (lambda f: _bad_header(f, {}), ("bad.safetensors", "no tensors")),
    "density_nan": (lambda f: _with(f, density=float("nan")), ("parameters.density", "nan")),
    "weight_abc": (lambda f: _with(f, weight="abc"), ("parameters.weight", "'abc'")),
    "model_weight_abc": (
        lambda f: {
            **_with(f, "task_arithmetic"),
            "models": [{"model": str(f.paths[0]), "parameters": {"weight": "abc"}}],
        },
        ("models[0].parameters.weight", "'abc'"),
    ),
    "dare_ties_density_negative": (
        lambda f: _with(f, "dare_ties", density=-1),
        ("parameters.density", "-1"),
    ),
    "dare_linear_density_zero": (
        lambda f: _with(f, "dare_linear", density=0),
        ("parameters.density", "got 0"),
    ),
    "gradient_with_nan": (
        lambda f: _with(f, "task_arithmetic", weight=[0.0, float("nan")]),
        ("parameters.weight", "nan"),
    ),
    "filter_not_text": (
        lambda f: _with(f, "task_arithmetic", weight=[{"filter": 3, "value": 1.0}]),
        ("parameters.weight", "filter"),
    ),
    "filter_without_value": (
        lambda f: _with(f, "task_arithmetic", weight=[{"filter": "mlp"}]),
        ("parameters.weight", "value"),
    ),
    "normalize_text": (lambda f: _with(f, normalize="yes"), ("parameters.normalize", "'yes'")),
    "trim_unknown": (lambda f: _with(f, trim="layer"), ("parameters.trim", "'layer'")),
    "t_out_of_range": (
        lambda f: {**cfg_of("slerp", f.bpath, f.paths[:1]), "parameters": {"t": 1.5}},
        ("parameters.t", "1.5"),
    ),
    "model_ref_a_list": (
        lambda f: {**_with(f), "models": [{"model": [str(f.paths[0])]}]},
        ("models[0].model",),
    ),
    "yaml_python_tag": (
        lambda f: "merge_method: !!python/object/apply:os.system ['touch pwned']\n",
        ("not valid YAML",),
    ),
    "yaml_self_reference": (
        lambda f: f"merge_method: linear\nmodels: [{f.paths[0]}]\nparameters: &p {{x: [*p]}}\n",
        ("refers to itself",),
    ),
    "yaml_alias_bomb": (
        lambda f: (
            "merge_method: linear\n"
            + "".join(
                f"p{i}: &p{i} [{', '.join([f'*p{i - 1}'] * 9)}]\n" for i in range(1, 8)
            ).replace(
                "p1: &p1 [*p0, *p0, *p0, *p0, *p0, *p0, *p0, *p0, *p0]",
                "p1: &p1 [x, x, x, x, x, x, x, x, x]",
            )
        ),
        ("expands to more than",),
    ),
    "yaml_not_utf8": (lambda f: "merge_method: t\xe9\n".encode("latin-1"), ("UTF-8",)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_give_a_message_and_exit_code_2(
    fam: Family, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, expected = BAD[case]
    cfg = build(fam)
    path = fam.tmp / "c.yml"
    if isinstance(cfg, bytes):
        path.write_bytes(cfg)
    else:
        write_cfg(path, cfg)
    monkeypatch.chdir(fam.tmp)
    rc, _, err = cli("merge", path, fam.tmp / "out", "--quiet")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    for word in expected:
        assert word in err, (word, err)
    assert "drop must be" not in err  # the user wrote density, not drop
    assert not (fam.tmp / "out").exists() and not (fam.tmp / "pwned").exists()
    assert not [p for p in fam.tmp.iterdir() if ".partial-" in p.name]


def test_fp16_models_still_merge_and_inputs_unchanged(fam: Family) -> None:
    """The new checks keep the ordinary paths: float16 models, a zero-size tensor."""
    a = {k: v.half() if v.is_floating_point() else v for k, v in fam.fts[0].items()}
    b = {k: v.half() if v.is_floating_point() else v for k, v in fam.fts[1].items()}
    a["model.empty"] = torch.zeros(0, 3, dtype=torch.float16)
    b["model.empty"] = torch.zeros(0, 3, dtype=torch.float16)
    pa, pb = write_sharded(a, fam.tmp / "a"), write_sharded(b, fam.tmp / "b")
    before = snapshot(fam.tmp / "a")
    stream_merge(cfg_of("linear", None, [pa, pb]), fam.tmp / "out", progress=False)
    got = read_out(fam.tmp / "out")
    want = merge("average", [a, b])
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    assert snapshot(fam.tmp / "a") == before


def test_the_fast_finiteness_check_is_exact() -> None:
    """``first_nonfinite`` sums each tensor: a finite tensor whose sum overflows is still
    finite, and every NaN/Inf is found, in every float dtype."""
    from core.merge._base import first_nonfinite

    big16 = torch.full((10,), 60000.0, dtype=torch.float16)  # sum overflows float16
    big64 = torch.tensor([1e308, 1e308], dtype=torch.float64)  # sum overflows float64
    ints = torch.arange(5)
    assert first_nonfinite([big16, big64, ints, torch.zeros(0)]) is None
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for bad in (float("nan"), float("inf"), -float("inf")):
            x = torch.ones(1000, dtype=dtype)
            x[777] = bad
            assert first_nonfinite([torch.ones(3, dtype=dtype), big16, x]) == 2, (dtype, bad)
        pair = torch.tensor([float("inf"), -float("inf")], dtype=dtype)  # sums to NaN
        assert first_nonfinite([pair]) == 0
