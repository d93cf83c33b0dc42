"""End to end in a real browser: the Streamlit server on a free loopback port, driven by
Playwright with the system Chromium (never ``playwright install``).

Screenshots of every page go to a temporary folder, or to ``$MIXMERGE_SCREENSHOTS`` when set
(``make screenshots`` refreshes docs/screenshots/ from a workspace holding the real default zoo,
``$MIXMERGE_SCREENSHOT_WORKSPACE``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("MIXMERGE_SCREENSHOTS") or os.environ.get("TMPDIR", "/tmp")) / (
    "" if os.environ.get("MIXMERGE_SCREENSHOTS") else "mixmerge-screenshots"
)
CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 90_000
SERVER_LOGS: dict[str, Path] = {}  # base URL -> the server's log (with MIXMERGE_TIMING lines)


def page_url(page_file: Path) -> str:
    """Streamlit's URL path of a classic multipage file: "2_Merge_Lab.py" -> "Merge_Lab"."""
    return re.sub(r"^\d+_", "", page_file.stem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server (``streamlit run serve.py``, app.py behind the base-URL middleware) on
    the tiny zoo; yields its base URL."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"browser tests need Chromium at {CHROMIUM} (scripts/setup.sh installs it)")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    workspace = os.environ.get("MIXMERGE_SCREENSHOT_WORKSPACE") or str(tiny_zoo_dir)
    # timing lines on: the fragment test counts full page runs in the log (ui/timing.py)
    env = {**os.environ, "MIXMERGE_WORKSPACE": workspace, "MIXMERGE_TIMING": "1"}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "serve.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        SERVER_LOGS[url] = log
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)  # type: ignore[attr-defined]
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()


def settle(pg: object, quiet_ms: int = 1500) -> None:
    """Wait until the script run is over: Streamlit's "running" indicator and skeletons absent
    for ``quiet_ms`` in a row (a rerun can start a moment after the page looks ready), and every
    Plotly chart drawn."""
    pg.locator('[data-testid="stApp"]').wait_for()  # type: ignore[attr-defined]
    busy = (
        "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || document.querySelectorAll('[data-testid=\"stSkeleton\"]').length > 0"
        " || [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".some(c => !c.querySelector('.main-svg'))"
    )
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if pg.evaluate(busy):  # type: ignore[attr-defined]
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_ms / 1000:
            return
        pg.wait_for_timeout(100)  # type: ignore[attr-defined]
    raise AssertionError(f"page still running after {TIMEOUT_MS / 1000:.0f} s")


def no_exception(pg: object) -> None:
    exc = pg.locator('[data-testid="stException"]')  # type: ignore[attr-defined]
    assert exc.count() == 0, exc.first.inner_text()


def test_home_shows_the_zoo(server: str, page: object) -> None:
    pg = page
    pg.goto(server)  # type: ignore[attr-defined]
    pg.get_by_text("Default zoo").first.wait_for()  # type: ignore[attr-defined]
    settle(pg)
    no_exception(pg)
    assert "11 / 11" in pg.locator('[data-testid="stMetric"]').all_inner_texts()[1]  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / "home.png"), full_page=True)  # type: ignore[attr-defined]


def console_collector(pg: object, server: str) -> list[str]:
    """Console errors and warnings, failed requests and HTTP errors of ``pg``, as lines."""
    seen: list[str] = []
    pg.on(  # type: ignore[attr-defined]
        "console",
        lambda m: (
            seen.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    pg.on("pageerror", lambda e: seen.append(f"page error: {e}"))  # type: ignore[attr-defined]
    pg.on(  # type: ignore[attr-defined]
        "response", lambda r: seen.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
    )
    pg.on("requestfailed", lambda r: seen.append(f"failed: {r.url}"))  # type: ignore[attr-defined]
    return seen


@pytest.mark.slow
def test_every_page_renders_with_a_clean_console_and_is_screenshot(
    server: str, page: object
) -> None:
    """Each page opened as a deep link (a fresh tab, as from a bookmark): no exception, and no
    console error or warning, no 404 (``/<Page>/_stcore/health`` and ``host-config`` before
    serve.py), no failed request."""
    pg = page
    SHOTS.mkdir(parents=True, exist_ok=True)
    seen = console_collector(pg, server)
    problems: dict[str, list[str]] = {}
    for f in sorted((ROOT / "pages").glob("*.py")):
        seen.clear()
        pg.goto(f"{server}/{page_url(f)}")  # type: ignore[attr-defined]
        pg.locator('[data-testid="stSidebar"]').get_by_text("Home").first.wait_for()  # type: ignore[attr-defined]
        settle(pg)
        no_exception(pg)
        pg.screenshot(path=str(SHOTS / f"{page_url(f).lower()}.png"), full_page=True)  # type: ignore[attr-defined]
        if seen:
            problems[page_url(f)] = list(seen)
    assert not problems, problems


def _metric_values(pg: object) -> list[str]:
    return pg.locator('[data-testid="stMetricValue"]').all_inner_texts()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.skipif(
    not (ROOT / "pages" / "2_Merge_Lab.py").exists(), reason="Merge Lab page not written yet"
)
def test_merge_lab_slider_changes_accuracies_and_pdf_downloads(
    server: str, page: object, tmp_path: Path
) -> None:
    pg = page
    pg.goto(f"{server}/Merge_Lab")  # type: ignore[attr-defined]
    # Streamlit tags keyed widgets with the class st-key-<key>, other characters than [A-Za-z0-9_-] as "-"
    slider = pg.locator(".st-key-merge-scale").get_by_role("slider")  # type: ignore[attr-defined]
    slider.wait_for()
    pg.get_by_text("Average accuracy").first.wait_for()  # type: ignore[attr-defined]
    settle(pg)
    no_exception(pg)
    before = _metric_values(pg)
    assert any(re.fullmatch(r"0\.\d{3}", v) for v in before), before  # accuracies are shown
    slider.focus()
    for _ in range(6):
        slider.press("ArrowRight")
    pg.wait_for_function(  # type: ignore[attr-defined]
        "(before) => { const v = [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
        ".map(e => e.innerText); return v.length && v.join('|') !== before.join('|'); }",
        arg=before,
        timeout=TIMEOUT_MS,
    )
    settle(pg)
    no_exception(pg)
    after = _metric_values(pg)
    acc = [i for i, v in enumerate(before) if re.fullmatch(r"0\.\d{3}", v)]
    assert [after[i] for i in acc] != [before[i] for i in acc], (before, after)

    # export the live figure as PDF through its download button
    pg.get_by_text("Export", exact=True).first.click()  # type: ignore[attr-defined]
    button = pg.get_by_role("button", name="PDF").first  # type: ignore[attr-defined]
    button.wait_for()
    try:
        with pg.expect_download(timeout=TIMEOUT_MS) as info:  # type: ignore[attr-defined]
            button.click()
    except Exception:  # noqa: BLE001 - one retry: under heavy load a click can land mid-rerun
        settle(pg)
        with pg.expect_download(timeout=TIMEOUT_MS) as info:  # type: ignore[attr-defined]
            button.click()
    path = tmp_path / "figure.pdf"
    info.value.save_as(path)
    pdf = path.read_bytes()
    assert pdf.startswith(b"%PDF-") and re.search(rb"/Type\s*/Page[^s]", pdf), pdf[:200]
    assert info.value.suggested_filename.endswith(".pdf")


def test_offline_no_outside_requests_and_no_webgl_for_moderate_scatters(
    server: str, page: object
) -> None:
    """Nothing is fetched from outside the server (the page icon is served locally), and the
    Clustering page draws its scatter without WebGL at the default sample size."""
    pg = page
    seen = console_collector(pg, server)
    outside: list[str] = []
    pg.on(  # type: ignore[attr-defined]
        "request",
        lambda req: (
            outside.append(req.url) if not req.url.startswith((server, "data:", "blob:")) else None
        ),
    )
    pg.goto(f"{server}/Clustering")  # type: ignore[attr-defined]
    pg.locator('[data-testid="stSidebar"]').get_by_text("Home").first.wait_for()  # type: ignore[attr-defined]
    settle(pg)
    run = pg.get_by_role("button", name="Run PPP").first  # type: ignore[attr-defined]
    run.click()
    pg.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for()  # type: ignore[attr-defined]
    settle(pg)
    no_exception(pg)
    assert outside == [], outside
    assert not [m for m in seen if "webgl" in m.lower() or "stall" in m.lower()], seen
    assert pg.locator('[data-testid="stPlotlyChart"] canvas.gl-canvas').count() == 0  # type: ignore[attr-defined]


def _runs(server: str, what: str) -> int:
    """How many timing lines of the server's log contain ``what`` (``'page "Merge Lab"'``,
    ``"fragment merge.live "``)."""
    lines = SERVER_LOGS[server].read_text(errors="replace").splitlines()
    return sum(line.startswith("mixmerge-timing ") and what in line for line in lines)


def _probe(pg: object, css: str) -> None:
    """Tag the DOM node of an element outside the fragment, to check later that it was kept."""
    pg.evaluate(f"() => {{ document.querySelector('{css}').__probe = 1; }}")  # type: ignore[attr-defined]


def _probe_kept(pg: object, css: str) -> bool:
    return bool(pg.evaluate(f"() => document.querySelector('{css}')?.__probe === 1"))  # type: ignore[attr-defined]


def _wait_for_new_text(pg: object, selector: str, before: str) -> None:
    pg.wait_for_function(  # type: ignore[attr-defined]
        "([sel, before]) => { const t = [...document.querySelectorAll(sel)]"
        ".map(e => e.textContent).join('|'); return t.length && t !== before; }",
        arg=[selector, before],
        timeout=TIMEOUT_MS,
    )


def _text(pg: object, selector: str) -> str:
    return str(
        pg.evaluate(  # type: ignore[attr-defined]
            "(sel) => [...document.querySelectorAll(sel)].map(e => e.textContent).join('|')",
            selector,
        )
    )


def test_live_sliders_rerun_only_their_fragment(server: str, page: object) -> None:
    """A Merge Lab λ move and a Mixup Gallery λ move change the shown result and rerun only
    the slider's fragment: no full page run in the server's timing lines, one more run of the
    fragment, and the widgets above it keep their DOM nodes. A widget outside the fragment (the
    merge seed) does rerun the page, so the count can tell the two apart."""
    pg = page
    metrics = '[data-testid="stMetricValue"]'
    pg.goto(f"{server}/Merge_Lab")  # type: ignore[attr-defined]
    slider = pg.locator(".st-key-merge-scale").get_by_role("slider")  # type: ignore[attr-defined]
    slider.wait_for()
    pg.get_by_text("Average accuracy").first.wait_for()  # type: ignore[attr-defined]
    settle(pg)
    no_exception(pg)
    outside = ".st-key-merge-setting"
    _probe(pg, outside)
    pages, live = _runs(server, 'page "Merge Lab"'), _runs(server, "fragment merge.live ")
    assert pages >= 1 and live >= 1, SERVER_LOGS[server].read_text()[-2000:]
    before = _text(pg, metrics)
    accs = [v for v in _metric_values(pg) if re.fullmatch(r"0\.\d{3}", v)]
    for _ in range(4):  # λ 0.3 -> 0.5: the accuracies move
        slider.press("ArrowRight")
        _wait_for_new_text(pg, metrics, before)
        settle(pg, quiet_ms=500)
        before = _text(pg, metrics)
    no_exception(pg)
    assert [v for v in _metric_values(pg) if re.fullmatch(r"0\.\d{3}", v)] != accs
    assert _runs(server, 'page "Merge Lab"') == pages  # the page did not rerun
    assert _runs(server, "fragment merge.live ") >= live + 4  # the fragment did, each time
    assert _probe_kept(pg, outside)

    # the merge seed sits above the fragment: changing it reruns the whole page
    seed = pg.locator(".st-key-merge-seed input")  # type: ignore[attr-defined]
    seed.fill("3")
    seed.press("Enter")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while _runs(server, 'page "Merge Lab"') == pages and time.monotonic() < deadline:
        pg.wait_for_timeout(100)  # type: ignore[attr-defined]
    assert _runs(server, 'page "Merge Lab"') == pages + 1
    settle(pg)
    no_exception(pg)

    # Mixup Gallery: the fixed λ slider redraws the gallery, not the page
    pg.goto(f"{server}/Mixup_Gallery")  # type: ignore[attr-defined]
    pg.locator(".st-key-mixup_gallery-fixed").get_by_text("Fixed λ").wait_for()  # type: ignore[attr-defined]
    settle(pg)
    # plain mixup: its label weights are λ itself (the default, CutMix, uses the box's area)
    pg.locator(".st-key-mixup_gallery-method").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name="mixup", exact=True).click()  # type: ignore[attr-defined]
    settle(pg)
    pg.locator(".st-key-mixup_gallery-fixed").get_by_text("Fixed λ").click()  # type: ignore[attr-defined]
    lam = pg.locator(".st-key-mixup_gallery-lam").get_by_role("slider")  # type: ignore[attr-defined]
    lam.wait_for()
    settle(pg)
    no_exception(pg)
    outside = ".st-key-mixup_gallery-source"
    _probe(pg, outside)
    figure = ".st-key-mixup_gallery-gallery-chart .main-svg"
    before = _text(pg, figure)
    assert "0.50" in before  # the label weights at λ = 0.5
    pages = _runs(server, 'page "Mixup Gallery"')
    live = _runs(server, "fragment mixup_gallery.live ")
    lam.press("ArrowLeft")
    _wait_for_new_text(pg, figure, before)
    settle(pg)
    no_exception(pg)
    assert "0.45" in _text(pg, figure)
    assert _runs(server, 'page "Mixup Gallery"') == pages
    assert _runs(server, "fragment mixup_gallery.live ") == live + 1
    assert _probe_kept(pg, outside)
