"""Streaming merges vs mergekit: wall time and peak RSS on the same sharded checkpoints.

Setup (mergekit lives in its own virtualenv, never in the workbench's)::

    python3 -m venv .venv-mergekit
    .venv-mergekit/bin/pip install torch==2.13.0 mergekit     # mergekit 0.1.5, CPU torch

Run::

    .venv/bin/python benchmarks/bench_stream.py            # base + 3 models of ~134M float32
    .venv/bin/python benchmarks/bench_stream.py --quick    # ~17M params per model
    .venv/bin/python benchmarks/bench_stream.py --layers 32 --no-mergekit   # ~440M per model

The script writes a Llama-shaped base model and three fine-tunes (base + 0.01·noise) as
3-shard safetensors folders with an index, warms the page cache, then runs each merge as a
fresh subprocess through the same measuring wrapper (wall time and ``RUSAGE_CHILDREN`` peak
RSS): ``mergekit-yaml CONFIG OUT --lazy-unpickle`` and ``python -m core merge CONFIG OUT``, with
the *same* YAML file. It also measures the read+write bound: reading every input byte with
``readinto`` into a reused buffer plus writing one output-sized file, and checks that the two
tools agree on linear and task arithmetic (where their definitions coincide).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.stream import llama_shapes  # noqa: E402  (after the path is set)

STARTUP = "import os, core.stream, core.merge; os._exit(0)"
STARTUP_JIT = """
import os, torch, core.stream, core.merge
from core.kernels import merge as _fused
x = [torch.ones(70_000) for _ in range(3)]
_fused.thresholds(x, torch.zeros(70_000), [10] * 3)
_fused.ties(x, x[0], [0.5] * 3, scale=1.0, weights=[1.0] * 3, disjoint="mean", drop_m=1,
            factor=2.0, generator=None)
os._exit(0)
"""
FUSED_METHODS = ("ties", "dare_ties")

WRAP = r"""
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
wall = time.perf_counter() - t0
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, rc)
"""


def write_models(
    root: Path, quick: bool, layers: int | None = None, dtype: str = "float32"
) -> tuple[Path, list[Path], int]:
    """Base + 3 fine-tunes, 3 shards each; returns paths and parameters per model."""
    import torch
    from safetensors.torch import save_file

    hidden, inter, n_layers, vocab = (512, 1408, 4, 8000) if quick else (1024, 2816, 8, 15488)
    layers = layers or n_layers
    shapes = llama_shapes(hidden, inter, layers, vocab)
    n_params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "torch_dtype": dtype,
        "tie_word_embeddings": False,
    }
    keys = list(shapes)
    groups = [
        keys[: len(keys) // 3],
        keys[len(keys) // 3 : 2 * len(keys) // 3],
        keys[2 * len(keys) // 3 :],
    ]
    paths = []
    for m in range(4):
        folder = root / ("base" if m == 0 else f"ft{m}")
        if (folder / "config.json").exists():  # written by an earlier run with --workdir
            paths.append(folder)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        weight_map = {}
        for s, group in enumerate(groups):
            name = f"model-{s + 1:05d}-of-00003.safetensors"
            sd = {}
            for k in group:
                g = torch.Generator().manual_seed(zlib.crc32(k.encode()))
                t = torch.randn(shapes[k], generator=g) * 0.02
                if m:
                    g2 = torch.Generator().manual_seed(zlib.crc32(f"{k}:{m}".encode()))
                    t += 0.002 * torch.randn(shapes[k], generator=g2)
                sd[k] = t.to(getattr(torch, dtype))
            save_file(sd, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(group, name))
            del sd
        (folder / "model.safetensors.index.json").write_text(
            json.dumps(
                {"metadata": {"total_size": n_params * _SIZE[dtype]}, "weight_map": weight_map}
            )
        )
        (folder / "config.json").write_text(json.dumps(cfg))
        paths.append(folder)
    return paths[0], paths[1:], n_params


_SIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


def in_memory_equal(cfg_path: Path, base: Path, fts: list[Path], out: Path, seed: int = 0) -> bool:
    """Whether the streamed output ``out`` is bit-identical to :func:`core.merge.merge` of the
    same tensors held in memory (same kernel and arguments, same seed, tensors in stream
    order so DARE draws alike)."""
    import inspect

    import torch
    from safetensors.torch import load_file

    from core.merge import METHODS, merge
    from core.stream import load_config, model_tensors
    from core.stream.engine import tensor_call

    def load(folder: Path) -> dict:
        infos = model_tensors(folder)
        sd = {}
        for f in sorted({i.path for i in infos.values()}):
            sd.update(load_file(str(f)))
        return {k: sd[k] for k in sorted(infos, key=lambda k: (str(infos[k].path), infos[k].start))}

    method, hyper, uses_base = tensor_call(load_config(cfg_path), "x", 0.0)
    accepted = set(inspect.signature(METHODS[method].fn).parameters)
    kw = {k: v for k, v in hyper.items() if k in accepted and k != "threshold"}
    models = [load(p) for p in fts]
    want = merge(
        method,
        models,
        base=load(base) if uses_base else None,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    del models
    got = load(out)
    return set(got) == set(want) and all(
        got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want
    )


def configs(base: Path, fts: list[Path], dtype: str = "float32") -> dict[str, dict]:
    def models(params: dict) -> list[dict]:
        return [{"model": str(p), "parameters": dict(params)} for p in fts]

    return {
        "linear": {"merge_method": "linear", "models": models({"weight": 1.0}), "dtype": dtype},
        "task_arithmetic": {
            "merge_method": "task_arithmetic",
            "base_model": str(base),
            "models": models({"weight": 1.0}),
            "parameters": {"lambda": 0.5},
            "dtype": dtype,
        },
        "ties": {
            "merge_method": "ties",
            "base_model": str(base),
            "models": models({"weight": 1.0, "density": 0.2}),
            "parameters": {"lambda": 1.0},
            "dtype": dtype,
        },
        "dare_ties": {
            "merge_method": "dare_ties",
            "base_model": str(base),
            "models": models({"weight": 1.0, "density": 0.5}),
            "parameters": {"lambda": 1.0},
            "dtype": dtype,
        },
    }


def measure(cmd: list[str]) -> tuple[float, int]:
    res = subprocess.run([sys.executable, "-c", WRAP, *cmd], capture_output=True, text=True)
    wall, rss, rc = res.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[:3]} failed (rc {rc}): {res.stderr[-2000:]}")
    return float(wall), int(rss)


def warm(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        for f in sorted(p.glob("*.safetensors")):
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return total


def bound(inputs: list[Path], out_bytes: int, tmp: Path) -> float:
    """Seconds to read every input byte into a reused buffer and write one output-sized file."""
    buf = bytearray(1 << 26)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for p in inputs:
        for f in sorted(p.glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(view):
                    pass
    with open(tmp / "bound.bin", "wb", buffering=0) as fh:
        left = out_bytes
        while left > 0:
            n = min(left, len(buf))
            fh.write(view[:n])
            left -= n
    dt = time.perf_counter() - t0
    (tmp / "bound.bin").unlink()
    return dt


def max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    def load(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    x, y = load(a), load(b)
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~17M parameters per model")
    ap.add_argument(
        "--layers",
        type=int,
        default=None,
        help="decoder layers (default 8, 134M parameters; each layer adds 12.8M)",
    )
    ap.add_argument("--mergekit", default=str(ROOT / ".venv-mergekit" / "bin" / "mergekit-yaml"))
    ap.add_argument(
        "--workdir", default=None, help="where the checkpoints go (default: a temp dir)"
    )
    ap.add_argument("--methods", default="linear,task_arithmetic,ties,dare_ties")
    ap.add_argument(
        "--device",
        default="cpu",
        help="where the workbench merges run; a comma list (cpu,cuda) times each",
    )
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(_SIZE),
        help="stored dtype of the models, and the configs' working dtype",
    )
    ap.add_argument(
        "--check-in-memory",
        action="store_true",
        help="check each workbench output bit-identical to core.merge in memory (loads all)",
    )
    args = ap.parse_args()
    import yaml

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_stream_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        name = "models_quick" if args.quick else "models"
        if args.dtype != "float32":
            name += "_" + args.dtype
        base, fts, n_params = write_models(
            work / (name + (f"_{args.layers}l" if args.layers else "")),
            args.quick,
            args.layers,
            args.dtype,
        )
        size = _SIZE[args.dtype]
        print(
            f"wrote base + 3 models of {n_params / 1e6:.1f}M {args.dtype} params "
            f"({n_params * size / 1e6:.0f} MB each, 3 shards) in {time.perf_counter() - t0:.1f} s"
        )
        cfgs = configs(base, fts, args.dtype)
        runs = [m for m in args.methods.split(",") if m]
        rows: list[dict] = []
        ours_cmd = [sys.executable, "-m", "core", "merge"]
        has_mk = not args.no_mergekit and Path(args.mergekit).exists()
        # fixed costs, paid once per run whatever the model size (python -m core leaves with
        # os._exit, so neither includes the interpreter's teardown)
        start_ours = min(measure([ours_cmd[0], "-c", STARTUP])[0] for _ in range(3))
        jit = min(measure([ours_cmd[0], "-c", STARTUP_JIT])[0] for _ in range(3)) - start_ours
        start_mk = measure([args.mergekit, "--help"])[0] if has_mk else float("nan")
        print(
            f"start-up (interpreter + imports, included below): workbench {start_ours:.2f} s "
            f"(+ {jit:.2f} s numba and its cached kernels, for ties and dare_ties), "
            f"mergekit {start_mk:.2f} s"
        )
        devices = [d for d in args.device.split(",") if d]
        for idx, method in enumerate(runs + (["ties"] if "ties" in runs else [])):
            glob = idx == len(runs)  # the extra run at the end: TIES with the global trim
            cfg = json.loads(json.dumps(cfgs[method]))
            if glob:
                cfg["parameters"]["trim"] = "global"
            cpath = work / f"{method}{'_global' if glob else ''}.yml"
            cpath.write_text(yaml.safe_dump(cfg, sort_keys=False))
            inputs = ([] if method == "linear" else [base]) + fts
            warm(inputs)
            # the bound is the fastest of three tries: page-cache writes vary run to run
            b = min(bound(inputs, n_params * size, work) for _ in range(3))
            for dev in devices:
                out_ours = work / "out_ours"
                w_ours, r_ours = measure(
                    [*ours_cmd, str(cpath), str(out_ours), "--quiet", "--device", dev]
                )
                label = method + (" (global trim)" if glob else "")
                if len(devices) > 1:
                    label += f" [{dev}]"
                row = {
                    "method": label,
                    "ours": w_ours,
                    "rss_ours": r_ours,
                    "bound": b,
                    "mk": None,
                    "rss_mk": None,
                    "diff": None,
                    "same": None,
                }
                if args.check_in_memory and not glob:
                    row["same"] = in_memory_equal(cpath, base, fts, out_ours)
                if has_mk and not glob and dev == devices[0]:
                    out_mk = work / "out_mk"
                    w_mk, r_mk = measure(
                        [
                            args.mergekit,
                            str(cpath),
                            str(out_mk),
                            "--lazy-unpickle",
                            "--random-seed",
                            "0",
                            "--no-copy-tokenizer",
                            "--quiet",
                        ]
                    )
                    row.update(mk=w_mk, rss_mk=r_mk)
                    if method in ("linear", "task_arithmetic"):
                        row["diff"] = max_diff(out_ours, out_mk)
                    shutil.rmtree(out_mk, ignore_errors=True)
                shutil.rmtree(out_ours, ignore_errors=True)
                rows.append(row)
                mk_s = "-" if row["mk"] is None else f"{row['mk']:.2f} s"
                same = "" if row["same"] is None else f", bit-identical in memory: {row['same']}"
                print(
                    f"  {row['method']}: ours {w_ours:.2f} s, mergekit {mk_s}, bound {b:.2f} s"
                    f"{same}",
                    flush=True,
                )
        print()
        print(
            "| method | workbench s | mergekit s | speed-up | workbench / bound "
            "| merge only / bound | bound s | workbench peak RSS | mergekit peak RSS | max diff |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            mk = "—" if r["mk"] is None else f"{r['mk']:.2f}"
            sp = "—" if r["mk"] is None else f"{r['mk'] / r['ours']:.1f}x"
            rm = "—" if r["rss_mk"] is None else f"{r['rss_mk'] / 2**30:.2f} GiB"
            diff = "—" if r["diff"] is None else f"{r['diff']:.1e}"
            fixed = start_ours + (jit if r["method"].split()[0] in FUSED_METHODS else 0.0)
            only = max(r["ours"] - fixed, 0.0) / r["bound"]
            print(
                f"| {r['method']} | {r['ours']:.2f} | {mk} | {sp} | {r['ours'] / r['bound']:.1f}x "
                f"| {only:.1f}x | {r['bound']:.2f} | {r['rss_ours'] / 2**30:.2f} GiB | {rm} | {diff} |"
            )
        print(
            "(merge only = workbench wall time minus the fixed start-up measured above: "
            "interpreter, torch and core imports, and for ties / dare_ties numba with its "
            "cached kernels)"
        )
        for dev in devices:
            tag = f" [{dev}]" if len(devices) > 1 else ""
            per = next((r for r in rows if r["method"] == "ties" + tag), None)
            glo = next((r for r in rows if r["method"] == "ties (global trim)" + tag), None)
            if per and glo:
                print(f"global-trim TIES / per-tensor TIES{tag}: {glo['ours'] / per['ours']:.2f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
