"""``segdet annotate`` as a process: one server per folder, refused before anything is made, and a server stopped
by SIGTERM or Ctrl+C (SIGINT) ends in one line and lets go of its folders."""
from __future__ import annotations

import signal

import pytest

from segdet.engine import lock
from tests.annotate.api import data, start_server  # noqa: F401
from tests.reliability.cli import segdet, user_error


def test_a_second_server_on_a_folder_in_use_is_refused_before_anything_is_made(data, tmp_path):  # noqa: F811
    here = tmp_path / "cwd"
    here.mkdir()
    before = sorted(p.name for p in data.iterdir())
    lock.claim(data, "data.root", "segdet annotate")  # this process serves the folder
    try:
        # Hydra's own run dir (outputs/sam/annotate/<stamp> under the working directory), and one given
        refused = segdet("annotate", f"data.root={data}", "port=0", cwd=here)
        user_error(refused, str(data), "in use by", "data.root")
        assert list(here.iterdir()) == []
        given = tmp_path / "given"
        user_error(segdet("annotate", f"data.root={data}", "port=0", f"hydra.run.dir={given}"), "in use by")
        assert not given.exists()
    finally:
        lock.release_all()
    assert sorted(p.name for p in data.iterdir()) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_server_says_so_in_one_line_and_releases_its_folders(data, sig):  # noqa: F811
    proc, _ = start_server(data)
    run_dir = data.parent / "server"
    assert (data / lock.LOCK_NAME).exists() and (run_dir / lock.LOCK_NAME).exists()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == f"segdet: stopped by {signal.Signals(sig).name}", err[-3000:]
    assert not (data / lock.LOCK_NAME).exists() and not (run_dir / lock.LOCK_NAME).exists()
