"""A real headless Chromium for the page tests (skipped, with the reason, where there is none)."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

# Quiet and self-contained: no sandbox (CI runs as root), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """SEGDET_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    explicit = os.environ.get("SEGDET_CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install it (Debian: apt-get install chromium) or set SEGDET_CHROMIUM=/path/to/it")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page (own storage); its uncaught exceptions are collected in `page.errors`, the URLs it asked for in
    `page.asked`."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    new = context.new_page()
    new.set_default_timeout(20_000)
    new.errors, new.asked = [], []
    new.on("pageerror", lambda error: new.errors.append(str(error)))
    new.on("request", lambda request: new.asked.append(request.url))
    yield new
    context.close()


@contextlib.contextmanager
def serve(root: Path, run_dir: Path, *overrides: str):
    """``segdet annotate data.root=ROOT`` in a thread of this process, on 127.0.0.1 and a free port; yields its URL."""
    import torch
    import uvicorn

    from segdet.commands.annotate import build, listen
    from tests.conftest import compose_cfg

    cfg = compose_cfg("annotate", ["task=sam", f"data.root={root}", "trainer.device=cpu", "prefetch=false",
                                   f"cache_dir={run_dir / 'cache'}", *overrides])
    app, engine, trainer = build(cfg, run_dir, torch.device("cpu"))
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the annotate server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/" + (f"?token={cfg.token}" if cfg.get("token") else "")
    finally:
        server.should_exit = True
        thread.join(10)
        if trainer is not None:
            trainer.stop()
        engine.close()
        sock.close()
