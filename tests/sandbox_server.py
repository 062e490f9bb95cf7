"""Run the provider sandbox as a real HTTP server on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from sandbox.app import create_app
from sandbox.core import Sandbox


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningSandbox:
    sb: Sandbox
    url: str  # e.g. http://127.0.0.1:PORT

    def base_url(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    def control(self, path: str, **payload: object) -> object:
        r = httpx.post(f"{self.url}/_sandbox/{path}", json=payload, timeout=60)
        r.raise_for_status()
        return r.json()

    def requests(self, provider: str | None = None, operation: str | None = None) -> list[dict]:  # type: ignore[type-arg]
        params = {k: v for k, v in (("provider", provider), ("operation", operation)) if v}
        r = httpx.get(f"{self.url}/_sandbox/requests", params=params, timeout=30)
        r.raise_for_status()
        return list(r.json())


@contextmanager
def run_sandbox(host: str = "127.0.0.1", port: int | None = None) -> Iterator[RunningSandbox]:
    sb = Sandbox()
    port = port or free_port(host)
    config = uvicorn.Config(
        create_app(sb), host=host, port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox did not start")
        time.sleep(0.02)
    try:
        yield RunningSandbox(sb, f"http://{host}:{port}")
    finally:
        server.should_exit = True
        thread.join(10)
