"""Running the workbench: in the foreground for ``cxagent serve`` and the demo, or in a
background thread on a free port for browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI

from cxagent.web.app import create_app
from cxagent.web.settings import Settings
from cxagent.workbench.reader import Workbench


def app_for_store(url: str, settings: Settings | None = None) -> FastAPI:
    """The application over the store at ``url`` (development settings by default)."""
    return create_app(settings or Settings(db_url=url), Workbench.from_url(url))


def sign_in_url(settings: Settings, base_url: str) -> str | None:
    """The link that signs the ML engineer in at once; development only (it holds the
    token, which must not end up in a production log)."""
    if not settings.development:
        return None
    return f"{base_url.rstrip('/')}/login?token={quote(settings.engineer_token)}"


def _stored_views(workbench: Workbench) -> bool:
    return workbench.get_analysis("overview") is not None


def serve(
    settings: Settings, workbench: Workbench, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Serve the workbench until interrupted, after printing where and how to sign in."""
    base = f"http://{host}:{port}"
    print(f"CX workbench on {base} ({settings.env})", flush=True)
    if link := sign_in_url(settings, base):
        print(f"sign in as the ML engineer: {link}", flush=True)
        print(f"product manager token: {settings.pm_token}", flush=True)
    if not _stored_views(workbench):
        print(
            "no stored views yet: pages show 'not investigated yet' until they are built",
            flush=True,
        )
    uvicorn.run(create_app(settings, workbench), host=host, port=port, log_level="info")


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on a free port in a background thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit this: without it a response's headers and body, written
    # separately, wait on the client's delayed ACK (Nagle), about 40 ms per keep-alive request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the workbench did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
