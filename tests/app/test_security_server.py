"""The real server: loopback only, XSRF protection on, usage statistics off.

Two servers are started as real subprocesses: one with the flags of the ``make run`` recipe
(what the README tells users to run), one with no flags at all (the project's
``.streamlit/config.toml`` alone must be safe). Each must listen on 127.0.0.1 only, refuse
connections on the machine's other addresses, and reject a state-changing request (file
upload) that carries no XSRF token.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_run_args(port: int) -> list[str]:
    """The ``make run`` recipe's streamlit arguments with the Makefile's default HOST."""
    text = (ROOT / "Makefile").read_text()
    host = re.search(r"^HOST \?= (\S+)", text, re.M)
    assert host, "Makefile must define HOST ?= ..."
    recipe = re.search(r"^run:.*\n\t(.+)$", text, re.M)
    assert recipe, "Makefile must have a run recipe"
    cmd = recipe.group(1).replace("$(HOST)", host.group(1)).replace("$(PORT)", str(port))
    args = shlex.split(cmd)
    i = args.index("streamlit")
    return args[i + 1 :]


def _non_loopback_addresses() -> list[str]:
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                out.append(a.address)
    return out


def _start(args: list[str], workspace: Path) -> subprocess.Popen:
    env = {**os.environ, "MIXMERGE_WORKSPACE": str(workspace)}
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server did not become healthy")


def _listening(pid: int, port: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        c.laddr.ip
        for p in procs
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _upload_without_token(port: int) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_stcore/upload_file/some-session/some-file",
        data=b"x",
        method="PUT",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_config_file_keys() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["server"].get("enableCORS", True) is True  # never turned off
    assert cfg["browser"]["gatherUsageStats"] is False
    assert cfg["server"]["headless"] is True


def test_effective_config_as_streamlit_reads_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    values = dict(re.findall(r"^(\w+) = (.+)$", out, re.M))
    assert values["address"] == '"127.0.0.1"'
    assert values["enableXsrfProtection"] == "true"
    assert values["gatherUsageStats"] == "false"


@pytest.mark.parametrize("how", ["make-run-flags", "config-only"])
def test_server_listens_on_loopback_only_with_xsrf(how: str, tmp_path: Path) -> None:
    port = _free_port()
    args = (
        _make_run_args(port)
        if how == "make-run-flags"
        else ["run", "app.py", "--server.port", str(port)]
    )
    proc = _start(args, tmp_path / "ws")
    try:
        _wait_healthy(proc, port)
        assert _listening(proc.pid, port) == {"127.0.0.1"}
        for addr in _non_loopback_addresses():
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((addr, port)) != 0, f"server reachable on {addr}:{port}"
        status, body = _upload_without_token(port)
        assert status == 403 and "XSRF" in body, (status, body)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
