"""Live-slider latency in a real browser: key press (or mouse release) to changed text in the DOM.

Starts the real server (``streamlit run serve.py`` on 127.0.0.1, a free port) on a workspace
with the default zoo (``--workspace``; its task-vector part plus the MLP independents are built
there when missing), drives headless Chromium through Playwright (the system Chromium, never
``playwright install``) and, for each live slider —

* Merge Lab, task arithmetic: λ (``merge.scale``) and the first per-task weight
  (``merge.weights.0``);
* Merge Lab, TIES: density (``merge.density``);
* Mixup Gallery, fixed λ (``mixup_gallery.lam``) —

presses an arrow key ``--presses`` times and drags the thumb with the mouse ``--drags`` times,
one move at a time (the next after the page is quiet; a first move is not counted), each to a value not shown before (the
merge seed, or the gallery's seed, is bumped before values would repeat, so every move is a
real computation, not a cache hit). In the page, ``performance.now()`` stamps the key press
(``keydown``) or mouse release (``pointerup``), the first WebSocket message the browser sends
after it (the rerun request), the last message it receives for the run, and the first DOM
mutation that changes the watched text (the metric values of the Merge Lab; the gallery
figure's text). The server logs each fragment's run time (``MIXMERGE_TIMING``, ui/timing.py)
and the Merge Lab shows its merge + evaluation time: both are printed beside the browser's.

    nice -n 10 .venv/bin/python benchmarks/bench_browser_latency.py [--workspace DIR]
        [--presses 20] [--drags 6] [--only merge.scale ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.app.test_browser import ARGS, CHROMIUM  # noqa: E402 - the tests' Chromium flags

GOAL_MS = 300.0
MOVE_TIMEOUT_MS = 20_000

# Stamps in the page's clock: WebSocket traffic (installed before Streamlit opens its socket),
# key presses and mouse releases (capture phase, before the slider sees them).
INIT_JS = """
(() => {
  const b = window.__bench = {keys: [], ups: [], sent: [], recv: [], changes: []};
  const Orig = window.WebSocket;
  class Stamped extends Orig {
    constructor(...a) { super(...a); this.addEventListener('message', () => b.recv.push(performance.now())); }
    send(d) { b.sent.push(performance.now()); return super.send(d); }
  }
  window.WebSocket = Stamped;
  document.addEventListener('keydown', () => b.keys.push(performance.now()), true);
  document.addEventListener('pointerup', () => b.ups.push(performance.now()), true);
})();
"""

# The watched text: every metric value (Merge Lab) or the text of every Plotly chart (gallery).
WATCH_JS = """
(sel) => {
  const b = window.__bench;
  if (b.observer) b.observer.disconnect();
  const sig = () => [...document.querySelectorAll(sel)].map(e => e.textContent).join('|');
  b.last = sig();
  b.observer = new MutationObserver(() => {
    const s = sig();
    if (s !== b.last) { b.last = s; b.changes.push(performance.now()); }
  });
  b.observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""
RESET_JS = "() => { const b = window.__bench; for (const k of ['keys','ups','sent','recv','changes']) b[k] = []; }"
# True once no WebSocket message has come for ``quiet`` ms.
QUIET_JS = """
(quiet) => {
  const b = window.__bench;
  return performance.now() - (b.recv.length ? b.recv[b.recv.length - 1] : 0) > quiet;
}
"""
BUSY_JS = (
    "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " || document.querySelectorAll('[data-testid=\"stSkeleton\"]').length > 0"
    " || [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
    ".some(c => !c.querySelector('.main-svg'))"
)


@dataclass(frozen=True)
class Slider:
    """One live slider: where it is, what to watch, how to get there, which way has room."""

    name: str  # its widget key
    page: str  # URL path
    watch: str  # CSS selector of the watched text
    method: str | None = None  # Merge Lab method title to select first
    fixed_lam: bool = False  # Mixup Gallery: switch "Fixed λ" on first
    key_dir: str = "ArrowRight"  # direction with room for the presses of one sweep
    room: int = 20  # presses in that direction before values would repeat
    seed_key: str = "merge.seed"  # number input bumped to make the next sweep fresh
    backend: bool = True  # the page shows "Merge + evaluation" ms
    fragment: str = "merge.live"  # its fragment's name in the timing lines
    steps: int = 60  # slider steps from end to end (range / step)


METRICS = '[data-testid="stMetricValue"]'
SLIDERS = [
    Slider("merge.scale", "Merge_Lab", METRICS, room=20),
    Slider("merge.weights.0", "Merge_Lab", METRICS, key_dir="ArrowLeft", room=20),
    Slider("merge.density", "Merge_Lab", METRICS, method="TIES-Merging", room=20, steps=99),
    Slider(
        "mixup_gallery.lam",
        "Mixup_Gallery",
        ".st-key-mixup_gallery-gallery-chart .main-svg",
        fixed_lam=True,
        key_dir="ArrowLeft",
        room=10,
        seed_key="mixup_gallery.seed",
        backend=False,
        fragment="mixup_gallery.live",
        steps=20,
    ),
]


def css_key(key: str) -> str:
    """Streamlit's class of a keyed widget: ``st-key-<key>``, other characters than
    [A-Za-z0-9_-] as "-"."""
    return "st-key-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_workspace(path: str | None) -> Path:
    """A workspace with the default zoo's task-vector part and the MLP independents (the models
    the Merge Lab's defaults use); what is missing is built (minutes under load)."""
    import dataclasses

    from core.device import configure_threads
    from core.zoo import DEFAULT_PLAN, Zoo, ensure_default

    ws = Path(path) if path else Path(tempfile.mkdtemp(prefix="mixmerge-latency-"))
    plan = dataclasses.replace(DEFAULT_PLAN, independent=DEFAULT_PLAN.independent[:1])
    zoo = Zoo(ws)
    missing = [s.id for s in plan.models() if s.id not in zoo]
    if missing:
        print(f"building {len(missing)} models of the default zoo in {ws}…", flush=True)
        configure_threads()
        t0 = time.perf_counter()
        ensure_default(zoo, plan, device="cpu")
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    return ws


class Server:
    """``streamlit run serve.py`` on a free loopback port, timing lines on, log in a file."""

    def __init__(self, workspace: Path, log: Path, timing: str = "1") -> None:
        self.port = free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MIXMERGE_WORKSPACE": str(workspace), "MIXMERGE_TIMING": timing}
        cmd = [sys.executable, "-m", "streamlit", "run", "serve.py"]
        cmd += ["--server.headless", "true", "--server.port", str(self.port)]
        cmd += ["--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
        cmd += ["--browser.gatherUsageStats", "false"]
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def settle(pg: Any, quiet_ms: int = 1000, timeout_s: float = 120) -> None:
    """Wait until no script runs and every chart is drawn, ``quiet_ms`` in a row."""
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if pg.evaluate(BUSY_JS):
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_ms / 1000:
            return
        pg.wait_for_timeout(100)
    raise RuntimeError(f"page still running after {timeout_s:.0f} s")


def fragment_ms(lines: list[str]) -> list[float]:
    """Fragment run times in the new server log lines."""
    pat = re.compile(r"mixmerge-timing fragment \S+ ([\d.]+) ms")
    return [float(m.group(1)) for line in lines if (m := pat.search(line))]


def page_runs(lines: list[str]) -> int:
    return sum("mixmerge-timing page " in line for line in lines)


def open_slider(pg: Any, server: Server, s: Slider) -> Any:
    """Open the slider's page in its starting state; return the slider's locator."""
    pg.goto(f"{server.url}/{s.page}")
    pg.locator('[data-testid="stSidebar"]').get_by_text("Home").first.wait_for()
    settle(pg)
    if s.method:
        pg.locator(f".{css_key('merge.method')}").click()
        pg.get_by_role("option", name=s.method, exact=True).click()
        settle(pg)
    if s.fixed_lam:
        pg.locator(f".{css_key('mixup_gallery.fixed')}").get_by_text("Fixed λ").click()
        settle(pg)
    slider = pg.locator(f".{css_key(s.name)}").get_by_role("slider")
    slider.wait_for()
    return slider


def bump_seed(pg: Any, s: Slider, seed: int) -> None:
    box = pg.locator(f".{css_key(s.seed_key)}").locator("input")
    box.fill(str(seed))
    box.press("Enter")
    pg.wait_for_timeout(300)
    settle(pg)


def slider_value(pg: Any, s: Slider) -> str | None:
    """The slider's shown value (``aria-valuetext`` of its input)."""
    return pg.locator(f".{css_key(s.name)}").get_by_role("slider").get_attribute("aria-valuetext")


def one_move(pg: Any, server: Server, s: Slider, act: Any, stamp: str) -> dict[str, Any] | None:
    """Do one move (``act()``) and return its timings (None when the text did not change)."""
    n_lines = len(server.lines())
    pg.evaluate(RESET_JS)
    value = slider_value(pg, s)
    act()
    pg.wait_for_timeout(50)
    if slider_value(pg, s) == value:  # the thumb did not move (a drag shorter than a step)
        return None
    # the run is over when the server logs the fragment's time and the last messages are in
    mark = f"mixmerge-timing fragment {s.fragment} "
    deadline = time.monotonic() + MOVE_TIMEOUT_MS / 1000
    while not any(mark in line for line in server.lines()[n_lines:]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{s.name}: no run of {s.fragment} after the move")
        pg.wait_for_timeout(20)
    pg.wait_for_function(QUIET_JS, arg=250, timeout=MOVE_TIMEOUT_MS, polling=20)
    b = pg.evaluate("() => window.__bench")
    t0 = (b[stamp] or [None])[-1]
    changes = [t for t in b["changes"] if t0 is not None and t >= t0]
    if t0 is None or not changes:  # a move that changed nothing (same rounded numbers)
        return None
    sent = [t for t in b["sent"] if t >= t0]
    recv = [t for t in b["recv"] if sent and t >= sent[0]]
    new = server.lines()[n_lines:]
    row: dict[str, Any] = {
        "browser_ms": changes[0] - t0,
        "to_request_ms": (sent[0] - t0) if sent else None,
        "roundtrip_ms": (recv[-1] - sent[0]) if sent and recv else None,
        "fragment_ms": sum(fragment_ms(new)) if fragment_ms(new) else None,
        "full_runs": page_runs(new),
    }
    if s.backend:
        vals = pg.locator(METRICS).all_inner_texts()
        ms = [v for v in vals if re.fullmatch(r"\d+ ms|cached", v)]
        row["backend"] = ms[0] if ms else None
    return row


def drag(pg: Any, s: Slider, steps: int, direction: int) -> Any:
    """A mouse drag of the thumb by ``steps`` slider steps (``direction`` +1 or -1); returns
    the action."""

    def act() -> None:
        box = pg.locator(f".{css_key(s.name)}").locator("[data-testid='stSliderThumbValue']")
        thumb = box.locator("xpath=..").bounding_box()  # the thumb (its value label's parent)
        track = pg.locator(f".{css_key(s.name)}").locator("[role='group'] > div").first
        width = track.bounding_box()["width"]
        x, y = thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2
        pg.mouse.move(x, y)
        pg.mouse.down()
        pg.mouse.move(x + direction * steps * width / s.steps, y, steps=4)
        pg.mouse.up()

    return act


def measure(pg: Any, server: Server, s: Slider, presses: int, drags: int) -> dict[str, Any]:
    slider = open_slider(pg, server, s)
    pg.evaluate(WATCH_JS, s.watch)
    seed = 1
    rows: dict[str, list[dict[str, Any]]] = {"keyboard": [], "mouse": []}
    misses = 0
    direction = s.key_dir
    # a first move, not counted: the first run after opening the page pays one-off costs
    one_move(pg, server, s, lambda: slider.press(direction), "keys")
    done_in_sweep = 1
    for _ in range(presses):
        if done_in_sweep == s.room:  # values would repeat: fresh seed, other way
            seed += 1
            bump_seed(pg, s, seed)
            slider = pg.locator(f".{css_key(s.name)}").get_by_role("slider")
            pg.evaluate(WATCH_JS, s.watch)
            direction = "ArrowLeft" if direction == "ArrowRight" else "ArrowRight"
            done_in_sweep = 0
        row = one_move(pg, server, s, lambda d=direction, sl=slider: sl.press(d), "keys")
        done_in_sweep += 1
        if row is None:
            misses += 1
        else:
            rows["keyboard"].append(row)
    seed += 1
    bump_seed(pg, s, seed)  # fresh values for the drags, back the way the presses came
    pg.evaluate(WATCH_JS, s.watch)
    back = -1 if direction == "ArrowRight" else 1
    for _ in range(drags):
        row = one_move(pg, server, s, drag(pg, s, 2, back), "ups")
        if row is None:
            misses += 1
        else:
            rows["mouse"].append(row)
    return {"slider": s.name, "page": s.page, "misses": misses, **rows}


def stats(xs: list[float]) -> dict[str, float] | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    p95 = xs[min(len(xs) - 1, max(0, round(0.95 * (len(xs) - 1))))]
    return {"n": len(xs), "median": statistics.median(xs), "p95": p95, "max": xs[-1]}


def fmt(st: dict[str, float] | None) -> str:
    if not st:
        return "–"
    return f"{st['median']:.0f} / {st['p95']:.0f} / {st['max']:.0f}"


def report(results: list[dict[str, Any]]) -> str:
    head = (
        "| slider | input | n | browser ms (median / p95 / max) | server fragment ms "
        "| WebSocket round trip ms | merge + eval | full reruns | p95 < 300 ms |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    out = []
    for r in results:
        for how in ("keyboard", "mouse"):
            rows = r[how]
            if not rows:
                continue
            b = stats([x["browser_ms"] for x in rows])
            f = stats([x["fragment_ms"] for x in rows])
            rt = stats([x["roundtrip_ms"] for x in rows])
            be = [x.get("backend") for x in rows if x.get("backend")]
            be_ms = stats([float(v.split()[0]) for v in be if v != "cached"])
            be_txt = fmt(be_ms) + (f" ({be.count('cached')} cached)" if "cached" in be else "")
            full = sum(x["full_runs"] for x in rows)
            ok = "yes" if b and b["p95"] < GOAL_MS else "no"
            out.append(
                f"| {r['slider']} | {how} | {b['n'] if b else 0} | {fmt(b)} | {fmt(f)} | "
                f"{fmt(rt)} | {be_txt if be else '–'} | {full} | {ok} |"
            )
    return head + "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workspace", default=None, help="workspace with the default zoo (built if missing)"
    )
    ap.add_argument("--presses", type=int, default=20, help="arrow-key moves per slider")
    ap.add_argument("--drags", type=int, default=6, help="mouse drags per slider")
    ap.add_argument("--only", nargs="+", default=None, help="slider keys to measure")
    ap.add_argument("--json", default=None, help="write every move's timings here")
    ap.add_argument(
        "--profile", action="store_true", help="cProfile each fragment run into the server log"
    )
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"needs Chromium at {CHROMIUM} (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    ws = ensure_workspace(args.workspace)
    chosen = [s for s in SLIDERS if args.only is None or s.name in args.only]
    load0 = os.getloadavg()
    t_start = time.time()
    log = Path(tempfile.mkdtemp(prefix="mixmerge-latency-log-")) / "streamlit.log"
    server = Server(ws, log, "profile" if args.profile else "1")
    results = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            ctx.add_init_script(INIT_JS)
            pg = ctx.new_page()
            pg.set_default_timeout(120_000)
            for s in chosen:
                print(f"{s.name}…", flush=True)
                results.append(measure(pg, server, s, args.presses, args.drags))
            browser.close()
    finally:
        server.stop()
    load1 = os.getloadavg()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t_start))} · {os.cpu_count()} cores "
        f"· load average (1/5/15 min) at start {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}, "
        f"at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} · workspace {ws} · "
        f"server log {log}\n"
    )
    print(report(results))
    misses = sum(r["misses"] for r in results)
    if misses:
        print(f"\n{misses} moves left the watched text unchanged (not counted)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load": [load0, load1], "start": t_start, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
