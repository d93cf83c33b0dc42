"""Nothing is lost: real subprocesses killed with SIGKILL mid-write, two real processes sharing a
workspace, and cancelled training.

After every kill the workspace must open, list only complete models (each listed checkpoint
loads and matches its sha256), and keep every model that was complete before the kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.models import create_model
from core.train import TrainingCancelled
from core.zoo import Zoo, default_zoo_ids, ensure_default, train_custom
from tests.conftest import TINY_PLAN

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- helpers
def _spawn(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Next stdout line (blocking, with an overall deadline enforced by the caller's kill)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"subprocess ended early (rc={proc.wait()}): {err[-2000:]}")
    return line.strip()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for s in (proc.stdout, proc.stderr):
        if s is not None:
            s.close()


def _check_workspace(ws: Path, must_have: set[str]) -> set[str]:
    """Open ``ws``; every listed model verifies and loads; ``must_have`` are all listed."""
    z = Zoo(ws)
    listed = {r.id for r in z.list()}
    missing = must_have - listed
    assert not missing, f"complete models lost after the kill: {missing}"
    for r in z.list():
        z.state_dict(r.id, verify=True)  # sha256 matches the index
        z.load_model(r.id)  # keys, shapes and finiteness
    return listed


# ----------------------------------------------------------------------------- zoo.add killed
ADD_LOOP = """
import sys, torch
from core.models import create_model
from core.zoo import Zoo
z = Zoo(sys.argv[1]); start = int(sys.argv[2])
print("ready", flush=True)
for i in range(start, start + 1000):
    m = create_model("mlp", seed=i, width=1024, depth=3)
    rec = z.add(m, arch="mlp", arch_kwargs={"width": 1024, "depth": 3}, task="mnist", name=f"big-{i}")
    print("added", rec.id, flush=True)
"""


def _watch_and_kill(proc: subprocess.Popen, ws: Path, how: str, rng: random.Random) -> None:
    """Kill ``proc`` at the moment named by ``how``."""
    if how == "random":
        time.sleep(rng.uniform(0.05, 1.5))
    else:
        watch = ws / ("tmp" if how == "tmp-window" else "models")
        before = {p.name for p in watch.iterdir()}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = {e.name for e in os.scandir(watch)}
            new = names - before
            if how == "tmp-window" and any(n.startswith(".tmp-") for n in new):
                break  # the checkpoint is being written right now
            if how == "after-rename" and any(n.endswith(".safetensors") for n in new):
                break  # renamed into place; the index row may not be committed yet
            before = names if how == "after-rename" else before
            time.sleep(0.0005)
        else:
            raise AssertionError(f"never saw the {how} window")
    _kill(proc)


def _add_kill_rounds(ws: Path, schedule: list[str], seed: int) -> None:
    rng = random.Random(seed)
    z = Zoo(ws)
    m = create_model("mlp", width=16, depth=1)
    z.add(m, arch="mlp", arch_kwargs={"width": 16, "depth": 1}, task="mnist", name="earlier")
    complete = {"earlier"}
    start = 0
    for how in schedule:
        proc = _spawn(ADD_LOOP, str(ws), str(start))
        try:
            assert _read_line(proc) == "ready"
            if how != "tmp-window":  # let one model complete first
                complete.add(_read_line(proc).split()[1])
            _watch_and_kill(proc, ws, how, rng)
        finally:
            _kill(proc)
        # whatever the process printed before dying was complete
        listed = _check_workspace(ws, complete)
        assert listed <= complete | {f"big-{i}" for i in range(start, start + 1000)}
        complete = listed
        start += 1000
    # leftovers of killed writes are never listed and are cleaned once stale
    z = Zoo(ws)
    z._clean_tmp(older_than_s=0)
    assert not [p for p in z.tmp_dir.iterdir() if p.name.startswith(".tmp-")]


def test_add_killed_mid_write_keeps_zoo_consistent(tmp_path: Path) -> None:
    _add_kill_rounds(tmp_path / "ws", ["tmp-window", "after-rename", "random"], seed=0)


@pytest.mark.slow
def test_add_killed_many_times(tmp_path: Path) -> None:
    _add_kill_rounds(tmp_path / "ws", ["tmp-window", "after-rename", "random"] * 4, seed=1)


# ----------------------------------------------------------------------------- zoo build killed
BUILD = """
import sys
from core.zoo import Zoo, ensure_default
from tests.conftest import TINY_PLAN
def progress(info):
    if str(info.get("message", "")).endswith(" done"):
        print("done", info["id"], flush=True)
ensure_default(Zoo(sys.argv[1]), TINY_PLAN, device="cpu", progress=progress)
print("finished", flush=True)
"""


@pytest.mark.slow
def test_default_zoo_build_killed_then_resumed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    proc = _spawn(BUILD, str(ws))
    done: set[str] = set()
    try:
        while len(done) < 3:
            done.add(_read_line(proc, timeout=300).split()[1])
        time.sleep(random.Random(2).uniform(0.0, 1.0))  # mid-training or mid-write of the next
    finally:
        _kill(proc)
    listed = _check_workspace(ws, done)
    assert listed <= set(default_zoo_ids(TINY_PLAN))
    recs = ensure_default(Zoo(ws), TINY_PLAN, device="cpu")  # resumes where it stopped
    assert [r.id for r in recs] == default_zoo_ids(TINY_PLAN)
    _check_workspace(ws, set(default_zoo_ids(TINY_PLAN)))


# ----------------------------------------------------------------------------- figure export killed
EXPORT = """
import sys, numpy as np, plotly.graph_objects as go
from core.figures import export
rng = np.random.default_rng(0)
fig = go.Figure(go.Scattergl(x=rng.normal(size=300_000), y=rng.normal(size=300_000), mode="markers"))
print("ready", flush=True)
for i in range(1000):
    export(fig, f"{sys.argv[1]}/fig-{i}", formats=("html", "csv", "json"))
    print("exported", i, flush=True)
"""


def _complete_figure_file(p: Path) -> bool:
    data = p.read_bytes()
    if p.suffix == ".html":
        return data.rstrip().endswith(b"</html>")
    if p.suffix == ".json":
        json.loads(data)
        return True
    if p.suffix == ".csv":
        return data.endswith(b"\n") and data.count(b"\n") == 300_001
    return True


def test_figure_export_killed_mid_write(tmp_path: Path) -> None:
    out = tmp_path / "figures"
    out.mkdir()
    proc = _spawn(EXPORT, str(out))
    try:
        assert _read_line(proc) == "ready"
        assert _read_line(proc) == "exported 0"
        before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
        # kill while the next file is being written (a temp file is open), else at a random time
        deadline = time.monotonic() + random.Random(3).uniform(0.5, 2.0)
        seen = set(before)
        while time.monotonic() < deadline:
            names = {e.name for e in os.scandir(out)}
            if any(n.startswith(".tmp-") for n in names) or names - seen - {".tmp"}:
                break
            time.sleep(0.0005)
    finally:
        _kill(proc)
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    bad = [p.name for p in visible if not _complete_figure_file(p)]
    assert not bad, f"half-written figure files visible under their final names: {bad}"
    for name, content in before.items():  # nothing complete was lost or changed
        assert (out / name).read_bytes() == content


# ----------------------------------------------------------------------------- two processes
WORKER = """
import json, sys, torch
from core.models import create_model
from core.params import weighted_sum
from core.train import TrainConfig, train
from core.zoo import Zoo
ws, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
z = Zoo(ws)
g = torch.Generator().manual_seed(len(tag))
x = torch.randn(256, 1, 28, 28, generator=g); y = torch.randint(0, 10, (256,), generator=g)
kw = {"width": 64, "depth": 2}
mine, reads, errors = [], 0, []
for i in range(n):
    m = create_model("mlp", seed=i, **kw)
    train(m, x, y, TrainConfig(epochs=1, max_steps=3, seed=i), device="cpu")
    mine.append(z.add(m, arch="mlp", arch_kwargs=kw, task="mnist", name=f"{tag}-{i}").id)
    z.add(m, arch="mlp", arch_kwargs=kw, task="mnist", name="shared")  # same name in both
    if len(mine) >= 2:
        a, b = mine[-2], mine[-1]
        sd = weighted_sum([z.state_dict(a), z.state_dict(b)], [0.5, 0.5])
        mine.append(z.add(sd, arch="mlp", arch_kwargs=kw, task="mnist", role="merged",
                          name=f"{tag}-merge-{i}", parent_id=a, recipe={"method": "average"}).id)
    if i % 3 == 2:
        z.delete(mine.pop(0))
    z.put_record("run", f"{tag}-{i}", {"i": i})
    listed = z.list()
    for r in [listed[k] for k in torch.randperm(len(listed), generator=g)[:4].tolist()]:
        try:  # read models (the other process's too) while it writes and deletes
            z.load_model(r.id); reads += 1
        except KeyError:
            pass  # deleted by the other process between list() and load
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
print(json.dumps({"mine": mine, "reads": reads, "errors": errors}), flush=True)
"""


def test_two_processes_share_a_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    Zoo(ws)
    n = 5
    procs = [_spawn(WORKER, str(ws), tag, str(n)) for tag in ("alpha", "beta")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert not r["errors"], r["errors"]
        assert r["reads"] > 0
    expected = (
        {i for r in results for i in r["mine"]}
        | {"shared"}
        | {f"shared-{k}" for k in range(2, 2 * n + 1)}
    )
    listed = _check_workspace(ws, expected)
    assert listed == expected
    z = Zoo(ws)
    assert set(z.get_records("run")) == {f"{t}-{i}" for t in ("alpha", "beta") for i in range(n)}
    files = {p.name for p in z.models_dir.glob("*.safetensors")}
    assert files == {f"{i}.safetensors" for i in expected}  # no orphans, nothing missing


# ----------------------------------------------------------------------------- cancellation
def _snapshot(z: Zoo) -> tuple[list[str], set[str], list[str]]:
    return (
        [r.id for r in z.list()],
        {p.name for p in z.models_dir.iterdir()},
        [p.name for p in z.tmp_dir.iterdir()],
    )


def test_cancelled_training_leaves_zoo_unchanged(tmp_path: Path) -> None:
    z = Zoo(tmp_path / "ws")
    z.add(
        create_model("mlp", width=16, depth=1),
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        task="mnist",
        name="kept",
    )
    before = _snapshot(z)
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(TrainingCancelled, match="cancelled"):
        train_custom(
            z, arch="mlp", task="digits", epochs=3, width=16, device="cpu", should_stop=stop
        )
    assert calls == 6
    assert _snapshot(Zoo(z.root)) == before
    z.state_dict("kept", verify=True)


def test_cancelled_zoo_build_keeps_complete_models_only(tmp_path: Path) -> None:
    z = Zoo(tmp_path / "ws")
    done: list[str] = []
    stop_now = False

    def progress(info: dict) -> None:
        nonlocal stop_now
        if str(info.get("message", "")).endswith(" done"):
            done.append(info["id"])
            stop_now = len(done) == 2

    with pytest.raises(TrainingCancelled):
        ensure_default(z, TINY_PLAN, device="cpu", progress=progress, should_stop=lambda: stop_now)
    ids = default_zoo_ids(TINY_PLAN)
    assert done == ids[:2]
    assert [r.id for r in z.list()] == ids[:2]
    assert {p.name for p in z.models_dir.iterdir()} == {f"{i}.safetensors" for i in ids[:2]}
    _check_workspace(z.root, set(ids[:2]))


def test_state_dict_of_a_model_deleted_meanwhile_is_a_key_error(tmp_path: Path) -> None:
    z = Zoo(tmp_path / "ws")
    rec = z.add(
        create_model("mlp", width=16, depth=1),
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        task="mnist",
        name="gone",
    )
    (z.root / rec.file).unlink()  # another process deleted the file after our get()
    with pytest.raises(KeyError, match="gone"):
        z.state_dict("gone")
    with pytest.raises(KeyError, match="gone"):
        z.load_model("gone")
