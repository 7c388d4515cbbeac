"""Shared fixtures: config composition, the real data in ../shared/data, small torch settings."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from segdet.config import compose

# Two torch threads a test, or one where `make test` runs the suite in two pytest-xdist workers on two cores (four
# threads on two cores wait on each other). The segdet subprocesses that tests start inherit it.
THREADS = max(1, min(2, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

pytest_plugins = ("tests.trained",)  # the session's shared smoke training runs

SHARED_DATA = Path(os.environ.get("SEGDET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def compose_cfg(command: str, overrides: list[str] = ()):
    """The config ``segdet <command> <overrides>`` would run with (no Hydra run dir is made)."""
    return compose(command, list(overrides))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; skipped on a fresh clone without it, but a failure in CI, where it must exist."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {SHARED_DATA} (CI must run the real-data tests)")
        pytest.skip(f"real data not present at {SHARED_DATA} (only in the CI checkout)")
    return SHARED_DATA


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the ``aot_eager`` backend: TorchDynamo's capture and AOT autograd, where segdet's graphs
    have broken (the RPN head's NHWC views, the compiled parts' wrappers), without inductor's C++ code generation,
    which costs a minute a model on two cores and is torch's own. ``scripts/gpu_check.sh`` runs the real compile."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: real(fn, **{**kw, "backend": "aot_eager"}))


def pytest_collection_modifyitems(items):
    """A test that reads the real data carries ``realdata`` (``-m "not realdata"`` on a fresh clone).

    The modules with the most ``slow`` tests run first. ``make test`` hands whole modules to its xdist workers in
    this order (``--dist loadscope``), and a long module handed out last would leave one worker running it
    alone while the other waits. The sort is stable: each module keeps its tests together and in order."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
    slow = Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])
