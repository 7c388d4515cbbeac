"""segdet export: write a checkpoint in a format other tools load (the task's exporter), with export.json and a
README.md beside it.

Everything is written into a temporary folder next to ``output=`` and renamed into place at the end, so a failed
export (also one whose check against the PyTorch model is above its tolerance) leaves no folder that looks
complete, and an existing ``output=`` (with ``overwrite=true``) is replaced only by a finished export. The
checkpoint is only read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

import segdet
from segdet.engine.rebuild import check_source, rebuild
from segdet.engine.session import start
from segdet.errors import SegdetError
from segdet.export_check import CheckFailed
from segdet.files.atomic import honour_umask
from segdet.tasks import get_task_class

log = logging.getLogger(__name__)
MAX_CLIENT_LINES = 15


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(str(cfg.output)).expanduser().absolute()
    ckpt = Path(str(cfg.ckpt)).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise SegdetError(f"{out}: output= is a file, not a folder")
    if out == ckpt.parent or out in ckpt.parents:
        raise SegdetError(f"{out}: output= holds the checkpoint {ckpt}; export into another folder")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise SegdetError(f"{out}: output folder exists and is not empty; pass overwrite=true or another output=")
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions(needs: list[str]) -> dict:
    """segdet's, torch's and those of what the export and its client need, as installed."""
    from importlib import metadata

    out = {}
    for name in ["segdet", "torch", *needs]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out.setdefault("segdet", segdet.__version__)
    return out


def readme(task: str, fmt: str, meta: dict, exported) -> str:
    lines = exported.client.strip("\n").splitlines()
    if len(lines) > MAX_CLIENT_LINES:
        raise AssertionError(f"the {task} {fmt} client snippet has {len(lines)} lines (at most {MAX_CLIENT_LINES})")
    return (f"# {task} model, exported by segdet as {fmt}\n\n"
            f"From `{meta['source']['checkpoint']}` (sha256 `{meta['source']['sha256'][:16]}…`). What the model "
            "takes and returns, and the class names, are in `export.json`.\n\n"
            f"A client without segdet needs `pip install {' '.join(exported.client_needs)}`. Save this as "
            f"`client.py` and run `python client.py <this folder> {exported.client_args}`:\n\n"
            f"```python\n{exported.client.strip(chr(10))}\n```\n")


def _swap_into_place(staged: Path, out: Path) -> None:
    """``staged`` becomes ``out``; an existing ``out`` is moved aside first and removed only after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(staged, out)
    except BaseException:
        if old is not None:
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    start(cfg, run_dir, "export")
    task_name, fmt = str(cfg.task.name), str(cfg.format)
    check_source(cfg)
    task_class = get_task_class(task_name)
    if fmt not in task_class.export_formats:
        raise SegdetError(f"format={fmt}: a {task_name} checkpoint exports as "
                          f"{', '.join(task_class.export_formats)}")
    out = _output_dir(cfg)
    began = time.perf_counter()
    ckpt, _, task, model = rebuild(cfg, task_class)
    model = model.cpu().eval()
    source = Path(str(cfg.ckpt)).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.partial-{os.getpid()}-{time.time_ns()}"
    staged.mkdir()  # not mkdtemp: the folder keeps the user's umask, as if made by hand
    try:
        exported = task.export(model=model, fmt=fmt, out_dir=staged, settings=cfg)
        files = {p.name: p.stat().st_size for p in sorted(staged.iterdir())}
        meta = {"format": fmt, "task": task_name, "classes": exported.classes, "input": exported.input,
                "outputs": exported.outputs, "files": files, "check": exported.check,
                "source": {"checkpoint": str(source), "sha256": sha256(source), "epoch": ckpt.get("epoch"),
                           "step": ckpt.get("step")},
                "versions": _versions([*exported.client_needs, *(["onnx"] if fmt == "onnx" else [])])}
        (staged / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        (staged / "README.md").write_text(readme(task_name, fmt, meta, exported))
        honour_umask(staged)  # libraries write some files 0600 (safetensors): readable as open() makes them
        _swap_into_place(staged, out)
    except CheckFailed as e:  # the export does not give its model's outputs: refused, as assert_close would
        raise SegdetError(f"{out}: {e}; nothing was written") from None
    except SegdetError:
        raise
    except Exception as e:  # any failure of an exporter: one line, and nothing half-written at output=
        with open(run_dir / "export.log", "a") as f:  # the whole story for a bug report; the console gets one line
            f.write(traceback.format_exc())
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise SegdetError(f"{out}: the {fmt} export failed ({type(e).__name__}: {first}); nothing was "
                          "written") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    seconds = time.perf_counter() - began
    sizes = ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in files.items())
    log.info("exported %s (%s) as %s to %s in %.1f s: %s", source, task_name, fmt, out, seconds, sizes)
    log.info("check: %s", json.dumps(exported.check))
    return {"output": str(out), "seconds": seconds, "files": files, "check": exported.check}
