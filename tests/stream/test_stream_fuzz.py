"""Fuzzing the streaming merge's inputs: safetensors headers, shard indexes, config files and
config mappings, OUT_DIR choices.

Every generated input must either work or be refused with a clear message: a ``StreamError``
(a ``ValueError``) that names what is wrong, never another exception, never file bytes in the
message, never a changed input. Headers are also checked against the reference ``safetensors``
loader: whatever it refuses we refuse, and whatever we accept it reads to the same tensors.
The counts of inputs fed and refused are printed at the end of the module;
``MIXMERGE_FUZZ_SCALE=20`` multiplies the number of examples for a long run.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import string
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from core.cli import main
from core.stream import StreamError, load_config, model_tensors, read_header, stream_merge
from core.stream.config import _TOP_KEYS, METHOD_ALIASES
from core.stream.st_io import DTYPES, ShardReader
from tests.helpers.stream import files_opened, make_family, opened_outside, read_out, write_sharded

SCALE = int(os.environ.get("MIXMERGE_FUZZ_SCALE", "1"))  # e.g. 20 for a long run
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TALLY: Counter[str] = Counter()
T = TypeVar("T")

# Phrases of Python's own errors: a message holding one leaked an unchecked input.
INTERNAL = (
    "object has no attribute",
    "unhashable type",
    "not subscriptable",
    "index out of range",
    "could not convert",
    "invalid literal",
    "NoneType",
    "unsupported operand",
    "not iterable",
    "takes no arguments",
    "Traceback",
)


def clear(msg: str) -> None:
    assert msg.strip(), "empty message"
    for phrase in INTERNAL:
        assert phrase not in msg, f"internal error text in the message: {msg!r}"


def attempt(kind: str, fn: Callable[[], T]) -> tuple[T | None, str | None]:
    """Feed one input: ``(result, None)`` when ``fn`` works, ``(None, message)`` when it raises
    a StreamError with a clear message (any other exception fails the test); tallied."""
    TALLY[f"{kind}:fed"] += 1
    try:
        result = fn()
    except StreamError as err:
        TALLY[f"{kind}:refused"] += 1
        clear(str(err))
        return None, str(err)
    TALLY[f"{kind}:accepted"] += 1
    return result, None


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    kinds = sorted({k.split(":")[0] for k in TALLY})
    lines = [
        f"  {k}: {TALLY[k + ':fed']} fed, {TALLY[k + ':refused']} refused with a clear message, "
        f"{TALLY[k + ':accepted']} accepted (valid)"
        for k in kinds
    ]
    total = sum(TALLY[k + ":fed"] for k in kinds)
    refused = sum(TALLY[k + ":refused"] for k in kinds)
    text = "\n".join(["stream fuzzing:", *lines, f"  all: {total} fed, {refused} refused"])
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line("\n" + text)
        else:  # pragma: no cover
            print(text)


# ---------------------------------------------------------------------------------------------
# safetensors headers, differential against the reference loader

NAMES = st.text(alphabet=string.ascii_letters + "._-/ é\x00", min_size=0, max_size=12)
CODES = st.sampled_from([*DTYPES, "F8_E4M3", "U16", "U32", "C64", "f32", "", "F 32"])
SMALL_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**20) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _valid_entries(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 4))
    names = draw(st.lists(NAMES, min_size=n, max_size=n, unique=True))
    entries, pos = [], 0
    for name in names:
        code = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * DTYPES[code].itemsize
        entries.append(
            {"name": name, "dtype": code, "shape": shape, "data_offsets": [pos, pos + size]}
        )
        pos += size
    return entries


MUTATIONS = [
    "none",
    "shift_begin",
    "shift_end",
    "swap",
    "overlap",
    "dup_range",
    "neg_dim",
    "bool_dim",
    "float_dim",
    "str_dim",
    "shape_not_list",
    "drop_key",
    "dtype_type",
    "dtype_name",
    "offsets_len",
    "offsets_neg",
    "entry_not_object",
    "header_list",
    "header_str",
    "header_number",
    "metadata_bad",
    "metadata_ok",
    "extra_field",
    "trailing",
    "truncate",
    "length_big",
    "length_small",
    "not_utf8",
    "nan_constant",
    "deep",
    "empty_file",
    "random",
]


@st.composite
def st_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(mutation, file bytes) of a generated safetensors file."""
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "random":
        return mutation, draw(st.binary(max_size=64))
    entries = _valid_entries(draw)
    header: Any = {
        e["name"]: {k: e[k] for k in ("dtype", "shape", "data_offsets")} for e in entries
    }
    data_len = max([e["data_offsets"][1] for e in entries], default=0)
    data = draw(st.binary(min_size=data_len, max_size=data_len))
    pick = draw(st.sampled_from([e["name"] for e in entries])) if entries else None
    spec = header[pick] if pick is not None else None
    delta = draw(st.integers(1, 9))
    if spec is not None:
        if mutation == "shift_begin":
            spec["data_offsets"][0] += delta
        elif mutation == "shift_end":
            spec["data_offsets"][1] += delta
        elif mutation == "swap":
            spec["data_offsets"].reverse()
        elif mutation == "overlap":
            spec["data_offsets"] = [
                max(0, spec["data_offsets"][0] - delta),
                spec["data_offsets"][1],
            ]
        elif mutation == "dup_range" and len(entries) > 1:
            other = draw(st.sampled_from([e["name"] for e in entries if e["name"] != pick]))
            header[other] = dict(header[other], data_offsets=list(spec["data_offsets"]))
        elif mutation == "neg_dim":
            spec["shape"] = [-delta, -2]
        elif mutation == "bool_dim":
            spec["shape"] = [True, *spec["shape"]]
        elif mutation == "float_dim":
            spec["shape"] = [1.0, *spec["shape"]]
        elif mutation == "str_dim":
            spec["shape"] = ["4"]
        elif mutation == "shape_not_list":
            spec["shape"] = draw(st.sampled_from([4, "4", None, {"a": 1}]))
        elif mutation == "drop_key":
            del spec[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
        elif mutation == "dtype_type":
            spec["dtype"] = draw(st.sampled_from([4, None, ["F32"], {"F32": 1}]))
        elif mutation == "dtype_name":
            spec["dtype"] = draw(CODES)
        elif mutation == "offsets_len":
            spec["data_offsets"] = spec["data_offsets"][:1] + [0, 0][: draw(st.integers(0, 2))]
        elif mutation == "offsets_neg":
            spec["data_offsets"] = [-delta, spec["data_offsets"][1]]
        elif mutation == "entry_not_object":
            header[pick] = draw(SMALL_JSON)
        elif mutation == "extra_field":
            spec[draw(st.text(max_size=4))] = draw(SMALL_JSON)
    if mutation == "header_list":
        header = list(header.values())
    elif mutation == "header_str":
        header = "header"
    elif mutation == "header_number":
        header = draw(st.integers())
    elif mutation == "metadata_bad":
        header["__metadata__"] = draw(
            st.sampled_from([1, [], {"a": 1}, {"a": None}, "text", {"a": ["b"]}])
        )
    elif mutation == "metadata_ok":
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4)))
    raw = json.dumps(header).encode()
    if mutation == "not_utf8":
        raw = raw[:1] + b"\xff\xfe" + raw[1:]
    elif mutation == "nan_constant":
        raw = b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}'
    elif mutation == "deep":
        raw = b"[" * 100_000 + b"]" * 100_000
    raw += b" " * draw(st.integers(0, 7))
    n = len(raw)
    if mutation == "length_big":
        n += delta * 1000
    elif mutation == "length_small":
        n = max(0, n - delta)
    blob = n.to_bytes(8, "little") + raw + data
    if mutation == "trailing":
        blob += b"\0" * delta
    elif mutation == "truncate":
        blob = blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
    elif mutation == "empty_file":
        blob = b""
    return mutation, blob


def _reference(path: Path) -> dict[str, torch.Tensor] | None:
    """What the reference loader reads from ``path`` (None when it refuses the file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception:  # noqa: BLE001 - any refusal counts
        return None


@settings(FUZZ, max_examples=400 * SCALE)
@given(case=st_files())
def test_fuzzed_headers_are_read_like_the_reference_loader(tmp_path: Path, case) -> None:
    mutation, blob = case
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    ref = _reference(path)
    infos, msg = attempt("safetensors header", lambda: read_header(path))
    if infos is None:
        assert msg is not None and str(path) in msg, msg
        if mutation == "random" and len(blob) > 16:
            assert blob[8:24].decode("latin-1") not in msg  # no file bytes echoed
        if ref is not None:  # the reference reads it: only dtypes we do not merge may differ
            assert "supported:" in msg, (mutation, msg)
        return
    assert ref is not None, f"{mutation}: accepted a file the reference loader refuses"
    assert set(infos) == set(ref)
    reader = ShardReader()
    try:
        for name, info in infos.items():
            mine = reader.read(info)
            assert mine.dtype == ref[name].dtype and tuple(mine.shape) == tuple(ref[name].shape)
            assert (
                mine.reshape(-1).view(torch.uint8).tolist()
                == ref[name].reshape(-1).view(torch.uint8).tolist()
            )
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------
# shard indexes: names never lead out of the model folder


@pytest.fixture(scope="module")
def index_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model folder with links in and out, a valid model beside it and a secret file."""
    root = tmp_path_factory.mktemp("index")
    sd = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    model = write_sharded(sd, root / "model", n_shards=2)
    other = root / "other"
    other.mkdir()
    save_file(sd, str(other / "model.safetensors"))
    (root / "secret.safetensors").write_bytes(b"root:x:0:0:TOPSECRET" * 8)
    (model / "out.safetensors").symlink_to(other / "model.safetensors")
    (model / "in.safetensors").symlink_to("model-00001-of-00002.safetensors")
    (model / "dir.safetensors").mkdir()
    os.mkfifo(model / "fifo.safetensors")
    (model / "dangling.safetensors").symlink_to(root / "nowhere.safetensors")
    return {"root": root, "model": model}


SHARD_NAMES = st.sampled_from(
    [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "in.safetensors",
        "out.safetensors",
        "dir.safetensors",
        "fifo.safetensors",
        "dangling.safetensors",
        "missing.safetensors",
        "../other/model.safetensors",
        "../secret.safetensors",
        "./../secret.safetensors",
        "sub/../../secret.safetensors",
        "/etc/passwd",
        "../../../../../../../../etc/passwd",
        "SECRET_ABS",
        "model-00001-of-00002.safetensors\x00.txt",
        "..\\secret.safetensors",
        "",
        ".",
        "..",
        "model.safetensors.index.json",
    ]
) | st.text(max_size=20)


@st.composite
def st_indexes(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["map", "map", "map", "valid", "json", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "json":
        return json.dumps(draw(SMALL_JSON))
    valid = st.sampled_from(
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "in.safetensors"]
    )
    values = valid if kind == "valid" else st.one_of(SHARD_NAMES, SHARD_NAMES, SMALL_JSON)
    weight_map = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), values, max_size=3))
    doc: dict[str, Any] = {"weight_map": weight_map}
    if draw(st.booleans()):
        doc = {"metadata": draw(SMALL_JSON), **doc}
    if draw(st.integers(0, 9)) == 0:
        doc = {"weight_mapp": weight_map}
    return json.dumps(doc)


@settings(FUZZ, max_examples=300 * SCALE)
@given(text=st_indexes())
def test_fuzzed_indexes_never_open_files_outside_the_folder(index_world, text: str) -> None:
    model, root = index_world["model"], index_world["root"]
    text = text.replace("SECRET_ABS", str(root / "secret.safetensors"))
    index = model / "model.safetensors.index.json"
    index.write_text(text, encoding="utf-8", errors="surrogatepass")
    with files_opened() as opened:
        infos, msg = attempt("shard index", lambda: model_tensors(model))
    assert msg is None or ("TOPSECRET" not in msg and "root:x" not in msg)
    for info in (infos or {}).values():
        assert info.path.resolve().is_relative_to(model.resolve())
    bad = opened_outside(opened, model, root)
    assert not bad, f"opened outside the model folder: {bad}"


# ---------------------------------------------------------------------------------------------
# config files (YAML text) and config mappings, through stream_merge and the CLI


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("world")
    base, fts, bpath, paths = make_family(root / "models", n_models=2, n_layers=1, width=4)
    single = root / "single.safetensors"
    save_file({k: v.contiguous() for k, v in fts[0].items()}, str(single))
    (root / "prev").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "thesis.tex").write_text("years of work")
    (root / "link").symlink_to(paths[0], target_is_directory=True)
    return {
        "root": root,
        "base": bpath,
        "models": paths,
        "single": single,
        "snapshot": _Snapshot(_snapshot(root / "models")),
    }


class _Snapshot(dict):
    def __repr__(self) -> str:  # keep hypothesis' reports short
        return f"<{len(self)} files>"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from([10**30, -(10**30)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        ["", "abc", "base", "union", "ties", "float32", "bf16", "tensor", "global", "mean", "*"]
    ),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["filter", "value", "x", "model", "parameters"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
PARAM_KEYS = st.sampled_from(
    [
        "weight",
        "density",
        "lambda",
        "t",
        "gamma",
        "epsilon",
        "normalize",
        "int8_mask",
        "rescale",
        "trim",
        "disjoint",
        "unknown_option",
    ]
)
METHODS = st.sampled_from(sorted(METHOD_ALIASES))


@st.composite
def st_configs(draw: st.DrawFn, paths: dict[str, Any]) -> dict[str, Any]:
    """A config that starts valid and gets a few mutations."""
    refs = [str(p) for p in paths["models"]]
    model_refs = st.sampled_from(
        [
            *refs,
            str(paths["base"]),
            str(paths["single"]),
            str(paths["root"] / "link"),
            str(paths["root"] / "absent"),
            "org/model-on-the-hub",
            "a+lora",
        ]
    )
    method = draw(METHODS)
    n = 1 if method == "slerp" else draw(st.integers(1, 2))
    cfg: dict[str, Any] = {
        "merge_method": method,
        "base_model": str(paths["base"]),
        "models": [{"model": r} for r in refs[:n]],
    }
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["global", "model", "top", "model_ref", "drop"]))
        if where == "global" and isinstance(cfg.setdefault("parameters", {}), dict):
            cfg["parameters"][draw(PARAM_KEYS)] = draw(VALUES)
        elif where == "model" and isinstance(cfg.get("models"), list) and cfg["models"]:
            m = draw(st.sampled_from(cfg["models"]))
            if isinstance(m, dict) and isinstance(m.setdefault("parameters", {}), dict):
                m["parameters"][draw(PARAM_KEYS)] = draw(VALUES)
        elif where == "top":
            key = draw(st.sampled_from([*sorted(_TOP_KEYS), "slices", "bogus"]))
            cfg[key] = draw(VALUES | model_refs)
        elif where == "model_ref" and isinstance(cfg.get("models"), list) and cfg["models"]:
            cfg["models"][0] = draw(st.sampled_from([{"model": draw(model_refs)}, draw(VALUES)]))
        elif where == "drop":
            cfg.pop(draw(st.sampled_from(sorted(cfg))), None)
    return cfg


def _out_choices(paths: dict[str, Any]) -> list[Path]:
    root = paths["root"]
    return [
        root / "out",
        root / "prev",
        root / "notes",
        root,
        root / "models",
        paths["models"][0],
        paths["models"][0] / "sub",
        paths["base"],
        root / "link",
        paths["single"],
    ]


@settings(FUZZ, max_examples=120 * SCALE)
@given(data=st.data())
def test_fuzzed_configs_and_out_dirs_work_or_give_a_clear_message(world, data) -> None:
    cfg = data.draw(st_configs(world))
    out = data.draw(st.sampled_from(_out_choices(world)))
    overwrite = data.draw(st.booleans())
    via_cli = data.draw(st.booleans())
    root = world["root"]
    if via_cli:
        TALLY["config + OUT_DIR:fed"] += 1
        path = root / "fuzz.yml"
        try:
            path.write_text(yaml.safe_dump(cfg))
        except yaml.YAMLError:
            path.write_text(json.dumps(cfg, default=str))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = ["merge", str(path), str(out), "--quiet", *(["--overwrite"] * overwrite)]
            rc = main(args)
        assert rc in (0, 2)
        ok = rc == 0
        if not ok:
            msg = err.getvalue()
            assert msg.startswith("error: "), msg
            clear(msg)
        TALLY["config + OUT_DIR:" + ("accepted" if ok else "refused")] += 1
    else:
        rep, _ = attempt(
            "config + OUT_DIR", lambda: stream_merge(cfg, out, overwrite=overwrite, progress=False)
        )
        ok = rep is not None
    if ok:
        got = read_out(out)  # the reference reader opens what was written
        assert all(bool(torch.isfinite(v).all()) for v in got.values() if v.is_floating_point())
        assert out not in (root, root / "models", root / "notes", world["base"], *world["models"])
        if out.is_relative_to(root / "models"):  # beside models this merge did not read: fine
            shutil.rmtree(out)
    assert _snapshot(root / "models") == world["snapshot"]  # the inputs never change
    assert (root / "notes" / "thesis.tex").read_text() == "years of work"
    assert world["single"].is_file()
    assert not [p for p in root.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    if ok and out == root / "out":
        shutil.rmtree(out)


YAML_ATTACKS = [
    "merge_method: !!python/object/apply:os.system ['echo pwned']",
    "a: &x [*x]",
    "[" * 5000 + "]" * 5000,
    "{merge_method: ties, models: [{model: {a: b}}]}",
    "merge_method: ties\nmodels:\n  - model: x\n    parameters: [1, 2]",
    "? [a, b]\n: c",
    "merge_method: linear\nmodels: [x]\nparameters: &p {weight: {value: *p}}",
    "a: &a [&b [*a, *b]]",
    "merge_method: linear\nmodels: [x]\nparameters: {foo: &a [*a]}",
    "models: !!set {a, b}",
    "merge_method: linear\nmodels: [x]\ndtype: !!binary aGVsbG8=",
    "\ufeffmerge_method: linear",
    "merge_method: linear\n\tmodels: []",
    "--- a\n--- b",
    "1: 2",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e]",
    "null",
]


@settings(FUZZ, max_examples=300 * SCALE)
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    ),
    raw_bytes=st.booleans(),
)
def test_fuzzed_yaml_files_give_a_clear_message(tmp_path: Path, text: str, raw_bytes: bool) -> None:
    _yaml_file_gives_a_clear_message(tmp_path, text, raw_bytes)


@pytest.mark.parametrize("text", YAML_ATTACKS)
def test_hostile_yaml_files_give_a_clear_message(tmp_path: Path, text: str) -> None:
    _yaml_file_gives_a_clear_message(tmp_path, text, False)


def _yaml_file_gives_a_clear_message(tmp_path: Path, text: str, raw_bytes: bool) -> None:
    path = tmp_path / "c.yml"
    if raw_bytes:
        path.write_bytes(text.encode("latin-1", errors="replace"))
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    cfg, _ = attempt("YAML config file", lambda: load_config(path))
    assert cfg is None  # random text never names existing models
    assert not (tmp_path / "pwned").exists()
