"""``slices:`` configs (passthrough stacks and slices merged by a method) that must not lose,
expose or overwrite anything: an OUT_DIR over a source, a slice's own base or the config,
links, model paths naming files outside any model, shards that leave a model folder, bad
layer ranges. Each ends in a clear message (exit code 2 from ``python -m core merge``) with
every file under the test's folder unchanged and nothing published.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from core._warnings import MixmergeWarning
from core.stream import StreamError, stream_merge
from tests.helpers.stream import files_opened, make_family, opened_outside, read_out
from tests.stream.test_stream_trust import Family, cli, snapshot, write_cfg


@pytest.fixture
def fam(tmp_path: Path) -> Family:
    root = tmp_path / "models"
    base, fts, bpath, paths = make_family(root, n_models=2, n_layers=3, width=4)
    for p in (bpath, *paths):
        conf = json.loads((p / "config.json").read_text())
        (p / "config.json").write_text(json.dumps({**conf, "num_hidden_layers": 3}))
    return Family(tmp_path, root, base, fts, bpath, paths)


def src(model: Path | str, lo: int, hi: int) -> dict[str, Any]:
    return {"model": str(model), "layer_range": [lo, hi]}


def merged_slices(f: Family, **top: Any) -> dict[str, Any]:
    """task_arithmetic over two slices; the second slice has its own base_model (ft1)."""
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(f.bpath),
        "slices": [
            {"sources": [src(f.bpath, 0, 2), src(f.paths[0], 0, 2)]},
            {
                "sources": [src(f.paths[1], 1, 3), src(f.paths[0], 1, 3)],
                "base_model": str(f.paths[1]),
            },
        ],
        **top,
    }


def stacked(f: Family, **top: Any) -> dict[str, Any]:
    """passthrough: layers 0-1 of ft0, then 1-2 of ft1."""
    return {
        "merge_method": "passthrough",
        "slices": [{"sources": [src(f.paths[0], 0, 2)]}, {"sources": [src(f.paths[1], 1, 3)]}],
        **top,
    }


KINDS: dict[str, Callable[..., dict[str, Any]]] = {"merged": merged_slices, "stacked": stacked}


def refused(f: Family, cfg: Path, out: Path, *flags: str) -> str:
    """Run the CLI, expect exit code 2 with a one-line message and nothing changed; the
    message."""
    before = snapshot(f.tmp)
    rc, stdout, err = cli("merge", cfg, out, "--quiet", *flags)
    assert rc == 2, (stdout, err)
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert snapshot(f.tmp) == before  # nothing written, nothing removed, no partial folder
    return err


# ---- OUT_DIR over the inputs ----------------------------------------------------------------


def _overlaps() -> dict[str, Callable[[Family, str], tuple[Path, Path, Path, list[str]]]]:
    """name -> fn(fam, kind) giving (config file, OUT_DIR as typed, the input it overlaps,
    flags)."""

    def cfg(f: Family, kind: str, **top: Any) -> Path:
        return write_cfg(f.tmp / "cfg" / "slices.yml", KINDS[kind](f, **top))

    def is_source(f: Family, kind: str):
        return cfg(f, kind), f.paths[1], f.paths[1], ["--overwrite"]

    def inside_source(f: Family, kind: str):
        return cfg(f, kind), f.paths[0] / "merged", f.paths[0], []

    def holds_every_source(f: Family, kind: str):
        return cfg(f, kind), f.root, f.root, ["--overwrite"]  # names the first model in it

    def link_to_source(f: Family, kind: str):
        (f.tmp / "link").symlink_to(f.paths[1], target_is_directory=True)
        return cfg(f, kind), f.tmp / "link", f.paths[1], ["--overwrite"]

    def source_through_link(f: Family, kind: str):
        (f.tmp / "mlink").symlink_to(f.paths[0], target_is_directory=True)
        c = KINDS[kind](f)
        for s in c["slices"]:
            for x in s["sources"]:
                if x["model"] == str(f.paths[0]):
                    x["model"] = str(f.tmp / "mlink")
        return write_cfg(f.tmp / "cfg" / "slices.yml", c), f.paths[0], f.paths[0], ["--overwrite"]

    def config_folder(f: Family, kind: str):
        c = cfg(f, kind)
        (c.parent / "notes.txt").write_text("my notes")
        return c, c.parent, c, ["--overwrite"]

    def tokenizer_source(f: Family, kind: str):
        c = cfg(f, kind, tokenizer_source=str(f.paths[1]))
        return c, f.paths[1] / "tok", f.paths[1], []

    return {
        fn.__name__: fn
        for fn in (
            is_source,
            inside_source,
            holds_every_source,
            link_to_source,
            source_through_link,
            config_folder,
            tokenizer_source,
        )
    }


OVERLAPS = _overlaps()


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_out_dir_over_a_slice_input_is_refused(fam: Family, case: str, kind: str) -> None:
    cfg, out, overlapped, flags = OVERLAPS[case](fam, kind)
    err = refused(fam, cfg, out, *flags)
    assert str(out.resolve()) in err and str(overlapped.resolve()) in err, err


def test_out_dir_over_a_slices_own_base_is_refused(fam: Family) -> None:
    """ft1 is named only as the second slice's base_model (and a source): still protected."""
    cfg = write_cfg(fam.tmp / "c.yml", merged_slices(fam))
    err = refused(fam, cfg, fam.paths[1], "--overwrite")
    assert "is input model" in err and str(fam.paths[1].resolve()) in err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_overwrite_replaces_only_a_previous_merge_output(fam: Family, kind: str) -> None:
    cfg = write_cfg(fam.tmp / "c.yml", KINDS[kind](fam))
    precious = fam.tmp / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    err = refused(fam, cfg, precious, "--overwrite")
    assert "previous merge output" in err
    # a link named OUT_DIR pointing at someone's folder: not replaced, not written through
    (fam.tmp / "out_link").symlink_to(precious, target_is_directory=True)
    refused(fam, cfg, fam.tmp / "out_link")
    refused(fam, cfg, fam.tmp / "out_link", "--overwrite")
    assert (precious / "thesis.tex").read_text() == "years of work"
    # a previous output of the same config is replaced
    out = fam.tmp / "out"
    assert cli("merge", cfg, out, "--quiet")[0] == 0
    first = read_out(out)
    assert cli("merge", cfg, out, "--quiet", "--overwrite")[0] == 0
    again = read_out(out)
    assert set(first) == set(again) and all(torch.equal(first[k], again[k]) for k in first)
    assert [p.name for p in fam.tmp.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


# ---- model paths and shards outside a model -------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("ref", ["secret_file", "etc_passwd", "dotdot_missing", "empty_dir"])
def test_a_source_that_is_no_model_gives_a_message(fam: Family, kind: str, ref: str) -> None:
    secret = fam.tmp / "secret.txt"
    secret.write_text("root:x:0:0:TOPSECRET\n" * 8)
    (fam.tmp / "empty").mkdir()
    target = {
        "secret_file": "../secret.txt",  # relative to the config's folder
        "etc_passwd": "/etc/passwd",
        "dotdot_missing": "../../../../nowhere/model",
        "empty_dir": "../empty",
    }[ref]
    cfg_map = KINDS[kind](fam)
    cfg_map["slices"][0]["sources"][-1]["model"] = target
    cfg = write_cfg(fam.tmp / "cfg" / "c.yml", cfg_map)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cfg.parent)
        err = refused(fam, cfg, fam.tmp / "out")
    assert "slices[0].sources" in err or "safetensors" in err, err
    assert "TOPSECRET" not in err and "root:x" not in err, err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_source_whose_shards_leave_its_folder_is_refused_unread(fam: Family, kind: str) -> None:
    other = fam.tmp / "other"
    other.mkdir()
    save_file(dict(fam.fts[1]), str(other / "model.safetensors"))
    index = fam.paths[0] / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = dict.fromkeys(data["weight_map"], "../../other/model.safetensors")
    index.write_text(json.dumps(data))
    with files_opened() as opened, pytest.raises(StreamError, match="outside"):
        stream_merge(KINDS[kind](fam), fam.tmp / "out", progress=False)
    assert not opened_outside(opened, fam.root, fam.tmp)
    assert not (fam.tmp / "out").exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_side_files_that_link_out_are_not_copied(fam: Family, kind: str) -> None:
    """The output takes config.json and the tokenizer from the first slice's model (ft0 for
    a stack, the config's base for the merge): a link out of it is named in a warning."""
    secret = fam.tmp / "secret.txt"
    secret.write_text("TOPSECRET")
    first = fam.paths[0] if kind == "stacked" else fam.bpath
    (first / "tokenizer.json").unlink()
    (first / "tokenizer.json").symlink_to(secret)
    with pytest.warns(MixmergeWarning, match="tokenizer.json"):
        stream_merge(KINDS[kind](fam), fam.tmp / "out", progress=False)
    out = fam.tmp / "out"
    assert not (out / "tokenizer.json").exists()
    assert not any(p.is_symlink() for p in out.iterdir())
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4


# ---- bad layer ranges and slices ------------------------------------------------------------

BAD_RANGES: list[Any] = [
    [-1, 1],
    [1, 1],
    [2, 1],
    [0],
    [0, 1, 2],
    "0-2",
    [0.0, 2],
    [True, 2],
    None,
    {"start": 0, "end": 2},
]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("lr", BAD_RANGES, ids=repr)
def test_bad_layer_range_gives_a_message(fam: Family, kind: str, lr: Any) -> None:
    cfg_map = KINDS[kind](fam)
    cfg_map["slices"][0]["sources"][0]["layer_range"] = lr
    err = refused(fam, write_cfg(fam.tmp / "c.yml", cfg_map), fam.tmp / "out")
    assert "slices[0].sources[0].layer_range must be [start, end)" in err, err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_layers_a_source_does_not_have_give_a_message(fam: Family, kind: str) -> None:
    cfg_map = KINDS[kind](fam)
    for s in cfg_map["slices"][1]["sources"]:
        s["layer_range"] = [2, 5]
    err = refused(fam, write_cfg(fam.tmp / "c.yml", cfg_map), fam.tmp / "out")
    assert "slices[1]" in err and "no layer" in err and "3 layers" in err, err


@pytest.mark.parametrize(
    "slices",
    [
        [],
        "all",
        [{"sources": []}],
        [["not", "a", "mapping"]],
        [{"sources": [{"layer_range": [0, 1]}]}],
    ],
    ids=repr,
)
def test_malformed_slices_give_a_message(fam: Family, slices: Any) -> None:
    for kind in KINDS:
        cfg_map = {**KINDS[kind](fam), "slices": slices}
        err = refused(fam, write_cfg(fam.tmp / "c.yml", cfg_map), fam.tmp / "out")
        assert "slices" in err, err


def test_a_multi_document_slice_merge_keeps_its_parts_inside(fam: Family) -> None:
    """A named slice merge used by the final document: its part is written under
    OUT_DIR-parts, and a part named like a path is refused before anything runs."""
    part = {"name": "stack", **stacked(fam)}
    final = {
        "merge_method": "linear",
        "models": [{"model": "stack"}, {"model": str(fam.paths[0])}],
        "dtype": "float32",
    }
    multi = fam.tmp / "multi.yml"
    final["models"] = [{"model": "stack"}, {"model": "stack2"}]
    part2 = {"name": "stack2", **stacked(fam)}
    part2["slices"] = [
        {"sources": [src(fam.paths[1], 0, 2)]},
        {"sources": [src(fam.paths[0], 1, 3)]},
    ]
    assert cli("merge", _write_all(multi, [part, part2, final]), fam.tmp / "out", "--quiet")[0] == 0
    assert sorted(p.name for p in (fam.tmp / "out-parts").iterdir()) == ["stack", "stack2"]
    got = read_out(fam.tmp / "out")
    k = "model.layers.3.mlp.up_proj.weight"
    a, b = fam.fts[1][k.replace(".3.", ".2.")], fam.fts[0][k.replace(".3.", ".2.")]
    torch.testing.assert_close(got[k], (a + b) / 2)
    evil = {**part, "name": "../evil"}
    err = refused(fam, _write_all(multi, [evil, final]), fam.tmp / "out2")
    assert "plain folder name" in err


def _write_all(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_out_dir_over_an_unread_base_is_refused(fam: Family) -> None:
    """linear ignores a base_model outside the slice's sources; OUT_DIR still keeps clear."""
    cfg_map = {
        "merge_method": "linear",
        "base_model": str(fam.bpath),
        "slices": [{"sources": [src(fam.paths[0], 0, 2), src(fam.paths[1], 1, 3)]}],
    }
    cfg = write_cfg(fam.tmp / "c.yml", cfg_map)
    err = refused(fam, cfg, fam.bpath / "merged")
    assert "lies inside input model" in err and str(fam.bpath.resolve()) in err, err
    assert cli("merge", cfg, fam.tmp / "out", "--quiet")[0] == 0  # elsewhere: it merges
