"""One cause, one line: the default model on a machine that cannot reach the hub (no minute of retries), and an
unreadable input (its reason once, without GDAL's or PIL's own lines)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from segdet import weights
from segdet.errors import SegdetError
from segdet.tasks.sam import loading
from tests.reliability import files
from tests.reliability.cli import ROOT, ok, segdet, user_error


@pytest.fixture
def silent_hub():
    """The URL of a server that takes connections and never answers: the hub behind a dead route, made
    deterministic (a real address may be refused at once, time out, or be answered by a proxy)."""
    server = socket.create_server(("127.0.0.1", 0))  # listens, never accepts: connections wait in its backlog
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def folder(root: Path) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(files._rgb(i)).save(root / "images" / f"{i}.png")
        Image.fromarray(files._mask()).save(root / "masks" / f"{i}.png")
    return root


# segdet in a fresh interpreter, timed from after its heavy imports (the same under any load) to its exit
_TIMED = """
import atexit, os, sys, time
import segdet.tasks.sam.task
began = time.monotonic()
atexit.register(lambda: open(os.environ["SEGDET_TEST_TOOK"], "w").write(str(time.monotonic() - began)))
from segdet.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow  # a fresh interpreter each (the warm one has imported huggingface_hub with other settings)
@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "no_route"])
def test_the_default_model_without_the_hub_is_one_line(offline, silent_hub, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": silent_hub,  # an empty cache, a dead hub
           "SEGDET_TEST_TOOK": str(tmp_path / "took")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", _TIMED, "train", "task=sam", "data=folder",
                           f"data.root={folder(tmp_path / 'chips')}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    msg = user_error(proc, "facebook/sam-vit-base", "model=sam_tiny", "model.pretrained=DIR")  # stderr's only line
    assert ("HF_HUB_OFFLINE is set" if offline else f"{silent_hub} cannot be reached") in msg, msg
    took = float((tmp_path / "took").read_text())
    # huggingface_hub's retries slept 23 s a file, for two files; the probe waits PROBE_TIMEOUT at most
    assert took < (1 if offline else weights.PROBE_TIMEOUT) + 15, took


def test_the_hub_probe_gives_up_within_its_timeout(monkeypatch, silent_hub, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", silent_hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    began = time.monotonic()
    with pytest.raises(SegdetError, match=r"cannot load SAM weights 'facebook/sam-vit-base': .* cannot be reached"):
        loading.check_source({"pretrained": "facebook/sam-vit-base", "family": "sam"})
    assert weights.PROBE_TIMEOUT - 0.5 < time.monotonic() - began < weights.PROBE_TIMEOUT + 2


def test_a_fake_tif_is_one_line_naming_it(sam_ckpt, tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00 not really a tiff")  # a TIFF header and nothing after: GDAL and PIL both complain
    proc = segdet("predict", "task=sam", f"ckpt={sam_ckpt}", f"input={junk}", f"output={tmp_path / 'out'}",
                  "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    msg = user_error(proc, alone=False)
    assert msg == f"{junk}: not an image file (unknown format)"
    assert proc.stderr.count("not an image file") == 1, proc.stderr
    for raw in ("GDAL", "err_no", "Warning", "EXIF"):
        assert raw not in proc.stderr, proc.stderr


def test_a_bad_input_beside_a_good_one_is_one_warning(sam_ckpt, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(files._rgb(0)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "junk.tif").write_bytes(b"II*\x00 not really a tiff")
    proc = ok(segdet("predict", "task=sam", f"ckpt={sam_ckpt}", f"input={tmp_path / 'in'}",
                     f"output={tmp_path / 'out'}", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"))
    assert proc.stderr.count("junk.tif") == 1, proc.stderr
    assert "skipped 1 input(s) that could not be read" in proc.stderr
    for raw in ("GDAL", "err_no", "Warning", "EXIF"):
        assert raw not in proc.stderr, proc.stderr
