"""What the browser tests share: the real Studio served on a free port, and a headless Chromium page."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def serve(studio) -> Iterator[str]:
    """The Studio's page for `studio`, served until the block ends; yields its URL."""
    from app.public.guard import guard_launch_kwargs
    from app.ui import build_app, launch_kwargs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs(),
                        **guard_launch_kwargs(studio, demo))  # the server guard, as app.py runs it
    try:
        yield demo.local_url
    finally:
        demo.close()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1100):
    """A page of Debian's headless Chromium driven by playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page():
    """One Chromium page for a test module (import this fixture into the module)."""
    with chromium_page() as pg:
        yield pg
