"""segdet annotate: serve the annotation page and its API on ``host:port`` until stopped (Ctrl+C).

Prints one line with the page's URL once the socket listens (``port=0``: the free port it got; with a token,
``?token=...``). Training runs go under the run dir's ``train/``.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import signal
import socket
import threading
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segdet.engine.session import claim, start
from segdet.errors import Interrupted, SegdetError

log = logging.getLogger(__name__)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access(cfg: DictConfig) -> tuple[str, str | None]:
    """(host, token): a host other than the loopback needs a token, made here when none is given."""
    host = str(cfg.host)
    token = str(cfg.token) if cfg.token not in (None, "") else None
    if token is None and not loopback(host):
        token = secrets.token_urlsafe(24)
    return host, token


def listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as e:
        raise SegdetError(f"host={host} port={port}: cannot listen ({e.strerror or e})") from None
    return sock


def url(host: str, port: int, token: str | None) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def claim_data_root(cfg: DictConfig) -> None:
    """One server per folder: two would each write the annotations file over the other's. The CLI claims
    ``data.root`` before Hydra makes a run dir, so a refused second server leaves nothing behind; the claim is
    released when the server stops (``engine.session.finish``)."""
    root = Path(str(cfg.data.root)).expanduser()
    if root.is_dir():  # a folder that is not there is refused, in one line, by the store
        claim(root, "data.root", "annotate")


def build(cfg: DictConfig, run_dir: Path, device):
    """(app, engine, trainer) for ``cfg``: what ``run`` serves, and what the tests drive in-process."""
    from segdet.annotate.app import create_app
    from segdet.annotate.embeddings import ImageEmbeddings
    from segdet.annotate.engine import ClickEngine
    from segdet.annotate.loading import load, load_detector
    from segdet.annotate.settings import ServerSettings
    from segdet.annotate.stacks import Stacks, enabled as stacks_enabled
    from segdet.annotate.store import AnnotationStore
    from segdet.annotate.training import Trainer
    from segdet.tasks.sam.amg import AmgSettings

    s = ServerSettings.from_cfg(cfg)
    store = AnnotationStore(cfg.data.root, cfg.ann_file, s.classes, s.import_min_area)
    stacks = Stacks(store) if stacks_enabled(cfg) else None  # before any model loads: a bad stack stops at once
    loaded = load(cfg, cfg.segmenter, device, s.cache_embeddings, s.cache_dir)
    if cfg.detector:
        loaded.detector = load_detector(cfg, str(cfg.detector), loaded.runtime, s.score_threshold)
    engine = ClickEngine(loaded, store, ImageEmbeddings(store, s.memory_items, s.prefetch),
                         AmgSettings.from_cfg(cfg.amg), s.propose_iou)
    current = {"source": str(cfg.segmenter) if cfg.segmenter else None}

    def trained(best: Path) -> None:
        engine.swap(load(cfg, str(best), device, s.cache_embeddings, s.cache_dir))
        current["source"] = str(best)

    trainer = None
    if s.train_enabled:
        trainer = Trainer(store.root, store.path, Path(run_dir) / "train", s.train_overrides,
                          lambda: current["source"], trained)
    _, token = access(cfg)
    app = create_app(store, engine, trainer, token=token, max_body=s.max_body, stacks=stacks)
    return app, engine, trainer


@contextlib.contextmanager
def stopped_by_signals():
    """SIGINT and SIGTERM stop the server as a stop, not a crash. uvicorn shuts down gracefully on either, then
    raises the signal again with the handler it found: with Python's own, SIGINT became a traceback and SIGTERM
    ended the process past every ``finally``, leaving the folder's lock behind. With this one it is ``Interrupted``:
    the CLI's one line and exit status 128 + the signal, after the server's and the run's clean-up."""
    def stop(signum, frame):
        raise Interrupted(signum)
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    import uvicorn

    import torch

    from segdet.annotate.settings import ServerSettings

    with stopped_by_signals():
        device = start(cfg, Path(run_dir), "annotate")
        threads = ServerSettings.from_cfg(cfg).threads  # every setting checked before anything loads
        if threads:
            torch.set_num_threads(threads)
        claim_data_root(cfg)  # already held when the CLI started this server
        host, token = access(cfg)
        with_token = OmegaConf.merge(cfg, {"token": token})
        app, engine, trainer = build(with_token, run_dir, device)
        sock = listen(host, int(cfg.port))
        port = sock.getsockname()[1]
        print(f"segdet annotate: {url(host, port, token)}", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, log_level="warning"))
        try:
            server.run(sockets=[sock])
        finally:
            if trainer is not None:
                trainer.stop()
            engine.close()
            sock.close()
    return {}
