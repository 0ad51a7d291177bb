"""What the browser tests share: Debian's Chromium (a skip where it is missing, a failure where
`DIGEST_REQUIRE_BROWSER` says it must be there, as in CI), and a web app served by uvicorn on a
free loopback port for the page under test."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REQUIRED = os.environ.get("DIGEST_REQUIRE_BROWSER") == "1"

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists() and not REQUIRED,
                                    reason="needs Debian's chromium at /usr/bin/chromium")
# For a browser test module: `pytestmark = NEEDS_CHROMIUM` (one test: both marks on it).
NEEDS_CHROMIUM = [pytest.mark.browser, needs_chromium]


def launch(playwright):
    """Headless Chromium from Debian (the browser download of the test tool is not used)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)


@contextmanager
def served(make_app: Callable[[str], Any], **config) -> Iterator[str]:
    """Serve the app `make_app(base_url)` returns on 127.0.0.1 at a free port for the block;
    yields the base URL (the app may need it for its own links). The socket listens before
    the server thread starts, so the first request queues instead of racing."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    server = uvicorn.Server(uvicorn.Config(make_app(base), **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
