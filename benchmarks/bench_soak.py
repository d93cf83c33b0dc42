"""Soak test: N concurrent simulated sessions moving merge sliders on the Merge Lab page.

Each session is an AppTest instance in its own process (AppTest's page registry lives in the
script-run context of the thread that created it, so sessions in threads of one process break
``st.page_link``; each process therefore has its own Streamlit caches). A session repeatedly moves a
random merge-hyperparameter slider to a random value on its grid (and now and then switches
the merge method), re-runs the page and records the latency of that interaction, any exception
that escaped and any st.error shown. Each session process samples its resident memory (RSS)
after every interaction.

The peer measurement is one session alone, in the same run: the table reports the p95 latency
of N sessions against it (the ratio shows how sessions queue for the CPU).

    python benchmarks/bench_soak.py                      # 4 sessions, 180 s, tiny zoo
    python benchmarks/bench_soak.py --sessions 8 --seconds 300 --workspace ./workspace
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

PAGE = "pages/2_Merge_Lab.py"


@dataclass
class SessionStats:
    latencies: list[float] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)


def _open_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(PAGE).run()
    return at


def _sliders(at):
    return [s for s in at.slider if s.key and s.key.startswith("merge.") and not s.disabled]


def _grid(s) -> list[float]:
    step = s.step or (s.max - s.min) / 20
    n = int(round((s.max - s.min) / step))
    return [round(s.min + i * step, 10) for i in range(n + 1)]


def session(seconds: float, seed: int, out: mp.Queue) -> None:
    """One simulated user: open the page, then move sliders until ``seconds`` have passed."""
    from core.device import configure_threads

    configure_threads()
    stats = SessionStats()
    proc = psutil.Process()
    rng = random.Random(seed)
    t_start = time.monotonic()
    at = _open_page()
    if at.exception:
        stats.exceptions.append(str(at.exception[0].value))
        out.put(stats)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sliders = _sliders(at)
        methods = (
            at.selectbox(key="merge.method")
            if any(w.key == "merge.method" for w in at.selectbox)
            else None
        )
        if methods is not None and (not sliders or rng.random() < 0.1):
            cheap = [
                m
                for m in methods.options
                if m in ("average", "task_arithmetic", "ties", "dare", "breadcrumbs", "slerp")
            ]
            methods.set_value(rng.choice(cheap or methods.options))
        elif sliders:
            s = rng.choice(sliders)
            v = rng.choice(_grid(s))
            s.set_value((v, v) if isinstance(s.value, tuple) else v)
        t0 = time.perf_counter()
        at.run()
        stats.latencies.append(time.perf_counter() - t0)
        if at.exception:
            stats.exceptions.append(str(at.exception[0].value)[:200])
            at = _open_page()
        stats.errors.extend(e.value[:200] for e in at.error)
        stats.rss.append((time.monotonic() - t_start, proc.memory_info().rss))
    out.put(stats)


def run(n_sessions: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t_start = time.monotonic()
    procs = [
        ctx.Process(target=session, args=(seconds, 1000 + i, queue)) for i in range(n_sessions)
    ]
    for p in procs:
        p.start()
    stats: list[SessionStats] = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    lat = np.array([x for s in stats for x in s.latencies]) * 1000
    # memory growth after warm-up, per session process: RSS at 25% of the run vs at the end
    warm_rss = [
        [r for t, r in s.rss if t >= 0.25 * seconds] or [r for _, r in s.rss] or [0] for s in stats
    ]
    return {
        "sessions": n_sessions,
        "seconds": time.monotonic() - t_start,
        "interactions": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
        "rss_warm_mb": max(w[0] for w in warm_rss) / 2**20,
        "rss_end_mb": max(w[-1] for w in warm_rss) / 2**20,
        "rss_growth_mb": max(w[-1] - w[0] for w in warm_rss) / 2**20,
        "rss_peak_mb": max(max(w) for w in warm_rss) / 2**20,
        "exceptions": [e for s in stats for e in s.exceptions],
        "errors": [e for s in stats for e in s.errors],
    }


def _prepare_workspace(path: str | None) -> str:
    if path:
        return str(Path(path).resolve())
    from core.zoo import Zoo, ensure_default
    from tests.conftest import TINY_PLAN

    ws = Path(tempfile.mkdtemp(prefix="soak-ws-"))
    print(f"building a tiny default-shaped zoo in {ws} …", flush=True)
    ensure_default(Zoo(ws), TINY_PLAN, device="cpu")
    return str(ws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--baseline-seconds", type=float, default=45)
    ap.add_argument("--workspace", default=None, help="default: a tiny zoo in a temp folder")
    args = ap.parse_args()
    if args.sessions < 1 or args.seconds <= 0:
        ap.error("--sessions must be >= 1 and --seconds > 0")
    os.environ["MIXMERGE_WORKSPACE"] = _prepare_workspace(args.workspace)
    from core.device import configure_threads

    configure_threads()
    base = run(1, args.baseline_seconds)
    soak = run(args.sessions, args.seconds)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"\nMachine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}\n")
    print(
        "| run | sessions | seconds | interactions | p50 ms | p95 ms | p95 vs 1 session | "
        "RSS/session after warm-up MB | at end MB | max growth MB | exceptions | st.error |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in (("one session (peer)", base), ("soak", soak)):
        print(
            f"| {name} | {r['sessions']} | {r['seconds']:.0f} | {r['interactions']} | "
            f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p95_ms'] / base['p95_ms']:.2f}x | "
            f"{r['rss_warm_mb']:.0f} | {r['rss_end_mb']:.0f} | {r['rss_growth_mb']:+.0f} | "
            f"{len(r['exceptions'])} | {len(r['errors'])} |"
        )
    for r in (base, soak):
        for e in sorted(set(r["exceptions"]))[:5]:
            print("exception:", e)
        for e in sorted(set(r["errors"]))[:5]:
            print("st.error:", e)
    if soak["exceptions"] or soak["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
