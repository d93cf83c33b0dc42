"""Cancel from the UI: a real server and a real browser start a long training on the Model Zoo
page, press "Cancel training" while it runs, and check that the zoo is unchanged.

Streamlit interrupts a running script when the user clicks any widget (the next ``st.*`` call,
here the progress bar update, raises inside the training loop), so the model, which is stored
only after training ends, is never written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium"),
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cancel_training_from_the_ui_stores_nothing(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ws = tmp_path / "ws"
    Zoo(ws)
    port = _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
        cwd=ROOT,
        env={**os.environ, "MIXMERGE_WORKSPACE": str(ws)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/Model_Zoo")
            slider = page.get_by_role("slider").first
            slider.wait_for(timeout=60_000)
            slider.focus()
            slider.press("End")  # 30 epochs: far longer than the test waits
            page.get_by_role("button", name="Train", exact=True).click()
            cancel = page.get_by_role("button", name="Cancel training")
            cancel.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # training is under way
            cancel.click()
            expect(page.get_by_text("Training cancelled").first).to_be_visible(timeout=60_000)
            browser.close()
        time.sleep(1.0)  # the interrupted run has unwound
        z = Zoo(ws)
        assert len(z) == 0 and not list(z.models_dir.iterdir())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "Traceback" not in text, text[-3000:]
