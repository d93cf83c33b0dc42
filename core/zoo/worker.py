"""Build the default zoo in a background process that outlives the browser session.

The Home page's build used to run inside the Streamlit script: closing the tab stopped it and a
half-trained model was lost. Here the build runs in its own process (``python -m
core.zoo.worker WORKSPACE``, started in a new session so it survives the server's script runs
and the tab), and talks through three files in ``WORKSPACE/.build/``:

``lock``
    created with ``O_EXCL`` by the one process allowed to build; holds its pid. A lock whose
    process is gone is stale and is taken over, so a killed build never blocks the next one.
``status.json``
    written atomically (temporary file + ``os.replace``) at every progress report — every ~20
    training steps, so long epochs move too: state, fraction done, the message, the models
    still missing, seconds elapsed.
``cancel``
    its existence asks the build to stop at the next training step; finished models are kept
    and the next build resumes where it stopped (:func:`core.zoo.ensure_default`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

BUILD_DIR = ".build"
STATES = ("idle", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class BuildStatus:
    """What the background build is doing (``state`` is one of :data:`STATES`)."""

    state: str = "idle"
    fraction: float = 0.0
    message: str = ""
    missing: list[str] = field(default_factory=list)
    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None or self.updated is None:
            return None
        return max(0.0, self.updated - self.started)


def _dir(root: str | Path) -> Path:
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a workspace path, got {type(root).__name__}")
    return Path(root).expanduser() / BUILD_DIR


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    try:  # a zombie child of this process is not alive
        pid_done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return pid_done == 0


def _lock_pid(d: Path) -> int | None:
    try:
        text = (d / "lock").read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_status(root: str | Path, status: BuildStatus) -> None:
    """Replace ``status.json`` atomically (readers never see half a file)."""
    d = _dir(root)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"status.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, d / "status.json")


def missing_models(root: str | Path) -> list[str]:
    """Ids of the default zoo that are not in the workspace's zoo, in build order."""
    from . import Zoo, default_zoo_ids

    zoo = Zoo(root)
    return [i for i in default_zoo_ids() if i not in zoo]


def build_status(root: str | Path) -> BuildStatus:
    """The build's state as the files say; a ``running`` state whose process died reads as
    ``failed`` (with the reason), and no file at all as ``idle``."""
    d = _dir(root)
    try:
        data: Any = json.loads((d / "status.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return BuildStatus()
    except (OSError, ValueError):
        return BuildStatus(state="failed", error="the build's status file is unreadable")
    if not isinstance(data, dict):
        return BuildStatus(state="failed", error="the build's status file is unreadable")
    known = {k: data[k] for k in BuildStatus.__dataclass_fields__ if k in data}
    try:
        status = BuildStatus(**known)
    except TypeError:  # pragma: no cover - a hand-edited file
        return BuildStatus(state="failed", error="the build's status file is unreadable")
    if status.state == "running" and (status.pid is None or not _alive(status.pid)):
        return BuildStatus(
            **{
                **asdict(status),
                "state": "failed",
                "error": "the build process stopped without finishing (killed or crashed); "
                "finished models are kept — start the build again to resume",
            }
        )
    return status


def start_build(
    root: str | Path,
    *,
    device: str = "auto",
    max_steps: int | None = None,
    python: str | None = None,
) -> BuildStatus:
    """Start the background build of the default zoo unless one is running; returns its status.

    Args:
        root: the workspace folder.
        device: "auto", "cpu" or "cuda" (passed to the build).
        max_steps: cap on the training steps of every model (a quick, smaller zoo; None: the
            default plan's).
        python: the interpreter (default: this one).
    """
    if not isinstance(device, str) or not device:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}")
    _check_steps(max_steps)
    d = _dir(root)
    d.mkdir(parents=True, exist_ok=True)
    current = build_status(root)
    if not _take_lock(d):  # another build holds it (this session's or another one's)
        if current.running:
            return current
        return BuildStatus(
            state="running",
            message="another build is starting",
            missing=current.missing,
            pid=_lock_pid(d),
        )
    with contextlib.suppress(FileNotFoundError):
        (d / "cancel").unlink()
    log = open(d / "log.txt", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "core.zoo.worker", str(Path(root)), "--device", device]
            + ([] if max_steps is None else ["--max-steps", str(max_steps)]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except BaseException:
        (d / "lock").unlink()
        raise
    finally:
        log.close()
    _write_lock(d, proc.pid)  # the child takes over the lock this process took for it
    now = time.time()
    status = BuildStatus(
        state="running",
        message="Starting the build process…",
        missing=current.missing or missing_models(root),
        pid=proc.pid,
        started=now,
        updated=now,
    )
    # The child may already have written its own status; only write ours if it has not.
    if build_status(root).state != "running":
        write_status(root, status)
    return status


def cancel_build(root: str | Path) -> bool:
    """Ask a running build to stop at its next training step; False when none is running."""
    d = _dir(root)
    pid = _lock_pid(d)
    if pid is None or not _alive(pid):
        return False
    (d / "cancel").touch()
    return True


def _write_lock(d: Path, pid: int) -> None:
    tmp = d / f"lock.{os.getpid()}.tmp"
    tmp.write_text(str(pid))
    os.replace(tmp, d / "lock")


def _take_lock(d: Path) -> bool:
    """Take the build lock for this process. A lock held by this process or by its parent
    (:func:`start_build` takes it for the child it starts) is this process's; a lock whose
    process is gone is stale and taken over."""
    for _ in range(2):
        try:
            fd = os.open(d / "lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(d)
            if pid in (os.getpid(), os.getppid()):
                _write_lock(d, os.getpid())
                return True
            if pid is not None and _alive(pid):
                return False
            with contextlib.suppress(FileNotFoundError):
                (d / "lock").unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _check_steps(max_steps: int | None) -> None:
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")


def run_build(
    root: str | Path, *, device: str = "auto", max_steps: int | None = None
) -> BuildStatus:
    """Build the default zoo here, reporting through the status files (the worker's body).

    Returns the final status; a second build while one holds the lock returns at once with the
    running build's status.
    """
    from ..train import TrainingCancelled
    from . import DEFAULT_PLAN, Zoo, ensure_default

    _check_steps(max_steps)
    plan = DEFAULT_PLAN if max_steps is None else replace(DEFAULT_PLAN, max_steps=max_steps)
    d = _dir(root)
    d.mkdir(parents=True, exist_ok=True)
    if not _take_lock(d):
        return build_status(root)
    started = time.time()
    missing = missing_models(root)
    pid = os.getpid()

    def put(state: str, fraction: float, message: str, error: str | None = None) -> BuildStatus:
        s = BuildStatus(state, fraction, message, missing, pid, started, time.time(), error)
        write_status(root, s)
        return s

    def on_progress(info: dict[str, Any]) -> None:
        k, n = int(info["model"]), int(info["models"])
        frac = (k - 1) / n
        if info.get("steps"):
            frac += (int(info.get("step", 0)) / int(info["steps"])) / n
        elif info.get("epochs"):
            frac += (int(info.get("epoch", 0)) / int(info["epochs"])) / n
        if "done" in str(info.get("message", "")):
            frac = k / n
        acc = info.get("test_accuracy")
        text = str(info.get("message", "")) + (
            f" · test accuracy {acc:.3f}" if acc is not None else ""
        )
        if info.get("steps") and "done" not in str(info.get("message", "")):
            text += f" · step {info.get('step')}/{info['steps']}"
        put("running", min(frac, 1.0), text)

    put("running", 0.0, f"building {len(missing)} missing model(s)")
    try:
        ensure_default(
            Zoo(root),
            plan,
            device=device,
            progress=on_progress,
            should_stop=lambda: (d / "cancel").exists(),
        )
    except TrainingCancelled:
        missing = missing_models(root)
        return put("cancelled", 0.0, "cancelled: finished models are kept")
    except Exception as err:  # reported through the status file, the worker's only channel
        missing = missing_models(root)
        return put("failed", 0.0, "the build failed", f"{type(err).__name__}: {err}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            (d / "cancel").unlink()
        if _lock_pid(d) == pid:
            (d / "lock").unlink()
    missing = missing_models(root)
    secs = time.time() - started
    return put("done", 1.0, f"default zoo ready ({secs:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.zoo.worker", description=__doc__)
    p.add_argument("workspace")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args(argv)
    status = run_build(args.workspace, device=args.device, max_steps=args.max_steps)
    print(f"{status.state}: {status.message}" + (f" ({status.error})" if status.error else ""))
    return 0 if status.state in ("done", "running") else 1


if __name__ == "__main__":
    raise SystemExit(main())
