import os
import pickle
import subprocess
import sys

import pytest
import torch

from segdet.engine import checkpoint as ckpt_io
from segdet.errors import SegdetError


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_io.FORMAT, "task": "sam", "model": Payload()}, path)
    with pytest.raises(SegdetError, match="refused to load"):
        ckpt_io.load(path)


@pytest.mark.parametrize("content", [b"", b"hello", pickle.dumps({"a": 1})])
def test_files_that_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(SegdetError, match=str(path)):
        ckpt_io.load(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(SegdetError, match="checkpoint not found"):
        ckpt_io.load(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(SegdetError, match="not a segdet checkpoint"):
        ckpt_io.load(tmp_path / "plain.pt")
    torch.save({"format": ckpt_io.FORMAT, "task": "frcnn"}, tmp_path / "f.pt")
    with pytest.raises(SegdetError, match="'frcnn' checkpoint, not 'sam'"):
        ckpt_io.load(tmp_path / "f.pt", expected_task="sam")


def test_shape_mismatch_names_the_parameter():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(SegdetError, match=r"weight: checkpoint \(4, 3\) vs model \(2, 3\)"):
        ckpt_io.load_weights(model, {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, "x.pt")


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    torch.save({"rng": ckpt_io.rng_state()}, tmp_path / "r.pt")
    a = torch.rand(3)
    ckpt_io.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), a)


def test_kill_during_save_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "last.pt"
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "v": torch.zeros(10)}, path)
    before = path.read_bytes()
    # A child starts writing a large checkpoint to the same path and is killed mid-write.
    code = (f"import torch, os, signal, threading\n"
            f"from segdet.engine import checkpoint as c\n"
            f"threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()\n"
            f"c.save_atomic({{'format': c.FORMAT, 'v': torch.randn(80_000_000)}}, {str(path)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["v"].shape == (10,)
