"""The ASGI wrapper the server runs (``streamlit run serve.py``): Streamlit's own app plus one
middleware that pins the frontend to the server's root.

On a deep link such as ``/Merge_Lab`` Streamlit's frontend does not know where the server's
root is: it probes ``/Merge_Lab/_stcore/health`` and ``/Merge_Lab/_stcore/host-config`` first
(both 404 by design, streamlit/streamlit#7074) and then ``/_stcore/...``. Two red 404 lines in
every deep link's console hide real errors. The frontend reads ``window.__streamlit
.BACKEND_BASE_URL`` before it probes; this middleware sets it to the page's origin in the HTML
shell, so the only probe is the root's. No Streamlit import here: the module is plain ASGI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Set before Streamlit's bundle (a module script, deferred) reads it; frozen there.
BASE_URL_SCRIPT = (
    b"<script>window.__streamlit = Object.assign(window.__streamlit || {}, "
    b"{BACKEND_BASE_URL: window.location.origin + '/'})</script>"
)
_SKIP_PREFIXES = ("/_stcore/", "/static/", "/component/", "/media/", "/app/static/")


def _is_page_request(scope: Scope) -> bool:
    """A GET for a page URL (the HTML shell), not an API route or an asset file."""
    if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
        return False
    path = str(scope.get("path", ""))
    last = path.rsplit("/", 1)[-1]
    return not path.startswith(_SKIP_PREFIXES) and "/_stcore/" not in path and "." not in last


def inject_base_url(html: bytes) -> bytes:
    """``html`` with :data:`BASE_URL_SCRIPT` as the first element of its ``<head>``.

    Raises:
        ValueError: ``html`` has no ``<head>`` tag.
    """
    if not isinstance(html, bytes | bytearray):
        raise TypeError(f"html must be bytes, got {type(html).__name__}")
    i = html.find(b"<head>")
    if i < 0:
        raise ValueError("html has no <head> tag to put the base-URL script in")
    i += len(b"<head>")
    return bytes(html[:i]) + BASE_URL_SCRIPT + bytes(html[i:])


class BaseUrlMiddleware:
    """Pure ASGI middleware: puts :data:`BASE_URL_SCRIPT` into every HTML page response.

    Page requests are asked for an unencoded body (the shell is 2 KB) so the injection sees
    plain HTML; everything else passes through untouched, streamed.
    """

    def __init__(self, app: ASGIApp) -> None:
        if not callable(app):
            raise TypeError("app must be an ASGI callable")
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_page_request(scope):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k != b"accept-encoding"]
        start: Message | None = None
        body: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = list(start.get("headers", []))
            ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            data = b"".join(body)
            if start.get("status") == 200 and ctype.startswith(b"text/html") and b"<head>" in data:
                data = inject_base_url(data)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(data)).encode()))
                if scope.get("method") == "HEAD":
                    data = b""
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": data, "more_body": False})

        await self.app(scope, receive, wrapped)
