"""The background zoo build: survives its caller, one build at a time, cancellable, honest status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.zoo import Zoo, default_zoo_ids
from core.zoo.worker import (
    BuildStatus,
    build_status,
    cancel_build,
    missing_models,
    run_build,
    start_build,
    write_status,
)


def _wait(root: Path, until: set[str], timeout: float = 240.0) -> BuildStatus:
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = build_status(root)
        if s.state in until:
            return s
        time.sleep(0.2)
    raise AssertionError(f"build did not reach {until} in {timeout} s: {build_status(root)}")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_idle_when_nothing_was_started(tmp_path):
    s = build_status(tmp_path)
    assert s.state == "idle" and not s.running
    assert missing_models(tmp_path) == default_zoo_ids()


@pytest.mark.slow
def test_background_build_finishes_in_its_own_session(tmp_path):
    s = start_build(tmp_path, device="cpu", max_steps=1)
    assert s.running and s.pid is not None
    assert os.getsid(s.pid) != os.getsid(0)  # its own session: outlives the server's script run
    # a second start while it runs does not start another process
    assert start_build(tmp_path, device="cpu", max_steps=1).pid == s.pid
    done = _wait(tmp_path, {"done", "failed", "cancelled"})
    assert done.state == "done", (done, (tmp_path / ".build" / "log.txt").read_text())
    assert done.fraction == 1.0 and done.missing == []
    assert set(default_zoo_ids()) <= {r.id for r in Zoo(tmp_path).list()}
    assert not (tmp_path / ".build" / "lock").exists()


@pytest.mark.slow
def test_cancel_stops_at_the_next_step_and_keeps_finished_models(tmp_path):
    s = start_build(tmp_path, device="cpu")  # the full plan: long enough to cancel
    _wait(tmp_path, {"running"})
    t0 = time.time()
    while "step" not in build_status(tmp_path).message:  # training has begun
        assert time.time() - t0 < 240, build_status(tmp_path)
        time.sleep(0.2)
    assert cancel_build(tmp_path)
    end = _wait(tmp_path, {"cancelled", "done", "failed"}, timeout=120)
    assert end.state == "cancelled", end
    assert end.missing  # it says which models are still to build
    assert set(end.missing) == set(missing_models(tmp_path))
    assert s.pid is not None
    assert not cancel_build(tmp_path)  # nothing running any more


def test_progress_moves_within_a_model(tmp_path, monkeypatch):
    """Status is written at the ~20-step reports, not only per epoch or per model."""
    import core.zoo.worker as zw

    seen: list[BuildStatus] = []
    real = zw.write_status

    def spy(root, status):
        seen.append(status)
        real(root, status)

    def fake_ensure(zoo, plan, *, device, progress, should_stop):
        for step in (20, 40, 60):
            progress(
                {
                    "model": 1,
                    "models": 4,
                    "epoch": 1,
                    "epochs": 1,
                    "step": step,
                    "steps": 80,
                    "message": "model 1/4 mlp-base: epoch 1/1",
                }
            )
        return []

    monkeypatch.setattr(zw, "write_status", spy)
    monkeypatch.setattr("core.zoo.ensure_default", fake_ensure)
    final = run_build(tmp_path, device="cpu")
    fracs = [s.fraction for s in seen if s.state == "running"]
    assert fracs[1:4] == pytest.approx([20 / 80 / 4, 40 / 80 / 4, 60 / 80 / 4])
    assert "step 40/80" in seen[2].message
    assert final.state == "done"


def test_a_held_lock_keeps_a_second_build_out(tmp_path):
    proc = _sleeper()
    try:
        d = tmp_path / ".build"
        d.mkdir()
        (d / "lock").write_text(str(proc.pid))
        write_status(tmp_path, BuildStatus(state="running", pid=proc.pid, message="busy"))
        s = run_build(tmp_path, device="cpu", max_steps=1)
        assert s.state == "running" and s.message == "busy"  # it did not build
        assert len(Zoo(tmp_path)) == 0
        assert start_build(tmp_path, device="cpu").pid == proc.pid  # no second process
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_build_reads_as_failed_and_its_stale_lock_is_taken_over(tmp_path, monkeypatch):
    proc = _sleeper()
    proc.kill()
    proc.wait()
    d = tmp_path / ".build"
    d.mkdir()
    (d / "lock").write_text(str(proc.pid))
    write_status(tmp_path, BuildStatus(state="running", pid=proc.pid, started=1.0, updated=2.0))
    s = build_status(tmp_path)
    assert s.state == "failed" and "stopped without finishing" in (s.error or "")
    monkeypatch.setattr("core.zoo.ensure_default", lambda *a, **k: [])
    assert run_build(tmp_path, device="cpu").state == "done"  # the stale lock did not block it
    assert not (d / "lock").exists()


def test_a_failing_build_reports_the_error(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr("core.zoo.ensure_default", boom)
    s = run_build(tmp_path, device="cpu")
    assert s.state == "failed" and "No space left" in (s.error or "")
    assert build_status(tmp_path).state == "failed"  # pid gone, but the state is final
    assert not (tmp_path / ".build" / "lock").exists()


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", "\x00\xff"])
def test_an_unreadable_status_file_is_a_state_not_a_crash(tmp_path, content):
    d = tmp_path / ".build"
    d.mkdir()
    (d / "status.json").write_bytes(content.encode("latin-1"))
    s = build_status(tmp_path)
    assert s.state == "failed" and "unreadable" in (s.error or "")


def test_status_file_is_replaced_atomically(tmp_path):
    write_status(tmp_path, BuildStatus(state="running", fraction=0.5, pid=1))
    data = json.loads((tmp_path / ".build" / "status.json").read_text())
    assert data["fraction"] == 0.5
    assert list((tmp_path / ".build").glob("*.tmp")) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"device": ""}, "device"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 1.5}, "max_steps"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        start_build(tmp_path, **kwargs)
    assert not (tmp_path / ".build" / "lock").exists()


def test_root_must_be_a_path():
    with pytest.raises(TypeError, match="root"):
        build_status(3)  # type: ignore[arg-type]
