"""Checkpoints to export (tiny models, a few training steps) and the plain client: the README's snippet run in a
fresh Python that never imports segdet and sees only what the README's ``pip install`` line installs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from segdet.commands import export as export_cmd
from segdet.commands import predict as predict_cmd
from segdet.commands import train as train_cmd
from segdet.data.io import list_images
from segdet.engine.checkpoint import load, save_atomic
from tests.conftest import compose_cfg
from tests.trained import once


def _train(run: Path, task: str, *extra: str) -> Path:
    train_cmd.run(compose_cfg("train", [f"task={task}", "experiment=smoke", "trainer.max_steps=2",
                                        "trainer.max_epochs=1", "trainer.samples_every_n_epochs=0", *extra]), run)
    return run / "checkpoints" / "last.pt"


def _scaled_sam(run: Path) -> None:
    path = _train(run, "sam")
    ckpt = load(path)
    for name in ("weight", "bias"):
        ckpt["model"][f"sam.mask_decoder.output_hypernetworks_mlps.0.proj_out.{name}"] *= 400
    save_atomic(ckpt, path)


@pytest.fixture(scope="session")
def sam_ckpt(tmp_path_factory) -> Path:
    """A trained SAM's mask logits run to tens; after two steps they are hundredths, where onnxruntime's rounding
    (1e-7) would decide edge pixels. The output layer of the mask's hypernetwork is scaled (logits scale with it)
    to give the checkpoint a trained model's range."""
    return once(tmp_path_factory, "export_sam_run", _scaled_sam) / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def frcnn_ckpt(tmp_path_factory) -> Path:
    return once(tmp_path_factory, "export_frcnn_run", lambda run: _train(run, "frcnn")) / "checkpoints" / "last.pt"


def export(ckpt: Path, fmt: str, out: Path, *extra: str) -> dict:
    """``segdet export`` in this process (the CLI's own rules are tested through a subprocess)."""
    task = load(ckpt, mmap=True)["task"]
    return export_cmd.run(compose_cfg("export", [f"task={task}", f"ckpt={ckpt}", f"format={fmt}", f"output={out}",
                                                 *extra]), out.parent / f"{out.name}_run")


def inner_boxes(w: int, h: int) -> list[list[int]]:
    """Two boxes inside a w x h image."""
    return [[round(w * 0.1), round(h * 0.1), round(w * 0.6), round(h * 0.7)],
            [round(w * 0.4), round(h * 0.3), w - 3, h - 2]]


def border_boxes(w: int, h: int) -> list[list[int]]:
    """Boxes that reach the image's edges (continuous coordinates: [0, 0, w, h] is the whole image), as water that
    fills a chip gets."""
    return [[0, 0, w, h], [round(w * 0.5), 0, w, round(h * 0.6)], [0, round(h * 0.4), round(w * 0.7), h]]


def predict_water(shared_data: Path, ckpt: Path, root: Path, every: int, count: int, boxes=inner_boxes) -> dict:
    """``count`` real water images (every ``every``-th) copied to ``root/images``, the box prompts ``boxes(w, h)``
    of each (``root/prompts.json``), and segdet predict's masks for them in ``root/pred``. Returns the prompts."""
    images = root / "images"
    images.mkdir(parents=True)
    for path in list_images(shared_data / "water_bodies" / "images")[::every][:count]:
        shutil.copy(path, images)
    prompts = {}
    for path in sorted(images.iterdir()):
        w, h = Image.open(path).size
        prompts[path.name] = {"boxes": boxes(w, h)}
    (root / "prompts.json").write_text(json.dumps(prompts))
    predict_cmd.run(compose_cfg("predict", ["task=sam", f"ckpt={ckpt}", f"input={images}",
                                            f"output={root / 'pred'}", f"prompts={root / 'prompts.json'}"]),
                    root / "predict_run")
    return prompts


def snippet(export_dir: Path) -> str:
    """The Python code block of the export's README.md."""
    text = (Path(export_dir) / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, text
    return blocks[0]


def run_client(export_dir: Path, argvs: list[list[str]], workdir: Path) -> None:
    """Run the README's snippet as ``python client.py <export_dir> *argv`` for each argv, in one fresh isolated
    Python (no PYTHONPATH, outside the checkout), which must not import segdet."""
    run_clients([(export_dir, argvs)], workdir)


def pip_line(export_dir: Path) -> list[str]:
    """The packages the export's README tells a client to ``pip install``."""
    return re.search(r"pip install ([^`]+)`", (Path(export_dir) / "README.md").read_text()).group(1).split()


def installed_by(packages: list[str], folder: Path) -> Path:
    """``folder`` made to hold what ``pip install <packages>`` would install, as links into this environment: the
    packages and everything they require (their markers evaluated here, no extras), nothing else. A Python whose
    path is only this folder (and the standard library) has what a user who followed the README has: transformers,
    say, runs without torch there, as it imports torch only where it is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    seen, todo = set(), [canonicalize_name(n) for n in packages]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # a requirement of another platform
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:  # its modules, libraries and .dist-info
            if top not in ("..", "__pycache__") and not top.endswith(".pth") and (base / top).exists():
                if not (folder / top).exists():
                    (folder / top).symlink_to(base / top)
    return folder


def run_clients(jobs: list[tuple[Path, list[list[str]]]], workdir: Path) -> None:
    """``run_client`` of several exports (each its own README's snippet and argvs), in one fresh Python for each
    README ``pip install`` line, which sees only what that line installs (``installed_by``)."""
    lines: dict[tuple[str, ...], list] = {}
    for export_dir, argvs in jobs:
        lines.setdefault(tuple(pip_line(export_dir)), []).append((export_dir, argvs))
    for k, (packages, group) in enumerate(lines.items()):
        site = installed_by(list(packages), workdir / f"site{k}")
        harness = f"import runpy, sys\nsys.path.insert(0, {str(site)!r})\n"
        for export_dir, argvs in group:
            code = snippet(export_dir)
            assert len(code.strip("\n").splitlines()) <= 15
            client = workdir / f"client{k}_{export_dir.name}.py"
            client.write_text(code)
            harness += (f"for args in {argvs!r}:\n"
                        f"    sys.argv = ['client.py', {str(export_dir)!r}, *args]\n"
                        f"    runpy.run_path({str(client)!r}, run_name='__main__')\n")
        harness += "assert not [m for m in sys.modules if m.split('.')[0] == 'segdet'], 'the client imported segdet'\n"
        # the test's thread count: float sums, and so a RoI near a pooling cell's edge, depend on it
        env = {key: v for key, v in os.environ.items() if key != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        # -S: no site-packages of this environment, only what the pip line installs
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", harness], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"pip install {' '.join(packages)}:\n{proc.stderr[-4000:]}"
