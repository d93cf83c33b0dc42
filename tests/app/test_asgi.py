"""The base-URL middleware of serve.py, as plain ASGI (the browser test covers the real server)."""

from __future__ import annotations

import asyncio

import pytest

from ui.asgi import BASE_URL_SCRIPT, BaseUrlMiddleware, inject_base_url

SHELL = b"<!DOCTYPE html><html><head><title>x</title></head><body></body></html>"


def _call(path: str, body: bytes, ctype: bytes = b"text/html; charset=utf-8", **scope_kw):
    seen_headers: list = []

    async def inner(scope, receive, send):
        seen_headers.extend(scope["headers"])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:], "more_body": False})

    out: list = []

    async def send(message):
        out.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"accept-encoding", b"gzip")],
    } | scope_kw
    asyncio.run(BaseUrlMiddleware(inner)(scope, receive, send))
    data = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    headers = dict(out[0]["headers"])
    return data, headers, seen_headers


def test_page_shell_gets_the_base_url_first_in_head() -> None:
    data, headers, inner_headers = _call("/Merge_Lab", SHELL)
    assert data.startswith(b"<!DOCTYPE html><html><head>" + BASE_URL_SCRIPT)
    assert int(headers[b"content-length"]) == len(data)
    assert (b"accept-encoding", b"gzip") not in inner_headers  # plain HTML to edit


@pytest.mark.parametrize(
    "path", ["/_stcore/health", "/Merge_Lab/_stcore/host-config", "/static/js/index.js"]
)
def test_api_and_assets_pass_through(path: str) -> None:
    data, _, inner_headers = _call(path, SHELL)
    assert data == SHELL and (b"accept-encoding", b"gzip") in inner_headers


def test_non_html_page_response_is_untouched() -> None:
    assert _call("/x", b'{"a": 1}', ctype=b"application/json")[0] == b'{"a": 1}'


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="<head>"):
        inject_base_url(b"<html></html>")
    with pytest.raises(TypeError, match="bytes"):
        inject_base_url("<head>")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ASGI"):
        BaseUrlMiddleware(None)  # type: ignore[arg-type]


def test_server_threads_copies_mixmerge_threads_into_the_library_variables() -> None:
    from serve import THREAD_VARS, server_threads

    env = {"MIXMERGE_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    server_threads(env)
    assert env == {
        "MIXMERGE_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "2",
    }  # a variable already set is kept
    assert set(THREAD_VARS) <= set(env)
    empty: dict[str, str] = {}
    server_threads(empty)
    assert empty == {}
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="MIXMERGE_THREADS must be an integer >= 1"):
            server_threads({"MIXMERGE_THREADS": bad})
