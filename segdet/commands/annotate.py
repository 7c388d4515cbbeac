"""segdet annotate: serve the annotation page and its API on ``host:port`` until stopped (Ctrl+C).

Prints one line with the page's URL once the socket listens (``port=0``: the free port it got; with a token,
``?token=...``). Training runs go under the run dir's ``train/``.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segdet.engine.session import claim, start
from segdet.errors import SegdetError

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
    token = str(cfg.token) if cfg.get("token") not in (None, "") else None
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


def build(cfg: DictConfig, run_dir: Path, device):
    """(app, engine, trainer) for ``cfg``: what ``run`` serves, and what the tests drive in-process."""
    from segdet.annotate import engine as click
    from segdet.annotate.app import create_app
    from segdet.annotate.store import AnnotationStore
    from segdet.annotate.training import Trainer
    from segdet.tasks.sam.amg import AmgSettings

    classes = OmegaConf.to_container(cfg.classes) if cfg.get("classes") else None
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise SegdetError("classes must be a list of names, e.g. classes=[water,road]")
    store = AnnotationStore(cfg.data.root, cfg.ann_file, classes, float(cfg.get("import_min_area", 0.001)))
    loaded = click.load(cfg, cfg.get("segmenter"), device)
    if cfg.get("detector"):
        click.detector_part(cfg, str(cfg.detector), loaded)
    propose = cfg.get("propose") or {}
    engine = click.ClickEngine(loaded, store, memory_items=int(cfg.get("memory_items", 8)),
                               prefetch=bool(cfg.get("prefetch", True)), amg=AmgSettings.from_cfg(cfg.get("amg")),
                               propose_iou=float(propose.get("iou", 0.7)))
    current = {"source": str(cfg.segmenter) if cfg.get("segmenter") else None}

    def trained(best: Path) -> None:
        engine.swap(click.load(cfg, str(best), device))
        current["source"] = str(best)

    train = cfg.get("train") or {}
    trainer = None
    if train.get("enabled", True):
        trainer = Trainer(store.root, store.path, Path(run_dir) / "train", list(train.get("overrides") or []),
                          lambda: current["source"], trained)
    _, token = access(cfg)
    app = create_app(store, engine, trainer, token=token, max_body=int(float(cfg.get("max_body_mb", 32)) * 2**20))
    return app, engine, trainer


def run(cfg: DictConfig, run_dir: Path) -> dict:
    import uvicorn

    import torch

    device = start(cfg, Path(run_dir), "annotate")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    root = Path(str(cfg.data.root)).expanduser()
    if root.is_dir():  # one server per folder: two would each write the annotations file over the other's
        claim(root, "data.root", "annotate")
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
